"""Command-line plumbing shared by the server command (`cli.py`) and its ops subcommands (`ops.py`).

Go-style flags (`-name`, `--name`, `-name=value`), a usage error as ONE line and exit status 2 (as argparse
would, without its usage dump), 1 for a runtime error; the flag checks both commands use. Its own module so
that `cli.py` (which dispatches to `ops.py`) and `ops.py` depend on it rather than on each other.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any, NoReturn

from registry.addresses import HostPort, UsageError, dial_problem

__all__ = [
    "DEFAULT_RPC_PORT",
    "EXIT_OK",
    "EXIT_RUNTIME",
    "EXIT_USAGE",
    "PROG",
    "Parser",
    "add_flag",
    "dialable",
    "positive_seconds",
    "print_error",
    "readable_file",
]

PROG = "registry"
EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2
DEFAULT_RPC_PORT = 9800


class Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so errors stay one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def add_flag(parser: argparse.ArgumentParser, name: str, **kwargs: Any) -> None:
    """Accept `-name`, `--name` and (argparse does it) `-name=value`, like Go's flag package."""
    parser.add_argument(f"-{name}", f"--{name}", dest=name.replace("-", "_"), **kwargs)


def positive_seconds(text: str) -> float:
    """argparse type of the duration flags: a positive, finite number of seconds.

    Checked at parse time: `-timeout 0` used to be accepted and then fail every call with
    DEADLINE_EXCEEDED ("no registry answered"), which sends the operator looking at the network."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def readable_file(path: str, flag: str) -> str:
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise UsageError(f"{flag}: cannot read {path!r}")
    return path


def dialable(hp: HostPort, flag: str, text: str) -> HostPort:
    """An address given to others to dial: no wildcard host, no port 0 (both mean "here, any")."""
    why = dial_problem(hp)
    if why is not None:
        hint = "give the real port" if hp.port == 0 else "give an address the others can reach"
        raise UsageError(f"{flag}: {text!r}: {why}; {hint}")
    return hp


def print_error(message: str) -> None:
    line = " ".join(message.split())
    print(f"{PROG}: {line}", file=sys.stderr, flush=True)
