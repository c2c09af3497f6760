"""Federation (issue 17): a registry's read-only copies of other datacenters' catalogs.

In layers (each its own module, the protocol part sans-I/O):

- `mirror.py` — `Mirror`: one remote datacenter's catalog, rebuilt from the events of a Watch of every
  group (`WatchRequest.group == ""`: each group's snapshot, an end marker, then every change) into a
  real `registry.catalog.Catalog`, so Match on the copy answers as Match on the remote. Sans-I/O: events
  and the time in, a catalog out; every event checked as hostile input and counted when dropped, and
  what the stream can make it hold bounded (`MirrorLimits`). `mirror_copy.py` writes a remote's services
  into a catalog as the remote holds them (kind and origin included).
- `follower.py` — `Follower`: the driver. Follows one live registry of the datacenter (the first of
  `sources()`, which the WAN pool orders nearest first), moves to the next when its stream fails, ends
  or goes silent, or when its source leaves `sources()`; resyncs the mirror from a snapshot each time;
  while no source answers, the mirror keeps its last catalog and says how stale it is. Imported as
  `registry.federation.follower` (it needs grpcio, through `registry.client`; the mirror does not).
- `federation.py` — `Federation`: the wiring the server makes with -wan-bind: one Mirror and one
  Follower per other datacenter of `registry.wan.WanPool.peers()` (sources: its alive registries,
  nearest first), a mirror kept stale while its datacenter is gone and dropped after -wan-mirror-ttl;
  what the API reads (`catalog(dc)`, `stale_for`, `nearest`, `datacenters`, `subscribe`) and the
  /metrics lines. The API is `registry.api_dc`'s; docs/federation.md says how it all fits.

A registry started without a WAN pool imports none of this (nor grpcio, which the followers need).
"""

from registry.federation.mirror import Anomaly, Drop, Mirror, MirrorLimits

__all__ = ["Anomaly", "Drop", "Mirror", "MirrorLimits"]
