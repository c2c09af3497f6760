"""Serf membership (tags, Lamport clocks, intents, events, queries) on top of memberlist."""
