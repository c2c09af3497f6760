"""Bugs cannot hide in a test that passes: every process's log is read for them.

A running node does not stop for an exception inside a message handler or timer (one bad message,
repeated by every peer, would take the whole pool down): `registry/memberlist/handler_errors.py`
counts it (`drop.handler_error`, `timer.errors`, `gossip.errors`) and logs the first of each kind
with its traceback.  A test that only looks at answers would pass on such a bug, so:

- subprocesses (tests/e2e/helpers.py `procs()`, the chaos pool, tests/h2/wirepeer.py
  `ServerProcess`, tests/registry/test_native_limits.py's children) have their captured output
  read when they stopped with `check_outputs({name: text})`, and the test fails naming the process
  and the line;
- in-process nodes (Register, AsyncRegister, RegistryServer, Serf agents in the test process) log
  through `logging`: the autouse fixture `no_handler_errors` collects those records and fails the
  test at teardown.  A test that injects a handler bug on purpose declares its exception type with
  `@pytest.mark.handler_errors("MergeBug")`; then that bug must be seen, and no other.

Besides the handler-error line, the checks catch the drivers' "machine raised in <call>" (a
protocol core that raised into its driver, counted as runner.exception.<call>: a core never raises
outside strict mode) and what asyncio and threading print for an exception nobody handled ("Task
exception was never retrieved", "Exception in callback", "Exception in thread"): also bugs, also
invisible to a test that only looks at answers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping

import pytest

__all__ = ["HANDLER_ERROR", "MACHINE_RAISED", "HandlerErrorRecords", "bugs_in", "check_outputs", "no_handler_errors"]

#: The line handler_errors.py logs for the first failure of a kind (tests/test_logcheck.py pins
#: it to the real HandlerErrors' output, so a change of wording there cannot blind this check).
HANDLER_ERROR = re.compile(
    r"failed: (?P<exc>[\w.]+): .*?\(counted in (?P<counter>[\w.]+); later failures of this kind are only counted\)"
)
#: The line a driver logs when its protocol core raised (registry/memberlist/driver.py `_guard`).
MACHINE_RAISED = re.compile(r"machine raised in [\w.]+: (?P<exc>[\w.]+)\(")
#: What asyncio's and threading's default handlers print for an exception nobody handled.
UNHANDLED = re.compile(r"Task exception was never retrieved|Exception in callback |Exception in thread ")


def bugs_in(text: str) -> list[str]:
    """The lines of a process's output that report a bug (handler error or unhandled exception),
    each cut to 300 characters: enough to name it, the whole log is in the test's tmp_path."""
    return [line[:300] for line in text.splitlines()
            if HANDLER_ERROR.search(line) or MACHINE_RAISED.search(line) or UNHANDLED.search(line)]


def check_outputs(outputs: Mapping[str, str]) -> None:
    """AssertionError naming every process (key: its log's name) whose output (value) reports a
    bug: a handler error is counted and logged, never fatal, so a test that only looks at answers
    would pass on it.  Called after the processes stopped, so their whole output is read."""
    found = {name: bugs for name, text in outputs.items() if (bugs := bugs_in(text))}
    if found:
        raise AssertionError(f"a process under test logged a bug (whole logs in the test's tmp_path): {found}")


class HandlerErrorRecords(logging.Handler):
    """Keeps the log records of this process that report a handler error or a core that raised."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)  # the drivers log a raising core as a warning
        self.found: list[tuple[str, str]] = []  # (exception type name, message)

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        m = HANDLER_ERROR.search(message) or MACHINE_RAISED.search(message)
        if m is not None:
            self.found.append((m["exc"], message))


def _expected(item: pytest.Item) -> set[str]:
    return {str(name) for mark in item.iter_markers("handler_errors") for name in mark.args}


@pytest.fixture(autouse=True)
def no_handler_errors(request: pytest.FixtureRequest) -> Iterator[HandlerErrorRecords]:
    """Fails the test if a node in this process logged a handler error it did not declare, or
    never logged one it declared (see the module docstring)."""
    records = HandlerErrorRecords()
    root = logging.getLogger()
    root.addHandler(records)
    try:
        yield records
    finally:
        root.removeHandler(records)
    expected = _expected(request.node)
    unexpected = [message for exc, message in records.found if exc.rsplit(".", 1)[-1] not in expected]
    missing = expected - {exc.rsplit(".", 1)[-1] for exc, _ in records.found}
    if unexpected:
        pytest.fail(f"a node in the test process logged a handler error (a bug): {unexpected}", pytrace=False)
    if missing:
        pytest.fail(f"declared handler errors never logged: {sorted(missing)}", pytrace=False)
