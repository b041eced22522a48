"""Refuse to build a fabric whose names are already taken on this machine.

Mininet creates by name and deletes by name: ``OVSSwitch.start`` runs ``--if-exists del-br NAME`` and
``makeIntfPair`` runs ``ip link del NAME`` before creating a port, and a failed build's teardown
deletes every bridge it was asked for. So a second build of a fabric that is already running (or of
one that shares a switch or port name with it) takes the running network apart. ``refuse_names_in_use``
is called before anything is created: once it passed, every name the build deletes is one it made.

Mininet's host and relay namespaces are unnamed (a process's ``unshare``), so no name of ours can
collide there; what can collide is the root namespace: OVS bridges and network interfaces.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from mininet_topos.plan import FabricPlan

SHOWN_PER_KIND = 12  # a whole running edge-cloud fabric is ~40 names: enough to recognise it


@dataclass(frozen=True, slots=True)
class NamesWanted:
    """What a build creates in the root namespace."""

    bridges: tuple[str, ...]
    interfaces: tuple[str, ...]  # switch ports, and each bridge's own internal interface


class NamesInUse(RuntimeError):
    """Some bridge or interface the fabric would create exists already; nothing was created."""

    def __init__(self, fabric: str, bridges: list[str], interfaces: list[str]) -> None:
        self.bridges = bridges
        self.interfaces = interfaces
        parts = [_listed("OVS bridges", bridges), _listed("interfaces", interfaces)]
        super().__init__(
            f"cannot build fabric {fabric!r}: names already in use on this machine "
            f"({'; '.join(p for p in parts if p)}). Is this fabric already running? Stop that network "
            "first (net.stop()), or give this fabric other switch names; nothing was created or deleted."
        )


def _listed(kind: str, names: list[str]) -> str:
    if not names:
        return ""
    shown = ", ".join(names[:SHOWN_PER_KIND])
    more = f" and {len(names) - SHOWN_PER_KIND} more" if len(names) > SHOWN_PER_KIND else ""
    return f"{kind} {shown}{more}"


def names_wanted(plan: FabricPlan) -> NamesWanted:
    bridges = tuple(s.name for s in plan.switches)
    ports = [name for c in plan.cables for name in (c.a_intf, c.b_intf)] + [h.switch_intf for h in plan.hosts]
    return NamesWanted(bridges, tuple(dict.fromkeys([*bridges, *ports])))


def names_taken(wanted: NamesWanted, bridges: set[str], interfaces: set[str]) -> tuple[list[str], list[str]]:
    """The wanted bridges and interfaces that exist already (pure)."""
    return [b for b in wanted.bridges if b in bridges], [i for i in wanted.interfaces if i in interfaces]


def parse_ip_link(text: str) -> set[str]:
    """Interface names from ``ip -o link show``: ``7: sw1-eth3@if6: <...`` gives ``sw1-eth3``."""
    names = set()
    for line in text.splitlines():
        fields = line.split(":", 2)
        if len(fields) == 3 and fields[1].strip():
            names.add(fields[1].strip().split("@", 1)[0])
    return names


def existing_bridges() -> set[str]:
    out = subprocess.run(["ovs-vsctl", "--timeout=10", "list-br"], capture_output=True, text=True, check=True)
    return {line.strip() for line in out.stdout.splitlines() if line.strip()}


def existing_interfaces() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    return parse_ip_link(out.stdout)


def refuse_names_in_use(plan: FabricPlan) -> None:
    """Raise ``NamesInUse`` naming every bridge and interface of ``plan`` that exists already."""
    bridges, interfaces = names_taken(names_wanted(plan), existing_bridges(), existing_interfaces())
    if bridges or interfaces:
        raise NamesInUse(plan.name, bridges, interfaces)
