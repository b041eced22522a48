from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIER_UNSPECIFIED: _ClassVar[Tier]
    TIER_EDGE: _ClassVar[Tier]
    TIER_METRO: _ClassVar[Tier]
    TIER_CLOUD: _ClassVar[Tier]

class Scope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCOPE_UNSPECIFIED: _ClassVar[Scope]
    SCOPE_NODE: _ClassVar[Scope]
    SCOPE_SITE: _ClassVar[Scope]
TIER_UNSPECIFIED: Tier
TIER_EDGE: Tier
TIER_METRO: Tier
TIER_CLOUD: Tier
SCOPE_UNSPECIFIED: Scope
SCOPE_NODE: Scope
SCOPE_SITE: Scope

class AffinityTerm(_message.Message):
    __slots__ = ("service", "scope")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    service: str
    scope: Scope
    def __init__(self, service: _Optional[str] = ..., scope: _Optional[_Union[Scope, str]] = ...) -> None: ...

class Constraints(_message.Message):
    __slots__ = ("tiers", "max_latency_ms", "near", "affinity", "anti_affinity")
    TIERS_FIELD_NUMBER: _ClassVar[int]
    MAX_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    NEAR_FIELD_NUMBER: _ClassVar[int]
    AFFINITY_FIELD_NUMBER: _ClassVar[int]
    ANTI_AFFINITY_FIELD_NUMBER: _ClassVar[int]
    tiers: _containers.RepeatedScalarFieldContainer[Tier]
    max_latency_ms: float
    near: _containers.RepeatedScalarFieldContainer[str]
    affinity: _containers.RepeatedCompositeFieldContainer[AffinityTerm]
    anti_affinity: _containers.RepeatedCompositeFieldContainer[AffinityTerm]
    def __init__(self, tiers: _Optional[_Iterable[_Union[Tier, str]]] = ..., max_latency_ms: _Optional[float] = ..., near: _Optional[_Iterable[str]] = ..., affinity: _Optional[_Iterable[_Union[AffinityTerm, _Mapping]]] = ..., anti_affinity: _Optional[_Iterable[_Union[AffinityTerm, _Mapping]]] = ...) -> None: ...

class PlaceRequest(_message.Message):
    __slots__ = ("service", "cpu_millis", "memory_mib", "constraints", "replicas", "profile", "dry_run", "bandwidth_mbps")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    CPU_MILLIS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MIB_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_MBPS_FIELD_NUMBER: _ClassVar[int]
    service: str
    cpu_millis: int
    memory_mib: int
    constraints: Constraints
    replicas: int
    profile: str
    dry_run: bool
    bandwidth_mbps: float
    def __init__(self, service: _Optional[str] = ..., cpu_millis: _Optional[int] = ..., memory_mib: _Optional[int] = ..., constraints: _Optional[_Union[Constraints, _Mapping]] = ..., replicas: _Optional[int] = ..., profile: _Optional[str] = ..., dry_run: _Optional[bool] = ..., bandwidth_mbps: _Optional[float] = ...) -> None: ...

class PlaceResponse(_message.Message):
    __slots__ = ("workloads", "generation")
    WORKLOADS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    workloads: _containers.RepeatedCompositeFieldContainer[Workload]
    generation: int
    def __init__(self, workloads: _Optional[_Iterable[_Union[Workload, _Mapping]]] = ..., generation: _Optional[int] = ...) -> None: ...

class MigrateRequest(_message.Message):
    __slots__ = ("workload_id", "node", "site", "best", "node_or_site", "timeout_s", "force")
    WORKLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    BEST_FIELD_NUMBER: _ClassVar[int]
    NODE_OR_SITE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    workload_id: str
    node: str
    site: str
    best: bool
    node_or_site: str
    timeout_s: float
    force: bool
    def __init__(self, workload_id: _Optional[str] = ..., node: _Optional[str] = ..., site: _Optional[str] = ..., best: _Optional[bool] = ..., node_or_site: _Optional[str] = ..., timeout_s: _Optional[float] = ..., force: _Optional[bool] = ...) -> None: ...

class MigrateResponse(_message.Message):
    __slots__ = ("migration_id", "from_workload_id", "workload", "placed_generation", "removed_generation", "companions")
    MIGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_WORKLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    PLACED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    REMOVED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    COMPANIONS_FIELD_NUMBER: _ClassVar[int]
    migration_id: str
    from_workload_id: str
    workload: Workload
    placed_generation: int
    removed_generation: int
    companions: _containers.RepeatedCompositeFieldContainer[MigrateResponse]
    def __init__(self, migration_id: _Optional[str] = ..., from_workload_id: _Optional[str] = ..., workload: _Optional[_Union[Workload, _Mapping]] = ..., placed_generation: _Optional[int] = ..., removed_generation: _Optional[int] = ..., companions: _Optional[_Iterable[_Union[MigrateResponse, _Mapping]]] = ...) -> None: ...

class EvictRequest(_message.Message):
    __slots__ = ("workload_id",)
    WORKLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    workload_id: str
    def __init__(self, workload_id: _Optional[str] = ...) -> None: ...

