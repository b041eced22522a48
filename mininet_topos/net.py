"""``build()``: a Mininet network for a fabric file, built but not started.

The controller's model (``netmodel``) and the emulated network come from the same file, with the
same switch names, dpids and port numbers, so what the controller computes is what OVS executes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mininet.net import Mininet
from mininet.node import OVSSwitch, RemoteController

from mininet_topos.inuse import refuse_names_in_use
from mininet_topos.links import DelayRelayLink
from mininet_topos.topo import DelayBackend, FabricHost, FabricTopo, load_spec
from netmodel.fabric import FabricSpec

DEFAULT_CONNECT_TIMEOUT_S = 10.0


class FabricNet(Mininet):
    """Mininet plus what a fabric adds: the delay relays, which are stopped even when Mininet's own
    teardown fails half-way, and the spec the network was built from."""

    def __init__(self, topo: FabricTopo, **kwargs: object) -> None:
        self.spec: FabricSpec = topo.spec
        self.backend: DelayBackend = topo.backend
        super().__init__(topo=topo, **kwargs)

    def relay_links(self) -> list[DelayRelayLink]:
        return [link for link in self.links if isinstance(link, DelayRelayLink)]

    def start(self) -> None:
        super().start()
        # Belt and braces: hosts are configured at build(), but a host interface added since (addLink
        # after build) must not hang TCP either.
        for host in self.hosts:
            if isinstance(host, FabricHost):
                host.disable_tx_offload()

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            for link in self.relay_links():  # no-op for those Mininet's stop already reached
                link.stop()


def build(
    fabric_file: str | Path,
    controller: tuple[str, int] | None = ("127.0.0.1", 6653),
    *,
    real_delay: bool | str | None = None,
    fail_mode: str = "secure",
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
    more_controllers: Sequence[tuple[str, int]] = (),
) -> FabricNet:
    """Build (do not start) the fabric: OVS userspace switches speaking OpenFlow 1.3 to a
    RemoteController at ``controller`` (None: no controller, e.g. to install flows by hand).

    real_delay: None = real one-way delay per cable, via netem if the kernel has it, else via the
    userspace relay; False = no delay; "netem"/"relay" force a backend. start() waits up to
    ``connect_timeout`` seconds for the switches to connect (Mininet would wait forever in secure mode).
    ``more_controllers``: every switch also connects to these (the replicas of a cluster: OpenFlow roles
    decide which one is master).

    Raises ``mininet_topos.inuse.NamesInUse``, having created nothing, when a bridge or interface the
    fabric needs exists already (this fabric running already, or another with the same switch names).
    """
    topo = FabricTopo(load_spec(fabric_file), delay=real_delay, fail_mode=fail_mode)
    # Before Mininet creates anything: it deletes by name what it is about to create, and a failed
    # build's teardown deletes by name what it was asked for. Once this passed, those names are ours.
    refuse_names_in_use(topo.plan)
    net = FabricNet(
        topo,
        switch=OVSSwitch,
        host=FabricHost,
        controller=None,
        build=False,
        waitConnected=connect_timeout if controller else False,
    )
    if controller:
        host, port = controller
        net.addController("c0", controller=RemoteController, ip=host, port=int(port))
        for number, (more_host, more_port) in enumerate(more_controllers, start=1):
            net.addController(f"c{number}", controller=RemoteController, ip=more_host, port=int(more_port))
    try:
        net.build()
    except BaseException:
        net.stop()  # what this build created so far (no name it deletes existed before): shells, veths, relays
        raise
    return net
