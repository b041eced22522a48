"""Commit -> webhook -> converged data plane, on the example testbed (run by ``benchmarks/gitops.py``).

The edge-cloud lab (mininet_topos.lab: real OVS, real link delay, every declared replica an app behind
its own Envoy, users calling web -> api -> db over mTLS) under ``edgectl run --git-repo file://...``
polling once an hour, so only the webhook moves it. Each round pushes one commit of a mixed kind (a
link's latency prior, a service's SLO, a new service) to a local bare repository, calls
``POST /api/v1/git/sync`` and stops the clock when ``GET /api/v1/config`` shows the commit applied and
converged (every switch barrier-confirmed, every connected sidecar ACKed); for a new service also when
its declared instances serve. Users keep calling throughout: requests lost are counted.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from benchmarks.gitops import p
from mininet_topos.lab import Lab
from mininet_topos.loadgen import summarize

REPO = Path(__file__).resolve().parents[1]
FABRIC = REPO / "examples" / "edge-cloud.yaml"
KINDS = ("link latency prior", "service SLO", "new service")


def _git(*args: str, cwd: Path) -> str:
    identity = ["-c", "user.name=edgectl-bench", "-c", "user.email=bench@edgectl.invalid"]
    result = subprocess.run(["git", *identity, *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"git {args[0]}: {result.stderr.strip()}")
    return result.stdout.strip()


def _push(work: Path, doc: dict[str, Any], message: str) -> str:
    (work / "fabric" / "fabric.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    _git("add", "-A", cwd=work)
    _git("commit", "-q", "-m", message, cwd=work)
    _git("push", "-q", "origin", "main", cwd=work)
    return _git("rev-parse", "HEAD", cwd=work)


def _mutate(doc: dict[str, Any], kind: str, round_no: int) -> dict[str, Any]:
    doc = json.loads(json.dumps(doc))
    if kind == "link latency prior":
        link = doc["links"][round_no % len(doc["links"])]
        link["latency_ms"] = round(link["latency_ms"] + (0.5 if round_no % 2 else -0.25), 2)
    elif kind == "service SLO":
        web = next(s for s in doc["services"] if s["name"] == "web")
        web["max_latency_ms"] = 6 if web.get("max_latency_ms") == 5 else 5
    else:
        run = next(s for s in doc["services"] if s["name"] == "web")["run"]  # the demo app, as a node agent runs it
        doc["services"].append(
            {"name": f"svc{round_no}", "port": 7000 + round_no, "replicas": 1, "cpu_millis": 50, "memory_mib": 32}
            | {"run": run}
        )
    return doc


def _post(url: str) -> None:
    request = urllib.request.Request(url, data=b"{}", method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def bench_commits(commits: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edgectl-gitops-") as scratch:
        root = Path(scratch)
        bare, work = root / "fabric.git", root / "work"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True, timeout=30)
        subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True, timeout=30, capture_output=True)
        _git("checkout", "-q", "-B", "main", cwd=work)
        (work / "fabric").mkdir()
        doc = yaml.safe_load(FABRIC.read_text())
        first = _push(work, doc, "the example fabric")
        extra = ("--git-repo", f"file://{bare}", "--git-path", "fabric", "--git-interval", "3600")
        lab = Lab(FABRIC, root / "lab", extra_args=extra)
        with lab:  # started on entry
            _wait(lambda: lab.get("/api/v1/config").get("applied_sha") == first, 60)
            lab.wait_declared_services()
            lab.start_loads(rate=20)
            time.sleep(2)
            started = time.time()
            rows: list[dict[str, Any]] = []
            for n in range(commits):
                kind = KINDS[n % len(KINDS)]
                doc = _mutate(doc, kind, n)
                sha = _push(work, doc, f"{kind} #{n}")
                t0 = time.perf_counter()
                _post(lab.http + "/api/v1/git/sync")
                _wait(lambda sha=sha: _converged(lab.get("/api/v1/config"), sha), 60)
                applied_s = time.perf_counter() - t0
                serving_s = None
                if kind == "new service":
                    lab.wait_declared_services()
                    serving_s = time.perf_counter() - t0
                rows.append(
                    {"kind": kind, "converged_ms": applied_s * 1000, "serving_ms": serving_s and serving_s * 1000}
                )
            time.sleep(2)
            summary = summarize(lab.records(since=started))
    converged = [r["converged_ms"] for r in rows]
    serving = [r["serving_ms"] for r in rows if r["serving_ms"] is not None]
    figures: dict[str, Any] = {
        "commits": len(rows),
        "converged_ms_p50": p(converged, 0.5),
        "converged_ms_p99": p(converged, 0.99),
        "by_kind": {
            kind: {
                "p50": p([r["converged_ms"] for r in rows if r["kind"] == kind], 0.5),
                "p99": p([r["converged_ms"] for r in rows if r["kind"] == kind], 0.99),
            }
            for kind in KINDS
            if any(r["kind"] == kind for r in rows)
        },
        "new_service_serving_ms_p50": p(serving, 0.5) if serving else None,
        "requests": summary.sent,
        "failed": summary.failed,
    }
    print(f"commit -> webhook -> converged, {len(rows)} commits on the example testbed:")
    print(f"  all               p50 {figures['converged_ms_p50']:>7.1f} ms  p99 {figures['converged_ms_p99']:>7.1f} ms")
    for kind, row in figures["by_kind"].items():
        print(f"  {kind:<17} p50 {row['p50']:>7.1f} ms  p99 {row['p99']:>7.1f} ms")
    if serving:
        print(f"  new service: its instances serving p50 {figures['new_service_serving_ms_p50']:.1f} ms")
    print(f"  user requests during the commits: {figures['requests']}, failed {figures['failed']}")
    return figures


def _converged(view: dict[str, Any], sha: str) -> bool:
    return view.get("applied_sha") == sha and view.get("status") == "synced" and view.get("health") == "converged"


def _wait(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("timed out")
        time.sleep(0.005)
