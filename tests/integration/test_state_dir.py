"""`--state-dir`: placements written by one controller are there after a restart."""

from __future__ import annotations

import json

import pytest

from tests.integration.harness import REPO, declaring_replicas, edgectl_run

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples" / "edge-cloud.yaml"


def test_restart_keeps_placements(tmp_path) -> None:
    saved = {
        "version": 1,
        "workloads": [
            {
                "id": "web-1",
                "service": "web",
                "spiffe_id": "spiffe://edge.example/web/web-1",
                "resources": {"cpu_millis": 500, "memory_mib": 256},
                "node": "ea-n1",
                "port": 8080,
            },
            # Its node no longer exists in the fabric: reported, not restored, nothing else lost.
            {
                "id": "db-9",
                "service": "db",
                "spiffe_id": "spiffe://edge.example/db/db-9",
                "resources": {"cpu_millis": 1, "memory_mib": 1},
                "node": "gone-node",
                "port": 5432,
            },
        ],
    }
    (tmp_path / "workloads.json").write_text(json.dumps(saved))
    fabric = declaring_replicas(EXAMPLE, tmp_path / "fabric")  # only what was saved: no declared replicas
    with edgectl_run(fabric, "--state-dir", str(tmp_path)) as controller:
        workloads = controller.get_json("/api/v1/workloads")["workloads"]
        assert [(w["id"], w["node"]) for w in workloads] == [("web-1", "ea-n1")]
        assert "gone-node" in controller.log()
    # The file is not rewritten with less than it had when nothing changed.
    assert json.loads((tmp_path / "workloads.json").read_text()) == saved
