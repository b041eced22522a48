"""The one rule for pure modules, read by every purity test (tests/unit/test_purity.py and the per-package ones).

A pure module computes and nothing else: it imports no adapter library (os-ken, grpc, cryptography, Mininet,
Prometheus), does no I/O (sockets, processes, the file system, the OS), starts no thread, reads no clock and
logs nothing; it calls neither ``open``, ``print`` nor ``input``; and the project modules it imports are pure
too. Imports are read as tests/unit/test_import_direction.py reads them: everywhere in the file, including
inside functions and ``importlib.import_module("...")`` of a literal name.

A module is pure when its package is in ``PURE_PACKAGES`` or it is listed in ``PURE_MODULES``. The few
standard modules a pure module may still import are declared in ``ALLOWED``, each with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.unit.test_import_direction import imported_modules

REPO = Path(__file__).resolve().parents[2]

FORBIDDEN_IMPORTS = frozenset(
    {
        # adapter libraries
        "os_ken",
        "grpc",
        "cryptography",
        "mininet",
        "prometheus_client",
        "requests",
        "urllib",
        # I/O, processes, the OS
        "socket",
        "subprocess",
        "os",
        "pathlib",
        "tempfile",
        "io",
        "asyncio",
        # threads, clocks, logging
        "threading",
        "queue",
        "time",
        "logging",
    }
)
FORBIDDEN_CALLS = frozenset({"open", "print", "input"})

PURE_PACKAGES = ("netmodel",)  # every module of these packages, present and future
PURE_MODULES = (
    "sdnctl/acl.py",
    "sdnctl/acl_counters.py",
    "sdnctl/admission.py",
    "sdnctl/discovery.py",
    "sdnctl/drift.py",
    "sdnctl/entry_map.py",
    "sdnctl/flow_text.py",
    "sdnctl/flows.py",
    "sdnctl/frames.py",
    "sdnctl/hosts.py",
    "sdnctl/latency.py",
    "sdnctl/message_counts.py",
    "sdnctl/meters.py",
    "sdnctl/pathing.py",
    "sdnctl/pathing_small.py",
    "sdnctl/port_stats.py",
    "sdnctl/roles.py",
    "sdnctl/update_order.py",
    "meshctl/cache.py",
    "meshctl/delta.py",
    "meshctl/denied_calls.py",
    "meshctl/encoding.py",
    "meshctl/endpoints_wire.py",
    "meshctl/envoy_config.py",
    "meshctl/paths.py",
    "meshctl/protocol.py",
    "meshctl/readiness.py",
    "meshctl/serving.py",
    "meshctl/snapshot.py",
    "meshctl/sotw.py",
    "meshctl/wake_order.py",
    "meshctl/wire_format.py",
    "meshctl/xds_types.py",
    "placement/baseline_profiles.py",
    "placement/callgraph.py",
    "placement/chains.py",
    "placement/convergence.py",
    "placement/errors.py",
    "placement/failover.py",
    "placement/improvement.py",
    "placement/latency.py",
    "placement/migration_stages.py",
    "placement/naming.py",
    "placement/plugins.py",
    "placement/replicas.py",
    "placement/requests.py",
    "placement/scheduler.py",
    "placement/snapshot.py",
    "placement/decision_model.py",
    "placement/synthetic.py",
    "placement/types.py",
    "placement/unschedulable.py",
    "pki/authz.py",
    "pki/errors.py",
    "pki/identities.py",
    "pki/policy.py",
    "pki/join_tokens.py",
    "edgectl/bus.py",
    "edgectl/agent_view.py",
    "edgectl/live_views.py",
    "edgectl/object_health.py",
    "edgectl/plan.py",
    "edgectl/plan_view.py",
    "edgectl/bandwidth_view.py",
    "edgectl/policy_view.py",
    "edgectl/topo_show.py",
    "edgectl/views.py",
    "mininet_topos/timeline.py",
    "nodeagent/plan.py",
    "cluster/codec.py",
    "cluster/etcd_model.py",
)

# Standard modules a pure module may import anyway: only for an injectable default or a lock, never for I/O.
ALLOWED: dict[str, tuple[frozenset[str], str]] = {
    "edgectl/bus.py": (frozenset({"threading", "queue", "logging"}), "the model's single writer thread and its queue"),
    "edgectl/topo_show.py": (frozenset({"io"}), "renders into an in-memory BytesIO"),
    "meshctl/cache.py": (frozenset({"threading", "time"}), "a lock (shared by threads); time.time: the default clock"),
    "meshctl/protocol.py": (frozenset({"time"}), "time.monotonic: the default clock"),
    "meshctl/readiness.py": (frozenset({"threading"}), "a lock (shared by threads)"),
    "pki/identities.py": (frozenset({"threading"}), "a lock around the current snapshot"),
    "sdnctl/message_counts.py": (frozenset({"threading"}), "a lock (counted from several threads)"),
    "placement/convergence.py": (
        frozenset({"time", "logging", "threading"}),
        "time.monotonic/time.sleep: the default clock and sleep; logs a failing probe; Progress's condition",
    ),
    "placement/scheduler.py": (frozenset({"time"}), "the local search's time budget: the default clock"),
}


def pure_paths() -> list[str]:
    """Every pure module, as a path relative to the repository."""
    in_packages = [str(p.relative_to(REPO)) for package in PURE_PACKAGES for p in (REPO / package).rglob("*.py")]
    return sorted({*in_packages, *PURE_MODULES})


def is_pure(path: str) -> bool:
    return path in pure_paths()


def _project_module_path(module: str) -> str | None:
    """``a.b`` -> ``a/b.py`` (or ``a/b/__init__.py``) when that file is in the repository."""
    for candidate in (f"{module.replace('.', '/')}.py", f"{module.replace('.', '/')}/__init__.py"):
        if (REPO / candidate).is_file():
            return candidate
    return None


def purity_violations(source: str, path: str, pure: frozenset[str] | None = None) -> list[str]:
    """What in ``source`` (the module at ``path``) breaks the rule; empty when it is pure.

    ``pure``: the pure modules it may import from the project (default: ``pure_paths()``)."""
    pure = frozenset(pure_paths()) if pure is None else pure
    allowed = ALLOWED.get(path, (frozenset(), ""))[0]
    found = []
    for line, module in sorted(imported_modules(source, path)):
        root = module.split(".")[0]
        if root in FORBIDDEN_IMPORTS - allowed:
            found.append(f"{path}:{line} imports {module}")
            continue
        target = _project_module_path(module)
        # A package (``from placement import x``) names no single module: its submodule is read on its own.
        if target is not None and not target.endswith("__init__.py") and target not in pure:
            found.append(f"{path}:{line} imports {module}, which is not pure")
    for node in ast.walk(ast.parse(source, path)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
            found.append(f"{path}:{node.lineno} calls {node.func.id}()")
    return found


def check_pure(path: str) -> None:
    found = purity_violations((REPO / path).read_text(), path)
    assert not found, "\n".join(found)
