"""What Mininet must create for a fabric, as plain data: names, dpids, addresses, port numbers.

Pure (no Mininet, no I/O) so the mapping from the fabric file to the emulated network is unit-tested
without root. The one rule that matters most: every port number is the spec's, so the controller's
model and the OpenFlow port numbers the switches report agree.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from netmodel.fabric import FabricSpec

IFNAMSIZ = 15  # Linux interface names: 15 characters plus the NUL
OVS_MAX_PORT = 0xFEFF  # ofport_request accepts 1..65279; larger numbers would be silently renumbered
MAX_SHAPED_MBPS = 1000.0  # Mininet's htb parameters are only meant up to 1 Gbit/s (TCIntf.bwParamMax)


class PlanError(ValueError):
    """The fabric file is valid, but Mininet/OVS on Linux cannot build it as declared."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("cannot emulate this fabric:\n" + "\n".join(f"  {p}" for p in problems))


@dataclass(frozen=True, slots=True)
class SwitchPlan:
    name: str
    dpid: str  # 16 hex digits, the form Mininet and OVS's other_config:datapath-id take


@dataclass(frozen=True, slots=True)
class HostPlan:
    name: str
    ip: str  # with prefix length, e.g. "10.0.1.1/16"
    mac: str | None
    switch: str
    port: int
    intf: str  # the host's interface
    switch_intf: str  # the switch's port interface
    compute_node: bool  # a NodeSpec (workloads run here) rather than a HostSpec (users)


@dataclass(frozen=True, slots=True)
class CablePlan:
    a: str
    a_port: int
    a_intf: str
    b: str
    b_port: int
    b_intf: str
    latency_ms: float
    bandwidth_mbps: float | None  # None: do not shape (beyond what htb handles)


@dataclass(frozen=True, slots=True)
class FabricPlan:
    name: str
    switches: tuple[SwitchPlan, ...]
    hosts: tuple[HostPlan, ...]
    cables: tuple[CablePlan, ...]


def intf_name(node: str, port: int) -> str:
    """Mininet's ``<node>-eth<port>``, or a stable short form when that exceeds IFNAMSIZ."""
    name = f"{node}-eth{port}"
    if len(name) <= IFNAMSIZ:
        return name
    return f"x{zlib.crc32(node.encode()) & 0xFFFFFF:06x}-{port}"  # at most 1+6+1+5 characters


def dpid_hex(dpid: int) -> str:
    return f"{dpid:016x}"


def compute_plan(spec: FabricSpec) -> FabricPlan:
    problems: list[str] = []
    intfs: dict[str, str] = {}

    def port(owner: str, switch: str, number: int) -> str:
        if number > OVS_MAX_PORT:
            problems.append(f"{owner}: port {number} of {switch} is above {OVS_MAX_PORT}, which OVS cannot request")
        return claim(owner, intf_name(switch, number))

    def claim(owner: str, name: str) -> str:
        if name in intfs:
            problems.append(f"{owner}: interface name {name} is also used by {intfs[name]}")
        intfs[name] = owner
        return name

    switches = []
    for switch in spec.switches:
        if len(switch.name) > IFNAMSIZ:
            problems.append(f"switch {switch.name}: ids over {IFNAMSIZ} characters cannot name an OVS bridge device")
        switches.append(SwitchPlan(switch.name, dpid_hex(int(switch.dpid))))

    cables = []
    for i, cable in enumerate(spec.cables):
        owner = f"links[{i}] ({cable.a}-{cable.b})"
        bandwidth = cable.bandwidth_mbps if cable.bandwidth_mbps <= MAX_SHAPED_MBPS else None
        cables.append(
            CablePlan(
                cable.a,
                int(cable.a_port),
                port(owner, cable.a, int(cable.a_port)),
                cable.b,
                int(cable.b_port),
                port(owner, cable.b, int(cable.b_port)),
                cable.latency_ms,
                bandwidth,
            )
        )

    hosts = []
    attached: list[tuple[str, str, int, str, str, bool]] = [
        (str(h.id), h.switch, int(h.port), h.ip, h.mac, False) for h in spec.hosts
    ]
    attached += [(str(n.id), n.switch, int(n.port), n.ip, n.mac, True) for n in spec.nodes]
    for name, attached_to, number, ip, mac, compute in attached:
        owner = f"{'node' if compute else 'host'} {name}"
        hosts.append(
            HostPlan(
                name=name,
                ip=f"{ip}/{spec.prefix_len}",
                mac=mac or None,
                switch=attached_to,
                port=number,
                intf=claim(owner, intf_name(name, 0)),
                switch_intf=port(owner, attached_to, number),
                compute_node=compute,
            )
        )

    if problems:
        raise PlanError(problems)
    return FabricPlan(spec.name, tuple(switches), tuple(hosts), tuple(cables))
