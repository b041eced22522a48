"""netmodel.authorization: allow_from resolved to principals and addresses, and decisions."""

from __future__ import annotations

from dataclasses import replace

import pytest

from netmodel.authorization import decide, normalize_path, path_admits, service_policy
from netmodel.ids import HostId, NodeId, PortNo, ServiceName, SiteId, SpiffeId, SwitchId, WorkloadId
from netmodel.state import FabricState
from netmodel.types import (
    AllowRule,
    Attachment,
    ComputeNode,
    Host,
    PolicyDefault,
    Resources,
    Service,
    Workload,
    frozen_map,
)
from pki.policy import host_spiffe_id, service_spiffe_prefix, workload_spiffe_id

TD = "example.org"
R = Resources(100, 64)


def state(default: PolicyDefault = PolicyDefault.DENY) -> FabricState:
    att = Attachment(SwitchId(1), PortNo(1))
    nodes = {
        NodeId("n1"): ComputeNode(NodeId("n1"), SiteId("edge"), att, R, ip="10.0.0.1"),
        NodeId("n2"): ComputeNode(NodeId("n2"), SiteId("edge"), att, R, ip="10.0.0.2"),
    }
    hosts = {HostId("u1"): Host(HostId("u1"), att, "10.0.1.1"), HostId("u2"): Host(HostId("u2"), att, "10.0.1.2")}
    cart_rules = (
        AllowRule(service=ServiceName("frontend")),
        AllowRule(host=HostId("u1"), paths=("/status",), methods=("GET",)),
    )
    services = {
        ServiceName("frontend"): Service(
            ServiceName("frontend"), 8080, 1, R, allow_from=(AllowRule(host=HostId("u1")),)
        ),
        ServiceName("cart"): Service(ServiceName("cart"), 7070, 1, R, allow_from=cart_rules),
    }
    fe = workload_spiffe_id(TD, "frontend", "frontend-1")
    workloads = {
        WorkloadId("frontend-1"): Workload(
            WorkloadId("frontend-1"), ServiceName("frontend"), SpiffeId(fe), R, NodeId("n2")
        ),
    }
    return replace(
        FabricState(),
        nodes=frozen_map(nodes),
        hosts=frozen_map(hosts),
        services=frozen_map(services),
        workloads=frozen_map(workloads),
        default_policy=default,
    )


def test_identities_are_the_pki_names() -> None:
    policy = service_policy(state(), ServiceName("cart"), TD)
    assert policy.grants[0].principal.spiffe_id == service_spiffe_prefix(TD, "frontend")
    assert policy.grants[1].principal.spiffe_id == host_spiffe_id(TD, "u1")


def test_source_addresses_are_where_admitted_callers_run() -> None:
    policy = service_policy(state(), ServiceName("cart"), TD)
    assert policy.grants[0].source_ips == ("10.0.0.2",)  # frontend-1's node
    assert policy.grants[1].source_ips == ("10.0.1.1",)
    assert policy.source_ips() == {"10.0.0.2", "10.0.1.1"}


def test_decisions_name_the_rule_or_the_default() -> None:
    policy = service_policy(state(), ServiceName("cart"), TD)
    fe = workload_spiffe_id(TD, "frontend", "frontend-9")
    assert decide(policy, fe).allowed
    assert "allow_from[0]" in decide(policy, fe).reason
    u1 = host_spiffe_id(TD, "u1")
    assert decide(policy, u1, path="/status/x", method="get").allowed
    miss = decide(policy, u1, path="/orders", method="GET")
    assert not miss.allowed and "paths /status" in miss.reason
    other = decide(policy, host_spiffe_id(TD, "u2"))
    assert not other.allowed and "default deny" in other.reason


def test_default_allow_admits_everyone() -> None:
    policy = service_policy(state(PolicyDefault.ALLOW), ServiceName("cart"), TD)
    assert decide(policy, host_spiffe_id(TD, "u2")).allowed


def test_spiffe_prefix_rule() -> None:
    s = state()
    rule = AllowRule(spiffe_id=f"spiffe://{TD}/svc/frontend/")
    s = replace(
        s,
        services=frozen_map(
            {**s.services, ServiceName("cart"): replace(s.services[ServiceName("cart")], allow_from=(rule,))}
        ),
    )
    policy = service_policy(s, ServiceName("cart"), TD)
    assert policy.grants[0].principal.prefix and policy.grants[0].source_ips == ("10.0.0.2",)


