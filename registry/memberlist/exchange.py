"""TCP exchanges of the memberlist core: a peer's stream answered, the outcome of ours.

One part of the core (`core.Memberlist` owns it).  A stream carries one message each way
(docs/wire.md §6): a push/pull, a fallback ping, or a user message.  Inbound, the message
goes to the part it is for and the reply comes back for the driver to write; outbound, the
peer's reply (or its failure) goes to the part that opened the stream, `Outbox.streams`
saying which.  Bad input is counted under "drop.<reason>"; a handler exception is a bug
(handler_errors.py).  Why a push/pull's reply was refused is kept in `refusal` in words a
person can act on, since a key mismatch never looks like one on the wire.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field

from . import codec as wire
from .delegate import Hooks
from .handler_errors import HandlerErrors
from .messages import Ack, ErrResp, Message, Ping, PushPull, UserMsg
from .outbox import Outbox
from .probe import Prober
from .pushpull import PushPuller, explain_refused_reply
from .types import Address

__all__ = ["Exchanges"]


@dataclass(eq=False, repr=False, kw_only=True)
class Exchanges:
    """Stream inputs of the core (module docstring)."""

    name: str
    codec: wire.WireCodec
    stats: collections.Counter[str]
    handler_errors: HandlerErrors
    hooks: Hooks
    outbox: Outbox
    prober: Prober
    push_pull: PushPuller
    #: run a gossip round now (a joining node's alive is passed on at once)
    gossip_now: Callable[[float], int]
    #: why the last `outcome` refused a reply, for a person ("" when it did not, or when
    #: only the stats can tell)
    refusal: str = field(default="", init=False)

    def answer(self, data: bytes, source: Address, now: float) -> bytes | None:
        """A dialer's stream: the reply to write back, or None to write nothing."""
        out = self.outbox
        try:
            msg = self.codec.decode_stream(data, from_dialer=True)
        except wire.DecodeError as e:
            self.stats["drop." + e.reason] += 1
            return out.stream_reply(ErrResp(f"failed to receive: {e.reason}"))
        except Exception:  # noqa: BLE001 - hostile input must never escape
            self.stats["drop.malformed"] += 1
            return out.stream_reply(ErrResp("failed to receive: malformed"))
        self._count_dropped_rows(msg)
        out.reply_budget = len(data)  # UDP it makes us send elsewhere (a Serf query's answers)
        try:
            return self._handle(msg, now)
        except Exception as exc:  # noqa: BLE001 - a bug: logged once per kind, raised if strict
            self.handler_errors.failed(exc, f"stream {type(msg).__name__}", source)
            return None
        finally:
            out.reply_budget = None

    def _handle(self, msg: Message, now: float) -> bytes | None:
        if isinstance(msg, Ping):
            if msg.node and msg.node != self.name:
                self.stats["drop.ping_wrong_node"] += 1
                return None
            return self.outbox.stream_reply(Ack(msg.seq_no, None))
        if isinstance(msg, PushPull):
            reply, joined = self.push_pull.answer(msg)
            if joined:  # we are the seed of a joining node: pass its alive on now, not at the next tick
                self.gossip_now(now)
            return reply
        if isinstance(msg, UserMsg):
            delegate = self.hooks.delegate
            if delegate is not None:
                delegate.notify_msg(msg.payload)
            return None
        self.stats["drop.unexpected_stream"] += 1
        return None

    def outcome(self, stream_id: int, reply: bytes | None, now: float, refused: bool) -> bool:
        """One of our streams ended: `reply` is the peer's answer (None: it failed, `refused`
        when the connection was refused).  True when the exchange did what it was for."""
        self.refusal = ""
        st = self.outbox.streams.pop(stream_id, None)
        if st is None:
            return False
        if st.kind == "user":
            ok = reply is not None
            self.stats["stream.user." + ("ok" if ok else "failed")] += 1
            return ok
        if reply is None:
            self.stats[f"stream.{st.kind}.failed"] += 1
            if refused and st.kind == "ping":
                self.prober.tcp_ping_refused(st.seq, now)
            return False
        try:
            msg = self.codec.decode_stream(reply, from_dialer=False)
        except wire.DecodeError as e:
            self.stats["drop." + e.reason] += 1
            self.refusal = explain_refused_reply(encrypting=self.outbox.encrypting(), reason=e.reason)
            return False
        except Exception:  # noqa: BLE001 - hostile input must never escape
            self.stats["drop.malformed"] += 1
            return False
        self._count_dropped_rows(msg)
        try:
            if st.kind == "ping":
                return self.prober.tcp_ping_result(st.seq, msg)
            ok, self.refusal = self.push_pull.on_reply(msg, st.join)
            return ok
        except Exception as exc:  # noqa: BLE001 - a bug: logged once per kind, raised if strict
            # the peer did answer: say the refusal is ours, or a join reads as "nobody answered"
            self.refusal = f"this node failed handling the reply, a bug ({type(exc).__name__}: {exc}; traceback logged)"
            self.handler_errors.failed(exc, f"{st.kind} reply {type(msg).__name__}", f"stream {stream_id}")
            return False

    def _count_dropped_rows(self, msg: Message) -> None:
        """Push/pull rows refused at decode (the rest of the state still merges)."""
        if isinstance(msg, PushPull):
            for reason in msg.dropped:
                self.stats["drop." + reason] += 1
