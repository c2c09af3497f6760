"""AES-GCM envelope: reference test vectors (fixed nonce), keyring semantics, rejection reasons."""

from __future__ import annotations

import pytest

from registry.memberlist.codec import DecodeError
from registry.memberlist.crypto import Keyring, decode_key, encode_key

H = bytes.fromhex
KEY = H("000102030405060708090a0b0c0d0e0f")
NONCE = H("a0a1a2a3a4a5a6a7a8a9aaab")
PING = H("0082a44e6f6465a66e6f64652d62a55365714e6f07")

VECTORS = [
    (
        1,
        b"",
        "01a0a1a2a3a4a5a6a7a8a9aaabaa049cf511ed56ace417d1656b701533369f6d6784baf11adddf6ca001149a9596794aff75",
    ),
    (
        0,
        b"",
        (
            "00a0a1a2a3a4a5a6a7a8a9aaabaa049cf511ed56ace417d1656b701533369f6d67841c36a42e1b7a90498684a347c7a420d934efde6c"
            "133f3464da93cd"
        ),
    ),
    (
        1,
        b"prod",
        "01a0a1a2a3a4a5a6a7a8a9aaabaa049cf511ed56ace417d1656b701533369f6d678487092a8bcef65c17929f65ae0074cfe2",
    ),
    (
        1,
        H("0a00000032"),
        "01a0a1a2a3a4a5a6a7a8a9aaabaa049cf511ed56ace417d1656b701533369f6d678405a5916eb748e60e29d4c034195dadf7",
    ),
]


@pytest.mark.parametrize(("version", "aad", "hexed"), VECTORS)
def test_reference_vectors(version: int, aad: bytes, hexed: str) -> None:
    kr = Keyring([KEY])
    assert kr.encrypt(PING, aad, version, nonce=NONCE).hex() == hexed
    assert kr.decrypt(H(hexed), aad) == PING


def test_random_nonce_and_overhead() -> None:
    kr = Keyring([KEY])
    a, b = kr.encrypt(PING, b""), kr.encrypt(PING, b"")
    assert a != b and len(a) == len(PING) + 29
    for n in range(40):
        env = kr.encrypt(bytes(n), b"", 0)
        assert len(env) == 29 + (n // 16 + 1) * 16
        assert kr.decrypt(env, b"") == bytes(n)


def test_all_keys_are_tried_and_primary_encrypts() -> None:
    k2 = bytes(range(32))
    old = Keyring([KEY])
    new = Keyring([k2, KEY])
    assert new.primary == k2 and new.keys == [k2, KEY]
    assert new.decrypt(old.encrypt(PING, b""), b"") == PING
    with pytest.raises(DecodeError) as ei:
        old.decrypt(new.encrypt(PING, b""), b"")
    assert ei.value.reason == "decrypt"
    new.use(KEY)
    assert new.primary == KEY
    assert old.decrypt(new.encrypt(PING, b""), b"") == PING
    new.remove(k2)
    assert new.keys == [KEY]


def test_keyring_management_errors() -> None:
    k2 = bytes(24)
    kr = Keyring([KEY, k2, KEY])
    assert kr.keys == [KEY, k2]
    kr.add(k2)
    assert kr.keys == [KEY, k2]
    with pytest.raises(ValueError, match="Removing the primary key is not allowed"):
        kr.remove(KEY)
    with pytest.raises(ValueError, match="Requested key is not in the keyring"):
        kr.use(bytes(32))
    with pytest.raises(ValueError, match="key size must be 16, 24 or 32 bytes"):
        kr.add(b"short")
    kr.remove(bytes(32))  # absent: no-op, like Go
    assert kr.keys == [KEY, k2]
    with pytest.raises(ValueError):
        Keyring([]).encrypt(PING, b"")


def test_rejections() -> None:
    kr = Keyring([KEY])
    good = kr.encrypt(PING, b"prod")
    cases = [
        (b"", b"", "truncated"),
        (b"\x02" + good[1:], b"prod", "version"),
        (good[:28], b"prod", "truncated"),
        (good, b"", "decrypt"),  # wrong AAD
        (good[:-1] + bytes((good[-1] ^ 1,)), b"prod", "decrypt"),
        (b"\x00" + bytes(40), b"", "truncated"),  # v0 needs at least one padded block
    ]
    for env, aad, reason in cases:
        with pytest.raises(DecodeError) as ei:
            kr.decrypt(env, aad)
        assert ei.value.reason == reason, (env.hex(), reason)


def test_bad_padding_is_rejected() -> None:
    kr = Keyring([KEY])
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    # A version-0 envelope whose plaintext ends in an invalid pad byte (0x00).
    ct = AESGCM(KEY).encrypt(NONCE, bytes(16), None)
    with pytest.raises(DecodeError) as ei:
        kr.decrypt(b"\x00" + NONCE + ct, b"")
    assert ei.value.reason == "decrypt"


def test_key_text_form() -> None:
    text = encode_key(bytes(range(32)))
    assert text == "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
    assert decode_key(text) == bytes(range(32))
    for bad in ("not base64!", encode_key(b"12345")):
        with pytest.raises(ValueError):
            decode_key(bad)
