"""Authorization enforced by the switches (real OVS under Mininet, the controller in this process).

h1 and h2 sit on za1, node n1 on za2 runs web's one instance (a raw TCP listener on 10.0.0.10:8080, no
sidecar: what a host bypassing its sidecar would reach). Checked from the hosts' own connections and
the switches' own counters (ovs-ofctl), and from the controller's DenialLog and /metrics:
- by default (deny) nobody reaches the port, and the drop flow of the caller at the instance's switch
  (za2, table 1, above the routes) counts;
- a policy that admits h1 opens the port for h1 only, within 1 s; withdrawing it closes it again;
- h2 taking h1's (admitted) address gets nothing through and is reported as spoofing;
- pings and ARP keep working throughout.
Policy changes are published as the desired-state layer publishes them (``DesiredStateApplied``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tests.integration.harness import free_port, http_get, mininet_testbed, ofctl, ping_summary, wait_until

pytestmark = pytest.mark.integration

FABRIC = """
name: acl-test
subnet: 10.0.0.0/16
sites: [{id: s, tier: edge, region: r}]
switches: [{id: za1, dpid: 0x7a1, site: s}, {id: za2, dpid: 0x7a2, site: s}]
links: [{a: za1, b: za2, latency_ms: 1, bandwidth_mbps: 100}]
hosts:
  - {id: h1, switch: za1, ip: 10.0.0.1, mac: "02:00:00:00:7a:01"}
  - {id: h2, switch: za1, ip: 10.0.0.2}
nodes: [{id: n1, site: s, switch: za2, cpu_millis: 2000, memory_mib: 2048, ip: 10.0.0.10}]
services: [{name: web, port: 8080, replicas: 1, cpu_millis: 100, memory_mib: 64}]
"""
SERVICE = ("10.0.0.10", 8080)

# Greets every connection with "ok", then echoes what it is sent until the caller closes.
LISTENER = """
import socket, threading
def serve(c):
    try:
        c.sendall(b"ok\\n")
        while (data := c.recv(64)):
            c.sendall(data)
    except OSError:
        pass
    finally:
        c.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(64)
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

# In a host's namespace: connect, say "connected", then for every line on stdin send it and print the
# echo (or "lost").
CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
assert s.recv(3) == b"ok\\n"
print("connected", flush=True)
for line in sys.stdin:
    try:
        s.sendall(line.encode()); print("echo", s.recv(64).decode().strip(), flush=True)
    except OSError as exc:
        print("lost", exc, flush=True)
"""

# In a host's namespace: try to connect every 50 ms until ``want`` (1: connected, 0: refused/timed out)
# holds, print the wall-clock time it first did (or "never").
PROBE = """
import socket, sys, time
host, port, want, deadline = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), time.time() + float(sys.argv[4])
while time.time() < deadline:
    s = socket.socket(); s.settimeout(0.25)
    try:
        s.connect((host, port)); got = 1 if s.recv(3) == b"ok\\n" else 0
    except OSError:
        got = 0
    finally:
        s.close()
    if got == want:
        print("at", time.time()); break
    time.sleep(0.05)
else:
    print("never")
"""


SCRIPTS: dict[str, Path] = {}


def probe(host, want: int, timeout_s: float):
    """The probe running in ``host``'s namespace (a Popen): until connecting gives ``want``."""
    return host.popen([sys.executable, str(SCRIPTS["probe"]), *map(str, SERVICE), str(want), str(timeout_s)])


def connects(host, timeout_s: float = 3.0) -> bool:
    """Whether ``host`` gets through to the service within ``timeout_s`` (tries every 50 ms)."""
    out, _ = probe(host, 1, timeout_s).communicate(timeout=timeout_s + 10)
    return out.decode().strip().startswith("at")


