"""The desired state from a real git repository (a local bare repo this test creates, file:// URL) on real
OVS under Mininet: a good commit is applied and shown synced at its SHA, a bad one leaves the last good
revision running with the error in the API and the metrics, rollback applies an earlier commit and
pauses auto-sync until resumed, a force-push is held back, and flows someone deletes are put back."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.harness import (
    REPO,
    edgectl_run,
    flow_durations,
    free_port,
    http_get,
    mininet_testbed,
    ofctl,
    ping_summary,
    wait_until,
)

pytestmark = pytest.mark.integration

DIAMOND = REPO / "tests" / "data" / "fabrics" / "diamond.yaml"
H3_ON = "  - {{id: h3, switch: {switch}, ip: 10.0.0.3}}\n"


def git(*args: str, cwd: Path) -> str:
    env_args = ["-c", "user.name=edgectl-test", "-c", "user.email=test@edgectl.invalid"]
    result = subprocess.run(["git", *env_args, *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def commit(work: Path, text: str, message: str, *, amend: bool = False) -> str:
    (work / "fabric" / "fabric.yaml").write_text(text)
    git("add", "-A", cwd=work)
    git("commit", "-q", "--amend" if amend else "-q", "-m", message, cwd=work)
    git("push", "-q", "--force" if amend else "-q", "origin", "main", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def post(controller, path: str, body: dict | None = None) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        controller.http + path,
        data=json.dumps(body or {}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def config(controller) -> dict:
    return controller.get_json("/api/v1/config")


def metric(controller, name: str) -> str:
    text = http_get(controller.http + "/metrics")[1].decode()
    return next(line for line in text.splitlines() if line.startswith(name + " "))


def wait_applied(controller, sha: str) -> dict:
    wait_until(
        lambda: (
            (c := config(controller))["applied_sha"] == sha and c["status"] == "synced" and c["health"] == "converged"
        ),
        30,
        what=f"{sha[:12]} applied and converged",
    )
    return config(controller)


def output_port_to(bridge: str, ip: str) -> str:
    """Where ``bridge`` really sends IPv4 for ``ip``: its flow's actions and, for a fast-failover group,
    the group's buckets (the ports it watches, in order)."""
    for line in ofctl("dump-flows", bridge).splitlines():
        if f"nw_dst={ip}" in line and "cookie=0xec" in line and "arp" not in line:
            actions = line.split("actions=")[1].strip()
            if actions.startswith("group:"):
                group = actions.split(":")[1]
                for group_line in ofctl("dump-groups", bridge).splitlines():
                    if f"group_id={group}," in group_line:
                        return group_line.split(",", 1)[1].strip()
            return actions
    return ""


@pytest.fixture(scope="module")
def gitops(tmp_path_factory):
    root = tmp_path_factory.mktemp("gitops")
    bare, work = root / "fabric.git", root / "work"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True, timeout=30)
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True, timeout=30, capture_output=True)
    git("checkout", "-q", "-B", "main", cwd=work)
    (work / "fabric").mkdir()
    first = commit(work, DIAMOND.read_text(), "the diamond")
    openflow_port, http_port = free_port(), free_port()
    with contextlib.ExitStack() as stack:
        controller = stack.enter_context(
            edgectl_run(
                DIAMOND,
                "--git-repo",
                f"file://{bare}",
                "--git-ref",
                "main",
                "--git-path",
                "fabric",
                "--git-interval",
                "3600",
                "--drift-interval",
                "1",
                openflow_port=openflow_port,
                http_port=http_port,
            )
        )
        net = stack.enter_context(mininet_testbed(DIAMOND, openflow_port))
        controller.wait_fabric_ready("h1", "h2")
        wait_applied(controller, first)
        h1 = net.get("h1")
        wait_until(lambda: ping_summary(h1.cmd("ping -c 1 -W 1 10.0.0.2"))[1] == 1, 30, what="first ping")
        yield {"controller": controller, "net": net, "work": work, "first": first, "http_port": http_port}


