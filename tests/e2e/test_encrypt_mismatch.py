"""A join across different `-encrypt` keys says so, from both SDK drivers and from a registry.

A key mismatch never shows as such on the wire: the peer cannot read our stream and answers
with an error we cannot read either (encrypted with its key, or plain while we verify).  The
message used to be "reply refused (see the node's stats/logs)"; it must name the key.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.register import AsyncRegister, Register, RegisterError

from .helpers import Registry, procs, wait_for

KEY_A = base64.b64encode(os.urandom(32)).decode()
KEY_B = base64.b64encode(os.urandom(16)).decode()


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, Registry]]:
    """`keyed` gossips with KEY_A; `plain` has no key and keeps trying to join `keyed`."""
    tmp: Path = tmp_path_factory.mktemp("enc")
    with procs() as ps:
        keyed = Registry(ps, tmp, "reg-keyed", (), "-encrypt", KEY_A)
        plain = Registry(ps, tmp, "reg-plain", (keyed.gossip,))
        yield keyed.wait_ready(), plain


def _register(seed: str, key: str | None) -> Register:
    return Register("svc-enc", "127.0.0.1:0", "", seed, "enc", "127.0.0.1:8080", profile="fast", encrypt=key)


def test_register_with_another_key_is_told_to_check_the_key(pool: tuple[Registry, Registry]) -> None:
    keyed, _ = pool
    with pytest.raises(RegisterError, match=r"did not accept our encrypted stream.*same -encrypt key"):
        _register(keyed.gossip, KEY_B).start()


async def test_async_register_with_another_key_is_told_to_check_the_key(pool: tuple[Registry, Registry]) -> None:
    keyed, _ = pool
    reg = AsyncRegister("svc-enc", "127.0.0.1:0", "", keyed.gossip, "enc", "127.0.0.1:8080", profile="fast",
                        encrypt=KEY_B)
    with pytest.raises(RegisterError, match=r"did not accept our encrypted stream.*same -encrypt key"):
        await reg.start()


def test_register_without_a_key_is_told_the_registry_encrypts(pool: tuple[Registry, Registry]) -> None:
    keyed, _ = pool
    with pytest.raises(RegisterError, match=r"encrypts gossip and we have no key.*same -encrypt key"):
        _register(keyed.gossip, None).start()


def test_register_with_a_key_is_told_the_registry_has_none(pool: tuple[Registry, Registry]) -> None:
    _, plain = pool
    with pytest.raises(RegisterError, match=r"answered unencrypted.*same key"):
        _register(plain.gossip, KEY_B).start()


def test_registry_without_the_key_logs_why_its_join_fails(pool: tuple[Registry, Registry]) -> None:
    _, plain = pool
    line = wait_for(lambda: next((ln for ln in plain.proc.output().splitlines() if "join failed" in ln), None),
                    30, what="reg-plain logging its failed join")
    assert "encrypts gossip and we have no key" in line, line
