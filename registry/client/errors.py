"""Client exceptions: one base class, one subclass per failure a caller handles differently."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

__all__ = ["InvalidArgument", "NotFound", "RegistryError", "Unavailable", "from_rpc_error"]


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
    """The request was malformed (empty group or key, bad n)."""


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
