"""TTL services: registrations a registry holds for services that do not gossip, replicated to every registry.

A service (any language, a cron job, `curl`) PUTs an entry for itself to any registry's HTTP API and
refreshes it before its TTL runs out (the hera registry's model). That registry stamps the write
(`entry.Entry`: its wall clock and its name), keeps it in its `store.TtlStore`, and replicates it; every
registry puts the live entries of a group on that group's ring beside the gossiping members
(`registry.catalog.ServiceKind.TTL`), so Match, Members, Watch, the cached client and the CLI treat them
alike.

Layers (sans-I/O core, thin driver, as memberlist and serf):
- `entry`: the record, its last-writer-wins stamp, its bounds (`Limits`, `check_entry`).
- `store`: `TtlStore`, the replicated map (group, id) -> Entry: local writes, merges of what peers send
  (LWW, tombstones, expiry at written_ms + ttl_ms on every registry, bounds), per-group digests.
- `wire`: the replication messages (msgpack), decoded as hostile input.
- `replicator`: `Replicator`, the protocol between registries: each local write is pushed to every other
  registry (batched); anti-entropy (a digest to one random registry now and then, and at once to a
  registry newly seen, answered by the entries of the groups that differ) repairs what a lost message,
  a partition or a restart left out. Bytes, time and randomness in; (peer, bytes) and catalog changes out.
- `driver`: runs a Replicator on the registry server's loop: timers, the Serf "app message" channel
  (memberlist reliable user messages to the other registries, encrypted with the pool's key when it has
  one), and the catalog.

Why these transports (not Serf user events): a user event goes to every member of the pool, services
included, rides in 1,400-byte UDP gossip packets (so one event carries a handful of entries), and Serf
drops events more than 512 Lamport ticks old: 10,000 services refreshed every 10 s (1,000 writes/s) would
overrun that buffer in half a second. Registries are few; a direct reliable message to each, batched,
carries thousands of entries per message, and the digest exchange bounds what a loss can cost to one
anti-entropy interval.
"""
