"""Values the codec tests share: a member's address, version vector, Serf tags and key."""

from __future__ import annotations

from registry.memberlist.messages import PushNodeState

H = bytes.fromhex
IP1 = H("0a000001")
VSN = H("010502020505")
META = H("ff81a4726f6c65a3776562")  # Serf tags {"role": "web"}
KEY = H("000102030405060708090a0b0c0d0e0f")
NODE_A = PushNodeState("node-a", IP1, 7946, META, 1, 0, VSN)
