"""`make demo`'s program on the example fabric: it runs every step, prints the summary (with a call the
policy denies, on each layer), loses no request while workloads migrate, and leaves nothing behind (no
bridge, no sidecar, no app, no node agent)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.harness import REPO

pytestmark = pytest.mark.integration

ROW = re.compile(r"^  (?P<step>(migrate|fail) .*?)\s+(?P<converged>\d+ ms|-)\s+(?P<sent>\d+)\s+(?P<failed>\d+)\s")


def bridges() -> set[str]:
    return set(subprocess.run(["ovs-vsctl", "list-br"], capture_output=True, text=True, check=True).stdout.split())


def test_the_demo_runs_every_step_and_cleans_up() -> None:
    before = bridges()
    result = subprocess.run(
        [sys.executable, "-m", "mininet_topos.demo", "examples/edge-cloud.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    out = result.stdout
    run_dir = re.search(r"logs and sockets in (\S+)$", out, re.M)  # kept for a user; a test removes it
    try:
        check_demo_output(result, before)
    finally:
        if run_dir is not None and Path(run_dir.group(1)).name.startswith("edgectl-demo-"):
            shutil.rmtree(run_dir.group(1), ignore_errors=True)


def check_demo_output(result: subprocess.CompletedProcess[str], before: set[str]) -> None:
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "summary" in out, out[-3000:]
    rows = [m.groupdict() for line in out.splitlines() if (m := ROW.match(line))]
    steps = [r["step"] for r in rows]
    assert len(rows) == 4, out[-3000:]
    assert steps[0].startswith("migrate") and "to the cloud" in steps[0], steps
    assert steps[1].startswith("migrate") and "back to" in steps[1], steps
    assert steps[2].startswith("fail edge node") and steps[3].startswith("fail link"), steps
    for row in rows:
        assert int(row["sent"]) > 0, row
        assert row["converged"] != "-", row
    for row in rows[:2]:
        assert row["failed"] == "0", row  # make-before-break: no request lost while moving
    assert "first mTLS request" in out and "sidecars ACKed" in out and "flows barrier-confirmed" in out
    # Service paths: every user's requests through the chain, and why each move was decided (the users'
    # request time over the call graph, as placement computed it).
    for user in ("u1", "u2", "u3"):
        assert re.search(
            rf"^ +{user}: web-\d+ \(\S+\) > api-\d+ \(\S+\) > db-\d+ \(\S+\) +\d+% of requests", out, re.M
        ), out
    assert re.search(r"why: users' mean request time [\d.]+ -> [\d.]+ ms", out), out[-3000:]
    # A denied call, refused by db's sidecar (mTLS, u1's SVID) and by db's node's switch (raw TCP).
    assert re.search(r"^  denied  u1 -> db +envoy 403 \(db's sidecar on \S+\)$", out, re.M), out[-3000:]
    nodes = yaml.safe_load((REPO / "examples" / "edge-cloud.yaml").read_text())["nodes"]
    db_switches = "|".join(re.escape(str(n["switch"])) for n in nodes)
    assert re.search(
        rf"^  denied  u1 -> db:5432 raw TCP +network: dropped at ({db_switches}) \(\d+ packets", out, re.M
    ), out[-3000:]
    assert bridges() == before  # every switch the testbed made is gone
    demo_agents = r"edgectl.cli agent .*edgectl-demo-.*/agent.sock"  # the demo's, not another run's
    leftovers = subprocess.run(
        ["pgrep", "-f", f"mininet_topos.app|mininet_topos.loadgen|{demo_agents}"], capture_output=True
    )
    assert leftovers.stdout == b"", leftovers.stdout
