"""The metrics helpers the server's scrape is built from (the scrape itself: tests/e2e/test_cli.py)."""

from __future__ import annotations

from registry.metrics import Metric, counters_by_key, render


def test_counters_by_key_takes_numeric_entries_sorted() -> None:
    family = counters_by_key("x_total", "X counters.", {"b": 2, "a": 1.5, "note": "text", "c": True})
    assert family == Metric("x_total", "X counters.", "counter",
                            [({"key": "a"}, 1.5), ({"key": "b"}, 2.0), ({"key": "c"}, 1.0)])
    assert render([family]).splitlines()[1:] == [
        "# TYPE x_total counter", 'x_total{key="a"} 1.5', 'x_total{key="b"} 2', 'x_total{key="c"} 1']


def test_counters_by_key_is_none_without_counters() -> None:
    assert counters_by_key("x_total", "X.", None) is None
    assert counters_by_key("x_total", "X.", {}) is None
    assert counters_by_key("x_total", "X.", [("a", 1)]) is None  # not a mapping: nothing to label by
