"""memberlist's AES-GCM envelope and keyring (docs/wire.md §3.3, §4.3).

Envelope: version byte (0 = PKCS#7-padded plaintext, 1 = plain), 12-byte
nonce, ciphertext + 16-byte tag.  The primary (first) key encrypts; every key
is tried to decrypt, so keys can be rotated cluster-wide without a flag day.
``cryptography`` is imported only when a keyring is actually used.
"""

from __future__ import annotations

import base64
import binascii
import enum
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .fields import DecodeError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "NONCE_SIZE",
    "TAG_SIZE",
    "EnvelopeVersion",
    "Keyring",
    "decode_key",
    "encode_key",
    "envelope_size",
    "validate_key",
]

NONCE_SIZE = 12
TAG_SIZE = 16
_BLOCK = 16


class EnvelopeVersion(enum.IntEnum):
    """The envelope's first byte: memberlist protocol 1 pads, protocol 2 and up does not."""

    PADDED = 0
    PLAIN = 1


_MAX_VERSION = max(EnvelopeVersion)


def envelope_size(plain: int, version: int) -> int:
    """Bytes of the envelope of ``plain`` bytes: version byte, nonce, ciphertext (version 0
    pads it to the next 16-byte block, a whole block when aligned), tag.  With ``plain`` 0
    this is the most a packet grows by (29 bytes for version 1, 45 for version 0)."""
    if version == EnvelopeVersion.PADDED:
        plain = (plain // _BLOCK + 1) * _BLOCK
    return 1 + NONCE_SIZE + plain + TAG_SIZE


def validate_key(key: bytes) -> None:
    """AES-128/192/256 only, with memberlist's error text."""
    if len(key) not in (16, 24, 32):
        raise ValueError("key size must be 16, 24 or 32 bytes")


def encode_key(key: bytes) -> str:
    """Standard base64, as ``serf keygen`` prints and ``-encrypt`` takes."""
    return base64.b64encode(key).decode("ascii")


def decode_key(text: str) -> bytes:
    """Parse a base64 key (16, 24 or 32 bytes once decoded)."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"invalid base64 key: {e}") from None
    validate_key(key)
    return key


class Keyring:
    """Ordered keys, primary first; edited in place by Serf key management."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        self._keys: list[bytes] = []
        self._ciphers: dict[bytes, AESGCM] = {}
        for k in keys:
            self.add(bytes(k))

    @property
    def keys(self) -> list[bytes]:
        """Installed keys, primary first (a copy)."""
        return list(self._keys)

    @property
    def primary(self) -> bytes | None:
        return self._keys[0] if self._keys else None

    def add(self, key: bytes) -> None:
        """Install a key for decryption; the first key ever added becomes primary. No-op if present."""
        key = bytes(key)
        validate_key(key)
        if key not in self._keys:
            self._keys.append(key)

    def use(self, key: bytes) -> None:
        """Make an installed key the primary (the one used to encrypt)."""
        key = bytes(key)
        if key not in self._keys:
            raise ValueError("Requested key is not in the keyring")
        self._keys.remove(key)
        self._keys.insert(0, key)

    def remove(self, key: bytes) -> None:
        """Drop a non-primary key (absent keys are ignored, like Go)."""
        key = bytes(key)
        if self._keys and key == self._keys[0]:
            raise ValueError("Removing the primary key is not allowed")
        if key in self._keys:
            self._keys.remove(key)
            self._ciphers.pop(key, None)

    def _cipher(self, key: bytes) -> AESGCM:
        c = self._ciphers.get(key)
        if c is None:
            from cryptography.hazmat.primitives.ciphers.aead import (
                AESGCM,  # lazy: optional dependency
            )

            c = self._ciphers[key] = AESGCM(key)
        return c

    def encrypt(
        self, plain: bytes, aad: bytes, version: int = EnvelopeVersion.PLAIN, *, nonce: bytes | None = None
    ) -> bytes:
        """Envelope for ``plain`` under the primary key; ``nonce`` is for test vectors only."""
        if not self._keys:
            raise ValueError("the keyring is empty")
        try:
            version = EnvelopeVersion(version)
        except ValueError:
            raise ValueError(f"unsupported encryption version {version}") from None
        if nonce is None:
            nonce = os.urandom(NONCE_SIZE)
        elif len(nonce) != NONCE_SIZE:
            raise ValueError("nonce must be 12 bytes")
        if version == EnvelopeVersion.PADDED:
            pad = _BLOCK - len(plain) % _BLOCK
            plain = plain + bytes((pad,)) * pad
        ct = self._cipher(self._keys[0]).encrypt(nonce, plain, aad or None)
        return bytes((version,)) + nonce + ct

    def decrypt(self, env: bytes, aad: bytes) -> bytes:
        """Open an envelope with any installed key; ``DecodeError`` if none fits."""
        if not env:
            raise DecodeError("truncated", "empty encrypted payload")
        ver = env[0]
        if ver > _MAX_VERSION:
            raise DecodeError("version", f"unsupported encryption version {ver}")
        minimum = envelope_size(0, ver)
        if len(env) < minimum:
            raise DecodeError("truncated", "encrypted payload too small")
        if not self._keys:
            raise DecodeError("decrypt", "no keys installed")
        from cryptography.exceptions import InvalidTag

        nonce = env[1 : 1 + NONCE_SIZE]
        ct = env[1 + NONCE_SIZE :]
        for key in self._keys:
            try:
                plain = self._cipher(key).decrypt(nonce, ct, aad or None)
            except InvalidTag:
                continue
            if ver == EnvelopeVersion.PADDED:
                pad = plain[-1] if plain else 0
                if not 0 < pad <= min(_BLOCK, len(plain)):
                    raise DecodeError("decrypt", "bad padding")
                plain = plain[:-pad]
            return plain
        raise DecodeError("decrypt", "no installed key decrypts the payload")
