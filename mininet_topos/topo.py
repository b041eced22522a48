"""``FabricTopo``: a Mininet ``Topo`` from a fabric file (or an already parsed ``FabricSpec``).

Every node and link carries its own class and options, so the same Topo works in ``build()`` and
under the ``mn`` command (``mn --custom mininet_topos/custom.py --topo fabric,FILE``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mininet.link import Link
from mininet.node import Host, OVSSwitch
from mininet.topo import Topo

from edgectl.config import load_fabric
from mininet_topos.links import DelayRelayLink, SwitchPortIntf
from mininet_topos.netem import netem_available
from mininet_topos.plan import CablePlan, FabricPlan, compute_plan
from netmodel.fabric import FabricSpec
from netmodel.fabric_file import parse_fabric


class DelayBackend(enum.Enum):
    NONE = "none"  # no delay at all: fast tests
    NETEM = "netem"  # tc netem on both switch ports of a cable
    RELAY = "relay"  # a userspace delay relay per cable (kernels without sch_netem)


def choose_backend(real_delay: bool | str | None) -> DelayBackend:
    """None/"auto"/True: netem if this kernel has it, else the relay. False/"none": no delay.
    "netem"/"relay" force one (strings, so ``mn --topo fabric,FILE,delay=relay`` works)."""
    if real_delay is False or real_delay == "none":
        return DelayBackend.NONE
    if real_delay in (None, True, "auto"):
        return DelayBackend.NETEM if netem_available() else DelayBackend.RELAY
    try:
        return DelayBackend(real_delay)
    except ValueError:
        raise ValueError(
            f"real_delay must be None, True, False, auto, none, netem or relay, not {real_delay!r}"
        ) from None


def load_spec(fabric_file: str | Path) -> FabricSpec:
    """The fabric a file or a directory of files declares (the controller's own loader)."""
    return load_fabric(str(fabric_file))


TCP_FASTOPEN_CLIENT_AND_SERVER = 3
"""``net.ipv4.tcp_fastopen``: 0x1 sends data in the SYN (the default), 0x2 accepts it on listeners that ask."""


class FabricHost(Host):
    """A Mininet host that can carry TCP over the userspace datapath: with TX checksum offload on, the
    kernel leaves checksums for the NIC to fill in, the userspace datapath never does, and TCP hangs
    while ping works. Turned off when Mininet configures the host (``Mininet.build``). Its namespace
    also accepts TCP Fast Open, as a node running sidecars should (``MeshConfig.tcp_fast_open``): the
    server side is off by default."""

    def config(self, **params: Any) -> Any:
        result = super().config(**params)
        self.disable_tx_offload()
        self.cmd(f"sysctl -qw net.ipv4.tcp_fastopen={TCP_FASTOPEN_CLIENT_AND_SERVER}")
        return result

    def disable_tx_offload(self) -> None:
        for intf in self.intfList():
            if intf.name != "lo":
                self.cmd(f"ethtool -K {intf.name} tx off")


class FabricTopo(Topo):
    """Switches, hosts, compute nodes and cables exactly as the fabric file declares them."""

    def build(
        self,
        fabric: str | Path | FabricSpec,
        delay: bool | str | None = None,
        fail_mode: str = "secure",
        stp: bool = False,
    ) -> None:
        """stp only matters with fail_mode="standalone" (OVS learning without a controller): the
        fabric has loops, so without STP a broadcast circulates forever."""
        self.spec = fabric if isinstance(fabric, FabricSpec) else load_spec(fabric)
        self.plan: FabricPlan = compute_plan(self.spec)
        self.backend = choose_backend(delay)
        for switch in self.plan.switches:
            self.addSwitch(
                switch.name,
                cls=OVSSwitch,
                dpid=switch.dpid,
                datapath="user",
                protocols="OpenFlow13",
                failMode=fail_mode,
                stp=bool(stp),
            )
        for host in self.plan.hosts:
            self.addHost(host.name, cls=FabricHost, ip=host.ip, mac=host.mac)
            # Without a MAC in the file Mininet picks one (an explicit addr1=None would break its veth).
            mac = {"addr1": host.mac} if host.mac else {}
            self.addLink(
                host.name,
                host.switch,
                port1=0,
                port2=host.port,
                intfName1=host.intf,
                intfName2=host.switch_intf,
                cls=Link,
                cls2=SwitchPortIntf,
                **mac,
            )
        for cable in self.plan.cables:
            self.addLink(
                cable.a,
                cable.b,
                port1=cable.a_port,
                port2=cable.b_port,
                intfName1=cable.a_intf,
                intfName2=cable.b_intf,
                **cable_options(cable, self.backend),
            )


def cable_options(cable: CablePlan, backend: DelayBackend) -> dict[str, Any]:
    """Link class and options for one cable. Bandwidth is an htb limit on each switch port's egress."""
    if backend is DelayBackend.RELAY and cable.latency_ms > 0:
        return {"cls": DelayRelayLink, "delay_ms": cable.latency_ms, "bw": cable.bandwidth_mbps}
    options: dict[str, Any] = {"cls": Link, "intf": SwitchPortIntf}
    if cable.bandwidth_mbps is not None:
        options["bw"] = cable.bandwidth_mbps
    if backend is DelayBackend.NETEM and cable.latency_ms > 0:
        options["delay"] = f"{cable.latency_ms:g}ms"  # netem on both ends: each direction delayed once
    return options


class EdgeCloudTopo(FabricTopo):
    """``mn --topo edgecloud,EDGE_SITES,SWITCHES_PER_SITE[,METRO,CLOUD]``: a generated fabric (the
    controller needs the same file: ``python -m mininet_topos.generate edge-cloud ... > f.yaml``)."""

    def build(  # type: ignore[override]
        self,
        edge_sites: int = 3,
        switches_per_site: int = 1,
        metro_switches: int = 3,
        cloud_switches: int = 2,
        delay: bool | str | None = None,
        fail_mode: str = "secure",
    ) -> None:
        from mininet_topos.generate import edge_cloud, to_yaml

        doc = edge_cloud(int(edge_sites), int(switches_per_site), int(metro_switches), int(cloud_switches))
        super().build(parse_fabric(to_yaml(doc), doc["name"]), delay=delay, fail_mode=fail_mode)


class TopohubTopo(FabricTopo):
    """``mn --topo topohub,topozoo/Abilene``: a topohub graph with delay from geographic distance."""

    def build(self, key: str, delay: bool | str | None = None, fail_mode: str = "secure") -> None:  # type: ignore[override]
        from mininet_topos.generate import from_topohub, to_yaml

        doc = from_topohub(str(key))
        super().build(parse_fabric(to_yaml(doc), doc["name"]), delay=delay, fail_mode=fail_mode)


def for_mn_command(topos: dict[str, type[FabricTopo]]) -> dict[str, Callable[..., FabricTopo]]:
    """``topos`` for ``mn --custom``: after any exception ``mn`` runs Mininet's machine-wide cleanup
    (``mn -c``: every OVS bridge, every ``*-ethN`` interface and every ``mnexec`` on the machine, not
    just this network's). A fabric that cannot be built (a bad file, names already in use) ends ``mn``
    with its message before anything is built, as ``SystemExit``, which ``mn`` does not catch."""

    def checked(topo_class: type[FabricTopo]) -> Callable[..., FabricTopo]:
        def make(*args: Any, **kwargs: Any) -> FabricTopo:
            from mininet_topos.inuse import refuse_names_in_use

            try:
                topo = topo_class(*args, **kwargs)
                refuse_names_in_use(topo.plan)
            except Exception as exc:  # whatever the reason, mn must not run its cleanup
                raise SystemExit(f"*** {topo_class.__name__}: {exc}") from exc
            return topo

        return make

    return {name: checked(cls) for name, cls in topos.items()}
