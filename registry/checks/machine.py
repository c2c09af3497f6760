"""One check's status from its results: Consul's StatusHandler as a sans-I/O state machine.

Results go in (a status word and its output), the check's status comes out; time is only recorded,
never consulted, so a run of results decides the status and nothing else.  The rules are Consul's
(agent/checks/check.go `StatusHandler.updateCheck`):

- passing or warning results count as successes: they reset the failure count, and once
  ``success_before_passing`` successes are in a row the status becomes that result's;
- a critical result resets the success count; at ``failures_before_critical`` failures in a row the
  status becomes critical, else at ``failures_before_warning`` it becomes warning, else it stays;
- both counters start *full* (Consul's constructor), so the very first result decides the status
  whatever the thresholds: a service must not wait N intervals to leave its initial critical.

So one failure below the threshold moves nothing, and a check flapping every interval can change the
status at most once per ``success_before_passing`` (or ``failures_before_*``) runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from registry.healthtags import Health

__all__ = ["NOT_RUN", "CheckState", "ThresholdMachine"]

#: The output of a check that has not produced a result yet.
NOT_RUN = "not yet run"


@dataclass(frozen=True)
class CheckState:
    """One check as `Register.checks()` shows it.  `status`/`output` are what the thresholds made of
    the results; `last_status`/`last_output` the latest raw result; times are `time.monotonic()`."""

    name: str
    kind: str
    target: str
    status: Health
    output: str
    last_status: Health | None
    last_output: str
    last_run: float | None
    #: results in a row of the latest kind (successes or failures)
    streak: int


class ThresholdMachine:
    """Consul's thresholds on one check's results (see the module docstring)."""

    def __init__(self, initial: Health, success_before_passing: int = 0, failures_before_warning: int | None = None,
                 failures_before_critical: int = 0) -> None:
        self.status = initial
        self.output = NOT_RUN
        self.success_before_passing = success_before_passing
        self.failures_before_warning = failures_before_critical if failures_before_warning is None else failures_before_warning
        self.failures_before_critical = failures_before_critical
        self._successes = success_before_passing  # full: the first result decides
        self._failures = failures_before_critical
        self.last_status: Health | None = None
        self.last_output = ""
        self.last_run: float | None = None

    @property
    def streak(self) -> int:
        if self.last_status is None:
            return 0
        return self._failures if self.last_status is Health.CRITICAL else self._successes

    def observe(self, result: Health, output: str, now: float) -> bool:
        """Take one result; True if the status or its output changed (what is displayed)."""
        self.last_status, self.last_output, self.last_run = result, output, now
        if result is Health.CRITICAL:
            self._successes = 0
            self._failures += 1
            if self._failures >= self.failures_before_critical:
                return self._set(Health.CRITICAL, output)
            if self._failures >= self.failures_before_warning:
                return self._set(Health.WARNING, output)
            return False
        self._failures = 0
        self._successes += 1
        if self._successes >= self.success_before_passing:
            return self._set(result, output)
        return False

    def force(self, status: Health, output: str, now: float) -> bool:
        """Set the status directly (a TTL check's heartbeat, set_status or expiry: no thresholds)."""
        self.last_status, self.last_output, self.last_run = status, output, now
        return self._set(status, output)

    def _set(self, status: Health, output: str) -> bool:
        changed = (status, output) != (self.status, self.output)
        self.status, self.output = status, output
        return changed
