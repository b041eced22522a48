"""The scale benchmark's pure parts: its fabric, and what it reads from /proc and /metrics."""

from __future__ import annotations

import pytest

from benchmarks.scale import (
    ENTRY,
    busy,
    cpu_ticks,
    fabric_shape,
    histogram_totals,
    percentile,
    scale_fabric,
    service_tree,
    status_kib,
)
from mininet_topos.generate import to_yaml
from netmodel.fabric_file import parse_fabric


@pytest.mark.parametrize("switches", [6, 50, 100, 500, 824])
def test_the_shape_has_at_most_the_switches_asked_for_and_few_less(switches: int) -> None:
    sites, per_site, metro, cloud = fabric_shape(switches)
    total = sites * per_site + metro + cloud
    assert switches - per_site < total <= switches
    assert sites <= 100 and per_site <= 8


def test_a_shape_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="6-824"):
        fabric_shape(1000)


def test_the_services_hold_every_workload_in_a_call_tree_each_admitting_its_caller() -> None:
    services = service_tree(1050, per_service=100)
    assert sum(s["replicas"] for s in services) == 1050
    assert [s["replicas"] for s in services] == [96] * 5 + [95] * 6
    by_name = {s["name"]: s for s in services}
    assert services[0]["name"] == ENTRY and "allow_from" not in services[0]
    assert by_name[ENTRY]["calls"] == ["s1", "s2"] and by_name["s1"]["calls"] == ["s3", "s4"]
    assert by_name["s4"]["allow_from"] == ["s1"] and "calls" not in by_name["s10"]
    assert len({s["port"] for s in services}) == len(services)


def test_the_fabric_parses_with_the_hosts_asked_for_and_room_for_twice_the_workloads() -> None:
    doc = scale_fabric(50, 100, 1000)
    spec = parse_fabric(to_yaml(doc).encode(), "scale.yaml")
    assert len(spec.switches) <= 50 and len(spec.hosts) == 100
    assert sum(n["cpu_millis"] for n in doc["nodes"]) >= 2 * 1000 * 10
    assert len(doc["services"][0]["allow_from"]) == 100  # every user host may call the entry service
    assert sum(s["replicas"] for s in doc["services"]) == 1000


def test_percentile_is_the_nearest_rank() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(v) for v in range(1, 101)], 99) == 99.0
    assert percentile([1.0, 5.0], 99) == 5.0


def test_a_histogram_is_read_without_labels_and_absent_is_zero() -> None:
    text = (
        "# TYPE edgectl_route_compute_seconds histogram\n"
        'edgectl_route_compute_seconds_bucket{le="0.01"} 1.0\n'
        "edgectl_route_compute_seconds_count 3.0\n"
        "edgectl_route_compute_seconds_sum 0.125\n"
    )
    assert histogram_totals(text, "edgectl_route_compute_seconds") == (0.125, 3.0)
    assert histogram_totals("", "edgectl_route_compute_seconds") == (0.0, 0.0)


def test_route_changes_out_or_a_build_under_way_are_work_even_while_no_counter_moves() -> None:
    assert busy("edgectl_route_apply_running_seconds 12.5\nedgectl_xds_snapshot_build_running_seconds 0.0\n")
    assert busy("edgectl_route_apply_running_seconds 0.0\nedgectl_xds_snapshot_build_running_seconds 3.1\n")
    assert not busy("edgectl_route_apply_running_seconds 0.0\nedgectl_xds_snapshot_build_running_seconds 0.0\n")
    assert not busy("")  # a controller without the gauges: judged by its counters alone


def test_cpu_ticks_count_past_a_command_name_with_spaces_and_parentheses() -> None:
    fields = ["S", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "250", "40", "0", "0"]
    assert cpu_ticks("123 (python (x) y) " + " ".join(fields)) == 290


def test_a_status_field_is_read_in_kib_and_a_missing_one_is_an_error() -> None:
    text = "Name:\tpython\nVmHWM:\t  900000 kB\nVmRSS:\t  312345 kB\n"
    assert status_kib(text, "VmRSS") == 312345 and status_kib(text, "VmHWM") == 900000
    with pytest.raises(ValueError, match="VmSwap"):
        status_kib(text, "VmSwap")


def test_a_stream_that_fails_is_opened_again_and_becomes_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's minimal Envoy, against a real grpc.aio ADS server whose first stream fails
    UNAVAILABLE: it opens the stream again, subscribes again, and is counted ready once."""
    import asyncio

    import grpc
    from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

    import benchmarks.scale as scale

    monkeypatch.setattr(scale, "RECONNECT_BASE_S", 0.01)
    calls: list[list[str]] = []

    class Ads(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
        async def DeltaAggregatedResources(self, requests, context):  # type: ignore[no-untyped-def]
            seen: list[str] = []
            calls.append(seen)
            if len(calls) == 1:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "busy")
            async for request in requests:
                seen.append(request.type_url.rsplit(".", 1)[-1] + ("+" if request.resource_names_subscribe else ""))
                if not request.response_nonce:  # a subscription: answer it (an ACK needs nothing)
                    yield discovery_pb2.DeltaDiscoveryResponse(type_url=request.type_url, nonce=str(len(seen)))

    async def scenario() -> scale.Streams:
        server = grpc.aio.server()
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(Ads(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            streams = scale.Streams(f"127.0.0.1:{port}", ["u1"], "out/8080")
            task = asyncio.create_task(streams.run(0))
            await asyncio.wait_for(streams.ready_event.wait(), 30)
            task.cancel()
            return streams
        finally:
            await server.stop(None)

    streams = asyncio.run(scenario())
    assert streams.reconnects == 1 and streams.ready == 1
    assert len(calls) == 2
    assert {"ClusterLoadAssignment+", "RouteConfiguration+"} <= set(calls[1])  # subscribed again
