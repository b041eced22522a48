"""Who may call whom: a service's ``allow_from`` resolved on the model (pure).

One declaration, two enforcement points. Each rule becomes a ``Grant``: the SPIFFE identities it admits
(what a sidecar's RBAC matches on the peer certificate) and the addresses those callers' traffic leaves
from (what the switches match: the nodes running an admitted service's instances, admitted hosts). A call
no grant admits gets the fabric's default (``FabricState.default_policy``, deny unless declared otherwise).

Identities follow the PKI's names (``pki/policy.py``): a workload instance is
``spiffe://<td>/svc/<service>/w/<id>``, a host's client sidecar ``spiffe://<td>/host/<id>``; a service rule
admits the prefix ``spiffe://<td>/svc/<service>/`` (every instance, also ones placed later).

    policy = service_policy(state, "cart", "example.org")
    decide(policy, "spiffe://example.org/svc/frontend/w/frontend-1", path="/cart", method="GET")
    # Decision(allowed=True, reason="allowed by allow_from[0] (service:frontend)", grant=...)
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass
from operator import is_

from netmodel.ids import ServiceName
from netmodel.state import FabricState
from netmodel.types import AllowRule, PolicyDefault


def service_prefix(trust_domain: str, service: str) -> str:
    return f"spiffe://{trust_domain}/svc/{service}/"


def host_identity(trust_domain: str, host: str) -> str:
    return f"spiffe://{trust_domain}/host/{host}"


@dataclass(frozen=True, slots=True)
class Principal:
    """A caller identity a rule admits: one SPIFFE id, or every id under a prefix (ending with "/")."""

    spiffe_id: str
    prefix: bool

    def matches(self, spiffe_id: str) -> bool:
        return spiffe_id.startswith(self.spiffe_id) if self.prefix else spiffe_id == self.spiffe_id


@dataclass(frozen=True, slots=True)
class Grant:
    """One ``allow_from`` rule resolved on the model: who, from where, and (HTTP) what."""

    index: int
    """Its position in the service's ``allow_from`` (for ``allow_from[i]`` in explanations)."""
    rule: AllowRule
    principal: Principal
    source_ips: tuple[str, ...]
    """The addresses the admitted callers' traffic comes from now, sorted (placed instances' node
    addresses, hosts' addresses). Empty: no admitted caller runs anywhere yet."""

    @property
    def paths(self) -> tuple[str, ...]:
        return self.rule.paths

    @property
    def methods(self) -> tuple[str, ...]:
        return self.rule.methods


@dataclass(frozen=True, slots=True)
class ServicePolicy:
    service: ServiceName
    default: PolicyDefault
    grants: tuple[Grant, ...]

    @property
    def allows_everyone(self) -> bool:
        """The fabric's default is allow: nothing is enforced for this service."""
        return self.default is PolicyDefault.ALLOW

    def source_ips(self) -> frozenset[str]:
        """Every address an admitted caller sends from (the network layer cannot see paths or methods:
        a grant limited to some paths still opens its callers' addresses; the sidecar checks the rest)."""
        return frozenset(ip for grant in self.grants for ip in grant.source_ips)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str
    grant: Grant | None = None


def principal_of(rule: AllowRule, trust_domain: str) -> Principal:
    if rule.service is not None:
        return Principal(service_prefix(trust_domain, rule.service), prefix=True)
    if rule.host is not None:
        return Principal(host_identity(trust_domain, rule.host), prefix=False)
    spiffe_id = str(rule.spiffe_id)
    return Principal(spiffe_id, prefix=spiffe_id.endswith("/"))


def source_ips_of(state: FabricState, principal: Principal, trust_domain: str) -> tuple[str, ...]:
    """The addresses callers holding an identity ``principal`` admits send from: the node of every placed
    instance whose SPIFFE id it admits, and every host whose client identity it admits."""
    return tuple(sorted(_callers_of(state, trust_domain).ips_of(principal)))


SCANS_BEFORE_INDEX = 5
"""Rules resolved on one model generation by scanning every caller before the callers are indexed: a scan
costs ~1.4 ms at 10,000 instances, the index ~8 ms to build and ~0 to ask (the ACL resolves every rule of
every service, 1,099 on benchmarks/scale.py's largest fabric; an xDS build after a placement a few)."""


@dataclass(frozen=True, slots=True)
class _CallerIndex:
    """Every caller identity (placed instances', hosts') beside the address it sends from, sorted by
    identity: a rule's addresses are one range (a prefix: the identities under it are adjacent) or one
    lookup, not a scan of every instance and host."""

    ids: tuple[str, ...]
    ips: tuple[str, ...]

    def ips_of(self, principal: Principal) -> set[str]:
        wanted, out = principal.spiffe_id, set()
        for i in range(bisect_left(self.ids, wanted), len(self.ids)):
            found = self.ids[i]
            if not (found.startswith(wanted) if principal.prefix else found == wanted):
                break
            out.add(self.ips[i])
        return out


