"""A service's checks together: each one's state, their aggregate, and when to publish it (no I/O).

The aggregate is the worst status (`healthtags.worst`, Consul's rule); its note names the first check
(in declaration order) at that status that has a result, with that check's output (or, before any
has one, the last not yet run).  The runners feed results in and
publish what `record` returns: something only when the aggregate status or the failing check
changes (and once when the failing check's first result replaces its initial "not yet run"), never
because a check ran again or its output's wording changed, so a service with a check every second
does not gossip a tag update every second.

TTL checks take statuses directly (`force`) and expire at their deadline (`expire_due`).  The time
the aggregate became critical is kept for `deregister_critical_after`.
"""

from __future__ import annotations

from collections.abc import Sequence

from registry.healthtags import Health, truncate_note, worst

from .machine import CheckState, ThresholdMachine
from .spec import Check, CheckKind, TtlCheck

__all__ = ["TTL_EXPIRED", "Board", "Published"]

TTL_EXPIRED = "TTL expired"

#: (status, note) as put in the tags by `healthtags.health_tags`
Published = tuple[Health, str]


class Board:
    """The states of one service's checks (named by `spec.name_checks`), created at `now`."""

    def __init__(self, checks: Sequence[Check], names: Sequence[str], now: float) -> None:
        self.checks = list(checks)
        self.names = list(names)
        self.machines = [
            ThresholdMachine(c.initial_status, c.success_before_passing, c.failures_before_warning,
                             c.failures_before_critical)
            for c in self.checks
        ]
        self.deadlines: list[float | None] = [now + c.ttl if isinstance(c, TtlCheck) else None for c in self.checks]
        self._published_key: tuple[Health, str, bool] | None = None
        self.critical_since: float | None = None
        self._track(now)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(name) from None

    def ttl_indexes(self) -> list[int]:
        return [i for i, c in enumerate(self.checks) if c.kind is CheckKind.TTL]

    @property
    def health(self) -> Published:
        """(worst status, note naming the first check at it); passing has no note."""
        status = worst([m.status for m in self.machines])
        if status is Health.PASSING:
            return status, ""
        i = self._named_at(status)
        return status, truncate_note(f"{self.names[i]}: {self.machines[i].output}")

    def _named_at(self, status: Health) -> int:
        """The check the note names among those at `status`: the first (in declaration order) with a
        result; if none has one yet, the *last* not yet run.  Checks start together and finish roughly
        in order, so the last one not yet run rarely changes while they come in (naming the first
        gossiped a tag update per check: 20 for 100 HTTP checks, measured), and the note never names
        a check that has already run."""
        at = [i for i, m in enumerate(self.machines) if m.status is status]
        ran = [i for i in at if self.machines[i].last_status is not None]
        return ran[0] if ran else at[-1]

    def _key(self) -> tuple[Health, str, bool]:
        """What a publish is about: the status, the check the note names, and whether that check has a
        result yet (its first result replaces the initial "not yet run" note once, even at the same status)."""
        status = worst([m.status for m in self.machines])
        if status is Health.PASSING:
            return status, "", True
        i = self._named_at(status)
        return status, self.names[i], self.machines[i].last_status is not None

    def publish_due(self) -> Published | None:
        """The health to publish if the status or the failing check differs from what was last
        published (the first call always answers: what the service joins with)."""
        key = self._key()
        if key == self._published_key:
            return None
        self._published_key = key
        return self.health

    def record(self, i: int, result: Health, output: str, now: float) -> Published | None:
        """A probe's result for check `i`, through its thresholds; what to publish, if anything."""
        self.machines[i].observe(result, output, now)
        self._track(now)
        return self.publish_due()

    def force(self, i: int, status: Health, output: str, now: float) -> Published | None:
        """A TTL check's heartbeat or set_status: the status at once, and a new deadline."""
        c = self.checks[i]
        assert isinstance(c, TtlCheck), c
        self.deadlines[i] = now + c.ttl
        self.machines[i].force(status, output, now)
        self._track(now)
        return self.publish_due()

    def next_deadline(self, i: int) -> float | None:
        return self.deadlines[i]

    def expire_due(self, i: int, now: float) -> Published | None:
        """Check `i`'s TTL lapsed by `now`: critical, with the last note kept after "TTL expired"
        (Consul's output), until the next heartbeat."""
        deadline = self.deadlines[i]
        if deadline is None or now < deadline:
            return None
        self.deadlines[i] = None  # expired once; the next heartbeat sets a new deadline
        last = self.machines[i].last_output
        self.machines[i].force(Health.CRITICAL, f"{TTL_EXPIRED}: {last}" if last and last != TTL_EXPIRED else TTL_EXPIRED, now)
        self._track(now)
        return self.publish_due()

    def critical_for(self, now: float) -> float:
        """How long the aggregate has been critical (0 when it is not)."""
        return 0.0 if self.critical_since is None else now - self.critical_since

    def _track(self, now: float) -> None:
        critical = worst([m.status for m in self.machines]) is Health.CRITICAL
        if not critical:
            self.critical_since = None
        elif self.critical_since is None:
            self.critical_since = now

    def states(self) -> list[CheckState]:
        return [
            CheckState(name=n, kind=c.kind.value, target=c.describe(), status=m.status, output=m.output,
                       last_status=m.last_status, last_output=m.last_output, last_run=m.last_run, streak=m.streak)
            for n, c, m in zip(self.names, self.checks, self.machines)
        ]
