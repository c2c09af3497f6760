"""Logging for the `registry` command: structlog in front, stdlib `logging` behind.

Library modules log through `logging.getLogger(__name__)` or `structlog.get_logger()`;
both end up in one stderr handler rendered the same way, so an operator gets a
single stream: colourless key=value lines on a terminal, one JSON object per line
when stderr is piped into a collector.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "default_format", "setup_logging"]

LOG_FORMATS = ("console", "json")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def default_format(stream: TextIO | None = None) -> str:
    """Console on a terminal, JSON otherwise (what log shippers want)."""
    out = stream if stream is not None else sys.stderr
    try:
        return "console" if out.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


def setup_logging(fmt: str, level: str, stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging to `stream` (stderr) in format `fmt` at `level`."""
    # Imported here, not at the top: structlog imports asyncio (and asyncio ssl), and the
    # `registry` command reads LOG_FORMATS/LOG_LEVELS before it decides how asyncio is loaded
    # (see registry.cli._import_asyncio_without_ssl).
    import structlog

    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {fmt!r}: choose one of {', '.join(LOG_FORMATS)}")
    if level.lower() not in LOG_LEVELS:
        raise ValueError(f"unknown log level {level!r}: choose one of {', '.join(LOG_LEVELS)}")
    numeric = getattr(logging, level.upper())
    out = stream if stream is not None else sys.stderr

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    # grpc's own loggers are chatty at INFO; keep them at WARNING unless debugging.
    if numeric > logging.DEBUG:
        logging.getLogger("grpc").setLevel(logging.WARNING)
        logging.getLogger("asyncio").setLevel(logging.WARNING)
