"""What callers' sidecars do about a failing instance: outlier detection on every service cluster, retries
of idempotent requests (per try, on another instance) and of no others, and no endpoint for an instance
reported unhealthy."""

from __future__ import annotations

import math
import re
import time

import pytest

from meshctl import envoy_config as ec
from meshctl.snapshot import MeshConfig, build_snapshots
from meshctl.xds_types import CLUSTER, ENDPOINTS, LISTENER, ROUTES
from netmodel import events as ev
from netmodel.ids import WorkloadId
from tests.unit.meshctl.mesh_helpers import placed_state

TCP_DB = MeshConfig(tcp_services=frozenset({"db"}))


def route_for(virtual_host, method: str):
    """The route Envoy picks for a request with this method: the first whose :method matcher accepts it."""
    for route in virtual_host.routes:
        matchers = [h for h in route.match.headers if h.name == ":method"]
        if all(re.fullmatch(h.string_match.safe_regex.regex, method) for h in matchers):
            return route
    raise AssertionError(f"no route for {method}")


def test_every_service_cluster_ejects_an_instance_after_consecutive_gateway_failures() -> None:
    web = build_snapshots(placed_state(), TCP_DB)["web-1"]
    services = [r for name, r in web.of_type(CLUSTER).items() if name.startswith("svc/")]
    assert sorted(r.name for r in services) == ["svc/admin", "svc/api"]
    for resource in services:
        outlier = resource.message.outlier_detection
        assert resource.message.HasField("outlier_detection")
        assert outlier.consecutive_gateway_failure.value == 3
        assert outlier.enforcing_consecutive_gateway_failure.value == 100
        assert outlier.enforcing_consecutive_5xx.value == 0  # a 500 is the app's answer, not a dead instance
        assert outlier.interval.ToMilliseconds() <= 1000
        assert 0 < outlier.base_ejection_time.ToMilliseconds() <= 10_000
        assert outlier.max_ejection_percent.value == 50
        budget = resource.message.circuit_breakers.thresholds[0].retry_budget
        assert budget.min_retry_concurrency.value >= 10
    # TCP services too: the db cluster of an api sidecar.
    api = build_snapshots(placed_state(), TCP_DB)["api-1"]
    assert api.of_type(CLUSTER)["svc/db"].message.outlier_detection.consecutive_gateway_failure.value == 3


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"])
def test_idempotent_requests_are_retried_per_try_on_another_instance(method: str) -> None:
    routes = build_snapshots(placed_state(), TCP_DB)["web-1"].of_type(ROUTES)["out/9090"].message
    (api,) = routes.virtual_hosts
    route = route_for(api, method)
    policy = route.route.retry_policy
    assert route.route.cluster == "svc/api"
    assert set(policy.retry_on.split(",")) == {"connect-failure", "refused-stream", "reset", "gateway-error"}
    assert policy.num_retries.value == 2
    assert policy.per_try_timeout.ToMilliseconds() == 1000
    assert route.route.timeout.ToMilliseconds() == 15000  # the whole request, over all tries
    assert [p.name for p in policy.retry_host_predicate] == ["envoy.retry_host_predicates.previous_hosts"]
    assert policy.host_selection_retry_max_attempts >= 2


@pytest.mark.parametrize("method", ["POST", "PATCH", "CONNECT", "get", "GETX"])
def test_other_requests_are_retried_only_when_they_never_reached_an_app(method: str) -> None:
    routes = build_snapshots(placed_state(), TCP_DB)["u1"].of_type(ROUTES)["out/8080"].message
    (web,) = routes.virtual_hosts
    policy = route_for(web, method).route.retry_policy
    assert set(policy.retry_on.split(",")) == {"connect-failure", "refused-stream"}
    assert not policy.HasField("per_try_timeout")  # a slow POST must not be sent twice


def test_retries_follow_the_config() -> None:
    config = MeshConfig(retries=ec.RetryRules(num_retries=4, per_try_timeout_ms=250))
    routes = build_snapshots(placed_state(), config)["u1"].of_type(ROUTES)["out/8080"].message
    policy = route_for(routes.virtual_hosts[0], "GET").route.retry_policy
    assert (policy.num_retries.value, policy.per_try_timeout.ToMilliseconds()) == (4, 250)


def test_an_inbound_listener_retries_its_one_app_only_on_connection_failures() -> None:
    inbound = build_snapshots(placed_state(), TCP_DB)["web-1"].of_type(LISTENER)["in/web-1"].message
    manager = ec.hcm_pb2.HttpConnectionManager()
    inbound.filter_chains[0].filters[0].typed_config.Unpack(manager)
    (host,) = manager.route_config.virtual_hosts
    warm_up, route = host.routes  # (the warm-up, answered by the sidecar itself, goes first)
    assert warm_up.HasField("direct_response") and not warm_up.HasField("route")
    # One route to the app, no method split: a 5xx of its own app is passed on, the caller decides.
    assert route.route.retry_policy.retry_on == "connect-failure,refused-stream"


