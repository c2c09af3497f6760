"""memberlist configuration with Go's LAN, WAN and LOCAL profiles, plus FAST for tests.

Names follow Go's `memberlist.Config` in snake_case so a reader of the Go
documentation finds each knob; durations are float seconds.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

__all__ = ["PROFILES", "Config", "Profile", "failure_detection_bound", "push_pull_scale", "retransmit_limit", "suspicion_timeout"]

#: Go's timing profiles (DefaultLANConfig, DefaultWANConfig, DefaultLocalConfig) and "fast" for
#: tests: the names ``Config.profile`` takes, and the registry's -profile offers.
Profile = Literal["lan", "wan", "local", "fast"]
PROFILES: tuple[Profile, ...] = get_args(Profile)


@dataclass
class Config:
    name: str = ""
    bind_addr: str = "0.0.0.0"
    bind_port: int = 7946
    advertise_addr: str = ""  # "" = derive from bind_addr (or the first non-loopback IP when binding 0.0.0.0)
    advertise_port: int = 0  # 0 = the port actually bound

    protocol_version: int = 2
    protocol_min: int = 1
    protocol_max: int = 5
    delegate_protocol_min: int = 2
    delegate_protocol_max: int = 5
    delegate_protocol_version: int = 5

    tcp_timeout: float = 10.0
    indirect_checks: int = 3
    retransmit_mult: int = 4
    suspicion_mult: int = 4
    suspicion_max_timeout_mult: int = 6
    push_pull_interval: float = 30.0
    probe_interval: float = 1.0
    probe_timeout: float = 0.5
    disable_tcp_pings: bool = False
    awareness_max_multiplier: int = 8
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    gossip_to_the_dead_time: float = 30.0
    gossip_verify_incoming: bool = True
    gossip_verify_outgoing: bool = True
    enable_compression: bool = True
    #: Also LZW-compress UDP packets when smaller, as Go does.  Off by default: receivers accept
    #: both, and pure-Python LZW costs ~0.45 ms per full 1400-byte packet, enough to stall a loaded
    #: node past its probe timeout (measured with 100 nodes in one process).  Streams (push/pull)
    #: stay compressed whenever enable_compression is on.
    compress_packets: bool = False
    udp_buffer_size: int = 1400
    dead_node_reclaim_time: float = 0.0
    label: str = ""
    skip_inbound_label_check: bool = False

    #: AES keys (16, 24 or 32 bytes); the first is the primary.  Empty = no encryption.
    secret_keys: list[bytes] = dataclasses.field(default_factory=list)

    #: Bounds on untrusted input (memberlist master's limits).
    max_stream_size: int = 20 * 1024 * 1024
    max_decompressed_size: int = 40 * 1024 * 1024
    max_push_pull_nodes: int = 1 << 20
    #: Inbound gossip streams open at once (memberlist's maxPushPullRequests, applied to every
    #: inbound stream).  A newcomer at a full table sheds the oldest stream that has not completed
    #: a message instead of being refused (see admission.py), so idle holders cannot lock joiners out.
    max_concurrent_push_pulls: int = 128
    #: Inbound gossip streams open at once from one source IP; a newcomer from a source at its cap
    #: sheds that source's oldest incomplete stream.  A peer opens one stream per exchange (join,
    #: push/pull, TCP ping, reliable user message), each lasting milliseconds.
    max_inbound_streams_per_source: int = 16
    #: Seconds from accept within which the first complete message (the whole frame, label and
    #: encryption header included) must have arrived; tcp_timeout still bounds the whole
    #: exchange and caps this.  A peer writes its message right after connecting, so this only
    #: has to cover transfer time (20 MiB at 32 Mbit/s) and a few SYN/segment retransmissions.
    inbound_message_timeout: float = 5.0
    #: Bytes buffered for incomplete inbound stream messages across all streams of this node,
    #: charged before each chunk is buffered; over it, the incomplete stream holding the most is
    #: shed.  Room for one max_stream_size message and the small ones arriving meanwhile.
    max_inbound_buffered: int = 24 * 1024 * 1024
    #: Largest user message body a stream may announce (checked at its header).  Serf sends user
    #: messages over UDP only; memberlist (SendReliable) has no bound but allocates what is announced.
    max_stream_user_msg_size: int = 1024 * 1024
    #: Raise an exception from inside a message handler (a bug: ours or a delegate's) to the
    #: caller instead of counting it as "drop.handler_error" and logging it once per kind.  For
    #: the simulator and the tests, so that none passes on a handler bug; a running node keeps
    #: going (see handler_errors.py).  Malformed input is still dropped and counted, never raised.
    strict: bool = False

    @property
    def vsn(self) -> bytes:
        return bytes(
            [
                self.protocol_min,
                self.protocol_max,
                self.protocol_version,
                self.delegate_protocol_min,
                self.delegate_protocol_max,
                self.delegate_protocol_version,
            ]
        )

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    # -- profiles ------------------------------------------------------------------------------

    @classmethod
    def lan(cls, **overrides: Any) -> Config:
        """Go's DefaultLANConfig (what `serf agent` uses by default)."""
        return cls.profile("lan", **overrides)

    @classmethod
    def wan(cls, **overrides: Any) -> Config:
        """Go's DefaultWANConfig: slower probes and gossip, more patience."""
        return cls.profile("wan", **overrides)

    @classmethod
    def local(cls, **overrides: Any) -> Config:
        """Go's DefaultLocalConfig: one host or a fast LAN."""
        return cls.profile("local", **overrides)

    @classmethod
    def fast(cls, **overrides: Any) -> Config:
        """For tests: the LAN algorithm with every period shrunk about 5x, so failure detection
        takes ~1-2 s of real time while tolerating a loaded 2-core machine."""
        return cls.profile("fast", **overrides)

    @classmethod
    def profile(cls, profile_name: str, /, **overrides: Any) -> Config:
        """The named profile (one of ``PROFILES``) with ``overrides`` applied."""
        base = _PROFILES.get(profile_name)
        if base is None:
            raise ValueError(f"unknown profile {profile_name!r}: choose one of {', '.join(_PROFILES)}")
        return cls(**{**base, **overrides})


