"""Suite-wide pytest hooks.

`@pytest.mark.serf` tests need Debian's `serf` binary: without it they are skipped locally
but FAIL when CI=true, so a broken CI image cannot silently turn interop tests green.
"""

from __future__ import annotations

import os
import shutil

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("serf") is None:
        return
    if shutil.which("serf") is not None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("the `serf` binary is required when CI=true (apt-get install serf)", pytrace=False)
    pytest.skip("needs the `serf` binary (apt-get install serf)")
