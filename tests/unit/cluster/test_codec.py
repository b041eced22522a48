"""The replicated log's codec: every event and whole states come back equal and of the same types (frozen
maps, tuples, enums, ids), in the same order; a state rebuilt from decoded events is the state; malformed
or unknown input is a CodecError saying where, and nothing but the registered netmodel types is built."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import zlib
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.codec import EVENT_TYPES, CodecError, decode_events, decode_state, encode_events, encode_state
from edgectl.config import load_desired
from netmodel import events as ev
from netmodel.fabric import FabricSpec, build_state
from netmodel.ids import HostId, NodeId, PortNo, ServiceName, SiteId, SpiffeId, SwitchId, WorkloadId
from netmodel.state import EventRejected, FabricState
from netmodel.topology import Topology
from netmodel.types import (
    AffinityScope,
    AffinityTerm,
    Attachment,
    LinkAttrs,
    LinkId,
    PlacementConstraints,
    PolicyDefault,
    Port,
    Resources,
    Switch,
    Tier,
    Workload,
    frozen_map,
)

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_same(decoded: Any, original: Any, where: str = "value") -> None:
    """Equal, and of the same type all the way down (a tuple stays a tuple, a frozen map a frozen map, an int
    an int), with maps in the same order; NaN counts as equal to NaN."""
    assert type(decoded) is type(original), f"{where}: {type(decoded).__name__} != {type(original).__name__}"
    if isinstance(original, float) and math.isnan(original):
        assert math.isnan(decoded), where
    elif dataclasses.is_dataclass(original):
        for f in dataclasses.fields(original):
            assert_same(getattr(decoded, f.name), getattr(original, f.name), f"{where}.{f.name}")
    elif isinstance(original, Topology):
        assert_same(decoded.switches, original.switches, f"{where}.switches")
        assert_same(decoded.links, original.links, f"{where}.links")
        assert list(decoded.graph.nodes) == list(original.graph.nodes), f"{where}: graph nodes"
        assert list(decoded.graph.edges(keys=True)) == list(original.graph.edges(keys=True)), f"{where}: graph edges"
        assert nx.is_frozen(decoded.graph), f"{where}: the graph is not frozen"
    elif isinstance(original, Mapping):
        assert len(decoded) == len(original), where
        for (dk, dv), (ok, ov) in zip(decoded.items(), original.items(), strict=True):
            assert_same(dk, ok, f"{where} key")
            assert_same(dv, ov, f"{where}[{ok!r}]")
    elif isinstance(original, tuple | list):
        assert len(decoded) == len(original), where
        for i, (d, o) in enumerate(zip(decoded, original, strict=True)):
            assert_same(d, o, f"{where}[{i}]")
    else:
        assert decoded == original, where


def round_trip_events(events: list[ev.Event]) -> list[ev.Event]:
    return decode_events(encode_events(events))


# -- one case per event type (and a test that keeps it so) ------------------------------------------------

S1, S2 = SwitchId(0xA1), SwitchId(0x101)
LINK = LinkId(S1, PortNo(1), S2, PortNo(2))
SPEC = load_desired(str(REPO / "examples" / "online-boutique.yaml")).spec
CONSTRAINED = Workload(
    id=WorkloadId("frontend-7"),
    service=ServiceName("frontend"),
    spiffe_id=SpiffeId("spiffe://edge.test/ns/default/sa/frontend/w/frontend-7"),
    resources=Resources(500, 256),
    node=NodeId("ea-n1"),
    port=31000,
    constraints=PlacementConstraints(
        tiers=frozenset({Tier.EDGE, Tier.METRO}),
        max_latency_ms=4.5,
        near=(HostId("u1"), HostId("u2")),
        affinity=(AffinityTerm(ServiceName("cartservice"), AffinityScope.SITE),),
        anti_affinity=(AffinityTerm(ServiceName("frontend")),),
    ),
    declared=True,
    bandwidth_mbps=12.5,
)

CASES: dict[type, list[Any]] = {
    ev.SwitchConnected: [
        ev.SwitchConnected(S1, (Port(PortNo(1), "ea1-eth1", "02:00:00:00:00:01"), Port(PortNo(2), up=False)), 12.25),
        ev.SwitchConnected(SwitchId(2**64 - 1), (), 0.0),  # the largest dpid, no ports
    ],
    ev.SwitchDisconnected: [ev.SwitchDisconnected(S1, 1e9 + 0.125)],
    ev.PortStatusChanged: [ev.PortStatusChanged(S1, Port(PortNo(0xFFFFFF00), "local", "", False))],
    ev.PortDeleted: [ev.PortDeleted(S2, PortNo(3))],
    ev.LinkDiscovered: [ev.LinkDiscovered(LINK, 3.5)],
    ev.LinkWentDown: [ev.LinkWentDown(LINK)],
    ev.LinkCameUp: [ev.LinkCameUp(LINK.reversed())],
    ev.LinkLatencyMeasured: [ev.LinkLatencyMeasured(((LINK, 900), (LINK.reversed(), 0), (LINK, 1)), 7.0)],
    ev.LinkLoadMeasured: [
        ev.LinkLoadMeasured(((LINK, 1.5e6), (LINK.reversed(), None), (LINK, 0.0)), 8.0),
        ev.LinkLoadMeasured(((LINK, float("inf")), (LINK.reversed(), float("nan"))), float("-inf")),
    ],
    ev.HostLearned: [
        ev.HostLearned("02:00:00:00:00:0a", "10.0.1.1", Attachment(S1, PortNo(4)), 9.0),
        ev.HostLearned("", "", Attachment(S1, PortNo(4)), 9.0),
    ],
    ev.HostsExpired: [ev.HostsExpired(301.0)],
    ev.NodeWentDown: [ev.NodeWentDown(NodeId("ea-n1"))],
    ev.NodeCameUp: [ev.NodeCameUp(NodeId("ea-n1"))],
    ev.WorkloadPlaced: [
        ev.WorkloadPlaced(CONSTRAINED),
        ev.WorkloadPlaced(Workload(WorkloadId("w"), ServiceName("s"), SpiffeId("spiffe://x/w"), Resources(0, 0))),
    ],
    ev.WorkloadRemoved: [ev.WorkloadRemoved(WorkloadId("frontend-7"))],
    ev.WorkloadHealthChanged: [
        ev.WorkloadHealthChanged(WorkloadId("frontend-7"), False, "app exited: 1", 11.0),
        ev.WorkloadHealthChanged(WorkloadId("frontend-7"), True),
    ],
    ev.WorkloadStarting: [
        ev.WorkloadStarting(WorkloadId("frontend-7"), 12.5),
    ],
    ev.DesiredStateApplied: [
        ev.DesiredStateApplied(load_desired(str(path)).spec, f"rev-{path.stem}") for path in EXAMPLES
    ],
}


def test_every_event_type_of_netmodel_has_a_codec_and_a_case() -> None:
    declared = {
        cls
        for _, cls in inspect.getmembers(ev, inspect.isclass)
        if dataclasses.is_dataclass(cls) and cls.__module__ == ev.__name__
    }
    assert declared == set(EVENT_TYPES), "cluster/codec.py's EVENT_TYPES and netmodel/events.py differ"
    assert declared == set(CASES), "a netmodel event has no round-trip case here"


@pytest.mark.parametrize("event", [e for cases in CASES.values() for e in cases], ids=lambda e: type(e).__name__)
def test_each_event_comes_back_equal_and_of_the_same_types(event: ev.Event) -> None:
    (decoded,) = round_trip_events([event])
    assert_same(decoded, event)
    if not any(isinstance(x, float) and math.isnan(x) for x in _floats(event)):
        assert decoded == event
        assert hash(decoded) == hash(event)  # frozen values: usable as keys as before


def _floats(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, tuple):
        return [f for x in value for f in _floats(x)]
    if dataclasses.is_dataclass(value):
        return [f for field in dataclasses.fields(value) for f in _floats(getattr(value, field.name))]
    return []


def test_a_batch_keeps_its_order_and_encodes_the_same_bytes_every_time() -> None:
    batch = [e for cases in CASES.values() for e in cases]
    data = encode_events(batch)
    assert encode_events(batch) == data
    decoded = decode_events(data)
    assert [type(e) for e in decoded] == [type(e) for e in batch]
    for d, e in zip(decoded, batch, strict=True):
        assert_same(d, e)
    assert decode_events(encode_events([])) == []


def test_a_large_batch_is_stored_compressed_and_a_small_one_as_plain_json() -> None:
    small = encode_events(CASES[ev.LinkLatencyMeasured])
    assert small.startswith(b"{") and json.loads(small)["codec"] == 1
    latencies = ev.LinkLatencyMeasured(tuple((replace(LINK, src_port=PortNo(p)), p) for p in range(1000)), 1.0)
    large = encode_events([latencies, *CASES[ev.DesiredStateApplied]])
    assert json.loads(zlib.decompress(large))["codec"] == 1
    assert len(large) < len(zlib.decompress(large)) / 4
    assert decode_events(large) == [latencies, *CASES[ev.DesiredStateApplied]]
    with pytest.raises(CodecError, match="an event batch is not zlib-compressed JSON"):
        decode_events(large[:-10])


def test_non_finite_floats_are_written_as_strict_json() -> None:
    data = encode_events(CASES[ev.LinkLoadMeasured][1:])
    assert b"NaN" not in data and b"Infinity" not in data
    json.loads(data, parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))


def test_an_int_in_a_float_field_stays_an_int_and_odd_strings_survive() -> None:
    attrs = LinkAttrs(capacity_mbps=100, declared_latency_us=2000)  # the fabric file's ints
    state = replace(
        FabricState(),
        topology=Topology({S1: Switch(S1, "ea1"), S2: Switch(S2, "m1")}, {LINK: attrs}),
        hosts_seen_at=frozen_map({HostId("h\udcff\u2603\x00"): 5}),  # surrogate-escaped bytes, a NUL
        generation=7,
    )
    assert_same(decode_state(encode_state(state)), state)


def test_numpy_numbers_are_written_as_plain_numbers() -> None:
    np = pytest.importorskip("numpy")
    event = ev.LinkLatencyMeasured(((LINK, np.int64(900)),), np.float64(7.5))
    (decoded,) = round_trip_events([event])
    assert decoded == event
    assert type(decoded.latencies_us[0][1]) is int and type(decoded.at) is float


@SETTINGS
@given(
    st.lists(
        st.one_of(
            *(st.from_type(cls) for cls in EVENT_TYPES if cls is not ev.DesiredStateApplied),
            st.builds(ev.DesiredStateApplied, spec=st.from_type(FabricSpec), revision=st.text()),
        ),
        max_size=4,
    )
)
def test_any_events_come_back_the_same(events: list[ev.Event]) -> None:
    for decoded, event in zip(round_trip_events(events), events, strict=True):
        assert_same(decoded, event)


# -- states: each example, as declared and as run -------------------------------------------------------


def observed(state: FabricState, spec: FabricSpec) -> list[ev.Event]:
    """What a running controller would be told of the example: every event type, most of them changing it."""
    used: dict[SwitchId, set[PortNo]] = defaultdict(set)
    for link in state.topology.links:
        used[link.src].add(link.src_port)
    for attachment in [h.attachment for h in state.hosts.values()] + [n.attachment for n in state.nodes.values()]:
        assert attachment is not None
        used[attachment.switch].add(attachment.port)
    switches = list(state.topology.switches)
    links = list(state.topology.links)
    events: list[ev.Event] = [
        ev.SwitchConnected(
            dpid, tuple(Port(p, f"s{k}-eth{p}", f"02:00:00:00:{k:02x}:{p:02x}") for p in sorted(used[dpid])), 10.0 + k
        )
        for k, dpid in enumerate(switches)
    ]
    events += [ev.LinkDiscovered(link, 20.0) for link in links]
    events.append(ev.LinkLatencyMeasured(tuple((link, 400 + 37 * i) for i, link in enumerate(links)), 21.5))
    events.append(ev.LinkLoadMeasured(tuple((link, 1e6 * i if i % 3 else None) for i, link in enumerate(links)), 22.0))
    events += [
        ev.HostLearned(f"02:00:00:00:aa:{k:02x}", host.ip, host.attachment, 23.0)
        for k, host in enumerate(state.hosts.values())
        if host.attachment is not None
    ]
    edge = state.topology.switches[switches[0]]
    events.append(ev.HostLearned("02:00:00:00:bb:01", "10.0.250.9", Attachment(edge.id, PortNo(99)), 24.0))
    nodes = list(state.nodes)
    for k, service in enumerate(spec.services):
        for r in range(service.replicas):
            wid = WorkloadId(f"{service.name}-{r}")
            workload = Workload(
                wid,
                service.name,
                SpiffeId(f"spiffe://edge.test/w/{wid}"),
                service.resources,
                node=nodes[(k + r) % len(nodes)],
                port=30000 + 10 * k + r,
                declared=r == 0,
            )
            events.append(ev.WorkloadPlaced(workload))
    events += [
        ev.WorkloadPlaced(replace(CONSTRAINED, service=spec.services[0].name, node=nodes[-1])),
        ev.WorkloadHealthChanged(CONSTRAINED.id, False, "sidecar died", 25.0),
        ev.WorkloadStarting(CONSTRAINED.id, 25.5),  # restarted beside its sidecar: in the checkpoint
        ev.NodeWentDown(nodes[0]),
        ev.NodeCameUp(nodes[0]),
        ev.PortStatusChanged(links[0].src, Port(links[0].src_port, "down", "", False)),
        ev.LinkCameUp(links[0]),
        ev.LinkWentDown(links[-1]),
        ev.PortDeleted(links[1].dst, links[1].dst_port),
        ev.WorkloadRemoved(WorkloadId(f"{spec.services[-1].name}-0")),
        ev.SwitchDisconnected(switches[-1], 26.0),
        ev.HostsExpired(100.0),  # the undeclared host stays (seen at 24)
        ev.DesiredStateApplied(spec, "rev-2"),
    ]
    return events


@pytest.fixture(params=EXAMPLES, ids=lambda p: p.name)
def example(request: pytest.FixtureRequest) -> tuple[FabricSpec, FabricState, list[ev.Event]]:
    spec = load_desired(str(request.param)).spec
    declared = build_state(spec)
    return spec, declared, observed(declared, spec)


def test_example_states_come_back_equal_as_declared_and_after_each_event(
    example: tuple[FabricSpec, FabricState, list[ev.Event]],
) -> None:
    _, state, events = example
    assert_same(decode_state(encode_state(state)), state)
    assert {type(e) for e in events} == set(EVENT_TYPES)
    generations = [state.generation]
    for event in events:
        state = state.apply(event)
        generations.append(state.generation)
        decoded = decode_state(encode_state(state))
        assert decoded == state
    assert_same(decoded, state)
    assert state.workloads and state.unhealthy and state.hosts_seen_at and generations[-1] > len(events) // 2


def test_applying_decoded_events_gives_the_same_states(
    example: tuple[FabricSpec, FabricState, list[ev.Event]],
) -> None:
    _, state, events = example
    mine = theirs = state
    for event in events:
        mine = mine.apply(event)
        (decoded,) = round_trip_events([event])
        theirs = theirs.apply(decoded)
        assert theirs == mine and theirs.generation == mine.generation
    assert_same(theirs, mine)
    replayed = state
    for decoded in decode_events(encode_events(events)):  # the whole history as one entry
        replayed = replayed.apply(decoded)
    assert_same(replayed, mine)


EDGE = load_desired(str(REPO / "examples" / "edge-cloud.yaml")).spec
EDGE_STATE = build_state(EDGE)
EDGE_LINKS = sorted(EDGE_STATE.topology.links)
switch_ids = st.sampled_from([*EDGE_STATE.topology.switches, SwitchId(0xDEAD)])
port_nos = st.integers(1, 4).map(PortNo)
links = st.one_of(st.sampled_from(EDGE_LINKS), st.builds(LinkId, switch_ids, port_nos, switch_ids, port_nos))
times = st.floats(0, 1e6, allow_nan=False)
random_events = st.one_of(
    st.builds(ev.SwitchConnected, switch_ids, st.lists(st.builds(Port, port_nos, up=st.booleans())).map(tuple), times),
    st.builds(ev.SwitchDisconnected, switch_ids, times),
    st.builds(ev.PortStatusChanged, switch_ids, st.builds(Port, port_nos, up=st.booleans())),
    st.builds(ev.LinkDiscovered, links, times),
    st.builds(ev.LinkWentDown, links),
    st.builds(ev.LinkLatencyMeasured, st.lists(st.tuples(links, st.integers(-1, 9000)), max_size=3).map(tuple), times),
    st.builds(ev.LinkLoadMeasured, st.lists(st.tuples(links, st.none() | times), max_size=3).map(tuple), times),
    st.builds(
        ev.HostLearned,
        st.sampled_from(["02:00:00:00:00:01", "02:00:00:00:00:0A"]),
        st.just("10.0.9.9"),
        st.builds(Attachment, switch_ids, port_nos),
        times,
    ),
    st.builds(ev.HostsExpired, times),
    st.builds(ev.NodeWentDown, st.sampled_from(sorted(EDGE_STATE.nodes))),
    st.builds(
        ev.WorkloadPlaced,
        st.builds(
            Workload,
            st.sampled_from(["w1", "w2"]).map(WorkloadId),
            st.sampled_from(sorted(EDGE_STATE.services)),
            st.just(SpiffeId("s")),
            st.just(Resources(1, 1)),
            st.sampled_from(sorted(EDGE_STATE.nodes)),
        ),
    ),
    st.builds(ev.WorkloadHealthChanged, st.sampled_from(["w1", "w2"]).map(WorkloadId), st.booleans()),
    st.builds(ev.WorkloadStarting, st.sampled_from(["w1", "w2"]).map(WorkloadId)),
)


@SETTINGS
@given(st.lists(random_events, max_size=12))
def test_random_histories_apply_alike_decoded_or_not(events: list[ev.Event]) -> None:
    mine = theirs = EDGE_STATE
    for event, decoded in zip(events, round_trip_events(events), strict=True):
        try:
            mine = mine.apply(event)
        except EventRejected as rejected:
            with pytest.raises(EventRejected, match=rejected.args[0].replace("(", r"\(").replace(")", r"\)")):
                theirs.apply(decoded)
            continue
        theirs = theirs.apply(decoded)
        assert theirs == mine and theirs.generation == mine.generation
    assert_same(decode_state(encode_state(mine)), mine)


def test_a_checkpoint_is_compressed_json_of_the_codec_version() -> None:
    document = json.loads(zlib.decompress(encode_state(EDGE_STATE)))
    assert set(document) == {"codec", "state"} and document["codec"] == 1
    assert set(document["state"]["topology"]) == {"switches", "links"}


def test_maps_keep_their_order_and_stay_frozen() -> None:
    state = replace(EDGE_STATE, hosts_seen_at=frozen_map({HostId("z"): 1.0, HostId("a"): 2.0}))
    decoded = decode_state(encode_state(state))
    assert list(decoded.hosts_seen_at) == ["z", "a"]
    assert list(decoded.topology.switches) == list(state.topology.switches)
    assert type(decoded.nodes) is MappingProxyType and type(decoded.topology.links) is MappingProxyType
    with pytest.raises(TypeError):
        decoded.nodes["x"] = None  # type: ignore[index]


# -- bad input ------------------------------------------------------------------------------------------------


def document(*events: dict[str, Any]) -> bytes:
    return json.dumps({"codec": 1, "events": list(events)}).encode()


def valid(event: ev.Event) -> dict[str, Any]:
    return json.loads(encode_events([event]))["events"][0]  # type: ignore[no-any-return]


def _with_tiers(tiers: Any) -> dict[str, Any]:
    placed = valid(CASES[ev.WorkloadPlaced][0])
    placed["workload"]["constraints"]["tiers"] = tiers
    return placed


BAD_BATCHES = [
    ("not bytes", "an event batch must be bytes, got str", '{"codec": 1, "events": []}'),
    ("not JSON", "an event batch is not JSON", b"{"),
    ("not UTF-8", "an event batch is not JSON", b'{"codec": 1, "events": ["\xff"]}'),
    ("NaN literal", "NaN is not JSON", b'{"codec": 1, "events": [NaN]}'),
    ("an array", "expected a document object, got an array", b"[]"),
    ("other version", "codec: codec version 2 is not supported", b'{"codec": 2, "events": []}'),
    ("version as a bool", "codec: codec version True is not supported", b'{"codec": true, "events": []}'),
    ("no events", "expected the fields codec and events", b'{"codec": 1}'),
    ("more fields", "expected the fields codec and events", b'{"codec": 1, "events": [], "x": 1}'),
    ("events not an array", "events: expected an array of events, got an object", b'{"codec": 1, "events": {}}'),
    ("event not an object", "events[0]: expected an event object, got an integer 3", document(3)),  # type: ignore[arg-type]
    ("no type tag", "events[0].$type: unknown event type None", document({"at": 1.0})),
    ("unknown tag", "events[0].$type: unknown event type 'SwitchExploded'", document({"$type": "SwitchExploded"})),
    ("a class path", "unknown event type 'os.system'", document({"$type": "os.system", "command": "true"})),
    ("a model type, not an event", "unknown event type 'FabricState'", document({"$type": "FabricState"})),
    ("a tag that is no string", "unknown event type ['x']", document({"$type": ["x"]})),
    (
        "missing field",
        "events[0] HostsExpired.at: missing (a HostsExpired needs it)",
        document({"$type": "HostsExpired"}),
    ),
    (
        "unknown field",
        "events[0] HostsExpired: unknown field extra of HostsExpired",
        document({**valid(ev.HostsExpired(1.0)), "extra": 1}),
    ),
    ("str for a float", "events[0] HostsExpired.at: expected a number", document({"$type": "HostsExpired", "at": "1"})),
    (
        "a bool for an int",
        "events[1] PortDeleted.port: expected an integer, got a boolean True",
        document(valid(ev.HostsExpired(1.0)), {"$type": "PortDeleted", "switch": 1, "port": True}),
    ),
    (
        "a float for an int",
        "events[0] PortDeleted.switch: expected an integer, got a number 1.5",
        document({"$type": "PortDeleted", "switch": 1.5, "port": 1}),
    ),
    (
        "deep in a tuple",
        "events[0] SwitchConnected.ports[1].no: expected an integer, got a string '2'",
        document({**valid(CASES[ev.SwitchConnected][0]), "ports": [{"no": 1}, {"no": "2"}]}),
    ),
    (
        "a tuple that is an object",
        "events[0] SwitchConnected.ports: expected an array, got an object",
        document({**valid(CASES[ev.SwitchConnected][0]), "ports": {}}),
    ),
    (
        "a pair of three",
        "events[0] LinkLatencyMeasured.latencies_us[0]: expected an array of 2",
        document({**valid(CASES[ev.LinkLatencyMeasured][0]), "latencies_us": [[1, 2, 3]]}),
    ),
    (
        "a link as an array",
        "LinkWentDown.link: expected a LinkId object, got an array",
        document({"$type": "LinkWentDown", "link": [1, 2, 3, 4]}),
    ),
    (
        "a null where no None is",
        "events[0] LinkWentDown.link: expected a LinkId object, got null",
        document({"$type": "LinkWentDown", "link": None}),
    ),
    (
        "an unknown enum value",
        "workload.constraints.tiers[0]: expected a Tier ('edge', 'metro', 'cloud')",
        document(_with_tiers(["moon"])),
    ),
    (
        "a bad non-finite float",
        'LinkLoadMeasured.at: expected a number (or "inf", "-inf", "nan"), got a string',
        document({**valid(CASES[ev.LinkLoadMeasured][0]), "at": "Infinity"}),
    ),
    ("deep nesting", "is not JSON", b'{"codec": 1, "events": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
]


@pytest.mark.parametrize(("data", "message"), [(d, m) for _, m, d in BAD_BATCHES], ids=[n for n, _, _ in BAD_BATCHES])
def test_a_bad_batch_is_a_codec_error_saying_what_and_where(data: bytes, message: str) -> None:
    with pytest.raises(CodecError) as caught:
        decode_events(data)
    assert message in str(caught.value)
    assert "Traceback" not in str(caught.value) and caught.value.__cause__ is None


def _state_document(mutate: Any) -> bytes:
    document = json.loads(zlib.decompress(encode_state(EDGE_STATE)))
    mutate(document["state"])
    return zlib.compress(json.dumps(document).encode())


BAD_CHECKPOINTS = [
    ("not compressed", "a checkpoint is not zlib-compressed JSON", b'{"codec": 1, "state": {}}'),
    ("truncated", "a checkpoint is not zlib-compressed JSON", encode_state(EDGE_STATE)[:-10]),
    ("an event batch", "a checkpoint is not zlib-compressed JSON", encode_events([])),
    (
        "a compressed event batch",
        "expected the fields codec and state, got ['codec', 'events']",
        zlib.compress(encode_events([])),
    ),
    ("not bytes", "a checkpoint must be bytes", "x"),
    ("compressed nonsense", "a checkpoint is not JSON", zlib.compress(b"\x00\x01")),
    (
        "a link to nowhere",
        "state.topology.links[0]: the link",
        _state_document(lambda s: s["topology"].update(switches=s["topology"]["switches"][1:])),
    ),
    (
        "a twice-named switch",
        "state.topology.switches[1]: the key 161 appears twice",
        _state_document(lambda s: s["topology"].update(switches=s["topology"]["switches"][:1] * 2)),
    ),
    (
        "a pair that is no pair",
        "state.topology.switches[0]: expected a [key, value] pair, got an integer 5",
        _state_document(lambda s: s["topology"].update(switches=[5])),
    ),
    (
        "a bad key",
        "state.topology.switches[0].key: expected an integer, got a string 'a1'",
        _state_document(lambda s: s["topology"]["switches"][0].__setitem__(0, "a1")),
    ),
    (
        "a long key cut short",
        "state.nodes['" + "n" * 56 + "...]: expected a ComputeNode object, got an integer 1",
        _state_document(lambda s: s["nodes"].update({"n" * 1000: 1})),
    ),
    (
        "a bad value in a str map",
        "state.nodes['ea-n1'].capacity.cpu_millis: expected an integer",
        _state_document(lambda s: s["nodes"]["ea-n1"]["capacity"].update(cpu_millis="2000")),
    ),
    (
        "an unknown policy",
        "state.default_policy: expected a PolicyDefault ('deny', 'allow'), got a string 'maybe'",
        _state_document(lambda s: s.update(default_policy="maybe")),
    ),
    (
        "a topology with more",
        "state.topology: expected a Topology object (switches, links)",
        _state_document(lambda s: s["topology"].update(graph=[])),
    ),
    (
        "an unknown state field",
        "state: unknown field leader of FabricState",
        _state_document(lambda s: s.update(leader="me")),
    ),
]


@pytest.mark.parametrize(
    ("data", "message"), [(d, m) for _, m, d in BAD_CHECKPOINTS], ids=[n for n, _, _ in BAD_CHECKPOINTS]
)
def test_a_bad_checkpoint_is_a_codec_error_saying_what_and_where(data: bytes, message: str) -> None:
    with pytest.raises(CodecError) as caught:
        decode_state(data)
    assert message in str(caught.value)


def test_a_state_field_absent_from_an_older_checkpoint_takes_its_default() -> None:
    data = _state_document(lambda s: (s.pop("unhealthy"), s.pop("desired_revision")))
    assert decode_state(data) == EDGE_STATE


def test_what_is_no_model_value_is_refused_when_encoding_saying_where() -> None:
    class NotAnEvent:
        pass

    with pytest.raises(CodecError, match=r"events\[1\]: NotAnEvent is not a netmodel event"):
        encode_events([ev.HostsExpired(1.0), NotAnEvent()])  # type: ignore[list-item]
    with pytest.raises(CodecError, match=r"events\[0\] PortDeleted.port: expected an integer, got str '1'"):
        encode_events([ev.PortDeleted(S1, "1")])  # type: ignore[arg-type]
    with pytest.raises(CodecError, match=r"events\[0\] PortDeleted.port: expected an integer, got bool True"):
        encode_events([ev.PortDeleted(S1, True)])  # type: ignore[arg-type]
    with pytest.raises(CodecError, match=r"latencies_us\[1\]\[0\]: expected a LinkId, got tuple"):
        encode_events([ev.LinkLatencyMeasured(((LINK, 1), ((1, 2, 3, 4), 2)), 1.0)])  # type: ignore[arg-type]
    bad_key = replace(EDGE_STATE, hosts_seen_at={HostId("a"): 1.0, 7: 2.0})  # type: ignore[dict-item]
    with pytest.raises(CodecError, match=r"state.hosts_seen_at\[7\]: expected a string key, got int 7"):
        encode_state(bad_key)
    with pytest.raises(CodecError, match=r"state.default_policy: expected a PolicyDefault"):
        encode_state(replace(EDGE_STATE, default_policy="maybe"))  # type: ignore[arg-type]
    assert decode_state(encode_state(replace(EDGE_STATE, default_policy="allow"))).default_policy is PolicyDefault.ALLOW  # type: ignore[arg-type]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def _mutated(value: Any, path: list[int], replacement: Any) -> Any:
    """``value`` with the part ``path`` leads to (each step an index into the children) replaced."""
    if not path:
        return replacement
    children = (
        list(value.items()) if isinstance(value, dict) else list(enumerate(value)) if isinstance(value, list) else []
    )
    if not children:
        return replacement
    key, child = children[path[0] % len(children)]
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[key] = _mutated(child, path[1:], replacement)
    return copy


@SETTINGS
@given(
    st.sampled_from([e for cases in CASES.values() for e in cases if not isinstance(e, ev.DesiredStateApplied)]),
    st.lists(st.integers(0, 20), max_size=6),
    json_values,
)
def test_a_damaged_entry_decodes_to_model_values_or_is_a_codec_error(
    event: ev.Event, path: list[int], junk: Any
) -> None:
    data = json.dumps(_mutated(json.loads(encode_events([event])), path, junk)).encode()
    try:
        decoded = decode_events(data)
    except CodecError:
        return
    for e in decoded:
        assert type(e) in EVENT_TYPES
        assert_same(decode_events(encode_events([e]))[0], e)  # whatever it is, it is a model value again


def test_enums_are_members_again() -> None:
    decoded = decode_state(encode_state(EDGE_STATE))
    assert decoded.sites[SiteId("edge-a")].tier is Tier.EDGE
    assert decoded.default_policy is EDGE_STATE.default_policy
