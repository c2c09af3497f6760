"""The catalog side of imported services (issue 18): ServiceKind.EXTERNAL keyed by (group, id), with its
origin; the pool's own services win an id, and the external entry comes back when they go."""

from __future__ import annotations

from registry.catalog import Catalog, ServiceKind


def tags(addr: str, **extra: str) -> dict[str, str]:
    return {"addr": addr, **extra}


def test_external_upsert_match_delete_by_origin() -> None:
    c = Catalog()
    c.apply_external("file", [("web", "w1", tags("10.0.0.1:80")), ("api", "w1", tags("10.0.0.2:80"))])
    [w] = c.members("web")
    assert (w.kind, w.origin, w.addr) == (ServiceKind.EXTERNAL, "file", "10.0.0.1:80")
    assert c.match("web", "k")[0].id == "w1"
    assert c.external("file") == [("api", "w1"), ("web", "w1")]
    c.apply_external("etcd", [("web", "w1", None)])  # not etcd's: nothing happens
    assert [s.origin for s in c.members("web")] == ["file"]
    c.apply_external("file", [("web", "w1", None)])
    assert c.members("web") == [] and c.external("file") == [("api", "w1")]
    c.apply_external("file", [("registry-group", "fake", tags("10.6.6.6:9800"))])  # never: clients find registries there
    assert c.members("registry-group") == [] and c.stats["external_refused"] == 1


def test_gossip_and_ttl_win_an_id_and_external_returns() -> None:
    c = Catalog()
    c.apply_external("file", [("web", "a", tags("ext:1"))])
    c.apply("a", {"group": "web", "addr": "gossip:1"})
    [s] = c.members("web")
    assert (s.kind, s.addr) == (ServiceKind.GOSSIP, "gossip:1")
    assert c.stats["external_shadowed"] == 0  # was on the ring first: replaced, kept aside
    c.apply_ttl([("web", "a", {"addr": "ttl:1"})])
    c.apply("a", None)  # gossip leaves: the TTL entry takes the id
    assert [(s.kind, s.addr) for s in c.members("web")] == [(ServiceKind.TTL, "ttl:1")]
    c.apply_ttl([("web", "a", None)])  # the TTL entry goes: the external one comes back
    assert [(s.kind, s.addr, s.origin) for s in c.members("web")] == [(ServiceKind.EXTERNAL, "ext:1", "file")]
    c.apply_external("file", [("web", "b", tags("ext:2"))])
    c.apply("b", {"group": "web", "addr": "gossip:2"})
    c.apply_external("file", [("web", "b", tags("ext:3"))])  # held aside: gossip keeps the id
    c.apply("c", {"group": "web", "addr": "gossip:3"})
    c.apply_external("file", [("web", "c", tags("ext:4"))])  # a new entry under a gossip id: counted
    assert c.stats["external_shadowed"] == 1
    assert {s.id: s.kind for s in c.members("web")} == {"a": ServiceKind.EXTERNAL, "b": ServiceKind.GOSSIP,
                                                       "c": ServiceKind.GOSSIP}
    c.apply("b", None)
    assert [(s.kind, s.addr) for s in c.members("web") if s.id == "b"] == [(ServiceKind.EXTERNAL, "ext:3")]
