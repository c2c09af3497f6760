"""SWIM membership, wire-compatible with HashiCorp memberlist."""
