"""Chromium under Selenium, offline, for the page's tests and the screenshot command; and `UiPage`, the
test's view of the page through the DOM contract (stable ids, classes and data attributes, README).

The browser is Debian's `chromium` with its `chromedriver`, named explicitly so Selenium Manager never
looks anything up or downloads a driver (SE_OFFLINE=1 says the same to it). Reading the DOM goes through
one `execute_script` per question: one round trip instead of one per element, which matters for a
1,000-service legend on a loaded 2-core machine.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "chromium"
CHROMEDRIVER = "chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run")
WIDE = (1280, 900)
NARROW = (390, 844)
#: How long the page may take to show what the server holds (a render after a blocking answer).
RENDER = 15.0

_PERCENT = re.compile(r"(-?\d+(?:\.\d+)?)\s*%")


def binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/lib/chromium")
    if found is None:
        raise RuntimeError(f"{name} not found (apt-get install chromium chromium-driver)")
    return found


def start_browser(profile_dir: Path) -> WebDriver:
    """A headless Chromium on a fresh profile, its console kept for `get_log('browser')`."""
    os.environ.setdefault("SE_OFFLINE", "1")  # Selenium Manager: never fetch a driver or a browser
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary(CHROMIUM)
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile_dir}")
    opts.add_argument(f"--window-size={WIDE[0]},{WIDE[1]}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=ChromeService(executable_path=binary(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


def fresh_tab(driver: WebDriver) -> None:
    """Switch to a new blank tab and close the others: their documents and requests end (a document only
    navigated away from may live on in the back/forward cache with its blocking queries open)."""
    old = driver.window_handles
    driver.switch_to.new_window("tab")
    new = driver.current_window_handle
    for handle in old:
        driver.switch_to.window(handle)
        driver.close()
    driver.switch_to.window(new)


def percent(text: str) -> float | None:
    """The number of "33.41 %" (None for "..." or "-")."""
    m = _PERCENT.search(text)
    return float(m.group(1)) if m else None


class UiPage:
    """One registry's page in the browser: navigate by route, wait on the contract's attributes."""

    def __init__(self, driver: WebDriver, base: str) -> None:
        self.driver = driver
        self.base = base.rstrip("/")

    # -- navigation ---------------------------------------------------------------------------------

    def overview(self) -> None:
        self.driver.get(self.base + "/#/")
        self.wait(lambda: self.view() == "overview", "the overview rendered")

    def group(self, group: str, fresh: bool = True) -> None:
        """The group page; `fresh` loads the document anew (else only the hash changes, as a link does)."""
        url = f"{self.base}/#/group/{quote(group, safe='')}"
        if fresh:
            self.driver.get(url)
        else:
            self.js("location.hash = arguments[0];", f"#/group/{quote(group, safe='')}")
        self.wait(lambda: self.view() == "group" and self.js(
            "return document.getElementById('group-name')?.textContent || ''") .strip() == group,
            f"the group page of {group!r} rendered")

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def wait(self, cond: Any, what: str, timeout: float = RENDER) -> Any:
        """`cond()` truthy within `timeout` s (exceptions from a half-rendered page are retried)."""
        last: list[Any] = [None]

        def probe(_: WebDriver) -> Any:
            last[0] = cond()
            return last[0]

        return WebDriverWait(self.driver, timeout, poll_frequency=0.02).until(
            probe, f"{what}: not within {timeout}s (last {last[0]!r}; view {self.safe_view()!r})")

    def view(self) -> str:
        return str(self.js("return document.body ? (document.body.dataset.view || '') : ''"))

    def safe_view(self) -> str:
        try:
            return self.view()
        except Exception as exc:  # noqa: BLE001 - only for a failure message
            return f"? {exc}"

    def index(self) -> int:
        raw = self.js("return document.body.dataset.index || ''")
        return int(raw) if raw else -1

    # -- the overview ---------------------------------------------------------------------------------

    def members(self) -> dict[str, dict[str, str]]:
        """name -> {cell class: text} of `table#members`."""
        rows: dict[str, dict[str, str]] = self.js("""
            const out = {};
            for (const tr of document.querySelectorAll('#members tr[data-name]')) {
              const cells = {};
              for (const td of tr.querySelectorAll('td')) for (const c of td.classList) cells[c] = td.textContent.trim();
              out[tr.dataset.name] = cells;
            }
            return out;""")
        return rows

    def groups(self) -> dict[str, str]:
        """group -> the text of its `span.count` in `ul#groups`."""
        found: dict[str, str] = self.js("""
            const out = {};
            for (const li of document.querySelectorAll('#groups li[data-group]'))
              out[li.dataset.group] = (li.querySelector('.count')?.textContent || '').trim();
            return out;""")
        return found

    # -- the group page -------------------------------------------------------------------------------

    def algorithm(self) -> str:
        return str(self.js("return document.getElementById('algorithm')?.textContent || ''")).strip()

    def legend(self) -> dict[str, dict[str, str]]:
        """id -> {"share", "name", "health", "swatch"} texts (swatch: its computed background colour)."""
        found: dict[str, dict[str, str]] = self.js("""
            const out = {};
            for (const li of document.querySelectorAll('#legend li[data-service]')) {
              const t = (sel) => (li.querySelector(sel)?.textContent || '').trim();
              const sw = li.querySelector('.swatch');
              out[li.dataset.service] = {share: t('.share'), name: t('.name'), health: t('.health'),
                                         swatch: sw ? getComputedStyle(sw).backgroundColor : ''};
            }
            return out;""")
        return found

    def arcs(self) -> list[dict[str, str]]:
        """Every `svg#ring path.arc`: its service, classes and title."""
        found: list[dict[str, str]] = self.js("""
            return Array.from(document.querySelectorAll('#ring path.arc')).map(p => ({
              service: p.dataset.service || '', cls: p.getAttribute('class') || '',
              title: (p.querySelector('title')?.textContent || '').trim()}));""")
        return found

    def arc_services(self) -> set[str]:
        return {a["service"] for a in self.arcs()}

    def owners(self) -> list[str]:
        found: list[str] = self.js(
            "return Array.from(document.querySelectorAll('#owners li[data-service]')).map(li => li.dataset.service);")
        return found

    def timeline(self) -> list[dict[str, str]]:
        found: list[dict[str, str]] = self.js("""
            return Array.from(document.querySelectorAll('#timeline li[data-version]')).map(li => ({
              version: li.dataset.version, what: (li.querySelector('.what')?.textContent || '').trim(),
              moved: (li.querySelector('.moved')?.textContent || '').trim()}));""")
        return found

    def lookup(self, key: str, n: int | None = None, expect: int | None = None, timeout: float = RENDER) -> list[str]:
        """Ask the key box for `key` with the keyboard only (click the field, select all, type, Enter), and
        the owners it shows. The old answer is removed first, so the one read is this key's."""
        self.js("const o = document.getElementById('owners'); if (o) o.replaceChildren();")
        if n is not None:
            count = self.driver.find_element(By.ID, "count")
            count.click()
            count.send_keys(Keys.CONTROL, "a")
            count.send_keys(str(n))
        field = self.driver.find_element(By.ID, "key")
        field.click()
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(Keys.BACKSPACE)
        field.send_keys(key)
        field.send_keys(Keys.ENTER)
        want = expect if expect is not None else 1
        return list(self.wait(lambda: (o := self.owners()) and len(o) >= want and o,
                              f"owners of {key!r} shown", timeout))

    def no_horizontal_scroll(self) -> tuple[int, int]:
        """(scrollWidth of the document, innerWidth)."""
        got: list[int] = self.js("return [document.documentElement.scrollWidth, window.innerWidth];")
        return got[0], got[1]


def console(driver: WebDriver) -> list[dict[str, Any]]:
    """The browser console's entries since the last call (chromedriver drains them as it answers)."""
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return entries