class EvictResponse(_message.Message):
    __slots__ = ("workload", "generation")
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    workload: Workload
    generation: int
    def __init__(self, workload: _Optional[_Union[Workload, _Mapping]] = ..., generation: _Optional[int] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("workload_id",)
    WORKLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    workload_id: str
    def __init__(self, workload_id: _Optional[str] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("service", "node")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    service: str
    node: str
    def __init__(self, service: _Optional[str] = ..., node: _Optional[str] = ...) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("workloads", "generation")
    WORKLOADS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    workloads: _containers.RepeatedCompositeFieldContainer[Workload]
    generation: int
    def __init__(self, workloads: _Optional[_Iterable[_Union[Workload, _Mapping]]] = ..., generation: _Optional[int] = ...) -> None: ...

class Workload(_message.Message):
    __slots__ = ("id", "service", "spiffe_id", "node", "site", "tier", "cpu_millis", "memory_mib", "port", "constraints", "latency_ms", "status", "reasons", "bandwidth_mbps")
    class LatencyMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    CPU_MILLIS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MIB_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_MBPS_FIELD_NUMBER: _ClassVar[int]
    id: str
    service: str
    spiffe_id: str
    node: str
    site: str
    tier: Tier
    cpu_millis: int
    memory_mib: int
    port: int
    constraints: Constraints
    latency_ms: _containers.ScalarMap[str, float]
    status: str
    reasons: _containers.RepeatedScalarFieldContainer[str]
    bandwidth_mbps: float
    def __init__(self, id: _Optional[str] = ..., service: _Optional[str] = ..., spiffe_id: _Optional[str] = ..., node: _Optional[str] = ..., site: _Optional[str] = ..., tier: _Optional[_Union[Tier, str]] = ..., cpu_millis: _Optional[int] = ..., memory_mib: _Optional[int] = ..., port: _Optional[int] = ..., constraints: _Optional[_Union[Constraints, _Mapping]] = ..., latency_ms: _Optional[_Mapping[str, float]] = ..., status: _Optional[str] = ..., reasons: _Optional[_Iterable[str]] = ..., bandwidth_mbps: _Optional[float] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("include_existing",)
    INCLUDE_EXISTING_FIELD_NUMBER: _ClassVar[int]
    include_existing: bool
    def __init__(self, include_existing: _Optional[bool] = ...) -> None: ...

class PlacementEvent(_message.Message):
    __slots__ = ("sequence", "kind", "generation", "workload", "migration_id", "from_workload_id", "message", "reasons", "at", "converged_after")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[PlacementEvent.Kind]
        KIND_PLACED: _ClassVar[PlacementEvent.Kind]
        KIND_REMOVED: _ClassVar[PlacementEvent.Kind]
        KIND_MIGRATION_STARTED: _ClassVar[PlacementEvent.Kind]
        KIND_CONVERGENCE_WAITING: _ClassVar[PlacementEvent.Kind]
        KIND_CONVERGED: _ClassVar[PlacementEvent.Kind]
        KIND_MIGRATION_COMPLETED: _ClassVar[PlacementEvent.Kind]
        KIND_MIGRATION_ROLLED_BACK: _ClassVar[PlacementEvent.Kind]
        KIND_UNSCHEDULABLE: _ClassVar[PlacementEvent.Kind]
        KIND_FAILOVER_STARTED: _ClassVar[PlacementEvent.Kind]
    KIND_UNSPECIFIED: PlacementEvent.Kind
    KIND_PLACED: PlacementEvent.Kind
    KIND_REMOVED: PlacementEvent.Kind
    KIND_MIGRATION_STARTED: PlacementEvent.Kind
    KIND_CONVERGENCE_WAITING: PlacementEvent.Kind
    KIND_CONVERGED: PlacementEvent.Kind
    KIND_MIGRATION_COMPLETED: PlacementEvent.Kind
    KIND_MIGRATION_ROLLED_BACK: PlacementEvent.Kind
    KIND_UNSCHEDULABLE: PlacementEvent.Kind
    KIND_FAILOVER_STARTED: PlacementEvent.Kind
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    MIGRATION_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_WORKLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    CONVERGED_AFTER_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    kind: PlacementEvent.Kind
    generation: int
    workload: Workload
    migration_id: str
    from_workload_id: str
    message: str
    reasons: _containers.RepeatedScalarFieldContainer[str]
    at: float
    converged_after: _containers.RepeatedCompositeFieldContainer[ProbeTime]
    def __init__(self, sequence: _Optional[int] = ..., kind: _Optional[_Union[PlacementEvent.Kind, str]] = ..., generation: _Optional[int] = ..., workload: _Optional[_Union[Workload, _Mapping]] = ..., migration_id: _Optional[str] = ..., from_workload_id: _Optional[str] = ..., message: _Optional[str] = ..., reasons: _Optional[_Iterable[str]] = ..., at: _Optional[float] = ..., converged_after: _Optional[_Iterable[_Union[ProbeTime, _Mapping]]] = ...) -> None: ...

class ProbeTime(_message.Message):
    __slots__ = ("probe", "seconds")
    PROBE_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    probe: str
    seconds: float
    def __init__(self, probe: _Optional[str] = ..., seconds: _Optional[float] = ...) -> None: ...
