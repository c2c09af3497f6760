"""The caching client's chash ring keeps the server's insert order when a member is re-inserted without a
net change (changed and changed back in one batch: Go's Upsert per event moves it last, so the server's
ring moves it; the Watch event says `updated`, and the cache's ring must move it too)."""

from __future__ import annotations

from registry.catalog import Catalog
from registry.client import RpcClient
from tests.registry.rpc_fixtures import GROUP, ServerThread, tags, wait_for


def test_cache_reinserts_a_chash_member_updated_without_a_net_change() -> None:
    s = ServerThread(Catalog(algorithm="chash", default_replicas=16))
    try:
        s.call(s.catalog.apply_many, [(f"m{i}", tags(GROUP, f"10.0.0.{i}:1", replicas=16)) for i in range(4)])
        with RpcClient(s.addr, cache=True) as cached:
            assert len(cached.members(GROUP)) == 4
            cached.match(GROUP, "k")  # the cache's watch starts
            s.call(s.catalog.apply_many, [("m0", tags(GROUP, "10.9.9.9:1", replicas=16)),
                                          ("m0", tags(GROUP, "10.0.0.0:1", replicas=16)), ("m3", None)])
            v = s.call(s.catalog.version, GROUP)
            wait_for(lambda: cached.cache_version(GROUP) >= v, what="cache caught up")
            server_order = [x.id for x in s.call(s.catalog.members, GROUP)]
            assert server_order == ["m1", "m2", "m0"]
            view = cached._views[GROUP]
            assert view._catalog is not None
            assert [x.id for x in view._catalog.members(GROUP)] == server_order  # the ring's insert order
            assert [x.id for x in view.members()] == server_order
    finally:
        s.stop()
