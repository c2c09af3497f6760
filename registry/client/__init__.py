"""Registry client: ask a registry which service owns a key, or who is in a group.

    from registry.client import RpcClient
    with RpcClient("127.0.0.1:9800") as c:
        c.match("webservice", "user-42")      # -> Service(id, group, addr, tags)
        c.match("webservice", "user-42", 3)   # -> [Service, ...] distinct, ring order

`AsyncRpcClient` offers the same methods as coroutines. Errors are `RegistryError`
subclasses: `NotFound`, `InvalidArgument` (also a ValueError; `InvalidAddress` is one, raised
by the constructors), `Unavailable`.
"""

from registry.client.aio import AsyncRpcClient
from registry.client.errors import (
    InvalidAddress,
    InvalidArgument,
    NotFound,
    RegistryError,
    Unavailable,
)
from registry.client.sync import RpcClient
from registry.client.types import Datacenter, Service, TlsConfig

__all__ = [
    "AsyncRpcClient",
    "Datacenter",
    "InvalidAddress",
    "InvalidArgument",
    "NotFound",
    "RegistryError",
    "RpcClient",
    "Service",
    "TlsConfig",
    "Unavailable",
]