class _Callers:
    """The callers of one model generation: scanned for the first few rules, then indexed."""

    def __init__(self, state: FabricState, trust_domain: str) -> None:
        self.maps = (state.workloads, state.nodes, state.hosts)
        self.trust_domain = trust_domain
        self._state = state
        self._scans = 0
        self._pairs_seen: list[tuple[str, str]] | None = None
        self._index: _CallerIndex | None = None

    def of(self, state: FabricState, trust_domain: str) -> bool:
        return trust_domain == self.trust_domain and all(
            map(is_, self.maps, (state.workloads, state.nodes, state.hosts))
        )

    def _pairs(self) -> list[tuple[str, str]]:
        if self._pairs_seen is not None:
            return self._pairs_seen
        state = self._state
        pairs = []
        for workload in state.workloads.values():
            node = state.nodes.get(workload.node) if workload.node is not None else None
            if node is not None and node.ip:
                pairs.append((str(workload.spiffe_id), node.ip))
        pairs.extend(
            (host_identity(self.trust_domain, host_id), host.ip) for host_id, host in state.hosts.items() if host.ip
        )
        self._pairs_seen = pairs
        return pairs

    def ips_of(self, principal: Principal) -> set[str]:
        if self._index is None and self._scans < SCANS_BEFORE_INDEX:
            self._scans += 1
            return {ip for spiffe_id, ip in self._pairs() if principal.matches(spiffe_id)}
        if self._index is None:
            pairs = sorted(self._pairs())
            self._index = _CallerIndex(tuple(i for i, _ in pairs), tuple(ip for _, ip in pairs))
        return self._index.ips_of(principal)


_last_callers: _Callers | None = None


def _callers_of(state: FabricState, trust_domain: str) -> _Callers:
    """The callers of ``state``, kept for the next rule resolved on the same maps (a policy per service asks
    once per rule; the model shares unchanged maps between generations). Threads may race on it: each
    then resolves on its own ``_Callers``, with the same result."""
    global _last_callers
    last = _last_callers
    if last is not None and last.of(state, trust_domain):
        return last
    _last_callers = callers = _Callers(state, trust_domain)
    return callers


def service_policy(state: FabricState, service: ServiceName, trust_domain: str) -> ServicePolicy:
    declared = state.services.get(service)
    rules = declared.allow_from if declared is not None else ()
    grants = []
    for index, rule in enumerate(rules):
        principal = principal_of(rule, trust_domain)
        grants.append(Grant(index, rule, principal, source_ips_of(state, principal, trust_domain)))
    return ServicePolicy(service, state.default_policy, tuple(grants))


def policies(state: FabricState, trust_domain: str) -> Mapping[ServiceName, ServicePolicy]:
    """Every declared service's policy, by name (sorted)."""
    return {name: service_policy(state, name, trust_domain) for name in sorted(state.services)}


def normalize_path(path: str) -> str:
    """The path as the sidecar matches it (Envoy's ``normalize_path`` and ``merge_slashes``): the query
    and fragment dropped, runs of slashes merged, dot segments removed (RFC 3986 section 5.2.4)."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    while "//" in path:
        path = path.replace("//", "/")
    segments = path.split("/")
    out: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                out.append("")
        elif segment == "..":
            if len(out) > 1:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(segment)
    result = "/".join(out)
    return result if result.startswith("/") else "/" + result


def path_admits(rule: str, path: str) -> bool:
    """A path rule admits whole segments: ``/status`` admits exactly ``/status`` and anything under
    ``/status/``, not ``/statusadmin``; a rule ending in "/" admits everything it is a prefix of.
    ``path`` is normalized first (``normalize_path``)."""
    canonical = normalize_path(path)
    if rule.endswith("/"):
        return canonical.startswith(rule)
    return canonical == rule or canonical.startswith(rule + "/")


def _admits_request(grant: Grant, path: str | None, method: str | None) -> bool:
    if grant.paths and (path is None or not any(path_admits(rule, path) for rule in grant.paths)):
        return False
    return not (grant.methods and (method is None or method.upper() not in grant.methods))


def decide(policy: ServicePolicy, caller_id: str, *, path: str | None = None, method: str | None = None) -> Decision:
    """May ``caller_id`` (a SPIFFE id) call ``policy.service`` (with this HTTP path and method, when
    given)? The first grant that admits it decides; else the default, with the closest miss named."""
    near_miss: Grant | None = None
    for grant in policy.grants:
        if not grant.principal.matches(caller_id):
            continue
        if _admits_request(grant, path, method):
            return Decision(True, f"allowed by allow_from[{grant.index}] ({grant.rule.who})", grant)
        near_miss = near_miss or grant
    if policy.allows_everyone:
        return Decision(True, "no rule admits it; the fabric's default is allow")
    if near_miss is not None:
        limits = []
        if near_miss.paths:
            limits.append(f"paths {', '.join(near_miss.paths)}")
        if near_miss.methods:
            limits.append(f"methods {', '.join(near_miss.methods)}")
        what = " and ".join(limits)
        return Decision(
            False, f"denied: allow_from[{near_miss.index}] ({near_miss.rule.who}) admits it only for {what}", None
        )
    return Decision(False, f"denied: no allow_from rule of {policy.service} admits {caller_id} (default deny)")
