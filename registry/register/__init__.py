"""Register a service with the registry pool (never imports grpc).

    from registry.register import HttpCheck, Register
    reg = Register("webservice-1", ":7380", "", "127.0.0.1:7370", "webservice", "127.0.0.1:8080",
                   checks=[HttpCheck("http://127.0.0.1:8080/health", interval=5)])
    reg.start(); ...; reg.stop()
"""

from registry.checks import (
    CallableCheck,
    Check,
    CheckError,
    CheckState,
    GrpcCheck,
    Health,
    HttpCheck,
    TcpCheck,
    TtlCheck,
)
from registry.register.options import DEFAULT_REPLICAS, Handler, RegisterError
from registry.register.register import AsyncRegister, Register

__all__ = [
    "DEFAULT_REPLICAS",
    "AsyncRegister",
    "CallableCheck",
    "Check",
    "CheckError",
    "CheckState",
    "GrpcCheck",
    "Handler",
    "Health",
    "HttpCheck",
    "Register",
    "RegisterError",
    "TcpCheck",
    "TtlCheck",
]
