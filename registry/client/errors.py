"""Client exceptions: one base class, one subclass per failure a caller handles differently."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

__all__ = ["InvalidAddress", "InvalidArgument", "NotFound", "RegistryError", "Unavailable", "from_rpc_error"]


class RegistryError(Exception):
    """Any failed registry call; `code` is the gRPC status (None for local failures)."""

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None, group: str = "",
                 addresses: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.group = group
        self.addresses = tuple(addresses)


class NotFound(RegistryError, LookupError):
    """The group is unknown or has no live member."""


class InvalidArgument(RegistryError, ValueError):
    """A bad argument: refused by the client before any call (empty group or key, n out of range,
    bad timeout or TLS files) or by the server (INVALID_ARGUMENT). A ValueError, so code that
    validates with `except ValueError` keeps working."""


class InvalidAddress(InvalidArgument):
    """A registry address the client cannot dial (not host:port, no host, port 0).

    Raised by the constructors, so a typo fails at once and names the address, instead of
    every call failing later with UNAVAILABLE."""


class Unavailable(RegistryError, ConnectionError):
    """No registry address answered in time."""


def from_rpc_error(method: str, group: str, addr: str, err: grpc.RpcError) -> RegistryError:
    """Wrap a non-retryable gRPC error: says which call, which group, which registry."""
    code: grpc.StatusCode = err.code()
    details: str = err.details() or code.name
    where = f" (group {group!r})" if group else ""
    message = f"{method}{where} at {addr}: {details}"
    kind: type[RegistryError] = RegistryError
    if code == grpc.StatusCode.NOT_FOUND:
        kind = NotFound
    elif code == grpc.StatusCode.INVALID_ARGUMENT:
        kind = InvalidArgument
    elif code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        kind = Unavailable
    return kind(message, code=code, group=group, addresses=(addr,))