#: Each profile as its differences from the field defaults above, which are Go's LAN profile:
#: data rather than one constructor each, so a profile reads as what it changes.
_PROFILES: dict[str, dict[str, Any]] = {
    "lan": {},
    "wan": {
        "tcp_timeout": 30.0,
        "suspicion_mult": 6,
        "push_pull_interval": 60.0,
        "probe_interval": 5.0,
        "probe_timeout": 3.0,
        "gossip_interval": 0.5,
        "gossip_nodes": 4,
        "gossip_to_the_dead_time": 60.0,
        "inbound_message_timeout": 10.0,  # slower links: a few MB of state may take seconds
    },
    "local": {
        "tcp_timeout": 1.0,
        "indirect_checks": 1,
        "retransmit_mult": 2,
        "suspicion_mult": 3,
        "push_pull_interval": 15.0,
        "probe_timeout": 0.2,
        "gossip_interval": 0.1,
        "gossip_to_the_dead_time": 15.0,
    },
    "fast": {
        "tcp_timeout": 2.0,
        "suspicion_mult": 3,
        "push_pull_interval": 3.0,
        "probe_interval": 0.2,
        "probe_timeout": 0.1,
        "gossip_interval": 0.04,
        "gossip_to_the_dead_time": 3.0,
    },
}


def retransmit_limit(mult: int, n: int) -> int:
    """How many times a broadcast is sent: mult x ceil(log10(n + 1))."""
    return mult * math.ceil(math.log10(n + 1))


def push_pull_scale(interval: float, n: int) -> float:
    """Slow anti-entropy down in large clusters (Go's pushPullScale, threshold 32 nodes)."""
    if n <= 32:
        return interval
    return interval * (math.ceil(math.log2(n) - math.log2(32)) + 1)


def suspicion_timeout(cfg: Config, n: int) -> tuple[float, float, int]:
    """(min, max, expected confirmations k) of Lifeguard's suspicion timer for a table of n nodes."""
    node_scale = max(1.0, math.log10(max(1, n)))
    lo = math.floor(cfg.suspicion_mult * node_scale * cfg.probe_interval * 1000) / 1000
    hi = cfg.suspicion_max_timeout_mult * lo
    k = cfg.suspicion_mult - 2
    if n - 2 < k:
        k = 0
    return lo, hi, k


def failure_detection_bound(cfg: Config, n: int) -> float:
    """Upper bound on the time from a node going silent to every other node declaring it dead.

    * notice: the first of the n-1 probers reaches the silent node within one round of n-1
      probe intervals, and that probe takes one more interval to fail (healthy awareness);
    * suspicion: the longest Lifeguard timer (max when confirmations are expected, else min);
    * spread: the dead broadcast needs at most retransmit_limit gossip rounds to reach everyone.

    Deliberately loose (measured on the simulator: n=100 LAN dies everywhere after ~10 s against a
    bound of 150 s; n=30 fast after ~1.5 s against 11.6 s) so it can serve as a test deadline.
    """
    lo, hi, k = suspicion_timeout(cfg, n)
    suspicion = hi if k >= 1 else lo
    notice = max(1, n - 1) * cfg.probe_interval + cfg.probe_interval
    spread = retransmit_limit(cfg.retransmit_mult, n) * cfg.gossip_interval
    return notice + suspicion + spread
