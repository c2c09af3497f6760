"""The flags of the HTTP front on a real `registry` process: -http-addr (its address on the start line),
-http-token-file, -ttl-default; each bad flag one line and exit 2; and a registry without -http-addr never
imports aiohttp nor the web page's modules (with it, it does: the check can fail)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from registry.cli import main
from tests.e2e.helpers import Registry, procs, wait_for
from tests.footprint import modules_child


def _http(method: str, url: str, body: bytes | None = None, token: str = "") -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(url, data=body, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_registry_process_serves_http(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("  tok-123\n")
    with procs() as ps:
        r = Registry(ps, tmp_path, "http-proc", (), "-http-addr", "127.0.0.1:0", "-http-token-file",
                     str(token_file), "-ttl-default", "45s")
        base = f"http://{r.http}"
        wait_for(lambda: _http("GET", f"{base}/healthz")[0] == 200, 60, what="healthz 200")
        body = b'{"addr": "10.0.0.1:80"}'
        assert _http("PUT", f"{base}/v1/services/web/a", body)[0] == 401
        assert _http("PUT", f"{base}/v1/services/web/a", body, token="nope")[0] == 403
        status, entry = _http("PUT", f"{base}/v1/services/web/a", body, token="tok-123")
        assert status == 200 and entry["ttl_ms"] == 45_000, entry
        status, match = _http("GET", f"{base}/v1/match/web/k")
        assert status == 200 and match["services"][0]["id"] == "a"  # type: ignore[index]
        # -log-level debug (the helper's): aiohttp's access log, through the registry's log
        wait_for(lambda: r.proc.logged('"logger": "aiohttp.access"'), 30, what="an access log line")


@pytest.mark.parametrize(("args", "words"), [
    (["-http-addr", "127.0.0.1:nope"], "-http-addr: bad address"),
    (["-http-token", "t"], "-http-token needs -http-addr"),
    (["-http-addr", ":0", "-http-token", "t", "-http-token-file", "f"], "give one of them"),
    (["-http-addr", ":0", "-http-token-file", "/nonexistent/token"], "-http-token-file: cannot read"),
    (["-http-addr", ":0", "-http-token-file", "EMPTY"], "is empty"),
    (["-http-addr", ":0", "-http-token", "has space"], "printable ASCII without spaces"),
    (["-ttl-default", "forever"], "-ttl-default: duration 'forever'"),
    (["-ttl-default", "0.1s"], "-ttl-default: '0.1s' out of range"),
], ids=["addr", "token-alone", "both", "missing-file", "empty-file", "space", "ttl-word", "ttl-short"])
def test_bad_http_flags_are_one_line_exit_2(args: list[str], words: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.write_text(" \n")
    args = [str(empty) if a == "EMPTY" else a for a in args]
    assert main(["-id", "x", "-bind", "127.0.0.1:0", "-addr", "127.0.0.1:0", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err


#: the web page's modules (issue 16): its timeline, ring views and worker come with the front only
PAGE = ["registry.http.pool", "registry.http.ui", "registry.offload", "registry.ring.view", "registry.timeline"]


@pytest.mark.parametrize("http", [False, True], ids=["without", "with"])
def test_aiohttp_is_imported_only_with_http_addr(http: bool) -> None:
    args = ["-id", "fp", "-bind", "127.0.0.1:0", "-addr", "127.0.0.1:0"]
    if http:
        args += ["-http-addr", "127.0.0.1:0"]
    with modules_child(*args) as child:
        loaded = child.modules()
        assert any(m.split(".")[0] == "aiohttp" for m in loaded) == http, child.text()
        assert sorted(m for m in loaded if m in PAGE) == (PAGE if http else []), child.text()
        if http:  # -log-level info: no access log line for a request
            assert _http("GET", f"http://{child.started['http']}/healthz")[0] == 200
    assert not any("aiohttp.access" in x for x in child.log), child.text()
