"""The HTTP/JSON API of a registry (issue 15), on aiohttp's server, on the registry's own loop.

Started only with `-http-addr`: nothing here imports aiohttp at package import (`durations` is pure, the
command parses `-ttl-default` with it), so a registry without the flag never loads it.

Modules, one concept each:
- `durations`: Go-style durations ("30s", "5m") as the `ttl` field, the `wait` parameter and the flag take them.
- `answers`: JSON bodies and errors: a Service as the proto names its fields, an entry, the one error body
  `{"error", "code"}` with the gRPC status name, and the HTTP status of each `registry.api` error and `Refused`.
- `blocking`: Consul's blocking queries (`?index=N&wait=30s`): the indexes (group versions, a registry-wide
  change counter) and queries parked until a catalog change wakes them (no polling), capped per process.
- `reads`: Match, Members, Groups (on `registry.api.RegistryCore`, so HTTP and gRPC cannot disagree) and /healthz.
- `watch`: `GET /v1/watch/<group>`, Server-Sent Events of the gRPC Watch's events (`RegistryCore.watch`).
- `writes`: TTL registrations, the /v1 form and hera's (`PUT /<service>/<id>`), the write token.
- `gate`: the connection caps (per process, per source address), applied at accept, before a byte is read.
- `ui`: the web page (issue 16): `/` and `/ui/<file>` from `static/` (a table read once), and its JSON:
  `/v1/pool`, `/v1/ring/<group>`, `/v1/ring/<group>/key/<key>` (timeline: `registry.timeline`; big rings
  drawn on `registry.offload`'s worker thread).
- `pool`: the gossip pool as the page's overview reads it (`PoolView`; `SerfPool` over the server's agent).
- `front`: `HttpFront`: the application, its listener, TLS, start and stop, its metrics.
"""
