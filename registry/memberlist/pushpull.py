"""Push/pull anti-entropy and joining (docs/wire.md §6, §9.1, §9.2).

Each side sends its whole table; the receiver merges it through the normal
state rules, after checking that every node's protocol versions are
compatible with the whole cluster (Go's verifyProtocol).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from . import codec as wire
from .config import Config, push_pull_scale
from .delegate import Hooks
from .membership import Membership
from .messages import (
    Alive,
    Dead,
    ErrResp,
    Message,
    PushNodeState,
    PushPull,
    Suspect,
)
from .outbox import Outbox, StreamCtx
from .timers import TimerHeap
from .types import Address, Node, NodeState, ip_from_bytes, ip_to_bytes

__all__ = ["PushPuller", "explain_refused_reply", "verify_protocol"]

#: Longest part of a peer's error text we repeat (it comes from the network).
_REMOTE_ERROR_MAX = 200

_KEY_HINT = "do both sides use the same -encrypt key?"


def explain_refused_reply(*, encrypting: bool, reason: str = "", remote_error: str | None = None) -> str:
    """Why a push/pull's reply was refused, in words a person can act on; "" if nothing more
    useful than the stats counter can be said.

    A key mismatch never looks like one on the wire: the peer cannot read our stream, answers
    with an error (encrypted with its own key, or not at all encrypted), and that answer is
    what fails here, as a `DecodeError` `reason` ("decrypt", "plaintext") or, when we could
    read it, the peer's `remote_error` text."""
    if reason == "decrypt":
        if encrypting:
            return f"the peer did not accept our encrypted stream and answered with a key we do not hold: {_KEY_HINT}"
        return "the peer encrypts gossip and we have no key: give both sides the same -encrypt key"
    if reason == "plaintext":
        return "the peer answered unencrypted: it has no -encrypt key and we have one (give both sides the same key)"
    if remote_error is not None:
        text = "".join(c if c.isprintable() else "?" for c in remote_error[:_REMOTE_ERROR_MAX])
        lowered = text.lower()
        if "crypt" in lowered or "plaintext" in lowered:
            return f"the peer could not read our stream ({text}): {_KEY_HINT}"
        return f"the peer could not read our stream ({text})"
    return ""


def verify_protocol(local: list[tuple[bytes, bool]], remote: list[tuple[bytes, bool]]) -> bool:
    """Go's verifyProtocol over (vsn, is_alive) pairs: every node's current versions must lie
    inside the range that all alive nodes support."""
    ranged = [v for v, alive in local + remote if alive and len(v) >= 5]
    if not ranged:
        return True
    p_lo = max(v[0] for v in ranged)
    p_hi = min(v[1] for v in ranged)
    d_lo = max(v[3] for v in ranged)
    d_hi = min(v[4] for v in ranged)
    for v, _ in local + remote:
        pcur = v[2] if len(v) >= 6 else 0
        dcur = v[5] if len(v) >= 6 else 0
        if not (p_lo <= pcur <= p_hi and d_lo <= dcur <= d_hi):
            return False
    return True