@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    from edgectl.config import RunConfig, load_fabric
    from edgectl.controller import Controller

    directory = tmp_path_factory.mktemp("acl")
    fabric_file = directory / "acl.yaml"
    fabric_file.write_text(FABRIC)
    for name, text in (("probe", PROBE), ("listener", LISTENER), ("client", CLIENT)):
        SCRIPTS[name] = directory / f"{name}.py"
        SCRIPTS[name].write_text(text)
    config = RunConfig(
        fabric_file=str(fabric_file),
        openflow_port=free_port(),
        http_port=free_port(),
        xds_port=free_port(),
        api_port=free_port(),
        port_stats_interval_s=0.5,
        drift_interval_s=1.0,
    )
    controller = Controller(config, load_fabric(config.fabric_file))
    warnings: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("edgectl.sdnctl.engine").addHandler(handler)
    controller.start()
    try:
        with contextlib.ExitStack() as stack:
            net = stack.enter_context(mininet_testbed(fabric_file, config.openflow_port))
            state = lambda: controller.bus.state  # noqa: E731
            wait_until(
                lambda: (
                    all(s.connected for s in state().topology.switches.values())
                    and all(a.discovered for a in state().topology.links.values())
                ),
                30,
                what="switches connected, links discovered",
            )
            wait_until(lambda: any(w.node == "n1" for w in state().workloads.values()), 30, what="web placed on n1")
            assert controller.routes is not None
            wait_until(lambda: controller.routes.runs(state().generation), 30, what="tables programmed")
            n1 = net.get("n1")
            listener = n1.popen([sys.executable, str(SCRIPTS["listener"])])
            try:
                h1, h2 = net.get("h1"), net.get("h2")
                wait_until(lambda: ping_summary(h1.cmd("ping -c 1 -W 1 10.0.0.10"))[1] == 1, 30, what="ping")
                yield {"controller": controller, "net": net, "h1": h1, "h2": h2, "n1": n1, "warnings": warnings}
            finally:
                listener.terminate()
                listener.wait(5)
    finally:
        logging.getLogger("edgectl.sdnctl.engine").removeHandler(handler)
        controller.stop()


def publish_policy(controller, *rules) -> float:
    """The model's web admits ``rules`` from now on (as a desired-state apply publishes it); when published."""
    from netmodel.events import DesiredStateApplied
    from netmodel.types import Service

    spec = controller._initial[0]
    services: tuple[Service, ...] = tuple(
        replace(s, allow_from=tuple(rules)) if s.name == "web" else s for s in spec.services
    )
    published = time.time()
    controller.bus.publish(DesiredStateApplied(replace(spec, services=services), f"policy-{published}")).result(5)
    return published


def drop_packets(source: str) -> int:
    """n_packets of the policy drop flow for TCP from ``source`` to web's instance, at its node's switch
    (0 if none)."""
    total = 0
    for line in ofctl("dump-flows", "za2", "table=1").splitlines():
        if re.search(rf"nw_src={re.escape(source)}\b", line) and "tp_dst=8080" in line and "actions=drop" in line:
            total += int(re.search(r"n_packets=(\d+)", line).group(1))
    return total


def guard_drops(switch: str, in_port: int) -> int:
    total = 0
    for line in ofctl("dump-flows", switch, "table=0").splitlines():
        if f"in_port={in_port}" in line and "priority=100" in line:
            total += int(re.search(r"n_packets=(\d+)", line).group(1))
    return total


