"""driver.DriverBase, the half both gossip drivers share, around a real Memberlist core with
its I/O recorded instead of sent: outputs dispatched, the timer re-armed (never in the past
right after a tick), stream outcomes to watchers with the machine's verdict, waiters woken,
and a stopped driver answering at once."""

from __future__ import annotations

from registry.memberlist.config import Config
from registry.memberlist.core import Memberlist
from registry.memberlist.driver import SHUT_DOWN, STUCK_TIMER_DELAY, DriverBase
from registry.memberlist.types import REFUSED, Address, Machine, OpenStream, Output, SendPacket

ME = Address("127.0.0.1", 7946)
PEER = Address("127.0.0.1", 7947)


class Recorded(DriverBase):
    """A driver whose clock the test sets and whose sends and timers are kept in lists."""

    def __init__(self, machine: Machine) -> None:
        super().__init__(machine, Config.fast())
        self.clock = 0.0
        self.packets: list[SendPacket] = []
        self.streams: list[OpenStream] = []
        self.timer: float | None = None

    def now(self) -> float:
        return self.clock

    def _send_packet(self, out: SendPacket) -> None:
        self.packets.append(out)

    def _open_stream(self, out: OpenStream) -> None:
        self.streams.append(out)

    def _set_timer(self, deadline: float | None) -> None:
        self.timer = deadline


def memberlist() -> Memberlist:
    return Memberlist(Config.fast(name="me", bind_port=ME.port), ME, None, now=0.0)


def test_outputs_dispatched_and_timer_armed_at_the_machines_deadline() -> None:
    core = memberlist()
    driver = Recorded(core)
    sids = core.join([PEER], driver.now())
    driver._pump()
    assert [s.stream_id for s in driver.streams] == sids
    assert driver.timer == core.next_deadline() is not None


def joining() -> tuple[Recorded, OpenStream, list[tuple[bool, str]]]:
    """A driver whose machine is joining PEER: the stream it opened, and what its watcher hears."""
    core = memberlist()
    driver = Recorded(core)
    outcomes: list[tuple[bool, str]] = []
    (sid,) = core.join([PEER], driver.now())
    driver.watch(sid, lambda ok, why: outcomes.append((ok, why)))
    driver._pump()
    return driver, driver.streams[0], outcomes


def test_a_refused_stream_reaches_its_watcher_and_the_machine() -> None:
    driver, stream, outcomes = joining()
    driver._stream_done(stream, None, REFUSED)
    assert outcomes == [(False, REFUSED)]
    assert driver.stats["runner.exception.stream_result"] == 0


def test_a_garbage_reply_is_refused_in_the_machines_words() -> None:
    driver, stream, outcomes = joining()
    driver._stream_done(stream, b"\x00not a push/pull", "")
    [(ok, why)] = outcomes
    assert not ok and why and why != REFUSED


def test_waiters_wake_when_their_predicate_holds_and_on_stop() -> None:
    driver = Recorded(memberlist())
    flag = {"set": False}
    woken: list[bool] = []
    driver._add_waiter(lambda: flag["set"], woken.append)
    driver._pump()
    assert woken == []
    flag["set"] = True
    driver._pump()
    assert woken == [True]
    driver._add_waiter(lambda: False, woken.append)
    driver._stopping = True
    driver._release_all()
    assert woken == [True, False]


def test_a_stopped_driver_answers_watchers_at_once_and_feeds_nothing() -> None:
    core = memberlist()
    driver = Recorded(core)
    driver._stopping = True
    outcomes: list[tuple[bool, str]] = []
    driver.watch(1, lambda ok, why: outcomes.append((ok, why)))
    assert outcomes == [(False, SHUT_DOWN)]
    driver._feed_packet(b"\x00", PEER)
    assert core.stats.total() == 0


class Stuck:
    """A machine whose timer stays due after every tick (a bug the driver must not spin on)."""

    def receive_packet(self, data: bytes, source: Address, now: float) -> None: ...

    def receive_stream(self, data: bytes, source: Address, now: float) -> bytes | None:
        return None

    def stream_result(self, stream_id: int, reply: bytes | None, now: float, refused: bool = False) -> bool:
        return False

    def tick(self, now: float) -> None: ...

    def next_deadline(self) -> float | None:
        return 0.0

    def drain(self) -> list[Output]:
        return []


def test_a_timer_left_due_by_tick_is_retried_later_not_at_once() -> None:
    driver = Recorded(Stuck())
    driver.clock = 5.0
    driver._feed_tick(5.0)
    assert driver.timer == 5.0 + STUCK_TIMER_DELAY
    assert driver.stats["runner.timer_stuck"] == 1
