"""Serf membership (tags, Lamport clocks, intents, events, queries, keyring) on top of memberlist,
wire-compatible with hashicorp/serf protocol 2..5.

`core.Serf` is the sans-I/O machine (drive it with `SimNetwork` or a `MachineRunner`), wiring
parts that each own their state: `membership` (members, join/leave intents), `joins`,
`leaving`, `user_events`, `querying` (+ `conflict`, `keyring` for the internal queries),
`coordinate`, `broadcasts`, `events`; messages are `messages` and `payloads` over `wire`.
`agent.SerfAgent` runs it on asyncio sockets.  Import those modules directly; this package
init stays light so embedding services load only what they use.
"""