def metric(controller, name: str, **labels: str) -> float:
    """The value of ``name`` with exactly ``labels`` on /metrics (0 if absent)."""
    status, body = http_get(f"http://127.0.0.1:{controller.config.http_port}/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        found = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if found and dict(re.findall(r'(\w+)="([^"]*)"', found.group(1))) == labels:
            return float(found.group(2))
    return 0.0


def port_of(controller, host: str) -> int:
    return int(controller.bus.state.hosts[host].attachment.port)


def test_by_default_nobody_reaches_the_port_and_the_instances_switch_counts_the_drop(testbed) -> None:
    controller, h1, h2 = testbed["controller"], testbed["h1"], testbed["h2"]
    h2_port = port_of(controller, "h2")
    before = drop_packets("10.0.0.2")
    assert not connects(h2, 1.5) and not connects(h1, 1.5)
    assert drop_packets("10.0.0.2") > before, "h2's drop flow at web's node's switch counts its SYNs"
    try:
        wait_until(
            lambda: controller.denials.totals().get(("host:h2", "web", "network"), 0) > 0,
            10,
            what="h2's denied attempts in the DenialLog",
        )
    except AssertionError as exc:
        counters = controller.routes._drop_counters._last  # what the engine read, to say why
        raise AssertionError(f"{exc}; totals {controller.denials.totals()}; counters read {counters}") from None
    denial = next(d for d in controller.denials.recent() if d.caller.endswith("/host/h2"))
    assert denial.layer == "network" and denial.detail == f"za1 port {h2_port} -> 10.0.0.10:8080"
    # Everything but TCP to the service's port still works.
    assert ping_summary(h2.cmd("ping -c 3 -i 0.2 -W 1 10.0.0.10"))[1] == 3
    assert ping_summary(h1.cmd("ping -c 3 -i 0.2 -W 1 10.0.0.2"))[1] == 3


def test_a_policy_change_opens_and_closes_the_port_within_a_second(testbed) -> None:
    from netmodel.ids import HostId
    from netmodel.types import AllowRule

    controller, h1, h2 = testbed["controller"], testbed["h1"], testbed["h2"]
    running = probe(h1, 1, 10)
    time.sleep(0.5)  # the probe runs (and is refused) before the policy changes
    published = publish_policy(controller, AllowRule(host=HostId("h1")))
    out, _ = running.communicate(timeout=20)
    assert out.decode().startswith("at"), "h1 never got through after the policy admitted it"
    opened = float(out.split()[1]) - published
    assert connects(h1) and not connects(h2, 1.5), "only h1 is admitted"

    running = probe(h1, 0, 10)
    time.sleep(0.5)
    published = publish_policy(controller)  # nobody again
    out, _ = running.communicate(timeout=20)
    assert out.decode().startswith("at"), "h1 still got through after the policy withdrew it"
    closed = float(out.split()[1]) - published
    print(
        f"\npolicy change to the switches' effect: opened in {opened * 1000:.0f} ms, closed in {closed * 1000:.0f} ms"
    )
    assert opened < 1.0 and closed < 1.0


def test_a_withdrawn_caller_keeps_its_established_connection_but_gets_no_new_one(testbed) -> None:
    import subprocess

    from netmodel.ids import HostId
    from netmodel.types import AllowRule

    controller, h1 = testbed["controller"], testbed["h1"]
    publish_policy(controller, AllowRule(host=HostId("h1")))
    wait_until(lambda: connects(h1, 1.0), 10, what="h1 admitted")
    client = h1.popen(
        [sys.executable, str(SCRIPTS["client"]), *map(str, SERVICE)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout.readline().strip() == "connected"
        publish_policy(controller)  # h1 no longer admitted (as a caller moving away: draining)
        wait_until(lambda: not connects(h1, 1.0), 10, what="new connections from h1 refused")
        client.stdin.write("still here\n")
        client.stdin.flush()
        assert client.stdout.readline().strip() == "echo still here", "the established connection lives on"
    finally:
        client.kill()
        client.wait(5)


def test_a_host_taking_an_admitted_hosts_address_gets_nothing_and_is_reported(testbed) -> None:
    from netmodel.ids import HostId
    from netmodel.types import AllowRule

    controller, h1, h2, n1 = testbed["controller"], testbed["h1"], testbed["h2"], testbed["n1"]
    publish_policy(controller, AllowRule(host=HostId("h1")))
    wait_until(lambda: connects(h1, 1.0), 10, what="h1 admitted")
    h2_port = port_of(controller, "h2")
    before = guard_drops("za1", h2_port)
    intf = h2.defaultIntf().name
    try:
        h2.cmd(f"ip addr flush dev {intf} && ip addr add 10.0.0.1/16 dev {intf}")
        h2.cmd(f"ip neigh replace 10.0.0.10 lladdr {n1.defaultIntf().MAC()} dev {intf}")  # no ARP needed
        assert not connects(h2, 2.0), "h2 with h1's address reached the service"
        assert guard_drops("za1", h2_port) > before, "h2's source guard dropped its packets"
        wait_until(
            lambda: metric(controller, "edgectl_spoofed_packets_dropped_total", switch="za1", port=str(h2_port)) > 0,
            10,
            what="the spoofing metric",
        )
        wait_until(
            lambda: any(
                f"switch za1 port {h2_port}:" in w and "whose source is not 10.0.0.2 dropped (spoofing?)" in w
                for w in testbed["warnings"]
            ),
            10,
            what="the spoofing log line",
        )
        assert connects(h1), "the real h1 is untouched"
    finally:
        h2.cmd(f"ip addr flush dev {intf} && ip addr add 10.0.0.2/16 dev {intf} && ip neigh flush dev {intf}")
        publish_policy(controller)
    assert ping_summary(h2.cmd("ping -c 3 -i 0.2 -W 1 10.0.0.10"))[1] == 3, "h2 as itself works again"


def test_the_routes_view_lists_each_switchs_acl(testbed) -> None:
    status, body = http_get(f"http://127.0.0.1:{testbed['controller'].config.http_port}/api/v1/routes")
    assert status == 200
    import json

    switches = {s["dpid"]: s for s in json.loads(body)["switches"]}
    guards, admission = switches["za1"]["acl"], switches["za2"]["acl"]
    assert guards["count"] == len(guards["flows"]) > 0 and admission["count"] == len(admission["flows"]) > 0
    assert not any(f["match"].get("tcp_dst") == 8080 for f in guards["flows"]), "judged at web's node's switch"
    assert any(f["match"].get("tcp_dst") == 8080 and f["actions"] == [] for f in admission["flows"])
    # What the switches hold reads back as what was compiled (goto, drop, every match field): the drift
    # check, every second here, never found a difference.
    assert all(s["drift"]["last_check_at"] and s["drift"]["last_found"] is None for s in switches.values())