def test_an_unhealthy_instance_is_no_endpoint_until_it_is_healthy_again() -> None:
    state = placed_state()
    addresses = {
        (lb.endpoint.address.socket_address.address, lb.endpoint.address.socket_address.port_value)
        for group in build_snapshots(state, TCP_DB)["u1"].of_type(ENDPOINTS)["svc/web"].message.endpoints
        for lb in group.lb_endpoints
    }
    assert addresses == {("10.1.1.10", 8080), ("10.1.1.11", 18080)}
    sick = state.apply(ev.WorkloadHealthChanged(WorkloadId("web-2"), healthy=False, reason="app exited (-9)"))
    snapshots = build_snapshots(sick, TCP_DB)
    for caller in ("u1", "u2"):
        cla = snapshots[caller].of_type(ENDPOINTS)["svc/web"].message
        assert [lb.endpoint.address.socket_address.port_value for g in cla.endpoints for lb in g.lb_endpoints] == [8080]
    assert "in/web-2" in snapshots["web-2"].of_type(LISTENER)  # its own sidecar keeps its config
    healed = sick.apply(ev.WorkloadHealthChanged(WorkloadId("web-2"), healthy=True))
    after = build_snapshots(healed, TCP_DB)["u1"].of_type(ENDPOINTS)["svc/web"]
    assert after.digest == build_snapshots(state, TCP_DB)["u1"].of_type(ENDPOINTS)["svc/web"].digest


def test_a_health_report_alone_rebuilds_the_callers_endpoints() -> None:
    from meshctl.cache import SnapshotCache
    from meshctl.metrics import XdsMetrics
    from meshctl.xds_grpc import SnapshotPublisher

    state = placed_state()
    cache = SnapshotCache()
    publisher = SnapshotPublisher(lambda: state, TCP_DB, cache, XdsMetrics())
    publisher.build_now()
    before = cache.snapshot("u1")
    assert before is not None
    state = state.apply(ev.WorkloadHealthChanged(WorkloadId("web-2"), healthy=False, reason="sidecar exited (1)"))
    publisher.build_now()  # nothing else changed in the model: the rebuild must not be skipped
    after = cache.snapshot("u1")
    assert after is not None and after.generation == state.generation
    assert after.digest(ENDPOINTS) != before.digest(ENDPOINTS)


def test_the_publisher_builds_a_burst_of_changes_that_came_while_it_built_at_once_and_stops_mid_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading
    import time

    from meshctl.cache import SnapshotCache
    from meshctl.metrics import XdsMetrics
    from meshctl.xds_grpc import SnapshotPublisher

    publisher = SnapshotPublisher(placed_state, TCP_DB, SnapshotCache(), XdsMetrics())
    builds: list[float] = []
    building = threading.Event()

    def slow_build() -> None:
        builds.append(time.monotonic())
        building.set()
        time.sleep(0.2)  # (the second, which follows the first closely, is then followed by MAX_PAUSE_S)

    monkeypatch.setattr(publisher, "build_now", slow_build)
    publisher.start()
    try:
        publisher.request()
        assert building.wait(5)
        for _ in range(20):  # a burst while it builds: one more build takes them all
            publisher.request()
        deadline = time.monotonic() + 5
        while len(builds) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(builds) == 2
    finally:
        publisher.stop()  # (during that build or the pause after it)
    assert publisher._thread is not None and not publisher._thread.is_alive()
    assert len(builds) == 2


def test_a_build_under_way_reads_on_its_gauge_and_none_reads_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from meshctl.cache import SnapshotCache
    from meshctl.metrics import XdsMetrics
    from meshctl.xds_grpc import SnapshotPublisher

    metrics = XdsMetrics()
    publisher = SnapshotPublisher(placed_state, TCP_DB, SnapshotCache(), metrics)
    building, finish = threading.Event(), threading.Event()

    def held_build() -> None:
        building.set()
        assert finish.wait(5)

    def gauge() -> float:
        return float(metrics.registry.get_sample_value("edgectl_xds_snapshot_build_running_seconds") or 0.0)

    monkeypatch.setattr(publisher, "build_now", held_build)
    assert gauge() == 0.0
    publisher.start()
    try:
        publisher.request()
        assert building.wait(5)
        assert gauge() > 0.0
        finish.set()
        deadline = time.monotonic() + 5
        while gauge() > 0.0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gauge() == 0.0
    finally:
        finish.set()
        publisher.stop()


def test_close_builds_pause_for_what_they_took_and_one_after_a_quiet_spell_does_not() -> None:
    from meshctl.publisher import MAX_PAUSE_S, PAUSE_FACTOR, pause_after_build

    pause = PAUSE_FACTOR * 0.004
    assert pause_after_build(math.inf, 0.004) == 0.0  # the first build
    assert pause_after_build(1.0, 0.004) == 0.0  # a change that came alone
    assert pause_after_build(1.0, 0.3) == 0.0  # a large build after a quiet spell: the next change goes at once
    assert pause_after_build(0.0005, 0.004) == pause  # changes keep coming: they gather for the next build
    # Right after its own pause, still closely: the pause is not counted as a quiet spell.
    assert pause_after_build(pause + 0.0005, 0.004, paused_before=pause) == pause
    assert pause_after_build(pause + 1.0, 0.004, paused_before=pause) == 0.0  # quiet after the pause
    assert pause_after_build(0.001, 0.3) == MAX_PAUSE_S


def test_a_server_restarted_in_one_process_registers_every_xds_metric_again() -> None:
    from prometheus_client import CollectorRegistry

    from meshctl.metrics import XdsMetrics

    registry = CollectorRegistry()
    XdsMetrics(registry).unregister()
    assert [family.name for family in registry.collect()] == []  # nothing of the first server's left
    XdsMetrics(registry)  # the restarted server's: no name registered twice
