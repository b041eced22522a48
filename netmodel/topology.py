"""The fabric's switch graph: immutable, shared by every reader.

Structure lives in a networkx ``MultiDiGraph`` (nodes are dpids, one edge per link direction keyed by
its ``LinkId``); link attributes live beside it in a frozen map. A latency measurement therefore
copies one small dict, not the graph; only a new link or switch copies the graph. Down links are
hidden from algorithms by the weight callable (``None`` means "no edge"), never by copying.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import networkx as nx

from netmodel.graph import WeightFn, networkx_weight, usable_latency
from netmodel.ids import PortNo, SwitchId
from netmodel.types import LinkAttrs, LinkId, Switch, frozen_map

__all__ = ["Topology", "WeightFn"]


class Topology:
    """Switches and directed links. Every ``with_*`` method returns a new Topology."""

    __slots__ = ("_graph", "links", "switches")
    switches: Mapping[SwitchId, Switch]
    links: Mapping[LinkId, LinkAttrs]
    _graph: nx.MultiDiGraph

    def __init__(
        self,
        switches: Mapping[SwitchId, Switch] | None = None,
        links: Mapping[LinkId, LinkAttrs] | None = None,
        _graph: nx.MultiDiGraph | None = None,
    ) -> None:
        frozen_switches: Mapping[SwitchId, Switch] = frozen_map(switches)
        frozen_links: Mapping[LinkId, LinkAttrs] = frozen_map(links)
        if _graph is None:
            _graph = nx.MultiDiGraph()
            _graph.add_nodes_from(frozen_switches)
            for link in frozen_links:
                _graph.add_edge(link.src, link.dst, key=link)
            _graph = nx.freeze(_graph)
        # Shared between threads without locks: no attribute may be rebound after construction.
        object.__setattr__(self, "switches", frozen_switches)
        object.__setattr__(self, "links", frozen_links)
        object.__setattr__(self, "_graph", _graph)

    @classmethod
    def _sharing(
        cls, switches: Mapping[SwitchId, Switch], links: Mapping[LinkId, LinkAttrs], graph: nx.MultiDiGraph
    ) -> Topology:
        """A topology over mappings that are already frozen (another topology's) or private new dicts
        (frozen here), without copying them: a mapping a change did not touch stays the same object,
        which readers compare by identity to skip work (``sdnctl.pathing``)."""
        topology = object.__new__(cls)
        for name, value in (("switches", switches), ("links", links)):
            frozen: Mapping[Any, Any] = value if isinstance(value, MappingProxyType) else MappingProxyType(value)
            object.__setattr__(topology, name, frozen)
        object.__setattr__(topology, "_graph", graph)
        return topology

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Topology is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Topology is immutable: cannot delete {name!r}")

    # -- reading ---------------------------------------------------------------------------------
    @property
    def graph(self) -> nx.MultiDiGraph:
        """The frozen structure graph; use ``latency_weight()`` to run algorithms on it."""
        return self._graph

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Topology):
            return NotImplemented
        return self.switches == other.switches and self.links == other.links

    def same_but_load(self, other: Topology) -> bool:
        """Whether ``other`` is this topology but for measured link load: the same graph, switches and
        link attributes otherwise. Routing and placement weigh none of the load, so a reader that keeps
        work per topology can keep it across such a change. Costs one pass over the links."""
        if other is self:
            return True
        if other._graph is not self._graph or other.switches != self.switches or len(other.links) != len(self.links):
            return False
        for link, mine in self.links.items():
            theirs = other.links.get(link)
            if theirs is mine:
                continue
            if (
                theirs is None
                or replace(theirs, measured_load_bps=mine.measured_load_bps, load_measured_at=mine.load_measured_at)
                != mine
            ):
                return False
        return True

    def __hash__(self) -> int:  # pragma: no cover - identity is enough for caching
        return id(self)

    def __repr__(self) -> str:
        return f"Topology({len(self.switches)} switches, {len(self.links)} links)"

    def links_of(self, switch: SwitchId) -> Iterator[LinkId]:
        """Every link direction that starts or ends at ``switch``."""
        for _, _, link in self._graph.out_edges(switch, keys=True):
            yield link
        for _, _, link in self._graph.in_edges(switch, keys=True):
            yield link

    def links_on_port(self, switch: SwitchId, port: PortNo) -> list[LinkId]:
        return [
            link
            for link in self.links_of(switch)
            if (link.src == switch and link.src_port == port) or (link.dst == switch and link.dst_port == port)
        ]

    def is_usable(self, link: LinkId, *, require_discovered: bool = False) -> bool:
        attrs = self.links[link]
        if not attrs.up:
            return False
        return attrs.discovered or not require_discovered

    def latency_weight(self, *, require_discovered: bool = False) -> WeightFn:
        """A networkx weight callable: the lowest latency (us) among usable parallel links, else None.

        ``require_discovered`` limits it to links the controller has seen (routing); without it,
        declared links count until known down (placement before any switch connects). The same rule
        as the scipy matrices of ``netmodel.graph`` with ``usable_latency`` (which routing and
        placement use); this form is for networkx algorithms on ``graph``.
        """
        return networkx_weight(self, usable_latency(require_discovered=require_discovered))

    def best_link(self, u: SwitchId, v: SwitchId, *, require_discovered: bool = False) -> LinkId | None:
        """The usable link u->v with the lowest latency (ties broken by port numbers)."""
        candidates: list[LinkId] = [
            link
            for link in self._graph.get_edge_data(u, v, default={})
            if self.is_usable(link, require_discovered=require_discovered)
        ]
        if not candidates:
            return None
        return min(candidates, key=lambda link: (self.links[link].latency_us, link))

    # -- changing (returns new topologies) ---------------------------------------------------------
    def with_switch(self, switch: Switch) -> Topology:
        if switch.id in self.switches:
            return Topology._sharing({**self.switches, switch.id: switch}, self.links, self._graph)
        graph = nx.MultiDiGraph(self._graph)
        graph.add_node(switch.id)
        return Topology._sharing({**self.switches, switch.id: switch}, self.links, nx.freeze(graph))

    def with_link(self, link: LinkId, attrs: LinkAttrs) -> Topology:
        """Add or replace one link direction. Both ends must be known switches."""
        for end in (link.src, link.dst):
            if end not in self.switches:
                raise KeyError(f"link {link} names unknown switch {end}")
        if link in self.links:
            return Topology._sharing(self.switches, {**self.links, link: attrs}, self._graph)
        graph = nx.MultiDiGraph(self._graph)
        graph.add_edge(link.src, link.dst, key=link)
        return Topology._sharing(self.switches, {**self.links, link: attrs}, nx.freeze(graph))

    def with_link_attrs(self, changes: Mapping[LinkId, LinkAttrs]) -> Topology:
        """Replace attributes of existing links in one copy (a batch of measurements)."""
        unknown = [link for link in changes if link not in self.links]
        if unknown:
            raise KeyError(f"unknown links: {unknown}")
        return Topology._sharing(self.switches, {**self.links, **changes}, self._graph)

    def updated_links(self, links: Iterable[LinkId], **changes: Any) -> Topology:
        """The same ``dataclasses.replace`` applied to several links; unchanged links are skipped."""
        new: dict[LinkId, LinkAttrs] = {}
        for link in links:
            old = self.links[link]
            updated = replace(old, **changes)
            if updated != old:
                new[link] = updated
        return self.with_link_attrs(new) if new else self
