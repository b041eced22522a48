"""Emulated edge-cloud fabrics for Mininet, built from the same fabric file the controller reads.

    net = mininet_topos.build("examples/edge-cloud.yaml")   # built, not started
    net.start(); ...; net.stop()

``topos`` is the dict ``mn --custom`` looks for (see ``custom.py`` and docs/testbed.md).

Imports are lazy (PEP 562): ``python -m mininet_topos.delay_relay`` runs once per cable and must not
pay for importing Mininet and netmodel.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DelayBackend", "EdgeCloudTopo", "FabricNet", "FabricTopo", "TopohubTopo", "build", "topos"]


def __getattr__(name: str) -> Any:
    if name in ("build", "FabricNet"):
        from mininet_topos import net

        return getattr(net, name)
    if name in ("FabricTopo", "DelayBackend", "EdgeCloudTopo", "TopohubTopo"):
        from mininet_topos import topo

        return getattr(topo, name)
    if name == "topos":
        from mininet_topos.topo import EdgeCloudTopo, FabricTopo, TopohubTopo

        return {"fabric": FabricTopo, "edgecloud": EdgeCloudTopo, "topohub": TopohubTopo}
    raise AttributeError(f"module 'mininet_topos' has no attribute {name!r}")
