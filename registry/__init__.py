"""registry: embeddable consistent-hashing service discovery over SWIM gossip.

Layers, each depending only on the ones before it:
memberlist (SWIM, wire-compatible with HashiCorp memberlist) -> serf (tags,
Lamport clocks, intents, events) -> registry domain (catalog, rings, gRPC API)
-> `register`, `client` and the `registry` command.

This module imports nothing heavy on purpose: `register` embeds the gossip
layers in a service process and must not pull in grpc.
"""

__version__ = "0.1.0"
