"""``edgectl cluster status``: the replicas' views merged; one master per switch or a problem named."""

from __future__ import annotations

from typing import Any

from edgectl.cluster_view import cluster_status, cluster_text


def view(replica: str, role: str, leader: str, switches: dict[str, str]) -> dict[str, Any]:
    return {
        "replica_id": replica,
        "role": role,
        "leader": {"replica_id": leader, "generation": 7},
        "etcd": {
            "reachable": True,
            "members": [{"endpoint": "http://127.0.0.1:2379", "healthy": True, "leader": True}],
        },
        "read_only": None,
        "log": {"applied_revision": 40},
        "switches": {dpid: {"role": r, "generation_id": 7} for dpid, r in switches.items()},
    }


def test_one_leader_one_master_per_switch_no_problem() -> None:
    status = cluster_status(
        [
            ("a:1", view("r1", "leader", "r1", {"0001": "master", "0002": "master"}), ""),
            ("b:1", view("r2", "follower", "r1", {"0001": "slave", "0002": "slave"}), ""),
            ("c:1", None, "unreachable"),
        ]
    )
    assert status["leader"] == "r1" and status["problems"] == []
    assert status["switches"] == {"0001": ["r1"], "0002": ["r1"]}
    text = cluster_text(status)
    assert "leader: r1" in text and "r1: master of 2" in text and "down" in text


def test_two_leaders_and_masterless_switches_are_problems() -> None:
    status = cluster_status(
        [
            ("a:1", view("r1", "leader", "r1", {"0001": "master", "0002": "slave"}), ""),
            ("b:1", view("r2", "leader", "r2", {"0001": "master", "0002": "slave"}), ""),
        ]
    )
    assert status["leader"] is None
    assert any("2 replicas say they lead" in p for p in status["problems"])
    assert any("0001 has 2 masters" in p for p in status["problems"])
    assert any("0002 has 0 masters" in p for p in status["problems"])
