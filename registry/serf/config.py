"""Serf configuration: Go's `serf.DefaultConfig` values, durations in float seconds."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from registry.memberlist.config import Config

__all__ = ["SerfConfig"]


@dataclass
class SerfConfig:
    name: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    memberlist: Config = field(default_factory=Config.lan)
    #: `serf keygen` format (base64 of 16/24/32 bytes); becomes the primary key.
    encrypt_key: str | None = None
    #: JSON list of base64 keys (Serf's format), read at start (merged with `encrypt_key`,
    #: which then becomes primary) and rewritten after every key change.
    keyring_file: str | None = None
    protocol_version: int = 5
    broadcast_timeout: float = 5.0
    leave_propagate_delay: float = 1.0
    event_buffer: int = 512
    query_buffer: int = 512
    reap_interval: float = 15.0
    reconnect_interval: float = 30.0
    reconnect_timeout: float = 24 * 3600.0
    tombstone_timeout: float = 24 * 3600.0
    recent_intent_timeout: float = 300.0
    query_timeout_mult: int = 16
    query_size_limit: int = 1024
    query_response_size_limit: int = 1024
    user_event_size_limit: int = 512
    max_queue_depth: int = 4096
    enable_name_conflict_resolution: bool = True
    #: Vivaldi coordinates in ack payloads (Serf default on; `serf rtt` needs them).
    disable_coordinates: bool = False
    #: Coalescing of user events sent with CC=true (Go's UserCoalescePeriod/UserQuiescentPeriod;
    #: `serf agent` uses 3 s / 1 s, the library default 0 = off): per event name only the
    #: events with the highest LTime are delivered, when the period ends or all is quiet.
    user_coalesce_period: float = 0.0
    user_quiescent_period: float = 0.0
    #: Events waiting for the application; beyond this the oldest is dropped and counted
    #: (`stats["events.dropped"]`), so a slow consumer never blocks gossip.
    event_queue_size: int = 4096
    #: Also emit MEMBER_LEAVING when a member's leave intent arrives (and MEMBER_UPDATE when it
    #: refutes one), for applications that must stop routing to a member as soon as it
    #: announces its departure rather than when it is gone.  Off: Go's event stream exactly.
    leaving_events: bool = False

    def replace(self, **changes: Any) -> SerfConfig:
        return dataclasses.replace(self, **changes)

    def memberlist_config(self) -> Config:
        """The memberlist config with Serf's name and delegate protocol versions filled in."""
        keys = list(self.memberlist.secret_keys)
        return self.memberlist.replace(
            name=self.name or self.memberlist.name,
            delegate_protocol_min=2,
            delegate_protocol_max=5,
            delegate_protocol_version=self.protocol_version,
            secret_keys=keys,
        )
