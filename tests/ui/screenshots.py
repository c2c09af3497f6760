"""Screenshots of the web page (issue 16), for a person to look at: `python -m tests.ui.screenshots [--out DIR]`.

Starts its own registry with the HTTP front (a subprocess on loopback), three gossiping services
(examples/webservice.py) in group "web", and 200 TTL services in group "fleet" (PUTs with 16 points each),
then writes overview.png, group-3.png (a key looked up), group-200.png (1280x900) and group-3-narrow.png
(390x844, a phone) to DIR (default screenshots/) and prints their paths. Everything it started is stopped
at the end, pass or fail.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tests.e2e.helpers import TOLERANT, Registry, Service, procs
from tests.ui.browser import NARROW, WIDE, UiPage, start_browser
from tests.ui.conftest import Pool, put_many

SMALL, FLEET, FLEET_SIZE = "web", "fleet", 200


def viewport(page: UiPage, size: tuple[int, int], mobile: bool) -> None:
    """Exactly `size` CSS pixels of page, whatever the window's decorations (headless has none)."""
    page.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": mobile})


def shoot(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="registry-shots-"))
    written: list[Path] = []
    with procs() as ps:
        pool = Pool(tmp, ps)
        pool.registries.append(Registry(ps, tmp, "registry-1", [], "-http-addr", "127.0.0.1:0", profile=TOLERANT))
        pool.registries.append(Registry(ps, tmp, "registry-2", [pool.first.gossip], profile=TOLERANT))
        pool.first.wait_ready()
        pool.registries[1].wait_ready()
        services = [Service(ps, tmp, f"{SMALL}-{i}", pool.seeds[:1], group=SMALL, profile=TOLERANT) for i in (1, 2, 3)]
        for s in services:
            s.wait_registered()
        pool.wait_ring(SMALL, {s.id for s in services})
        put_many(pool.base, FLEET, FLEET_SIZE, replicas=16, prefix="node")
        pool.wait_ring(FLEET, {f"node-{i:04d}" for i in range(FLEET_SIZE)})
        driver = start_browser(tmp / "chromium-profile")
        try:
            page = UiPage(driver, pool.base)
            viewport(page, WIDE, mobile=False)
            page.overview()
            page.wait(lambda: len(page.members()) >= 5, "the members listed")
            written.append(save(page, out / "overview.png"))
            page.group(SMALL)
            page.wait(lambda: len(page.legend()) == 3, "three services in the legend")
            page.lookup("user/42", expect=3)
            written.append(save(page, out / "group-3.png"))
            page.group(FLEET)
            page.wait(lambda: len(page.legend()) > 0 and page.arcs(), "the fleet drawn")
            written.append(save(page, out / "group-200.png"))
            viewport(page, NARROW, mobile=True)
            page.group(SMALL)
            page.wait(lambda: len(page.legend()) == 3, "three services in the legend")
            page.lookup("user/42", expect=3)
            written.append(save(page, out / "group-3-narrow.png"))
        finally:
            driver.quit()
    return written


def save(page: UiPage, path: Path) -> Path:
    page.js("window.scrollTo(0, 0); document.activeElement && document.activeElement.blur();")
    if not page.driver.save_screenshot(str(path)):
        raise RuntimeError(f"could not write {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.ui.screenshots", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="screenshots", help="directory to write the PNG files to (default: %(default)s)")
    a = p.parse_args(argv)
    for path in shoot(Path(a.out)):
        print(path.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
