"""registry: embeddable consistent-hashing service discovery over SWIM gossip.

Layers, each depending only on the ones before it:
memberlist (SWIM, wire-compatible with HashiCorp memberlist) -> serf (tags,
Lamport clocks, intents, events) -> registry domain (catalog, rings, gRPC API)
-> `registry.register` (the SDK a service embeds), `registry.client` (the gRPC
client) and the `registry` command (`registry.cli`, also `python -m registry`).

This module imports nothing heavy on purpose: `registry.register` embeds the
gossip layers in a service process and must not pull in grpc.
"""

__version__ = "0.1.0"
