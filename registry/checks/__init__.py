"""Health checks a service runs on itself, Consul's kinds and semantics (issue 14).

`spec` declares them (`HttpCheck`, `TcpCheck`, `GrpcCheck`, `CallableCheck`, `TtlCheck`: Consul's
interval, timeout and thresholds, with its defaults); `machine` is one check's thresholds as a sans-I/O
state machine (Consul's StatusHandler); `board` is a service's checks together, their aggregate and
when it must be published; `probes` runs one check once; `threads` (sync `Register`) and `tasks`
(`AsyncRegister`, imported only there: it needs asyncio) run them off the gossip thread's hot path.
The aggregate travels in the service's Serf tags as `registry.healthtags` says.
"""

from registry.healthtags import Health

from .machine import CheckState
from .spec import CallableCheck, Check, CheckError, CheckKind, GrpcCheck, HttpCheck, TcpCheck, TtlCheck

__all__ = [
    "CallableCheck",
    "Check",
    "CheckError",
    "CheckKind",
    "CheckState",
    "GrpcCheck",
    "Health",
    "HttpCheck",
    "TcpCheck",
    "TtlCheck",
]
