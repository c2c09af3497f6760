"""A bug in this process's handling of the registry's join reply is not "no registry answered".

The registry (a real subprocess) answers the join; the service's own Serf core then raises while
merging the reply (a bug, injected here into the in-process Serf only).  Before issue 13 the
core counted it silently and `start()` raised "no registry answered at ...: reply refused (see
the node's stats/logs)", sending the operator to look at the network and the registry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from registry.register import AsyncRegister, Register, RegisterError
from registry.serf.core import Serf

from .helpers import Registry, procs

# The bug is logged by this process's node, once per kind: declared, so tests/logcheck.py's
# fixture checks it was logged (and nothing else was) instead of failing the test for it.
pytestmark = pytest.mark.handler_errors("MergeBug")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with procs() as ps:
        yield Registry(ps, tmp_path_factory.mktemp("reg"), "reg-handler-bug").wait_ready()


class MergeBug(RuntimeError):
    pass


def _buggy_merge(self: Serf, buf: bytes, join: bool) -> None:
    raise MergeBug("injected: merging the registry's state fails")


@pytest.fixture
def merge_broken(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """This process's Serf fails on every push/pull state it merges; returns the log capture."""
    caplog.set_level(logging.ERROR)
    monkeypatch.setattr(Serf, "merge_remote_state", _buggy_merge)
    return caplog


def _check(exc: RegisterError, caplog: pytest.LogCaptureFixture) -> None:
    text = str(exc)
    assert "no registry answered" not in text, text
    assert "bug in this process" in text and "MergeBug" in text, text
    logged = [r for r in caplog.records if r.exc_info is not None and r.exc_info[0] is MergeBug]
    assert len(logged) == 1, [r.getMessage() for r in caplog.records]  # with its traceback, once


def test_register_reports_a_handler_bug_as_a_bug(registry: Registry, merge_broken: pytest.LogCaptureFixture) -> None:
    reg = Register("svc-bug", "127.0.0.1:0", "", registry.gossip, "g", "127.0.0.1:1", profile="fast")
    with pytest.raises(RegisterError) as info:
        reg.start()
    _check(info.value, merge_broken)
    reg.stop()


def test_async_register_reports_a_handler_bug_as_a_bug(
    registry: Registry, merge_broken: pytest.LogCaptureFixture
) -> None:
    reg = AsyncRegister("svc-abug", "127.0.0.1:0", "", registry.gossip, "g", "127.0.0.1:1", profile="fast")

    async def run() -> RegisterError:
        with pytest.raises(RegisterError) as info:
            await reg.start()
        await reg.stop()
        return info.value

    _check(asyncio.run(run()), merge_broken)
