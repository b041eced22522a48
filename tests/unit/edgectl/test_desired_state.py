"""The desired-state layer on a real model writer: warm apply, rejection keeps the last good state,
status and history, convergence reported, one document at a time; hot reload of a file."""

from __future__ import annotations

import threading
import time

import pytest

from edgectl.bus import EventBus
from edgectl.config_watch import ConfigWatcher
from edgectl.desired_state import DesiredState
from edgectl.plan import PlanInputs
from meshctl.snapshot import MeshConfig
from netmodel.fabric import build_state
from netmodel.fabric_file import parse_fabric
from netmodel.ids import ServiceName
from placement.convergence import NamedProbe as Probe
from tests.unit.edgectl.fixtures import EXAMPLE, example_spec


def _spec(text: str):
    return parse_fabric(text, "desired.yaml")


@pytest.fixture
def bus():
    bus = EventBus(build_state(example_spec()))
    bus.start()
    yield bus
    bus.stop()


def _desired(bus, probes=(), prune=False) -> DesiredState:
    def inputs(applied):
        return PlanInputs(state=bus.state, applied_spec=applied, mesh_config=MeshConfig())

    desired = DesiredState(bus.publish, inputs, probes=probes, prune=prune)
    desired.adopt(example_spec(), "r0", "file example")
    return desired


def test_a_good_document_is_applied_and_shown_synced(bus) -> None:
    routes_generation = []
    desired = _desired(bus, probes=[Probe("routes", lambda g: routes_generation.append(g) or True)])
    text = EXAMPLE.read_text().replace("max_latency_ms: 5", "max_latency_ms: 4")
    result = desired.apply(_spec(text), "r1", "edgectl apply")
    assert result.applied and result.converged and result.generation == bus.state.generation
    assert routes_generation and routes_generation[-1] == result.generation
    assert bus.state.services[ServiceName("web")].max_latency_ms == 4
    assert bus.state.desired_revision == "r1"
    view = desired.view()
    assert (view["revision"], view["status"], view["error"], view["health"]) == ("r1", "synced", None, "converged")
    history = desired.history_view()["history"]
    assert [h["revision"] for h in history] == ["r1", "r0"]
    assert history[0]["changes"]["objects_changed"] == ["service/web"]


def test_a_rejected_document_leaves_the_last_good_one_running(bus) -> None:
    desired = _desired(bus)
    before = bus.state
    desired.reject("desired.yaml:3: switches[0].dpid: not a dpid", "", "file desired.yaml")
    assert bus.state is before
    view = desired.view()
    assert (view["revision"], view["status"]) == ("r0", "error")
    assert "switches[0].dpid" in view["error"]
    # The next good document clears the error.
    desired.apply(_spec(EXAMPLE.read_text().replace("max_latency_ms: 5", "max_latency_ms: 6")), "r2", "file")
    assert desired.view()["status"] == "synced" and desired.view()["error"] is None


def test_what_did_not_converge_is_reported(bus) -> None:
    desired = _desired(bus, probes=[Probe("routes", lambda g: True), Probe("sidecars", lambda g: False)])
    text = EXAMPLE.read_text().replace("max_latency_ms: 5", "max_latency_ms: 4")
    result = desired.apply(_spec(text), "r1", "edgectl apply", timeout_s=0.2)
    assert result.applied and not result.converged and result.not_converged == ("sidecars",)
    assert desired.view()["health"] == "degraded" and desired.view()["status"] == "synced"


def test_a_dry_run_and_the_same_document_change_nothing(bus) -> None:
    desired = _desired(bus)
    generation = bus.state.generation
    text = EXAMPLE.read_text().replace("max_latency_ms: 5", "max_latency_ms: 4")
    dry = desired.apply(_spec(text), "r1", "edgectl apply", dry_run=True)
    assert not dry.applied and dry.plan and bus.state.generation == generation
    assert not desired.plan(example_spec(), "")  # the running document, same revision: nothing to do


def test_documents_are_applied_one_at_a_time(bus) -> None:
    release = threading.Event()
    inside = []

    def slow(_generation: int) -> bool:
        inside.append(time.monotonic())
        return release.is_set()

    desired = _desired(bus, probes=[Probe("routes", slow)])
    first = _spec(EXAMPLE.read_text().replace("max_latency_ms: 5", "max_latency_ms: 4"))
    second = _spec(EXAMPLE.read_text().replace("max_latency_ms: 5", "max_latency_ms: 3"))
    results = {}
    t1 = threading.Thread(target=lambda: results.setdefault("r1", desired.apply(first, "r1", "a", timeout_s=10)))
    t1.start()
    while not inside:
        time.sleep(0.01)
    t2 = threading.Thread(target=lambda: results.setdefault("r2", desired.apply(second, "r2", "b", timeout_s=10)))
    t2.start()
    time.sleep(0.3)
    assert bus.state.desired_revision == "r1"  # the second waits for the first to converge
    release.set()
    t1.join(10)
    t2.join(10)
    assert results["r1"].converged and results["r2"].converged
    assert bus.state.desired_revision == "r2" and bus.state.services[ServiceName("web")].max_latency_ms == 3


def test_the_watcher_applies_a_changed_file_and_sighup_forces_a_read(tmp_path) -> None:
    path = tmp_path / "fabric.yaml"
    path.write_text("a")
    calls = []
    watcher = ConfigWatcher(str(path), lambda: calls.append(time.monotonic()), interval_s=0.05).start()
    try:
        time.sleep(0.2)
        assert calls == []  # unchanged: nothing read
        path.write_text("bb")
        deadline = time.monotonic() + 5
        while not calls and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(calls) == 1
        watcher.reload()
        deadline = time.monotonic() + 5
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(calls) == 2
    finally:
        watcher.stop()


def test_the_running_document_again_is_no_apply_and_clears_an_error(bus) -> None:
    desired = _desired(bus)
    desired.reject("x.yaml:1: <file>: not valid YAML", "", "file x.yaml")
    generation = bus.state.generation
    result = desired.apply(example_spec(), "r0", "file example")
    assert not result.applied and bus.state.generation == generation
    assert desired.view()["status"] == "synced" and desired.view()["error"] is None
    # Same content under a new revision (a commit that touched other files): the revision is recorded.
    moved = desired.apply(example_spec(), "r9", "git r9")
    assert moved.applied and not moved.plan and bus.state.desired_revision == "r9"


def test_a_plan_that_fails_is_a_refused_document(bus) -> None:
    from edgectl.desired_state import DocumentRefused

    def broken(_applied):
        raise RuntimeError("a core's bug")

    desired = DesiredState(bus.publish, broken)
    before = bus.state
    with pytest.raises(DocumentRefused):
        desired.apply(example_spec(), "r1", "edgectl apply")
    assert bus.state is before
    assert desired.view()["status"] == "error" and "a core's bug" in desired.view()["error"]


def test_documents_applied_and_rejected_are_counted_and_nothing_else_is(bus) -> None:
    desired = _desired(bus)
    assert desired.outcomes() == {"applied": 0, "rejected": 0}  # the one started with is adopted, not applied
    text = EXAMPLE.read_text().replace("max_latency_ms: 5", "max_latency_ms: 4")
    desired.apply(_spec(text), "r1", "edgectl apply", dry_run=True)
    desired.apply(_spec(text), "r1", "edgectl apply")
    desired.apply(_spec(text), "r1", "edgectl apply")  # the running document again
    desired.reject("desired.yaml:3: switches[0].dpid: not a dpid", "", "file desired.yaml")
    assert desired.outcomes() == {"applied": 1, "rejected": 1}
