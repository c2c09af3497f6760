"""The checks' sans-I/O parts: the declared specs, Consul's thresholds (machine) and the aggregate (board)."""

from __future__ import annotations

import itertools
import random

import pytest

from registry.checks.board import Board
from registry.checks.machine import NOT_RUN, ThresholdMachine
from registry.checks.spec import CallableCheck, Check, CheckError, GrpcCheck, HttpCheck, TcpCheck, TtlCheck, name_checks
from registry.healthtags import MAX_NOTE_BYTES, Health

P, W, C = Health.PASSING, Health.WARNING, Health.CRITICAL


def run(m: ThresholdMachine, results: list[Health]) -> list[Health]:
    """The status after each result."""
    out = []
    for t, r in enumerate(results):
        m.observe(r, f"run {t}", float(t))
        out.append(m.status)
    return out


def test_consul_defaults() -> None:
    c = HttpCheck("http://127.0.0.1:8080/health")
    assert (c.interval, c.timeout, c.success_before_passing, c.failures_before_critical,
            c.failures_before_warning, c.initial_status) == (10.0, 10.0, 0, 0, 0, C)
    t = TcpCheck("127.0.0.1:1", failures_before_critical=3)
    assert t.failures_before_warning == 3  # defaults to failures_before_critical, as Consul's
    assert TtlCheck(5).initial_status is C


def test_the_first_result_decides_whatever_the_thresholds() -> None:
    """Consul's counters start full: a service leaves its initial critical at its first pass."""
    m = ThresholdMachine(C, success_before_passing=3, failures_before_warning=3, failures_before_critical=3)
    assert (m.status, m.output) == (C, NOT_RUN)
    assert run(m, [P]) == [P]
    m = ThresholdMachine(P, 3, 3, 3)
    assert run(m, [C]) == [C]


def test_one_failure_below_the_critical_threshold_moves_nothing() -> None:
    m = ThresholdMachine(C, failures_before_critical=3)
    assert run(m, [P, C, C, P, C, C, P]) == [P] * 7  # never three in a row
    assert run(m, [C, C, C]) == [P, P, C]
    assert m.output == "run 2"


def test_warning_between_the_warning_and_critical_thresholds() -> None:
    m = ThresholdMachine(C, failures_before_warning=1, failures_before_critical=3)
    assert run(m, [P, C, C, C, P]) == [P, W, W, C, P]


def test_success_before_passing_holds_critical() -> None:
    m = ThresholdMachine(C, success_before_passing=2, failures_before_critical=0)
    assert run(m, [P, C, P, P, P]) == [P, C, C, P, P]


def test_warning_results_count_as_successes_and_set_warning() -> None:
    m = ThresholdMachine(C, failures_before_critical=2)
    assert run(m, [P, W, C, W, C, C]) == [P, W, W, W, W, C]


@pytest.mark.parametrize("threshold", [2, 3, 5])
def test_flapping_every_interval_cannot_flap_the_status_faster_than_the_thresholds(threshold: int) -> None:
    """A check alternating pass/fail every run never changes the status after its first result;
    random results change it at most once per `threshold` runs."""
    m = ThresholdMachine(C, success_before_passing=threshold, failures_before_critical=threshold)
    assert set(run(m, [P, C] * 50)) == {P}
    rng = random.Random(threshold)
    m = ThresholdMachine(C, success_before_passing=threshold, failures_before_critical=threshold)
    statuses = run(m, [rng.choice([P, C]) for _ in range(500)])
    changes = [i for i in range(1, len(statuses)) if statuses[i] != statuses[i - 1]]
    assert changes, "the random walk must move the status at least once for the test to mean anything"
    gaps = [b - a for a, b in itertools.pairwise(changes)]
    assert min(gaps, default=threshold) >= threshold, gaps


