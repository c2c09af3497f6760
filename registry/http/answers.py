"""JSON answers of the HTTP API: bodies, errors and the HTTP status of every error the API can give.

One error body everywhere, `{"error": "<one line>", "code": "<gRPC status name>"}`: the gRPC status name
is what a gRPC client of the same registry would see for the same input (`registry.api`'s `Invalid`,
`Missing`, `Exhausted` are mapped as both gRPC fronts map them), so a script can handle either API alike.

A Service is written as the proto's `Service` message with the proto's field names, every field present
(`json_format.MessageToDict(..., preserving_proto_field_name=True, always_print_fields_with_no_presence=True)`),
so a Match answer, a Members answer and an SSE event carry the same object for the same service. Those
dicts are cached per Service object (the catalog swaps the object on any change of the service), as
`RegistryCore` caches their protobuf bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import web
from google.protobuf.json_format import MessageToDict

from registry.api import Exhausted, Invalid, Missing, NotSynced
from registry.grpcwire import Status
from registry.ttl.entry import Entry, Refused, RefusedReason

__all__ = [
    "INDEX_HEADER",
    "JSON_TYPE",
    "ApiError",
    "dumps",
    "entry_json",
    "error_response",
    "from_exception",
    "json_response",
    "message_json",
]

INDEX_HEADER = "X-Registry-Index"
JSON_TYPE = "application/json"

#: Refused reasons -> (HTTP status, gRPC status); TOO_LARGE is RESOURCE_EXHAUSTED as gRPC says of a message over its
#: size limit (413); GROUP_FULL and STORE_FULL are RESOURCE_EXHAUSTED too (429: the
#: writer may retry later, once entries expire), TAKEN is ALREADY_EXISTS (409: a gossiping service has that id).
_REFUSED: Mapping[RefusedReason, tuple[HTTPStatus, Status]] = {
    RefusedReason.INVALID: (HTTPStatus.BAD_REQUEST, Status.INVALID_ARGUMENT),
    RefusedReason.TOO_LARGE: (HTTPStatus.REQUEST_ENTITY_TOO_LARGE, Status.RESOURCE_EXHAUSTED),
    RefusedReason.GROUP_FULL: (HTTPStatus.TOO_MANY_REQUESTS, Status.RESOURCE_EXHAUSTED),
    RefusedReason.STORE_FULL: (HTTPStatus.TOO_MANY_REQUESTS, Status.RESOURCE_EXHAUSTED),
    RefusedReason.TAKEN: (HTTPStatus.CONFLICT, Status.ALREADY_EXISTS),
}


class ApiError(Exception):
    """An answer that is an error: HTTP status, gRPC status name, one line naming the problem."""

    def __init__(self, status: HTTPStatus, code: Status, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = " ".join(message.split())
        self.headers = dict(headers or {})


def from_exception(exc: Exception) -> ApiError | None:
    """The ApiError of a `registry.api` error or a `Refused`, None for anything else."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, Invalid):
        return ApiError(HTTPStatus.BAD_REQUEST, Status.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, NotSynced):
        return ApiError(HTTPStatus.SERVICE_UNAVAILABLE, Status.UNAVAILABLE, str(exc))
    if isinstance(exc, Missing):
        return ApiError(HTTPStatus.NOT_FOUND, Status.NOT_FOUND, str(exc))
    if isinstance(exc, Exhausted):
        return ApiError(HTTPStatus.TOO_MANY_REQUESTS, Status.RESOURCE_EXHAUSTED, str(exc))
    if isinstance(exc, Refused):
        status, code = _REFUSED[exc.reason]
        return ApiError(status, code, str(exc))
    return None


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def json_response(body: bytes, *, status: int = 200, index: int | None = None,
                  headers: Mapping[str, str] | None = None) -> web.Response:
    out = dict(headers or {})
    if index is not None:
        out[INDEX_HEADER] = str(index)
    return web.Response(body=body, status=status, content_type=JSON_TYPE, charset="utf-8", headers=out)


def error_response(err: ApiError, *, index: int | None = None) -> web.Response:
    body = dumps({"error": err.message, "code": err.code.name})
    return json_response(body, status=int(err.status), index=index, headers=err.headers)


def message_json(message: Any) -> dict[str, Any]:
    """A protobuf message as the API writes it (proto field names, every field present)."""
    out: dict[str, Any] = MessageToDict(message, preserving_proto_field_name=True,
                                        always_print_fields_with_no_presence=True)
    return out


def entry_json(entry: Entry, now_ms: int) -> dict[str, Any]:
    """A TTL registration as the /v1/services routes answer it: its fields, and `expires_in` seconds."""
    out: dict[str, Any] = {
        "group": entry.group,
        "id": entry.id,
        "addr": entry.addr,
        "tags": dict(entry.tags),
        "replicas": entry.replicas,
        "weight": entry.weight,
        "ttl_ms": entry.ttl_ms,
        "written_ms": entry.written_ms,
        "writer": entry.writer,
        "expires_in": round(max(0, entry.expires_ms - now_ms) / 1000, 3),
    }
    if entry.doc:
        out["doc"] = json.loads(entry.doc)
    return out
