"""docs/metrics.md lists exactly the metrics a controller's registry exposes; the Grafana dashboard asks
only for those (and shows every edgectl one); promtool accepts the exposition with every metric filled in."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from prometheus_client import generate_latest

from tests.integration.harness import REPO
from tests.unit.edgectl.metrics_fixture import populated_metrics

DOC = REPO / "docs" / "metrics.md"
DASHBOARD = REPO / "docs" / "grafana" / "edgectl.json"
ROW = re.compile(r"^\| `([a-zA-Z_:][a-zA-Z0-9_:]*)` \| (counter|gauge|histogram) \|", re.MULTILINE)
METRIC_NAME = re.compile(r"\b((?:edgectl|process|python)_[a-zA-Z0-9_]+)\b")
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def exposed() -> dict[str, str]:
    """Every metric of the registry as it is written on /metrics (counters with _total) -> its type."""
    out = {}
    for family in populated_metrics().metrics.registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        out[name] = family.type
    return out


def documented() -> dict[str, str]:
    rows = ROW.findall(DOC.read_text())
    names = [name for name, _ in rows]
    assert len(names) == len(set(names)), "a metric is listed twice in docs/metrics.md"
    return dict(rows)


def test_the_doc_lists_exactly_the_exposed_metrics_with_their_types() -> None:
    metrics, doc = exposed(), documented()
    assert sorted(set(metrics) - set(doc)) == [], "exposed but not in docs/metrics.md"
    assert sorted(set(doc) - set(metrics)) == [], "in docs/metrics.md but not exposed"
    assert {name: kind for name, kind in doc.items()} == metrics


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_the_dashboard_is_importable_as_is() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["uid"] and dashboard["schemaVersion"] >= 30
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for source in (panel["datasource"], *(t["datasource"] for t in panel["targets"])):
            assert source == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]


def test_every_dashboard_expression_asks_only_for_exposed_metrics_and_shows_every_edgectl_one() -> None:
    metrics = exposed()
    asked = set()
    for expr in dashboard_exprs():
        for name in METRIC_NAME.findall(expr):
            family = name
            for suffix in HISTOGRAM_SERIES:
                if name.endswith(suffix) and metrics.get(name.removesuffix(suffix)) == "histogram":
                    family = name.removesuffix(suffix)
            assert family in metrics, f"the dashboard asks for {name}, which /metrics does not expose ({expr})"
            asked.add(family)
    assert sorted(n for n in metrics if n.startswith("edgectl_") and n not in asked) == [], "not on the dashboard"


def test_promtool_accepts_the_exposition_with_every_metric_filled_in() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (scripts/setup.sh installs Debian's prometheus package)")
    text = generate_latest(populated_metrics().metrics.registry)
    assert b"edgectl_link_utilization_ratio{" in text and b"edgectl_certificate_expiry_timestamp_seconds{" in text
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=60, check=False)
    complaints = (result.stdout + result.stderr).decode()
    assert result.returncode == 0 and not complaints.strip(), complaints
