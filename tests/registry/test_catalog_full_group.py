"""A "consistent" group holds at most ring.MAX_MEMBERS services: one more is refused and
counted, and neither the catalog nor the rest of a batch is lost."""

from __future__ import annotations

from registry.catalog import Catalog
from registry.ring import MAX_MEMBERS


def _tags(i: int) -> dict[str, str]:
    return {"group": "g", "addr": f"10.0.{i // 250}.{i % 250}:80"}


def _full_catalog() -> Catalog:
    cat = Catalog(default_replicas=1)
    cat.apply_many((f"s{i}", _tags(i)) for i in range(MAX_MEMBERS))
    assert len(cat.members("g")) == MAX_MEMBERS
    return cat


def test_apply_beyond_the_limit_is_refused_and_counted() -> None:
    cat = _full_catalog()
    cat.apply("extra", _tags(1))
    assert cat.stats["group_full"] == 1
    assert "extra" not in {s.id for s in cat.members("g")}
    # members already in keep working: an update and a leave, then the newcomer fits
    cat.apply("s0", {**_tags(0), "addr": "10.9.9.9:80"})
    assert any(s.addr == "10.9.9.9:80" for s in cat.members("g"))
    cat.apply("s1", None)
    cat.apply("extra", _tags(1))
    assert "extra" in {s.id for s in cat.members("g")}
    assert cat.match("g", "user-1")[0].group == "g"


def test_batch_beyond_the_limit_keeps_the_rest() -> None:
    cat = _full_catalog()
    cat.apply_many([("extra", _tags(1)), ("s5", None), ("other", {"group": "h", "addr": "a:1"})])
    assert cat.stats["group_full"] == 1
    ids = {s.id for s in cat.members("g")}
    assert "extra" not in ids and "s5" not in ids
    assert [s.id for s in cat.members("h")] == ["other"]
