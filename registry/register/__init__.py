"""Register a service with the registry pool (never imports grpc).

    from registry.register import Register
    reg = Register("webservice-1", ":7380", "", "127.0.0.1:7370", "webservice", "127.0.0.1:8080")
    reg.start(); ...; reg.stop()
"""

from registry.register.register import DEFAULT_REPLICAS, AsyncRegister, Handler, Register, RegisterError

__all__ = ["Register", "AsyncRegister", "RegisterError", "Handler", "DEFAULT_REPLICAS"]
