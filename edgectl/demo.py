"""`make demo`: the edge-cloud fabric end to end, as far as edgectl goes today.

Starts `edgectl run` on a fabric file, builds the Mininet testbed from the same file (OVS userspace
switches, real link delay), waits until every switch has connected and discovery has settled, lets
users ping compute nodes across the fabric, prints the fabric and the routes as the controller sees
them, then stops everything it started, also on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any


def _free_port(preferred: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(http: str, path: str) -> Any:
    with urllib.request.urlopen(http + path, timeout=5) as response:
        return json.load(response)


def _wait(what: str, predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"demo: timed out waiting for {what}")


def _print_fabric(topology: dict[str, Any], routes: dict[str, Any]) -> None:
    print("\nswitches as the controller sees them")
    for s in topology["switches"]:
        state = "connected" if s["connected"] else "DISCONNECTED"
        print(f"  {s['id']:<6} dpid {s['dpid']}  {state:<12} site {s['site']}  {len(s['ports'])} ports")
    print("\nlinks (one-way latency: declared in the file / measured by LLDP probes)")
    for link in topology["links"]:
        measured = link["measured_latency_us"]
        measured_ms = f"{measured / 1000:6.2f} ms" if measured is not None else "    -    "
        state = "up" if link["up"] else "DOWN"
        print(
            f"  {link['src']:>4}:{link['src_port']:<2} -> {link['dst']:>4}:{link['dst_port']:<2}  "
            f"declared {link['declared_latency_us'] / 1000:5.1f} ms  measured {measured_ms}  {state}"
        )
    users = {h["id"] for h in topology["hosts"]}
    print("\nroutes from users to compute nodes (latency-optimal, over measured latency)")
    for r in routes["routes"]:
        if r["src"] in users and r["dst"] not in users:
            print(f"  {r['src']:>4} -> {r['dst']:<6} {r['latency_us'] / 1000:6.2f} ms  via {' > '.join(r['path'])}")


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    fabric = args[0] if args else "examples/edge-cloud.yaml"
    from mininet.log import setLogLevel

    import mininet_topos

    setLogLevel("warning")
    openflow_port, http_port = _free_port(6653), _free_port(8080)
    xds_port, api_port = _free_port(18000), _free_port(50051)
    http = f"http://127.0.0.1:{http_port}"
    log = tempfile.NamedTemporaryFile(prefix="edgectl-demo-", suffix=".log", delete=False)  # noqa: SIM115
    print(f"demo: starting edgectl run on {fabric} (OpenFlow :{openflow_port}, HTTP :{http_port}; log {log.name})")
    controller = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgectl.cli",
            "run",
            "--config",
            fabric,
            "--openflow-port",
            str(openflow_port),
            "--http-port",
            str(http_port),
            "--xds-port",
            str(xds_port),
            "--api-port",
            str(api_port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    net = None
    interrupted = False
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        _wait("/healthz", lambda: _get(http, "/healthz")["status"] == "ok", 15)
        print("demo: building the Mininet testbed (OVS userspace datapath, real link delay)")
        net = mininet_topos.build(fabric, controller=("127.0.0.1", openflow_port))
        started = time.monotonic()
        net.start()
        total = len(net.switches)
        _wait(
            "every switch to connect",
            lambda: sum(s["connected"] for s in _get(http, "/api/v1/topology")["switches"]) >= total,
            30,
        )
        print(f"demo: {total} switches connected in {time.monotonic() - started:.1f} s")
        _wait(
            "every declared link to be discovered",
            lambda: all(link["discovered"] for link in _get(http, "/api/v1/topology")["links"]),
            30,
        )
        _wait("routes", lambda: _get(http, "/api/v1/routes")["routes"], 30)
        print("demo: discovery done; users ping compute nodes")
        users = [net.get(h.id) for h in net.spec.hosts]
        for user in users:
            for node in net.spec.nodes:
                out = user.cmd(f"ping -c 3 -i 0.2 -W 1 {node.ip}")
                summary = [line for line in out.splitlines() if "rtt" in line or "packet loss" in line]
                loss = summary[0].split(",")[2].strip() if summary else "no answer"
                rtt = summary[1].split("=")[1].split("/")[1] + " ms avg rtt" if len(summary) > 1 else ""
                print(f"  {user.name:>4} -> {node.id:<6} {node.ip:<11} {loss:<16} {rtt}")
        time.sleep(2)  # a few more probe rounds for the latency estimates
        _print_fabric(_get(http, "/api/v1/topology"), _get(http, "/api/v1/routes"))
    except KeyboardInterrupt:
        interrupted = True
        print("\ndemo: interrupted, cleaning up")
    finally:
        signal.signal(signal.SIGTERM, previous)
        if net is not None:
            net.stop()
        controller.send_signal(signal.SIGTERM)
        try:
            controller.wait(10)
        except subprocess.TimeoutExpired:
            controller.kill()
        log.close()
    print("demo: stopped edgectl and the testbed")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
