"""Typed identifiers of the shared model.

NewTypes cost nothing at run time but let mypy tell a datapath id from a port number.
"""

from __future__ import annotations

from typing import NewType

SwitchId = NewType("SwitchId", int)
"""An OpenFlow datapath id (dpid)."""

PortNo = NewType("PortNo", int)
SiteId = NewType("SiteId", str)
HostId = NewType("HostId", str)
NodeId = NewType("NodeId", str)
ServiceName = NewType("ServiceName", str)
WorkloadId = NewType("WorkloadId", str)
SpiffeId = NewType("SpiffeId", str)


def format_dpid(dpid: int) -> str:
    """The 16-hex-digit form OVS and os-ken print (``0000000000000001``)."""
    return f"{dpid:016x}"