@dataclass(eq=False, repr=False, kw_only=True)
class PushPuller:
    """One part of the core (`core.Memberlist` owns it): the periodic push/pull, our side of
    a push/pull (the whole table plus the delegate's state), and merging the peer's side.

    The peer's rows go through `Membership`'s state rules like gossip does, so a push/pull
    can never change a row in a way a message could not."""

    config: Config
    stats: collections.Counter[str]
    timers: TimerHeap
    membership: Membership
    outbox: Outbox
    hooks: Hooks

    @property
    def name(self) -> str:
        return self.config.name

    def tick(self, now: float) -> None:
        """The periodic push/pull with one random alive peer, then itself again an interval
        (scaled by the cluster's size) later."""
        members = self.membership
        try:
            peers = members.random_nodes(1, lambda n: n.name == self.name or n.state != NodeState.ALIVE)
            if peers:
                self.open(peers[0].address, join=False)
        finally:  # rescheduled whatever happened (an unencodable state once stopped it for good)
            self.timers.schedule(now + push_pull_scale(self.config.push_pull_interval, len(members.nodes)), self.tick)

    def open(self, addr: Address, join: bool) -> int:
        """Start a push/pull with `addr`: our state goes out, the peer's comes back in its reply."""
        data = self.outbox.codec.encode_stream(wire.encode(self.local_state(join)), dialer=True)
        self.stats["push_pull.sent"] += 1
        return self.outbox.open(addr, data, StreamCtx("push_pull", join=join))

    def answer(self, msg: PushPull) -> tuple[bytes, bool]:
        """A peer's push/pull: our state as the stream's reply, and whether it was a join we
        merged (the core then gossips the newcomer's alive at once)."""
        out = self.outbox
        if len(msg.nodes) > self.config.max_push_pull_nodes:
            self.stats["drop.too_large"] += 1
            return out.stream_reply(ErrResp("too many nodes")), False
        reply = out.stream_reply(self.local_state(msg.join))
        ok = self.merge_remote(msg, msg.join)
        self.stats["push_pull.inbound_" + ("ok" if ok else "failed")] += 1
        return reply, ok and msg.join

    def on_reply(self, msg: Message, join: bool) -> tuple[bool, str]:
        """The reply to our push/pull: merged, or refused with why for a person ("" if the
        stats say all there is)."""
        if isinstance(msg, ErrResp):
            self.stats["push_pull.remote_error"] += 1
            return False, explain_refused_reply(encrypting=self.outbox.encrypting(), remote_error=msg.error)
        if not isinstance(msg, PushPull):
            self.stats["drop.unexpected_reply"] += 1
            return False, ""
        ok = self.merge_remote(msg, join)
        self.stats["push_pull." + ("ok" if ok else "failed")] += 1
        return ok, ""

    def local_state(self, join: bool) -> PushPull:
        nodes = [
            PushNodeState(
                name=n.name,
                addr=ip_to_bytes(n.addr),
                port=n.port,
                meta=n.meta,
                incarnation=n.incarnation,
                state=int(n.state),
                vsn=n.vsn,
            )
            for n in self.membership.nodes.values()
        ]
        delegate = self.hooks.delegate
        user = delegate.local_state(join) if delegate is not None else b""
        return PushPull(join=join, nodes=nodes, user_state=user)

    def _verify_protocol(self, remote: list[PushNodeState]) -> bool:
        local = [(n.vsn, n.state == NodeState.ALIVE) for n in self.membership.nodes.values()]
        return verify_protocol(local, [(r.vsn, r.state == int(NodeState.ALIVE)) for r in remote])

    def merge_remote(self, pp: PushPull, join: bool) -> bool:
        """Apply a peer's state; False when refused (incompatible versions, a merge veto)."""
        if not self._verify_protocol(pp.nodes):
            self.stats["drop.incompatible_version"] += 1
            return False
        hooks = self.hooks
        if join and hooks.merge is not None:
            peers = [self._node_from_state(r) for r in pp.nodes]
            err = hooks.merge.notify_merge(peers)
            if err:
                self.stats["drop.merge_vetoed"] += 1
                return False
        members = self.membership
        for r in pp.nodes:
            try:
                st = NodeState(r.state)
            except ValueError:
                self.stats["drop.bad_state"] += 1
                continue
            if st == NodeState.ALIVE:
                members.on_alive(Alive(r.incarnation, r.name, r.addr, r.port, r.meta, r.vsn))
            elif st == NodeState.LEFT:
                members.on_dead(Dead(r.incarnation, r.name, r.name))
            else:
                members.on_suspect(Suspect(r.incarnation, r.name, self.name))
        if pp.user_state and hooks.delegate is not None:
            hooks.delegate.merge_remote_state(pp.user_state, join)
        return True

    @staticmethod
    def _node_from_state(r: PushNodeState) -> Node:
        try:
            host = ip_from_bytes(r.addr)
        except ValueError:
            host = ""
        return Node(
            r.name,
            host,
            r.port,
            r.meta or b"",
            r.vsn,
            NodeState(r.state) if 0 <= r.state <= 3 else NodeState.DEAD,
            r.incarnation,
        )
