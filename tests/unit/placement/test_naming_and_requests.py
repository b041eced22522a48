"""Workload and SPIFFE names; checking Place requests field by field."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netmodel.ids import ServiceName, WorkloadId
from netmodel.types import Resources, Tier
from pki import policy
from pki.errors import InvalidSpiffeId
from placement.errors import PlacementRefused, Refusal
from placement.naming import check_trust_domain, next_workload_ids, workload_number, workload_spiffe_id
from placement.requests import PlaceInput, build_place_request
from placement.scheduler import LATENCY_FIRST_PROFILE
from placement.types import Scope
from tests.unit.placement.helpers import example_state

WEB = ServiceName("web")


def test_workload_ids_count_up_per_service_and_skip_foreign_ids() -> None:
    taken = [WorkloadId(x) for x in ("web-1", "web-7", "api-9", "web-x", "web-07", "webby-20")]
    assert next_workload_ids(WEB, taken, 2) == ["web-8", "web-9"]
    assert next_workload_ids(WEB, [], 1, floor=12) == ["web-13"]
    assert workload_number(WEB, WorkloadId("web-3")) == 3
    assert workload_number(WEB, WorkloadId("web-03")) is None


def test_spiffe_ids_per_workload_in_a_configurable_trust_domain() -> None:
    assert workload_spiffe_id("edgectl.local", WEB, WorkloadId("web-1")) == "spiffe://edgectl.local/svc/web/w/web-1"
    assert check_trust_domain("prod.example") == "prod.example"
    for bad in ("", "Prod", "a/b", "x:1"):
        with pytest.raises(ValueError):
            check_trust_domain(bad)


def test_declared_values_fill_what_the_request_leaves_out() -> None:
    request, profile = build_place_request(example_state(), PlaceInput("web"))
    assert request.resources == Resources(500, 256)
    assert request.constraints.max_latency_ms == 5 and request.constraints.near == ("u1", "u2")
    assert request.replicas == 1
    request, profile = build_place_request(
        example_state(),
        PlaceInput(
            "api",
            cpu_millis=0,
            memory_mib=64,
            max_latency_ms=7.5,
            near=("u3", "u3"),
            tiers=(Tier.EDGE,),
            affinity=(("db", Scope.SITE),),
            replicas=3,
            profile="latency-first",
        ),
    )
    assert request.resources == Resources(0, 64)
    assert request.constraints.near == ("u3",) and request.constraints.tiers == {Tier.EDGE}
    assert request.replicas == 3 and profile is LATENCY_FIRST_PROFILE


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (PlaceInput(""), "service is required"),
        (PlaceInput("nope"), "service: unknown service 'nope' (known services: api, db, web)"),
        (PlaceInput("web", cpu_millis=-1), "cpu_millis must be >= 0, got -1"),
        (PlaceInput("web", memory_mib=10**12), "memory_mib must be <= 1000000000"),
        (PlaceInput("web", max_latency_ms=0.0), "max_latency_ms must be >= 0.001"),
        (PlaceInput("web", max_latency_ms=5e-324), "max_latency_ms must be >= 0.001"),
        (PlaceInput("web", max_latency_ms=math.nan), "max_latency_ms must be >= 0.001"),
        (PlaceInput("web", max_latency_ms=math.inf), "max_latency_ms must be >= 0.001"),
        (PlaceInput("web", near=("u9",)), "near: unknown host 'u9' (known hosts: u1, u2, u3)"),
        (PlaceInput("web", near=("u\x00",)), "has non-printable characters"),
        (PlaceInput("api", max_latency_ms=5.0), "max_latency_ms needs at least one near host"),
        (PlaceInput("web", affinity=(("zz", Scope.NODE),)), "affinity.service: unknown service 'zz'"),
        (PlaceInput("web", replicas=101), "replicas must be <= 100"),
        (PlaceInput("web", profile="fastest"), "unknown profile 'fastest'"),
        (PlaceInput("x" * 300), "service is longer than 253 characters"),
    ],
)
def test_bad_fields_are_refused_with_a_reason(data: PlaceInput, message: str) -> None:
    with pytest.raises(PlacementRefused) as refused:
        build_place_request(example_state(), data)
    assert refused.value.kind is Refusal.INVALID_ARGUMENT
    assert message in refused.value.reason


def test_a_small_latency_is_never_shown_as_zero() -> None:
    from placement.plugins import format_ms

    assert format_ms(0.001) == "0.001"
    assert format_ms(3.0) == "3" and format_ms(4.996) == "5" and format_ms(0.0) == "0"


PKI_REJECTS = ["", "Prod", "a/b", "x:1", "user@td", "td%20", "a" * 256, "td\u00e9"]
BAD_SEGMENTS = ["", ".", "..", "a/b", "web?x", "web#x", "w%41", "sp ace", "caf\u00e9"]


@pytest.mark.parametrize("trust_domain", PKI_REJECTS)
def test_placement_refuses_every_trust_domain_the_pki_refuses(trust_domain: str) -> None:
    with pytest.raises(InvalidSpiffeId):
        policy.validate_trust_domain(trust_domain)
    with pytest.raises(InvalidSpiffeId):
        check_trust_domain(trust_domain)


@pytest.mark.parametrize("bad", BAD_SEGMENTS)
def test_placement_gives_no_spiffe_id_the_pki_would_refuse(bad: str) -> None:
    with pytest.raises(InvalidSpiffeId):
        policy.workload_spiffe_id("edgectl.local", bad, "web-1")
    with pytest.raises(InvalidSpiffeId):
        workload_spiffe_id("edgectl.local", ServiceName(bad), WorkloadId("web-1"))
    with pytest.raises(InvalidSpiffeId):
        workload_spiffe_id("edgectl.local", WEB, WorkloadId(bad))
    with pytest.raises(InvalidSpiffeId):
        workload_spiffe_id("Bad", WEB, WorkloadId("web-1"))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("aZ0._-/:@%?#é "), max_size=12), st.text(max_size=8))
def test_placement_and_pki_accept_the_same_names(trust_domain: str, service: str) -> None:
    def verdict(make: Callable[[], str]) -> str | None:
        try:
            return make()
        except InvalidSpiffeId:
            return None

    ours = verdict(lambda: workload_spiffe_id(trust_domain, ServiceName(service), WorkloadId("web-1")))
    theirs = verdict(lambda: policy.workload_spiffe_id(trust_domain, service, "web-1"))
    assert ours == theirs
    if ours is not None:
        assert policy.parse_leaf_spiffe_id(ours, trust_domain).uri == ours
