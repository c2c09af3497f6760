"""The etcd adapter's value format both ways (no etcd needed): what the exporter writes is what the importer
reads, health included, so a pool importing another pool's export prefix routes as that pool does; the
member tags the key or the value's own fields say (addr, group, dc, health, health_note) are not repeated."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("aetcd")

from registry.adapters.base import ExportedService
from registry.adapters.etcd import _encode, parse_service
from registry.adapters.imports import external_tags
from registry.catalog import Catalog


def test_export_value_leaves_out_what_the_key_and_fields_say() -> None:
    tags = {"addr": "10.0.0.1:80", "group": "web", "dc": "dc1", "health": "critical",
            "health_note": "http: HTTP 500", "replicas": "64", "v": "2"}
    doc = json.loads(_encode(ExportedService("web", "s1", "10.0.0.1:80", tags, "critical", "gossip")))
    assert doc == {"addr": "10.0.0.1:80", "health": "critical", "health_note": "http: HTTP 500", "kind": "gossip",
                   "replicas": 64, "tags": {"v": "2"}}
    passing = json.loads(_encode(ExportedService("web", "s2", "10.0.0.2:80", {"dc": "dc1"}, "passing", "ttl")))
    assert passing == {"addr": "10.0.0.2:80", "health": "passing", "kind": "ttl", "tags": {}}


@pytest.mark.parametrize("health", ["passing", "warning", "critical"])
def test_an_exported_value_imports_with_its_health(health: str) -> None:
    tags = {"health": health, "health_note": "" if health == "passing" else "disk 91%", "zone": "a"}
    value = _encode(ExportedService("web", "s1", "10.0.0.1:80", tags, health, "gossip"))
    svc = parse_service("web/s1", value)
    catalog = Catalog()
    catalog.apply_external("etcd", [(svc.group, svc.id, external_tags(svc))])
    [got] = catalog.members("web")  # every live service, whatever its health
    assert got.health.word == health and got.tags["zone"] == "a"
    assert catalog.routed(got) == (health != "critical")


def test_a_bad_health_is_one_line() -> None:
    with pytest.raises(ValueError, match="health must be passing, warning or critical"):
        parse_service("web/s1", b'{"addr": "10.0.0.1:80", "health": "dead"}')