def test_path_rules_admit_whole_segments_of_the_normalized_path() -> None:
    policy = service_policy(state(), ServiceName("cart"), TD)
    u1 = host_spiffe_id(TD, "u1")
    admitted = ["/status", "/status/", "/status/x", "/status?v=1", "/status//x/./y", "//status", "/x/../status"]
    refused = ["/statusadmin", "/status/../cart", "/status/x/../../cart", "/status%2F..%2Fcart", "/stat", "/"]
    assert [p for p in admitted if not decide(policy, u1, path=p, method="GET").allowed] == []
    assert [p for p in refused if decide(policy, u1, path=p, method="GET").allowed] == []


def test_a_path_rule_ending_in_a_slash_is_a_plain_prefix() -> None:
    assert path_admits("/api/", "/api/v1") and not path_admits("/api/", "/api")
    assert path_admits("/api", "/api") and not path_admits("/api", "/apiv1")
    assert normalize_path("/a/b/../../../c") == "/c" and normalize_path("/a/./b/.") == "/a/b/"


@pytest.mark.parametrize("scans_before_index", [0, 1000])
def test_a_rules_addresses_are_exactly_its_callers_by_prefix_or_exact_identity(
    scans_before_index: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scanned, or looked up in the callers sorted by identity (after a few scans of one generation): a
    service's prefix takes its instances and no other service's whose name it starts (web, web2), a host's
    identity takes that host alone (u1, u10)."""
    from netmodel import authorization
    from netmodel.authorization import Principal, principal_of, source_ips_of

    monkeypatch.setattr(authorization, "SCANS_BEFORE_INDEX", scans_before_index)
    monkeypatch.setattr(authorization, "_last_callers", None)

    base = state()
    att = Attachment(SwitchId(1), PortNo(1))
    nodes = {f"n{i}": ComputeNode(NodeId(f"n{i}"), SiteId("edge"), att, R, ip=f"10.0.2.{i}") for i in range(1, 7)}
    hosts = {
        h: Host(HostId(h), att, ip)
        for h, ip in (("u1", "10.0.1.1"), ("u10", "10.0.1.10"), ("u2", "10.0.1.2"), ("u3", ""))
    }
    placed = [("web", 1, "n1"), ("web", 2, "n2"), ("web2", 1, "n3"), ("we", 1, "n4"), ("web", 3, None)]
    workloads = {
        WorkloadId(f"{svc}-{i}"): Workload(
            WorkloadId(f"{svc}-{i}"),
            ServiceName(svc),
            SpiffeId(workload_spiffe_id(TD, svc, f"{svc}-{i}")),
            R,
            NodeId(node) if node else None,
        )
        for svc, i, node in placed
    }
    s = replace(
        base,
        nodes=frozen_map({NodeId(k): v for k, v in nodes.items()}),
        hosts=frozen_map({HostId(k): v for k, v in hosts.items()}),
        workloads=frozen_map(workloads),
    )

    def scanned(principal: Principal) -> tuple[str, ...]:
        ids = [(str(w.spiffe_id), s.nodes[w.node].ip) for w in s.workloads.values() if w.node is not None]
        ids += [(f"spiffe://{TD}/host/{h}", host.ip) for h, host in s.hosts.items() if host.ip]
        return tuple(sorted({ip for i, ip in ids if principal.matches(i)}))

    rules = [AllowRule(service=ServiceName(n)) for n in ("web", "web2", "we", "api")]
    rules += [AllowRule(host=HostId(h)) for h in ("u1", "u10", "u3", "u9")]
    rules += [AllowRule(spiffe_id=SpiffeId(f"spiffe://{TD}/svc/"))]
    for rule in rules:
        principal = principal_of(rule, TD)
        assert source_ips_of(s, principal, TD) == scanned(principal), rule
    assert source_ips_of(s, principal_of(rules[0], TD), TD) == ("10.0.2.1", "10.0.2.2")
    assert source_ips_of(s, principal_of(rules[4], TD), TD) == ("10.0.1.1",)
    assert source_ips_of(s, principal_of(rules[4], "other.org"), "other.org") == ("10.0.1.1",), "another domain"
    moved = replace(s, nodes=frozen_map({**s.nodes, NodeId("n1"): replace(nodes["n1"], ip="10.0.3.1")}))
    assert source_ips_of(moved, principal_of(rules[0], TD), TD) == ("10.0.2.2", "10.0.3.1"), "new maps: looked up again"
