from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Service(_message.Message):
    __slots__ = ("id", "group", "addr", "tags", "replicas", "weight", "status", "health", "health_note", "kind")
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
    def __init__(self, id: _Optional[str] = ..., group: _Optional[str] = ..., addr: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ..., replicas: _Optional[int] = ..., weight: _Optional[int] = ..., status: _Optional[str] = ..., health: _Optional[str] = ..., health_note: _Optional[str] = ..., kind: _Optional[str] = ...) -> None: ...

class MatchRequest(_message.Message):
    __slots__ = ("group", "key", "n")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    group: str
    key: str
    n: int
    def __init__(self, group: _Optional[str] = ..., key: _Optional[str] = ..., n: _Optional[int] = ...) -> None: ...

class MatchResponse(_message.Message):
    __slots__ = ("services",)
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[Service]
    def __init__(self, services: _Optional[_Iterable[_Union[Service, _Mapping]]] = ...) -> None: ...

class MatchBatchRequest(_message.Message):
    __slots__ = ("group", "keys")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    group: str
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, group: _Optional[str] = ..., keys: _Optional[_Iterable[str]] = ...) -> None: ...

class MatchBatchResponse(_message.Message):
    __slots__ = ("services",)
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[Service]
    def __init__(self, services: _Optional[_Iterable[_Union[Service, _Mapping]]] = ...) -> None: ...

class MembersRequest(_message.Message):
    __slots__ = ("group", "all")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    group: str
    all: bool
    def __init__(self, group: _Optional[str] = ..., all: _Optional[bool] = ...) -> None: ...

class MembersResponse(_message.Message):
    __slots__ = ("services", "version")
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[Service]
    version: int
    def __init__(self, services: _Optional[_Iterable[_Union[Service, _Mapping]]] = ..., version: _Optional[int] = ...) -> None: ...

class GroupsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GroupsResponse(_message.Message):
    __slots__ = ("groups", "ring")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    RING_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedScalarFieldContainer[str]
    ring: RingInfo
    def __init__(self, groups: _Optional[_Iterable[str]] = ..., ring: _Optional[_Union[RingInfo, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("group",)
    GROUP_FIELD_NUMBER: _ClassVar[int]
    group: str
    def __init__(self, group: _Optional[str] = ...) -> None: ...

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
