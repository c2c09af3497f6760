"""Federation (issue 17): a registry's read-only copies of other datacenters' catalogs.

The plan, in layers (each its own module, the protocol part sans-I/O):

- `mirror.py` — `Mirror`: one remote datacenter's catalog, rebuilt from the events of a Watch of every
  group (`WatchRequest.group == ""`: each group's snapshot, an end marker, then every change) into a
  real `registry.catalog.Catalog`, so Match on the copy answers as Match on the remote. Sans-I/O: events
  and the time in, a catalog out; every event checked as hostile input and counted when dropped.
- `follower.py` — `Follower`: the driver. Follows one live registry of the datacenter (the first of
  `sources()`, which the WAN pool orders nearest first), moves to the next when its stream fails, ends
  or goes silent, or when its source leaves `sources()`; resyncs the mirror from a snapshot each time;
  while no source answers, the mirror keeps its last catalog and says how stale it is. Imported as
  `registry.federation.follower` (it needs grpcio, through `registry.client`; the mirror does not).

Next (not here yet): the server makes one Follower per datacenter of `registry.wan.WanPool.peers()`;
the API's `datacenter` and `failover` fields answer from the mirrors; the clients, the CLI and the HTTP
API expose them. A registry started without a WAN pool imports none of this.
"""

from registry.federation.mirror import Anomaly, Drop, Mirror

__all__ = ["Anomaly", "Drop", "Mirror"]
