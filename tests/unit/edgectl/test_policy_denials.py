"""edgectl.policy_denials: totals by caller label, the recent list, bounded series."""

from __future__ import annotations

import pytest

from edgectl.policy_denials import DenialLog, caller_label


def test_caller_labels() -> None:
    assert caller_label("spiffe://example.org/svc/cart/w/cart-3") == "service:cart"
    assert caller_label("spiffe://example.org/host/u2") == "host:u2"
    assert caller_label("10.0.1.2") == "10.0.1.2"
    assert caller_label("spiffe://example.org/operator/x") == "spiffe://example.org/operator/x"


def test_totals_and_recent() -> None:
    log = DenialLog()
    log.record(layer="envoy", caller="spiffe://td/svc/web/w/web-1", service="cart", at=1.0, detail="GET /")
    log.record(layer="envoy", caller="spiffe://td/svc/web/w/web-2", service="cart", at=2.0)
    log.record(layer="network", caller="spiffe://td/host/u2", service="cart", at=3.0, count=5)
    log.record(layer="network", caller="x", service="cart", at=4.0, count=0)
    assert log.totals() == {("service:web", "cart", "envoy"): 2, ("host:u2", "cart", "network"): 5}
    assert [d.at for d in log.recent()] == [3.0, 2.0, 1.0]
    assert log.recent(1)[0].as_json()["caller_label"] == "host:u2"


def test_series_are_bounded() -> None:
    log = DenialLog(max_series=2)
    for i in range(5):
        log.record(layer="network", caller=f"10.0.0.{i}", service="cart", at=float(i))
    totals = log.totals()
    assert len(totals) == 3 and totals[("other", "cart", "network")] == 3


def test_unknown_layer_is_refused() -> None:
    with pytest.raises(ValueError, match="layer"):
        DenialLog().record(layer="app", caller="x", service="y", at=0.0)