def test_a_good_commit_is_applied_and_shown_synced_at_its_sha(gitops) -> None:
    controller, work = gitops["controller"], gitops["work"]
    before = {b: flow_durations(b) for b in ("s1", "s2", "s3", "s4")}
    sha = commit(work, DIAMOND.read_text() + H3_ON.format(switch="s2"), "h3 on s2")
    assert post(controller, "/api/v1/git/sync")[0] == 202
    view = wait_applied(controller, sha)
    assert view["revision"] == sha and view["seen_sha"] == sha and view["source"].startswith("git ")
    assert output_port_to("s1", "10.0.0.3"), "s1 routes to the new host"
    for bridge, flows in before.items():  # nothing flushed
        after = flow_durations(bridge)
        assert all(key in after and after[key] >= flows[key] for key in flows), bridge
    history = controller.get_json("/api/v1/config/history")["history"]
    assert history[0]["revision"] == sha and history[0]["changes"]["objects_added"] == ["host/h3"]
    gitops["with_h3"] = sha


def test_a_bad_commit_keeps_the_last_good_revision_running(gitops) -> None:
    controller, work = gitops["controller"], gitops["work"]
    good = config(controller)["applied_sha"]
    routes = controller.get_json("/api/v1/routes")["routes"]
    bad = commit(work, DIAMOND.read_text() + H3_ON.format(switch="s9"), "h3 on a switch that does not exist")
    post(controller, "/api/v1/git/sync")
    wait_until(lambda: config(controller)["status"] == "error", 30, what="error status")
    view = config(controller)
    assert view["applied_sha"] == good and view["revision"] == good and view["seen_sha"] == bad
    assert "fabric.yaml:" in view["error"] and "s9" in view["error"]
    assert metric(controller, "edgectl_config_load_error") == "edgectl_config_load_error 1.0"
    assert controller.get_json("/api/v1/routes")["routes"] == routes
    assert controller.get_json("/healthz")["status"] == "ok"
    fixed = commit(work, DIAMOND.read_text() + H3_ON.format(switch="s3"), "h3 moves to s3")
    post(controller, "/api/v1/git/sync")
    wait_applied(controller, fixed)
    assert metric(controller, "edgectl_config_load_error") == "edgectl_config_load_error 0.0"
    gitops["h3_on_s3"] = fixed


def test_rollback_applies_an_earlier_commit_and_pauses_auto_sync(gitops) -> None:
    controller, work, http_port = gitops["controller"], gitops["work"], gitops["http_port"]
    on_s3 = output_port_to("s1", "10.0.0.3")
    rolled = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgectl.cli",
            "rollback",
            "--to",
            gitops["with_h3"][:10],
            "--controller",
            f"127.0.0.1:{http_port}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert rolled.returncode == 0, rolled.stderr
    wait_until(lambda: config(controller)["applied_sha"] == gitops["with_h3"], 30, what="rolled back")
    assert config(controller)["paused"] is True
    wait_until(lambda: output_port_to("s1", "10.0.0.3") != on_s3, 15, what="h3's route back towards s2")
    # Paused: a new commit is fetched and shown, not applied.
    newer = commit(work, DIAMOND.read_text() + H3_ON.format(switch="s4"), "h3 moves to s4")
    post(controller, "/api/v1/git/sync")
    wait_until(lambda: config(controller)["seen_sha"] == newer, 30, what="new commit seen")
    view = config(controller)
    assert view["applied_sha"] == gitops["with_h3"] and view["status"] == "out-of-sync"
    resumed = subprocess.run(
        [sys.executable, "-m", "edgectl.cli", "sync", "--resume", "--controller", f"127.0.0.1:{http_port}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert resumed.returncode == 0, resumed.stderr
    wait_applied(controller, newer)
    assert config(controller)["paused"] is False


def test_a_force_push_is_held_back_until_resumed(gitops) -> None:
    controller, work = gitops["controller"], gitops["work"]
    applied = config(controller)["applied_sha"]
    rewritten = commit(work, DIAMOND.read_text() + H3_ON.format(switch="s2"), "rewritten", amend=True)
    post(controller, "/api/v1/git/sync")
    wait_until(lambda: config(controller)["status"] == "error", 30, what="history rewritten")
    view = config(controller)
    assert "history rewritten" in view["error"] and view["paused"] is True and view["applied_sha"] == applied
    assert post(controller, "/api/v1/git/resume")[0] == 200
    wait_applied(controller, rewritten)


def test_deleted_flows_are_put_back(gitops) -> None:
    controller = gitops["controller"]
    before = flow_durations("s2")
    ofctl("del-flows", "s2")
    wait_until(lambda: set(flow_durations("s2")) == set(before), 20, what="s2's flows healed")
    h1 = gitops["net"].get("h1")
    assert ping_summary(h1.cmd("ping -c 3 -W 1 10.0.0.2"))[1] == 3
    assert controller.get_json("/api/v1/config")["status"] == "synced"
