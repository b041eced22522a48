"""Bad desired-state documents through hot reload of a real `edgectl run --config DIR` (no testbed needed):
each is rejected with a clear status and log line, the last good revision keeps running, no placement is
lost, the controller stays healthy, and the next good document is applied."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.harness import REPO, edgectl_run, wait_until

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples" / "edge-cloud.yaml"
GOOD = EXAMPLE.read_text()


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-input")
    directory = root / "fabric.d"
    directory.mkdir()
    (directory / "fabric.yaml").write_text(GOOD)
    with edgectl_run(directory, "--reload-interval", "0.2") as controller:
        wait_until(lambda: len(controller.get_json("/api/v1/workloads")["workloads"]) == 5, 30, what="replicas")
        yield {"controller": controller, "dir": directory, "root": root}


def _status(controller) -> dict:
    return controller.get_json("/api/v1/config")


def _rejected(running, break_it, expect: str) -> dict:
    controller, directory = running["controller"], running["dir"]
    good = _status(controller)
    assert good["status"] == "synced"
    workloads = controller.get_json("/api/v1/workloads")["workloads"]
    generation = controller.get_json("/healthz")["generation"]
    break_it(directory)
    wait_until(lambda: _status(controller)["status"] == "error", 15, what="the document rejected")
    view = _status(controller)
    assert view["revision"] == good["revision"], "the last good revision keeps running"
    assert expect in view["error"], view["error"]
    assert controller.get_json("/healthz")["status"] == "ok"
    assert controller.get_json("/api/v1/workloads")["workloads"] == workloads, "nothing lost"
    assert controller.get_json("/healthz")["generation"] == generation, "the model is untouched"
    assert "rejected" in controller.log()
    return view


def _restore(running) -> None:
    controller, directory = running["controller"], running["dir"]
    for entry in directory.iterdir():
        if entry.is_symlink() or entry.is_file():
            entry.unlink()
        else:
            shutil.rmtree(entry)
    (directory / "fabric.yaml").write_text(GOOD.replace("bandwidth_mbps: 100}", "bandwidth_mbps: 99}", 1))
    wait_until(lambda: _status(controller)["status"] == "synced", 15, what="synced again")
    (directory / "fabric.yaml").write_text(GOOD)
    wait_until(lambda: _status(controller)["status"] == "synced", 15, what="synced again")


def test_invalid_yaml(running) -> None:
    view = _rejected(running, lambda d: (d / "fabric.yaml").write_text(GOOD + "\nbroken: [\n"), "not valid YAML")
    assert "fabric.yaml:" in view["error"]
    _restore(running)


def test_a_dangling_reference(running) -> None:
    def dangling(d: Path) -> None:
        (d / "fabric.yaml").write_text(GOOD.replace("switch: m2,  cpu_millis: 4000", "switch: m9,  cpu_millis: 4000"))

    view = _rejected(running, dangling, "unknown switch 'm9'")
    assert "nodes[3].switch" in view["error"]
    _restore(running)


def test_an_impossible_slo(running) -> None:
    def impossible(d: Path) -> None:
        (d / "fabric.yaml").write_text(GOOD.replace("max_latency_ms: 5", "max_latency_ms: 0.01"))

    view = _rejected(running, impossible, "cannot be applied")
    assert "web" in view["error"]
    _restore(running)


def test_a_50_mb_file(running) -> None:
    def huge(d: Path) -> None:
        with open(d / "zz-huge.yaml", "wb") as handle:
            handle.truncate(50 * 1024 * 1024)  # sparse: nothing written, and nothing may be read

    view = _rejected(running, huge, "too large")
    assert "zz-huge.yaml" in view["error"]
    _restore(running)


def test_a_symlink_that_leaves_the_directory(running) -> None:
    outside = running["root"] / "outside.yaml"
    outside.write_text("services: []\n")
    view = _rejected(running, lambda d: os.symlink(outside, d / "sneaky.yaml"), "symlink leaves the document")
    assert "sneaky.yaml" in view["error"]
    _restore(running)


def test_sighup_reads_the_file_when_polling_is_off(tmp_path) -> None:
    config = tmp_path / "fabric.yaml"
    config.write_text(GOOD)
    with edgectl_run(config, "--reload-interval", "0") as controller:
        first = _status(controller)["revision"]
        config.write_text(GOOD.replace("max_latency_ms: 5", "max_latency_ms: 6"))
        time.sleep(1.5)
        assert _status(controller)["revision"] == first, "no polling: the change waits for SIGHUP"
        controller.process.send_signal(signal.SIGHUP)
        wait_until(lambda: _status(controller)["revision"] != first, 15, what="applied after SIGHUP")
        assert _status(controller)["status"] == "synced"
        assert controller.alive()


def test_an_unreachable_repository_then_one_that_appears(tmp_path) -> None:
    bare = tmp_path / "later.git"
    with edgectl_run(EXAMPLE, "--git-repo", f"file://{bare}", "--git-interval", "3600") as controller:
        bootstrap = _status(controller)["revision"]
        wait_until(lambda: _status(controller)["status"] == "error", 15, what="the fetch failing")
        view = _status(controller)
        assert "cannot fetch main" in view["error"] and view["revision"] == bootstrap
        assert controller.get_json("/healthz")["status"] == "ok"
        work = tmp_path / "work"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True, timeout=30)
        subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True, timeout=30)
        (work / "fabric.yaml").write_text(GOOD)
        identity = ["-c", "user.name=t", "-c", "user.email=t@edgectl.invalid"]
        for args in (["add", "-A"], ["commit", "-qm", "fabric"], ["push", "-q", str(bare), "main"]):
            subprocess.run(["git", *identity, *args], cwd=work, check=True, timeout=30, capture_output=True)
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True).stdout.strip()
        request = urllib.request.Request(controller.http + "/api/v1/git/sync", data=b"{}", method="POST")
        urllib.request.urlopen(request, timeout=10).read()
        wait_until(lambda: _status(controller)["applied_sha"] == sha, 30, what="the repository applied")
        assert _status(controller)["status"] == "synced"


def test_scaling_replicas_in_the_file_places_and_drains(running) -> None:
    controller, directory = running["controller"], running["dir"]

    def api_instances() -> list[str]:
        return sorted(w["id"] for w in controller.get_json("/api/v1/workloads")["workloads"] if w["service"] == "api")

    before = api_instances()
    assert len(before) == 2
    (directory / "fabric.yaml").write_text(
        GOOD.replace("{name: api, port: 9090, replicas: 2", "{name: api, port: 9090, replicas: 3")
    )
    wait_until(lambda: len(api_instances()) == 3, 20, what="a third api instance placed")
    assert set(before) < set(api_instances()), "scaling up keeps the instances that run"
    (directory / "fabric.yaml").write_text(GOOD)
    wait_until(lambda: len(api_instances()) == 2, 20, what="back to two api instances")
    assert _status(controller)["status"] == "synced"
    replicas = controller.get_json("/api/v1/replicas")["services"]["api"]
    assert (replicas["replicas"], replicas["placed"]) == (2, 2)


def _post(controller, path: str, body: dict) -> None:
    request = urllib.request.Request(
        controller.http + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=60).read()


def test_a_restart_keeps_the_applied_commit_its_pause_and_the_placements(tmp_path) -> None:
    bare, work, state_dir = tmp_path / "fabric.git", tmp_path / "work", tmp_path / "state"
    identity = ["-c", "user.name=t", "-c", "user.email=t@edgectl.invalid"]

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *identity, *args], cwd=work, check=True, timeout=30, capture_output=True, text=True
        )
        return done.stdout.strip()

    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True, timeout=30)
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True, timeout=30)
    shas = []
    for text in (GOOD, GOOD.replace("max_latency_ms: 5", "max_latency_ms: 6")):
        (work / "fabric.yaml").write_text(text)
        git("add", "-A")
        git("commit", "-qm", "fabric")
        git("push", "-q", str(bare), "main")
        shas.append(git("rev-parse", "HEAD"))
    args = ("--git-repo", f"file://{bare}", "--git-interval", "3600", "--state-dir", str(state_dir))
    with edgectl_run(None, *args) as controller:
        wait_until(lambda: _status(controller)["applied_sha"] == shas[1], 30, what="the tip applied")
        wait_until(lambda: len(controller.get_json("/api/v1/workloads")["workloads"]) == 5, 30, what="replicas")
        _post(controller, "/api/v1/git/rollback", {"sha": shas[0]})
        assert _status(controller)["applied_sha"] == shas[0] and _status(controller)["paused"]
        placed = sorted(w["id"] for w in controller.get_json("/api/v1/workloads")["workloads"])
    with edgectl_run(None, *args) as controller:
        view = _status(controller)
        assert (view["revision"], view["paused"]) == (shas[0], True), view
        time.sleep(1.0)  # the first fetch sees the tip: paused, it is shown and not applied
        wait_until(lambda: _status(controller)["seen_sha"] == shas[1], 30, what="the tip seen")
        assert _status(controller)["applied_sha"] == shas[0] and _status(controller)["status"] == "out-of-sync"
        assert sorted(w["id"] for w in controller.get_json("/api/v1/workloads")["workloads"]) == placed
