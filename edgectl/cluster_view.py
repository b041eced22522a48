"""``edgectl cluster status``: the replicas' own views (``GET /api/v1/cluster``) merged into one (pure).

Each replica knows its own role, the leader it follows, etcd's members as it reaches them, and the role
each switch gave its own connection; the merge puts them side by side and names each switch's master.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

ReplicaAnswer = tuple[str, Mapping[str, Any] | None, str]
"""(HTTP address, its /api/v1/cluster view or None, the error when it did not answer)."""


def cluster_status(answers: Sequence[ReplicaAnswer]) -> dict[str, Any]:
    replicas: list[dict[str, Any]] = []
    leaders: set[str] = set()
    masters: dict[str, list[str]] = {}
    etcd: dict[str, dict[str, Any]] = {}
    for address, view, error in answers:
        if view is None:
            replicas.append({"http": address, "reachable": False, "error": error})
            continue
        leader = view.get("leader") or {}
        replicas.append(
            {
                "http": address,
                "reachable": True,
                "replica_id": view.get("replica_id", ""),
                "role": view.get("role", ""),
                "follows": leader.get("replica_id", ""),
                "generation": leader.get("generation", 0),
                "etcd_reachable": bool((view.get("etcd") or {}).get("reachable")),
                "read_only": view.get("read_only"),
                "applied_revision": (view.get("log") or {}).get("applied_revision", 0),
                "leadership_changes": view.get("leadership_changes", 0),
            }
        )
        if view.get("role") == "leader":
            leaders.add(str(view.get("replica_id", "")))
        for switch, role in (view.get("switches") or {}).items():
            masters.setdefault(switch, [])
            if role.get("role") == "master":
                masters[switch].append(str(view.get("replica_id", "")))
        for member in (view.get("etcd") or {}).get("members", []):
            endpoint = str(member.get("endpoint", ""))
            if endpoint and (endpoint not in etcd or member.get("healthy")):
                etcd[endpoint] = dict(member)
    problems: list[str] = []
    if len(leaders) > 1:
        problems.append(f"{len(leaders)} replicas say they lead: {', '.join(sorted(leaders))}")
    if not leaders and any(r["reachable"] for r in replicas):
        problems.append("no replica leads")
    for switch, names in sorted(masters.items()):
        if len(names) != 1:
            problems.append(f"switch {switch} has {len(names)} masters" + (f": {', '.join(names)}" if names else ""))
    return {
        "leader": sorted(leaders)[0] if len(leaders) == 1 else None,
        "replicas": replicas,
        "etcd": [etcd[endpoint] for endpoint in sorted(etcd)],
        "switches": {switch: names for switch, names in sorted(masters.items())},
        "problems": problems,
    }


def cluster_text(status: Mapping[str, Any]) -> str:
    lines = [
        f"leader: {status['leader'] or '(none)'}",
        "",
        "REPLICA   ROLE      FOLLOWS   GEN     ETCD  APPLIED   HTTP",
    ]
    for replica in status["replicas"]:
        if not replica["reachable"]:
            lines.append(
                f"{'?':<9} {'down':<9} {'':<9} {'':<7} {'':<5} {'':<9} {replica['http']}  ({replica['error']})"
            )
            continue
        etcd = "ok" if replica["etcd_reachable"] else "LOST"
        role = replica["role"] + (" (read-only)" if replica["read_only"] else "")
        lines.append(
            f"{replica['replica_id']:<9} {role:<9} {replica['follows']:<9} {replica['generation']:<7} {etcd:<5} "
            f"{replica['applied_revision']:<9} {replica['http']}"
        )
    lines += ["", "ETCD MEMBER                 HEALTHY  LEADER  TERM"]
    for member in status["etcd"]:
        lines.append(
            f"{member.get('endpoint', ''):<27} {'yes' if member.get('healthy') else 'NO':<8} "
            f"{'*' if member.get('leader') else '':<7} {member.get('raft_term', '')}"
        )
    switches = status["switches"]
    mastered = sum(1 for names in switches.values() if len(names) == 1)
    lines += ["", f"switches: {len(switches)}, {mastered} with one master"]
    by_master: dict[str, int] = {}
    for names in switches.values():
        for name in names:
            by_master[name] = by_master.get(name, 0) + 1
    for name, count in sorted(by_master.items()):
        lines.append(f"  {name}: master of {count}")
    for problem in status["problems"]:
        lines.append(f"PROBLEM: {problem}")
    return "\n".join(lines)
