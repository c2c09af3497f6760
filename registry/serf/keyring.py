"""Keyring management the Serf way (docs/wire.md §15): internal `_serf_*-key` queries answered with Serf's
messages, results aggregated like Go's KeyManager, and the optional JSON keyring file."""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from . import messages as msgs
from .events import QueryEvent
from .query import QueryItem

if TYPE_CHECKING:
    from registry.memberlist.crypto import Keyring

__all__ = [
    "KEY_OPS",
    "KEY_QUERIES",
    "KeyOp",
    "KeyOpResult",
    "aggregate_key_responses",
    "answer_key_event",
    "answer_key_query",
    "decode_key",
    "encode_key",
    "initial_keys",
    "load_keyring_file",
    "write_keyring_file",
]

#: a cluster-wide key operation (`serf keys -install/-use/-remove/-list`)
KeyOp = Literal["install", "use", "remove", "list"]

KEY_QUERIES: dict[str, str] = {
    "install": "_serf_install-key",
    "use": "_serf_use-key",
    "remove": "_serf_remove-key",
    "list": "_serf_list-keys",
}

#: internal query operation (the query name after "_serf_") -> key operation
KEY_OPS: dict[str, KeyOp] = {
    "install-key": "install",
    "use-key": "use",
    "remove-key": "remove",
    "list-keys": "list",
}

#: a base64-encoded 16-byte key is 24 characters; Go sizes the truncation loop with 25
MIN_ENCODED_KEY_LENGTH = 25


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode()


def decode_key(text: str) -> bytes:
    """`serf keygen` format -> key bytes; ValueError for bad base64 or a bad length."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"invalid key {text!r}: not base64") from None
    if len(raw) not in (16, 24, 32):
        raise ValueError(
            f"invalid key: {len(raw)} bytes, a key must be 16, 24 or 32 bytes"
        )
    return raw


def load_keyring_file(path: str) -> list[bytes]:
    """Keys from a Serf keyring file (JSON list of base64 strings, primary first); [] if absent."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, list) or not all(isinstance(k, str) for k in data):
        raise ValueError(f"keyring file {path}: expected a JSON list of base64 keys")
    return [decode_key(k) for k in data]


def initial_keys(secret_keys: list[bytes], encrypt_key: str | None, keyring_file: str | None) -> list[bytes]:
    """The keys a node starts with: memberlist's configured keys, then the keyring file's,
    with `encrypt_key` (if any) first as primary; the file is rewritten with the result so it
    holds every key in use, as Serf's agent does."""
    key_list = list(secret_keys)
    if keyring_file:
        for k in load_keyring_file(keyring_file):
            if k not in key_list:
                key_list.append(k)
    if encrypt_key:
        primary = decode_key(encrypt_key)
        key_list = [primary] + [k for k in key_list if k != primary]
    if keyring_file and key_list:
        write_keyring_file(keyring_file, key_list)
    return key_list


def write_keyring_file(path: str, keys: list[bytes]) -> None:
    """Atomically rewrite the keyring file (0600, like Serf)."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump([encode_key(k) for k in keys], fh, indent=2)
    os.replace(tmp, path)


def answer_key_query(
    op: KeyOp, payload: bytes, keyring: Keyring | None, keyring_file: str | None
) -> msgs.KeyResponse:
    """Apply one key query to our keyring and build the answer Serf would send."""
    if op == "list":
        if keyring is None or keyring.primary is None:
            return msgs.KeyResponse(False, "Keyring is empty (encryption not enabled)")
        return msgs.KeyResponse(
            True, "", [encode_key(k) for k in keyring.keys], encode_key(keyring.primary)
        )
    try:
        req = msgs.decode_key_request(payload)
    except msgs.SerfDecodeError:
        return msgs.KeyResponse(False, "")
    if keyring is None:
        return msgs.KeyResponse(False, "No keyring to modify (encryption not enabled)")
    try:
        if op == "install":
            keyring.add(req.key)
        elif op == "use":
            keyring.use(req.key)
        elif op == "remove":
            keyring.remove(req.key)
        else:
            return msgs.KeyResponse(False, f"unknown key operation {op}")
    except ValueError as exc:
        return msgs.KeyResponse(False, str(exc))
    if keyring_file:
        try:
            write_keyring_file(keyring_file, list(keyring.keys))
        except OSError as exc:
            return msgs.KeyResponse(False, str(exc))
    return msgs.KeyResponse(True, "")


def answer_key_event(
    op: KeyOp, event: QueryEvent, keyring: Keyring | None, keyring_file: str | None, *, name: str, limit: int
) -> None:
    """Answer one internal key query as node `name`; a key list is cut to fit `limit` bytes
    once wrapped in its query response."""
    resp = answer_key_query(op, event.payload, keyring, keyring_file)
    if op == "list" and resp.result:

        def wrapped(p: bytes) -> int:
            return len(msgs.encode(msgs.QueryResponseMsg(event.ltime, event.id, name, 0, p)))

        resp = fit_list_response(resp, limit, wrapped)
    event.respond(msgs.encode_key_response(resp))


def fit_list_response(
    resp: msgs.KeyResponse, limit: int, wrap: Callable[[bytes], int]
) -> msgs.KeyResponse:
    """Truncate a list-keys answer until `wrap(encoded payload)` (the size of the full query
    response) fits `limit`, with Serf's message."""
    keys = list(resp.keys or [])
    actual = len(keys)
    n = min(actual, limit // MIN_ENCODED_KEY_LENGTH)
    cur = (
        resp
        if n == actual
        else msgs.KeyResponse(
            resp.result,
            f"truncated key list response, showing first {n} of {actual} keys",
            keys[:n],
            resp.primary_key,
        )
    )
    while True:
        if wrap(msgs.encode_key_response(cur)) <= limit or n == 0:
            return cur
        n -= 1
        cur = msgs.KeyResponse(
            resp.result,
            f"truncated key list response, showing first {n} of {actual} keys",
            keys[:n],
            resp.primary_key,
        )


@dataclass
class KeyOpResult:
    """Go's KeyResponse: what a cluster-wide key command found."""

    messages: dict[str, str] = field(default_factory=dict)
    num_nodes: int = 0
    num_resp: int = 0
    num_err: int = 0
    keys: dict[str, int] = field(default_factory=dict)
    primary_keys: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.num_err == 0 and self.num_resp >= self.num_nodes

    def error_text(self) -> str:
        return f"{self.num_resp - self.num_err}/{self.num_nodes} nodes reported success"


def aggregate_key_responses(items: list[QueryItem], num_nodes: int) -> KeyOpResult:
    out = KeyOpResult(num_nodes=num_nodes)
    for item in items:
        if item.ack:
            continue
        out.num_resp += 1
        try:
            resp = msgs.decode_key_response(item.payload)
        except msgs.SerfDecodeError:
            out.messages[item.from_] = "Failed to decode key response"
            out.num_err += 1
            continue
        if not resp.result:
            out.messages[item.from_] = resp.message
            out.num_err += 1
        elif resp.message:
            out.messages[item.from_] = resp.message
        for k in resp.keys or []:
            out.keys[k] = out.keys.get(k, 0) + 1
        if resp.primary_key:
            out.primary_keys[resp.primary_key] = (
                out.primary_keys.get(resp.primary_key, 0) + 1
            )
    return out
