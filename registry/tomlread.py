"""TOML on every Python the project declares: ``tomllib`` from 3.11, ``tomli`` (its origin) on 3.10 if
installed, else None so the caller can say in one line what is missing.

Why a module of its own: the config file (`registry.config_file`) and the file adapter
(`registry.adapters.file`) both read TOML, and neither layer may import the other.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

__all__ = ["toml_loads"]


def toml_loads() -> Callable[[str], dict[str, Any]] | None:
    """The TOML parser (``str`` -> ``dict``), or None on 3.10 without ``tomli``."""
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib.loads
    try:
        import tomli  # type: ignore[import-not-found,unused-ignore]  # only on 3.10, if installed
    except ImportError:
        return None
    loads: Callable[[str], dict[str, Any]] = tomli.loads
    return loads
