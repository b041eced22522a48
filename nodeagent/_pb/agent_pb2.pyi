from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AttestRequest(_message.Message):
    __slots__ = ("node", "join_token", "csr_pem")
    NODE_FIELD_NUMBER: _ClassVar[int]
    JOIN_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    node: str
    join_token: str
    csr_pem: str
    def __init__(self, node: _Optional[str] = ..., join_token: _Optional[str] = ..., csr_pem: _Optional[str] = ...) -> None: ...

class RenewRequest(_message.Message):
    __slots__ = ("csr_pem",)
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    csr_pem: str
    def __init__(self, csr_pem: _Optional[str] = ...) -> None: ...

class NodeSvid(_message.Message):
    __slots__ = ("spiffe_id", "cert_chain_pem", "trust_bundle_pem", "expires_at")
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    CERT_CHAIN_PEM_FIELD_NUMBER: _ClassVar[int]
    TRUST_BUNDLE_PEM_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    spiffe_id: str
    cert_chain_pem: str
    trust_bundle_pem: str
    expires_at: float
    def __init__(self, spiffe_id: _Optional[str] = ..., cert_chain_pem: _Optional[str] = ..., trust_bundle_pem: _Optional[str] = ..., expires_at: _Optional[float] = ...) -> None: ...

class WatchNodeRequest(_message.Message):
    __slots__ = ("node", "starts_beside")
    NODE_FIELD_NUMBER: _ClassVar[int]
    STARTS_BESIDE_FIELD_NUMBER: _ClassVar[int]
    node: str
    starts_beside: bool
    def __init__(self, node: _Optional[str] = ..., starts_beside: _Optional[bool] = ...) -> None: ...

class Call(_message.Message):
    __slots__ = ("service", "port", "per_request", "bytes_per_call", "protocol")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    BYTES_PER_CALL_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    service: str
    port: int
    per_request: float
    bytes_per_call: int
    protocol: str
    def __init__(self, service: _Optional[str] = ..., port: _Optional[int] = ..., per_request: _Optional[float] = ..., bytes_per_call: _Optional[int] = ..., protocol: _Optional[str] = ...) -> None: ...

class NodeWorkload(_message.Message):
    __slots__ = ("id", "service", "port", "address", "app_host", "run", "env", "spiffe_id", "calls", "protocol", "outbound_host")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    APP_HOST_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    OUTBOUND_HOST_FIELD_NUMBER: _ClassVar[int]
    id: str
    service: str
    port: int
    address: str
    app_host: str
    run: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.ScalarMap[str, str]
    spiffe_id: str
    calls: _containers.RepeatedCompositeFieldContainer[Call]
    protocol: str
    outbound_host: str
    def __init__(self, id: _Optional[str] = ..., service: _Optional[str] = ..., port: _Optional[int] = ..., address: _Optional[str] = ..., app_host: _Optional[str] = ..., run: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ..., spiffe_id: _Optional[str] = ..., calls: _Optional[_Iterable[_Union[Call, _Mapping]]] = ..., protocol: _Optional[str] = ..., outbound_host: _Optional[str] = ...) -> None: ...

class NodeEvent(_message.Message):
    __slots__ = ("kind", "workloads", "generation", "starting")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SNAPSHOT: _ClassVar[NodeEvent.Kind]
        PLACED: _ClassVar[NodeEvent.Kind]
        REMOVED: _ClassVar[NodeEvent.Kind]
    SNAPSHOT: NodeEvent.Kind
    PLACED: NodeEvent.Kind
    REMOVED: NodeEvent.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    WORKLOADS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    STARTING_FIELD_NUMBER: _ClassVar[int]
    kind: NodeEvent.Kind
    workloads: _containers.RepeatedCompositeFieldContainer[NodeWorkload]
    generation: int
    starting: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, kind: _Optional[_Union[NodeEvent.Kind, str]] = ..., workloads: _Optional[_Iterable[_Union[NodeWorkload, _Mapping]]] = ..., generation: _Optional[int] = ..., starting: _Optional[_Iterable[str]] = ...) -> None: ...

class HealthReport(_message.Message):
    __slots__ = ("workload_id", "healthy", "reason", "starting")
    WORKLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STARTING_FIELD_NUMBER: _ClassVar[int]
    workload_id: str
    healthy: bool
    reason: str
    starting: bool
    def __init__(self, workload_id: _Optional[str] = ..., healthy: _Optional[bool] = ..., reason: _Optional[str] = ..., starting: _Optional[bool] = ...) -> None: ...

class HealthReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