def test_bad_arguments_are_one_clear_line() -> None:
    with pytest.raises(CheckError, match="interval"):
        HttpCheck("http://h/", interval=0)
    with pytest.raises(CheckError, match="timeout"):
        TcpCheck("h:1", timeout=-1)
    with pytest.raises(CheckError, match="url"):
        HttpCheck("ftp://h/")
    with pytest.raises(CheckError, match="target"):
        TcpCheck("no-port")
    with pytest.raises(CheckError, match="target"):
        GrpcCheck("h:70000")
    with pytest.raises(CheckError, match="failures_before_critical"):
        TcpCheck("h:1", failures_before_critical=-1)
    with pytest.raises(CheckError, match="never warn"):
        TcpCheck("h:1", failures_before_warning=4, failures_before_critical=2)
    with pytest.raises(CheckError, match="initial_status"):
        TcpCheck("h:1", initial_status="fine")
    with pytest.raises(CheckError, match="callable"):
        CallableCheck("not a function")  # type: ignore[arg-type]
    with pytest.raises(CheckError, match="ttl"):
        TtlCheck(0)
    with pytest.raises(CheckError, match="unique"):
        name_checks([TcpCheck("h:1", name="db"), TtlCheck(1, name="db")])


def test_default_names_are_the_kind_numbered() -> None:
    checks = [TcpCheck("h:1"), TcpCheck("h:2"), HttpCheck("http://h/", name="tcp:2"), TtlCheck(1)]
    assert name_checks(checks) == ["tcp", "tcp:3", "tcp:2", "ttl"]


def test_board_publishes_only_when_the_status_or_the_failing_check_changes() -> None:
    checks = [TcpCheck("h:1", name="db"), HttpCheck("http://h/", name="web")]
    b = Board(checks, name_checks(checks), 0.0)
    assert b.publish_due() == (C, "web: not yet run")  # what the service joins with: the last not yet run
    assert b.record(0, P, "ok", 1.0) is None  # the check named has not run yet: nothing new
    assert b.record(1, C, "refused", 1.0) == (C, "web: refused")  # its first result replaces "not yet run"
    assert b.record(1, P, "200 OK", 1.0) == (P, "")
    assert b.record(1, P, "200 OK again", 2.0) is None  # ran again: nothing to gossip
    assert b.record(1, C, "HTTP 500", 3.0) == (C, "web: HTTP 500")
    assert b.record(1, C, "HTTP 503", 4.0) is None  # same status, same failing check
    assert b.health == (C, "web: HTTP 503")  # but the display is current
    assert b.critical_for(10.0) == 7.0
    assert b.record(0, C, "refused", 5.0) == (C, "db: refused")  # the first critical check is named
    b.record(1, W, "HTTP 429", 6.0)
    assert b.record(0, P, "ok", 6.0) == (W, "web: HTTP 429") and b.critical_since is None


def test_checks_coming_in_at_start_publish_once_when_all_have_passed() -> None:
    """While the failing check is one not yet run, which one it is changes nothing worth gossiping."""
    checks: list[Check] = [TcpCheck(f"h:{i}") for i in range(1, 101)]
    b = Board(checks, name_checks(checks), 0.0)
    assert b.publish_due() == (C, "tcp:100: not yet run")
    published = [p for i in range(100) if (p := b.record(i, P, "ok", 1.0)) is not None]
    assert published == [(P, "")]
    b = Board(checks, name_checks(checks), 0.0)
    b.publish_due()
    order = list(range(100))
    random.Random(7).shuffle(order)
    published = [p for i in order if (p := b.record(i, P, "ok", 1.0)) is not None]
    assert published[-1] == (P, "") and len(published) <= 12, published  # ~ln(100) in random order


def test_board_note_is_cut_to_the_tag_limit() -> None:
    b = Board([TcpCheck("h:1")], ["tcp"], 0.0)
    b.record(0, C, "é" * 300, 1.0)
    assert len(b.health[1].encode()) <= MAX_NOTE_BYTES


def test_ttl_expires_and_a_heartbeat_restores_it_at_once() -> None:
    checks = [TtlCheck(2.0, name="app")]
    b = Board(checks, ["app"], 0.0)
    assert b.publish_due() == (C, "app: not yet run")
    assert b.expire_due(0, 1.9) is None
    assert b.force(0, P, "", 1.0) == (P, "")
    assert b.expire_due(0, 2.9) is None and b.next_deadline(0) == 3.0
    assert b.expire_due(0, 3.0) == (C, "app: TTL expired")
    assert b.next_deadline(0) is None  # expired once, until the next heartbeat
    assert b.force(0, W, "disk 91%", 4.0) == (W, "app: disk 91%")
    assert b.expire_due(0, 6.0) == (C, "app: TTL expired: disk 91%")
