"""``-adapter NAME:key=value,...`` parsing (loader.parse_spec): the shared contract of every adapter's
options. A value may hold commas (an item without "=" continues the previous value, as etcdctl's
``--endpoints a:2379,b:2379`` reads); everything ambiguous is one line of `AdapterError`."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.adapters.base import AdapterError
from registry.adapters.loader import parse_spec
from registry.cli import main

BASE = ["-id", "x", "-bind", "127.0.0.1:0", "-addr", "127.0.0.1:0"]


@pytest.mark.parametrize(("spec", "parsed"), [
    ("file", ("file", {})),
    ("file:", ("file", {})),
    ("file:path=/etc/s.json,poll=2", ("file", {"path": "/etc/s.json", "poll": "2"})),
    (" file : path = /a , poll = 2 ", ("file", {"path": "/a", "poll": "2"})),
    ("etcd:endpoints=10.0.0.1:2379,10.0.0.2:2379,prefix=/s/",
     ("etcd", {"endpoints": "10.0.0.1:2379,10.0.0.2:2379", "prefix": "/s/"})),
    ("etcd:prefix=/s/,endpoints=a:1,b:2,c:3", ("etcd", {"prefix": "/s/", "endpoints": "a:1,b:2,c:3"})),
    ("x:url=http://h/?a=b", ("x", {"url": "http://h/?a=b"})),  # only the first "=" splits
    ("x:empty=", ("x", {"empty": ""})),
], ids=["bare", "colon", "two", "spaces", "endpoints", "endpoints-last", "eq-in-value", "empty-value"])
def test_parse_spec(spec: str, parsed: tuple[str, dict[str, str]]) -> None:
    assert parse_spec(spec) == parsed


@pytest.mark.parametrize(("spec", "words"), [
    (":path=a", "no adapter name"),
    ("file:path", "-adapter file: 'path' is not key=value"),
    ("etcd:10.0.0.1:2379,endpoints=x", "-adapter etcd: '10.0.0.1:2379' is not key=value"),
    ("file:path=a,path=b", "-adapter file: path given twice"),
    ("etcd:endpoints=a,b,endpoints=c", "-adapter etcd: endpoints given twice"),
    ("file:=a", "-adapter file: empty key in '=a'"),
    ("file:path=a,=b", "-adapter file: empty key in '=b'"),
    ("file:no-key=a", "-adapter file: 'no-key' is not a key"),
    ("file:path=a,,poll=1", "-adapter file: empty item"),
    ("file:path=a,", "-adapter file: empty item"),
], ids=["no-name", "no-eq-first", "value-first", "twice", "twice-after-list", "empty-key", "empty-key-later",
        "bad-key", "double-comma", "trailing-comma"])
def test_parse_spec_errors_are_one_line(spec: str, words: str) -> None:
    with pytest.raises(AdapterError) as e:
        parse_spec(spec)
    assert words in str(e.value) and "\n" not in str(e.value), e.value


def test_a_comma_value_reaches_the_adapter(capsys: pytest.CaptureFixture[str]) -> None:
    """Through the real CLI: the file adapter gets path="a,b" (one value), not a second item to refuse."""
    assert main([*BASE, "-adapter", "file:path=a,b,poll=soon"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "-adapter file: poll='soon' is not a number of seconds" in err, err


@pytest.mark.parametrize(("value", "words"), [
    ("tests.adapters.hang_adapter:NoSuchClass", "cannot load tests.adapters.hang_adapter:NoSuchClass: AttributeError: "),
    ("tests.adapters.no_such_module:X", "cannot load tests.adapters.no_such_module:X: No module named"),
], ids=["no-attribute", "no-module"])
def test_a_wrong_entry_point_is_one_line(value: str, words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A third party's entry point naming a missing object: a usage error naming it, exit 2 (it was an
    AttributeError, exit 1, found by the example package's test with a misspelt entry point)."""
    dist = tmp_path / "broken_adapter-0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-adapter\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(f"[registry.adapters]\nbroken = {value}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main([*BASE, "-adapter", "broken"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"-adapter broken: {words}" in err, err
