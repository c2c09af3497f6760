"""joining.py, shared by every driver: join targets read and resolved (real resolver), and
JoinTally turning stream outcomes, in whatever order and however they arrive, into one count
or one JoinError naming every target."""

from __future__ import annotations

import pytest

from registry.memberlist.driver import StreamDone
from registry.memberlist.joining import JoinError, JoinTally, resolve_targets_now
from registry.memberlist.types import Address


def test_targets_are_labelled_and_failures_named() -> None:
    targets, failures = resolve_targets_now(
        ["127.0.0.1:7000", "bad:address:x", Address("::1", 5), ":7001", "node-b/127.0.0.2", "localhost:7002"], 7946
    )
    assert ("127.0.0.1:7000", Address("127.0.0.1", 7000)) in targets
    assert ("[::1]:5", Address("::1", 5)) in targets
    assert (":7001", Address("127.0.0.1", 7001)) in targets  # a wildcard host dials this machine
    assert ("node-b/127.0.0.2", Address("127.0.0.2", 7946)) in targets
    local = [(label, a) for label, a in targets if label.startswith("localhost:7002")]
    assert local and all(a.port == 7002 for _, a in local)
    if len(local) > 1:  # a name with several IPs: each labelled with its IP
        assert {label for label, _ in local} == {f"localhost:7002 ({a})" for _, a in local}
    assert set(failures) == {"bad:address:x"}
    assert "IPv6" in failures["bad:address:x"]


def test_a_name_that_does_not_resolve_is_a_failure_not_an_exception() -> None:
    targets, failures = resolve_targets_now(["no-such-host.invalid:7946"], 7946)
    assert targets == []
    assert list(failures) == ["no-such-host.invalid:7946"]


class Streams:
    """Stream ids handed out by a pretend machine, and their watchers, ended by the test."""

    def __init__(self) -> None:
        self.watchers: dict[int, StreamDone] = {}
        self.next = 0

    def join(self, addr: Address) -> list[int]:
        self.next += 1
        return [self.next]

    def watch(self, sid: int, done: StreamDone) -> None:
        self.watchers[sid] = done


def test_tally_settles_once_when_the_last_stream_ends_in_any_order() -> None:
    streams = Streams()
    settled: list[bool] = []
    tally = JoinTally({"bad": "malformed"}, lambda: settled.append(True))
    tally.begin([("a", Address("127.0.0.1", 1)), ("b", Address("127.0.0.1", 2))], streams.join, streams.watch)
    assert not settled
    streams.watchers[2](False, "Connection refused")
    assert not settled
    streams.watchers[1](True, "")
    streams.watchers[1](True, "")  # a second report of one stream changes nothing
    assert settled == [True]
    assert tally.result() == 1


def test_tally_names_every_target_when_none_merged() -> None:
    streams = Streams()
    tally = JoinTally({"bad": "malformed"}, lambda: None)
    tally.begin([("a", Address("127.0.0.1", 1)), ("b", Address("127.0.0.1", 2))], streams.join, streams.watch)
    streams.watchers[1](False, "")
    with pytest.raises(JoinError) as err:
        tally.result(unanswered="no answer within 1s")
    assert err.value.failures == {"bad": "malformed", "a": "refused", "b": "no answer within 1s"}


def test_tally_settles_when_a_stopping_driver_answers_at_once() -> None:
    """A driver that is stopping reports a watched stream inside `watch`: settled only after
    every stream was started, not after the first."""
    settled: list[bool] = []
    tally = JoinTally({}, lambda: settled.append(True))
    sids = iter(range(1, 10))

    def watch(sid: int, done: StreamDone) -> None:
        assert not settled
        done(False, "node shut down")

    tally.begin([("a", Address("127.0.0.1", 1)), ("b", Address("127.0.0.1", 2))], lambda a: [next(sids)], watch)
    assert settled == [True]
    with pytest.raises(JoinError, match="node shut down"):
        tally.result()


def test_tally_with_no_streams_settles_at_once() -> None:
    settled: list[bool] = []
    tally = JoinTally({"x": "no IP addresses found"}, lambda: settled.append(True))
    tally.begin([], lambda a: [], lambda sid, done: None)
    assert settled == [True]
    with pytest.raises(JoinError, match="no IP addresses found"):
        tally.result()
