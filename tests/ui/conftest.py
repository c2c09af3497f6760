"""Fixtures of the browser tests: one headless Chromium per module (`browser`: starting it costs ~1 s),
a fresh page per test (`page`), and a real pool (`pool`): a registry subprocess with the HTTP front, a
second registry joined to it, and a group of three gossiping services (examples/webservice.py
subprocesses) that no test changes. Tests that change a group start their own services in their own group.

Every test here is marked `browser` (tests/conftest.py: skipped without chromium and chromedriver, failed
when CI=true)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest

from tests.e2e.helpers import TOLERANT, Proc, Registry, Service, procs, wait_for

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

    from tests.ui.browser import UiPage

#: The group of three gossip services no test changes.
STABLE = "web3"


def http_json(base: str, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    """(status, decoded JSON) of one request to `base` (http://host:port)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw, status = resp.read(), int(resp.status)
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    return status, (json.loads(raw) if raw else None)


def put_many(base: str, group: str, count: int, replicas: int, prefix: str = "big") -> None:
    """`count` TTL services on one keep-alive connection (one request at a time, as a client would)."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        for i in range(count):
            body = json.dumps({"addr": f"10.4.{i // 250}.{i % 250}:80", "ttl": "600s", "replicas": replicas})
            conn.request("PUT", f"/v1/services/{group}/{prefix}-{i:04d}", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            answer = resp.read()
            assert resp.status == 200, f"PUT {prefix}-{i:04d}: {resp.status} {answer[:200]!r}"
    finally:
        conn.close()


@dataclass
class Pool:
    """The registries (the first serves HTTP) and what the tests start in them."""

    tmp: Path
    ps: list[Proc]
    registries: list[Registry] = field(default_factory=list)
    stable: list[Service] = field(default_factory=list)

    @property
    def first(self) -> Registry:
        return self.registries[0]

    @property
    def base(self) -> str:
        return "http://" + self.first.http

    @property
    def seeds(self) -> list[str]:
        return [r.gossip for r in self.registries]

    def services(self, group: str, *ids: str) -> list[Service]:
        """Gossip services `ids` in `group`, started together, each waited for until registered."""
        started = [Service(self.ps, self.tmp, i, self.seeds[:1], group=group, profile=TOLERANT) for i in ids]
        for s in started:
            s.wait_registered()
        return started

    def get(self, path: str) -> Any:
        status, doc = http_json(self.base, "GET", path)
        assert status == 200, f"GET {path}: {status} {doc}"
        return doc

    def ring(self, group: str) -> dict[str, Any]:
        doc: dict[str, Any] = self.get(f"/v1/ring/{quote(group, safe='')}")
        return doc

    def put_ttl(self, group: str, ident: str, addr: str, ttl: str = "300s", **fields: Any) -> None:
        status, doc = http_json(self.base, "PUT", f"/v1/services/{quote(group, safe='')}/{quote(ident, safe='')}",
                                {"addr": addr, "ttl": ttl, **fields})
        assert status == 200, f"PUT {group}/{ident}: {status} {doc}"

    def wait_ring(self, group: str, ids: set[str], timeout: float = 30.0) -> dict[str, Any]:
        """The group's /v1/ring once the services on its ring are exactly `ids` (it lists a critical one
        too, with `on_ring` false)."""
        def ready() -> dict[str, Any] | None:
            status, doc = http_json(self.base, "GET", f"/v1/ring/{quote(group, safe='')}")
            on = {s["id"] for s in doc["services"] if s.get("on_ring", True)} if status == 200 else None
            return doc if on == ids else None

        found: dict[str, Any] = wait_for(ready, timeout, what=f"{group} holding {sorted(ids)} on /v1/ring")
        return found


def start_registry(ps: list[Proc], tmp: Path, ident: str, seeds: list[str], *extra: str) -> Registry:
    return Registry(ps, tmp, ident, seeds, *extra, profile=TOLERANT)


@contextmanager
def pool_of_one(tmp: Path, ident: str, *extra: str) -> Iterator[Pool]:
    """Another registry with the HTTP front, alone in its own pool (its processes stopped and their logs
    checked at the end)."""
    with procs() as ps:
        p = Pool(tmp, ps)
        p.registries.append(start_registry(ps, tmp, ident, [], "-http-addr", "127.0.0.1:0", *extra))
        p.first.wait_ready()
        yield p


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    tmp = tmp_path_factory.mktemp("ui-pool")
    with procs() as ps:
        p = Pool(tmp, ps)
        first = start_registry(ps, tmp, "reg-ui-1", [], "-http-addr", "127.0.0.1:0")
        p.registries.append(first)
        second = start_registry(ps, tmp, "reg-ui-2", [first.gossip])
        p.registries.append(second)
        p.stable = [Service(ps, tmp, f"{STABLE}-{i}", [first.gossip], group=STABLE, profile=TOLERANT)
                    for i in (1, 2, 3)]
        first.wait_ready()
        second.wait_ready()
        for s in p.stable:
            s.wait_registered()
        p.wait_ring(STABLE, {s.id for s in p.stable})
        yield p
        for proc in ps:  # all leave at once; procs() then waits for each and checks its log
            proc.signal(signal.SIGTERM)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    try:
        from tests.ui.browser import start_browser
    except ImportError as exc:  # selenium is in the test extra; a bare checkout may lack it
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"selenium is required when CI=true ({exc})", pytrace=False)
        pytest.skip(f"needs selenium (pip install selenium): {exc}")
    driver = start_browser(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser: WebDriver, pool: Pool) -> Iterator[Callable[..., UiPage]]:
    """A fresh page: a new tab (the previous one closed, so no document of an earlier test lives on, even in
    the back/forward cache), the wide window, the console drained; `page(base=...)` gives the `UiPage` of a
    registry (the pool's first by default)."""
    from tests.ui.browser import WIDE, UiPage, console, fresh_tab

    fresh_tab(browser)
    browser.set_window_size(*WIDE)
    console(browser)

    def make(base: str | None = None) -> UiPage:
        return UiPage(browser, base or pool.base)

    yield make
    fresh_tab(browser)  # end the page's blocking queries before the registries go
