"""``registry -config-file PATH``: the server's flags from a JSON or TOML file (as ``consul agent -config-file``).

Why the file becomes argv items placed BEFORE the real command line, rather than a second source of
settings merged by hand: argparse then does every conversion and check exactly as for a flag (one code
path, one set of messages), a flag given on the command line wins because argparse keeps the last value,
and ``-adapter`` (an append flag) is the file's adapters followed by the command line's, so one adapter of
a name across both is the loader's usual "given twice" error. Only what argparse cannot see is checked
here, and named after the file: the file itself (unreadable, not UTF-8, malformed: the parser's line and
column), an unknown key, a value of the wrong JSON/TOML type, an adapter table that cannot be written as
one ``-adapter`` spec. A later check (an address, flags that go together) names the flag and, when only
the file gave it, the file (`parse_with_config_file`).

The file, JSON::

    {"id": "registry-1", "bind": ":7370", "http_addr": ":8080", "only-passing": true,
     "registries": ["10.0.0.1:7370", "10.0.0.2:7370"],
     "adapter": ["file:path=/etc/registry/external.json",
                 {"name": "etcd", "endpoints": ["10.0.0.1:2379", "10.0.0.2:2379"], "prefix": "/services/"}]}

or TOML (``tomllib`` on 3.11+, ``tomli`` on 3.10 if installed)::

    id = "registry-1"
    only-passing = true
    [[adapter]]
    name = "etcd"
    endpoints = ["10.0.0.1:2379", "10.0.0.2:2379"]

Keys are the server's flag names (``http-addr``; ``http_addr`` too); values are strings, a number where
the flag is a number of seconds or a duration, true/false for a switch (``only-passing``), a list of
strings for a comma-separated flag (``registries``, ``wan-join``, ``wan-export``) and a list for
``adapter`` whose items are spec strings or tables (``name`` plus options; a list option is joined with
",", numbers and booleans become their text). Only the server reads the file; the subcommands do not.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from registry.addresses import UsageError
from registry.tomlread import toml_loads

__all__ = ["FLAG", "file_argv", "find_path", "parse_with_config_file", "with_config_file"]

FLAG = "config-file"
_FORMS = (f"-{FLAG}", f"--{FLAG}")
T = TypeVar("T")

#: Flags whose value may be a JSON/TOML number: seconds (leave-timeout) or a duration that takes seconds.
_NUMBERS = frozenset({"leave-timeout", "ttl-default", "wan-mirror-ttl"})
#: Flags whose value is comma-separated: a list of strings is joined with ",".
_COMMA_LISTS = frozenset({"registries", "wan-join", "wan-export"})


def parse_with_config_file(argv: Sequence[str], parser: argparse.ArgumentParser,
                           check: Callable[[argparse.Namespace], T]) -> T:
    """``check(parser.parse_args(argv with the file's flags in front))``, and a `UsageError` of ``check``
    that names a flag only the file gave says so: ``-bind: bad address ... (from -config-file PATH)``.

    Why: argparse's own errors about the file's values already name the file (`file_argv`), but the
    checks made after parsing (addresses, flags that go together) only know the flag; an operator who
    gave that flag nowhere on the command line would look for it there."""
    path = find_path(argv)
    ns = parser.parse_args(list(argv) if path is None else [*file_argv(path, parser), *argv])
    try:
        return check(ns)
    except UsageError as exc:
        flag = re.match(r"-([a-z][a-z0-9-]*)", str(exc))
        if path is None or flag is None or flag.group(1) not in _file_flags(path, parser) - _given(argv):
            raise
        raise UsageError(f"{exc} (from -{FLAG} {path})") from None


def _file_flags(path: str, parser: argparse.ArgumentParser) -> set[str]:
    """The flag names the file sets (read again: the error path only, and the file parsed a moment ago)."""
    flags = set(_flags(parser))
    return {k.replace("_", "-") for k in _read(path)} & flags


def _given(argv: Sequence[str]) -> set[str]:
    """The flag names given on the command line (any Go-style spelling)."""
    return {item.lstrip("-").partition("=")[0] for item in argv if item.startswith("-")}


def with_config_file(argv: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """``argv`` with the ``-config-file``'s flags in front (``argv`` unchanged without the flag)."""
    path = find_path(argv)
    return list(argv) if path is None else [*file_argv(path, parser), *argv]


def find_path(argv: Sequence[str]) -> str | None:
    """The ``-config-file`` value in ``argv`` (any of the Go-style spellings), None without one.

    A flag with no value is left to argparse ("expected one argument"); given twice is an error."""
    found: list[str] = []
    i = 0
    while i < len(argv):
        item = argv[i]
        if item == "--":
            break
        name, eq, value = item.partition("=")
        if name in _FORMS:
            if eq:
                found.append(value)
            elif i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                found.append(argv[i + 1])
                i += 1
            else:
                return None
        i += 1
    if len(found) > 1:
        raise UsageError(f"-{FLAG} given twice (one file; flags on the command line override it)")
    if found and not found[0].strip():
        raise UsageError(f"-{FLAG}: empty path")
    return found[0] if found else None


def file_argv(path: str, parser: argparse.ArgumentParser) -> list[str]:
    """The file's settings as ``--flag=value`` items for ``parser``; `UsageError` (one line) if wrong."""
    doc = _read(path)
    where = f"-{FLAG} {path}"
    flags = _flags(parser)
    seen: dict[str, str] = {}
    items: list[str] = []
    for raw_key, value in doc.items():
        key = raw_key.replace("_", "-")
        if key in seen:
            raise UsageError(f"{where}: {seen[key]!r} and {raw_key!r} are the same flag")
        seen[key] = raw_key
        action = flags.get(key)
        if action is None:
            raise UsageError(f"{where}: unknown key {raw_key!r} (keys are the server's flag names)")
        items += _flag_items(f"{where}: {raw_key}", key, action, value)
    # the values' own checks (choices, numbers) as argparse makes them, but naming the file
    try:
        parser.parse_args(items)
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}") from None
    return items


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Flag name ("http-addr") -> its action; not help, not -config-file itself (no nesting)."""
    flags: dict[str, argparse.Action] = {}
    for action in parser._actions:  # argparse has no public list of its flags
        if action.dest == "help" or not action.option_strings:
            continue
        name = max(action.option_strings, key=len).lstrip("-")
        if name != FLAG:
            flags[name] = action
    return flags


def _flag_items(where: str, key: str, action: argparse.Action, value: Any) -> list[str]:
    if action.nargs == 0:  # a switch (store_true)
        if not isinstance(value, bool):
            raise UsageError(f"{where}: expected true or false, not {_kind(value)}")
        return [f"--{key}"] if value else []
    if isinstance(action, argparse._AppendAction):  # -adapter, the one repeatable flag
        if not isinstance(value, list):
            raise UsageError(f"{where}: expected a list (of \"NAME:key=value,...\" strings or tables), not {_kind(value)}")
        return [f"--{key}={_adapter_spec(f'{where}[{i}]', item)}" for i, item in enumerate(value)]
    if isinstance(value, str):
        return [f"--{key}={value}"]
    if key in _NUMBERS and _is_number(value):
        return [f"--{key}={_number(value)}"]
    if key in _COMMA_LISTS and isinstance(value, list) and all(isinstance(x, str) for x in value):
        return [f"--{key}={','.join(value)}"]
    expected = "a string"
    if key in _NUMBERS:
        expected += " or a number"
    if key in _COMMA_LISTS:
        expected += " or a list of strings"
    raise UsageError(f"{where}: expected {expected}, not {_kind(value)}")


def _adapter_spec(where: str, item: Any) -> str:
    """One ``adapter`` item as a ``-adapter`` spec, checked by the loader's own parser."""
    from registry.adapters.base import AdapterError
    from registry.adapters.loader import parse_spec

    if isinstance(item, str):
        try:
            parse_spec(item)
        except AdapterError as exc:
            raise UsageError(f"{where}: {exc}") from None
        return item
    if not isinstance(item, dict):
        raise UsageError(f"{where}: expected \"NAME:key=value,...\" or a table with a name, not {_kind(item)}")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip() or ":" in name or name != name.strip():
        raise UsageError(f"{where}: name must be the adapter's name (a non-empty string without ':'), not {name!r}")
    options: dict[str, str] = {}
    for k, v in item.items():
        if k == "name":
            continue
        if not k.isidentifier():
            raise UsageError(f"{where}: {k!r} is not an option name")
        options[k] = _option_text(f"{where}.{k}", v)
    spec = name + (":" + ",".join(f"{k}={v}" for k, v in options.items()) if options else "")
    # A value with ",key=", an empty list item or edge spaces would not come back as given: say so.
    try:
        parsed = parse_spec(spec)[1]
    except AdapterError:
        parsed = {}
    for k, v in options.items():
        if parsed.get(k) != v:
            raise UsageError(f"{where}.{k}: {v!r} cannot be passed as one option (a ',' before 'key=', an empty "
                             "list item or spaces at either end)")
    return spec


def _option_text(where: str, value: Any) -> str:
    if isinstance(value, list):
        return ",".join(_scalar_text(f"{where}[{i}]", x) for i, x in enumerate(value))
    return _scalar_text(where, value)


def _scalar_text(where: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if _is_number(value):
        return _number(value)
    raise UsageError(f"{where}: expected a string, number, true/false or a list of them, not {_kind(value)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: int | float) -> str:
    return str(value) if isinstance(value, int) else repr(value)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{'true' if value else 'false'}"
    if _is_number(value):
        return f"the number {_number(value)}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"  # TOML dates and times


def _read(path: str) -> dict[str, Any]:
    """The file's top-level table; `UsageError` naming the file (and the parser's line) if it has none."""
    where = f"-{FLAG} {path}"
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in (".json", ".toml"):
        raise UsageError(f"{where}: expected a .json or .toml file")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise UsageError(f"{where}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{where}: not UTF-8 text") from None
    doc: Any
    if suffix == ".json":
        import json

        try:
            doc = json.loads(text, object_pairs_hook=_no_duplicates)
        except ValueError as exc:  # json.JSONDecodeError (line and column) or a key given twice
            raise UsageError(f"{where}: not valid JSON: {exc}") from None
    else:
        loads = toml_loads()
        if loads is None:
            raise UsageError(f"{where}: TOML needs Python 3.11+ or `pip install tomli`; use JSON")
        try:
            doc = loads(text)
        except ValueError as exc:  # TOMLDecodeError, "(at line N, column M)"
            raise UsageError(f"{where}: not valid TOML: {exc}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{where}: expected a table of flag names to values at the top, not {_kind(doc)}")
    return doc


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON objects keep the last of a key given twice; a config file's typo must not pass silently."""
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise ValueError(f"key {key!r} given twice")
        doc[key] = value
    return doc


