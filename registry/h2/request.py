"""Is a decoded header block a well-formed HTTP/2 request (or trailer section)? RFC 9113 8.2-8.3.

A malformed request is a stream error of type PROTOCOL_ERROR (section 8.1.1): the connection
resets the stream and the application never sees it. Checking here, once, keeps bytes that
HTTP/2 forbids (uppercase or connection-specific names, CR/LF/NUL in values, stray or missing
pseudo-headers) out of every layer above. Header names and values arrive as latin-1 text
(one char per octet), so the checks below are checks of octets.
"""

from __future__ import annotations

import re

__all__ = ["check_request", "check_trailers"]

# Section 8.2.1: no 0x00-0x20, no uppercase, no 0x7f-0xff, and no colon outside pseudo-headers.
_BAD_NAME = re.compile(r"[\x00-\x20A-Z\x7f-\xff:]")
# Section 8.2.1: no NUL, CR or LF; no leading or trailing SP/HTAB.
_BAD_VALUE = re.compile(r"[\x00\r\n]|^[ \t]|[ \t]$")
_CONNECTION_SPECIFIC = frozenset(("connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade"))
_SPECIAL = _CONNECTION_SPECIFIC | {"te", "content-length"}  # names whose values have rules of their own
_REQUEST_PSEUDO = frozenset((":method", ":scheme", ":path", ":authority"))


def _field_error(name: str, value: str) -> str | None:
    """What is wrong with one regular field, or None."""
    if not name or _BAD_NAME.search(name):
        return f"invalid field name {name!r}"
    if _BAD_VALUE.search(value):
        return f"invalid value for {name!r}"
    if name in _CONNECTION_SPECIFIC:
        return f"connection-specific field {name!r}"
    if name == "te" and value.lower() != "trailers":
        return "te other than 'trailers'"
    return None


def _content_length(value: str, previous: int) -> int:
    """The declared body length, or -2 when it is not one non-negative integer (or disagrees)."""
    if not value.isdigit() or not value.isascii() or len(value) > 18:
        return -2
    n = int(value)
    return n if previous in (-1, n) else -2


def _values_ok(values: list[str]) -> bool:
    """The value rules of section 8.2.1 over all values at once, by substring searches (a regex
    with anchored alternatives costs ~10 us a request): joined by LF, a value's own LF shows in
    the count, and a leading or trailing blank sits next to a separator or an end."""
    joined = "\n".join(values)
    return not (
        "\x00" in joined
        or "\r" in joined
        or joined.count("\n") != len(values) - 1
        or "\n " in joined
        or "\n\t" in joined
        or " \n" in joined
        or "\t\n" in joined
        or joined[:1] in (" ", "\t")
        or joined[-1:] in (" ", "\t")
    )


def check_request(headers: list[tuple[str, str]]) -> tuple[str | None, int]:
    """(why the request is malformed or None, its content-length or -1 when it has none).

    Every request pays for this, so the octet checks run once over all names and once over all
    values joined (a few microseconds for a gRPC request); the per-field walk that names the
    culprit only runs for a malformed request."""
    pseudo: dict[str, str] = {}
    names: list[str] = []
    values: list[str] = []
    length = -1
    for name, value in headers:
        if name[:1] == ":":
            if names:
                return f"pseudo-header {name!r} after a regular field", -1
            if name not in _REQUEST_PSEUDO:
                return f"pseudo-header {name!r} is not a request's", -1
            if name in pseudo:
                return f"duplicated pseudo-header {name!r}", -1
            pseudo[name] = value
        else:
            names.append(name)
            if name in _SPECIAL:
                if name == "content-length":
                    length = _content_length(value, length)
                    if length == -2:
                        return "invalid content-length", -1
                elif name != "te":
                    return f"connection-specific field {name!r}", -1
                elif value.lower() != "trailers":
                    return "te other than 'trailers'", -1
        values.append(value)
    if not all(names) or _BAD_NAME.search("".join(names)) or not _values_ok(values):
        for name, value in headers:  # slow path: say which field
            error = _field_error(name, value) if name[:1] != ":" else (
                f"invalid value for {name!r}" if _BAD_VALUE.search(value) else None)
            if error is not None:
                return error, -1
        return "invalid field", -1  # not reached: the walk finds what the joined checks found
    method = pseudo.get(":method")
    if not method:
        return "missing :method", -1
    if method == "CONNECT":  # section 8.5: authority only
        if ":scheme" in pseudo or ":path" in pseudo or not pseudo.get(":authority"):
            return "malformed CONNECT request", -1
        return None, length
    if not pseudo.get(":scheme"):
        return "missing :scheme", -1
    if not pseudo.get(":path"):
        return "missing or empty :path", -1
    return None, length


def check_trailers(headers: list[tuple[str, str]]) -> str | None:
    """Why a request's trailer section is malformed (section 8.1: no pseudo-headers), or None."""
    for name, value in headers:
        if name[:1] == ":":
            return f"pseudo-header {name!r} in trailers"
        error = _field_error(name, value)
        if error is not None:
            return error
    return None
