"""Registry client: ask a registry which service owns a key, or who is in a group.

    from client import RpcClient
    with RpcClient("127.0.0.1:9800") as c:
        c.match("webservice", "user-42")      # -> Service(id, group, addr, tags)
        c.match("webservice", "user-42", 3)   # -> [Service, ...] distinct, ring order

`AsyncRpcClient` offers the same methods as coroutines. Errors are `RegistryError`
subclasses: `NotFound`, `InvalidArgument`, `Unavailable`.
"""

from client.aio import AsyncRpcClient
from client.errors import InvalidArgument, NotFound, RegistryError, Unavailable
from client.sync import RpcClient
from client.types import Service, TlsConfig

__all__ = [
    "AsyncRpcClient",
    "InvalidArgument",
    "NotFound",
    "RegistryError",
    "RpcClient",
    "Service",
    "TlsConfig",
    "Unavailable",
]
