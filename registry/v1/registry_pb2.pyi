from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Service(_message.Message):
    __slots__ = ("id", "group", "addr", "tags", "replicas", "weight", "status", "health", "health_note", "kind", "origin")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    ADDR_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    HEALTH_NOTE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    id: str
    group: str
    addr: str
    tags: _containers.ScalarMap[str, str]
    replicas: int
    weight: int
    status: str
    health: str
    health_note: str
    kind: str
    origin: str
    def __init__(self, id: _Optional[str] = ..., group: _Optional[str] = ..., addr: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ..., replicas: _Optional[int] = ..., weight: _Optional[int] = ..., status: _Optional[str] = ..., health: _Optional[str] = ..., health_note: _Optional[str] = ..., kind: _Optional[str] = ..., origin: _Optional[str] = ...) -> None: ...

class MatchRequest(_message.Message):
    __slots__ = ("group", "key", "n", "datacenter", "failover")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    DATACENTER_FIELD_NUMBER: _ClassVar[int]
    FAILOVER_FIELD_NUMBER: _ClassVar[int]
    group: str
    key: str
    n: int
    datacenter: str
    failover: bool
    def __init__(self, group: _Optional[str] = ..., key: _Optional[str] = ..., n: _Optional[int] = ..., datacenter: _Optional[str] = ..., failover: _Optional[bool] = ...) -> None: ...

class MatchResponse(_message.Message):
    __slots__ = ("services", "datacenter", "stale_seconds")
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    DATACENTER_FIELD_NUMBER: _ClassVar[int]
    STALE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[Service]
    datacenter: str
    stale_seconds: float
    def __init__(self, services: _Optional[_Iterable[_Union[Service, _Mapping]]] = ..., datacenter: _Optional[str] = ..., stale_seconds: _Optional[float] = ...) -> None: ...

class MatchBatchRequest(_message.Message):
    __slots__ = ("group", "keys", "datacenter")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    DATACENTER_FIELD_NUMBER: _ClassVar[int]
    group: str
    keys: _containers.RepeatedScalarFieldContainer[str]
    datacenter: str
    def __init__(self, group: _Optional[str] = ..., keys: _Optional[_Iterable[str]] = ..., datacenter: _Optional[str] = ...) -> None: ...

class MatchBatchResponse(_message.Message):
    __slots__ = ("services", "datacenter", "stale_seconds")
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    DATACENTER_FIELD_NUMBER: _ClassVar[int]
    STALE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[Service]
    datacenter: str
    stale_seconds: float
    def __init__(self, services: _Optional[_Iterable[_Union[Service, _Mapping]]] = ..., datacenter: _Optional[str] = ..., stale_seconds: _Optional[float] = ...) -> None: ...

class MembersRequest(_message.Message):
    __slots__ = ("group", "all", "datacenter")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    DATACENTER_FIELD_NUMBER: _ClassVar[int]
    group: str
    all: bool
    datacenter: str
    def __init__(self, group: _Optional[str] = ..., all: _Optional[bool] = ..., datacenter: _Optional[str] = ...) -> None: ...

class MembersResponse(_message.Message):
    __slots__ = ("services", "version", "datacenter", "stale_seconds")
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DATACENTER_FIELD_NUMBER: _ClassVar[int]
    STALE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[Service]
    version: int
    datacenter: str
    stale_seconds: float
    def __init__(self, services: _Optional[_Iterable[_Union[Service, _Mapping]]] = ..., version: _Optional[int] = ..., datacenter: _Optional[str] = ..., stale_seconds: _Optional[float] = ...) -> None: ...

class GroupsRequest(_message.Message):
    __slots__ = ("datacenter",)
    DATACENTER_FIELD_NUMBER: _ClassVar[int]
    datacenter: str
    def __init__(self, datacenter: _Optional[str] = ...) -> None: ...

class GroupsResponse(_message.Message):
    __slots__ = ("groups", "ring", "datacenter", "stale_seconds", "datacenters")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    RING_FIELD_NUMBER: _ClassVar[int]
    DATACENTER_FIELD_NUMBER: _ClassVar[int]
    STALE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DATACENTERS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedScalarFieldContainer[str]
    ring: RingInfo
    datacenter: str
    stale_seconds: float
    datacenters: _containers.RepeatedCompositeFieldContainer[Datacenter]
    def __init__(self, groups: _Optional[_Iterable[str]] = ..., ring: _Optional[_Union[RingInfo, _Mapping]] = ..., datacenter: _Optional[str] = ..., stale_seconds: _Optional[float] = ..., datacenters: _Optional[_Iterable[_Union[Datacenter, _Mapping]]] = ...) -> None: ...

class Datacenter(_message.Message):
    __slots__ = ("name", "local", "stale_seconds", "rtt_ms", "registries")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LOCAL_FIELD_NUMBER: _ClassVar[int]
    STALE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    REGISTRIES_FIELD_NUMBER: _ClassVar[int]
    name: str
    local: bool
    stale_seconds: float
    rtt_ms: float
    registries: int
    def __init__(self, name: _Optional[str] = ..., local: _Optional[bool] = ..., stale_seconds: _Optional[float] = ..., rtt_ms: _Optional[float] = ..., registries: _Optional[int] = ...) -> None: ...

class RingInfo(_message.Message):
    __slots__ = ("algorithm", "default_replicas", "only_passing")
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    ONLY_PASSING_FIELD_NUMBER: _ClassVar[int]
    algorithm: str
    default_replicas: int
    only_passing: bool
    def __init__(self, algorithm: _Optional[str] = ..., default_replicas: _Optional[int] = ..., only_passing: _Optional[bool] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("group", "datacenter", "export")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    DATACENTER_FIELD_NUMBER: _ClassVar[int]
    EXPORT_FIELD_NUMBER: _ClassVar[int]
    group: str
    datacenter: str
    export: bool
    def __init__(self, group: _Optional[str] = ..., datacenter: _Optional[str] = ..., export: _Optional[bool] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("group", "version", "snapshot", "services", "added", "removed", "updated", "ring")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    RING_FIELD_NUMBER: _ClassVar[int]
    group: str
    version: int
    snapshot: bool
    services: _containers.RepeatedCompositeFieldContainer[Service]
    added: _containers.RepeatedCompositeFieldContainer[Service]
    removed: _containers.RepeatedCompositeFieldContainer[Service]
    updated: _containers.RepeatedCompositeFieldContainer[Service]
    ring: RingInfo
    def __init__(self, group: _Optional[str] = ..., version: _Optional[int] = ..., snapshot: _Optional[bool] = ..., services: _Optional[_Iterable[_Union[Service, _Mapping]]] = ..., added: _Optional[_Iterable[_Union[Service, _Mapping]]] = ..., removed: _Optional[_Iterable[_Union[Service, _Mapping]]] = ..., updated: _Optional[_Iterable[_Union[Service, _Mapping]]] = ..., ring: _Optional[_Union[RingInfo, _Mapping]] = ...) -> None: ...
