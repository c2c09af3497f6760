"""Register a service with the registry pool (never imports grpc).

    from registry.register import Register
    reg = Register("webservice-1", ":7380", "", "127.0.0.1:7370", "webservice", "127.0.0.1:8080")
    reg.start(); ...; reg.stop()
"""

from registry.register.options import DEFAULT_REPLICAS, Handler, RegisterError
from registry.register.register import AsyncRegister, Register

__all__ = ["DEFAULT_REPLICAS", "AsyncRegister", "Handler", "Register", "RegisterError"]
