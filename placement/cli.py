"""``edgectl place | workloads | migrate | evict``: the placement commands, all through the gRPC API.

Wiring (edgectl/cli.py): ``register(sub)`` after the other subparsers, and in ``main``:
``handler = getattr(args, "placement_handler", None)`` -> ``return handler(args)``.
Nothing is imported at import time beyond argparse: grpc and the generated code load when a command
runs, so ``edgectl validate`` stays fast.

A refused request exits 1 with the server's reason on stderr (``edgectl place: RESOURCE_EXHAUSTED:
0/6 nodes are available: ...``), never a traceback; an unreachable API exits 1 saying so.

``--api A,B,C`` (a replicated controller: every replica) tries each address in turn while the one asked
is UNAVAILABLE (not there, or a follower whose leader is not there), and says which one answered.
An UNAVAILABLE a placement API decided (a change applied but not saved) is not retried: the change
was made, and a retried Place would place twice.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from placement.errors import never_reached_a_server

DEFAULT_API = "127.0.0.1:50051"
API_ENV = "EDGECTL_API"
DEFAULT_RPC_TIMEOUT_S = 30.0


DECIDED_KEY = "edgectl-placement-decided"
"""The trailer a placement API sets on every write it answered (``placement.grpc_api.DECIDED_KEY``)."""


def _addresses(text: str) -> list[str]:
    """``HOST:PORT``, or several comma-separated (each replica of a replicated controller)."""
    origin = f" (from ${API_ENV})" if text == os.environ.get(API_ENV) else ""
    addresses = [part.strip() for part in text.split(",") if part.strip()]
    if not addresses:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT[,HOST:PORT...], got {text!r}{origin}")
    for address in addresses:
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {address!r}{origin}")
    return addresses


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api",
        type=_addresses,
        default=os.environ.get(API_ENV) or DEFAULT_API,
        metavar="HOST:PORT[,HOST:PORT...]",
        help=f"placement gRPC API (default: ${API_ENV}, else {DEFAULT_API}); a replicated controller: every "
        "replica's, comma-separated (the next is tried while one is unavailable)",
    )
    parser.add_argument("--output", choices=["table", "json"], default="table")
    parser.add_argument(
        "--rpc-timeout", type=float, default=DEFAULT_RPC_TIMEOUT_S, metavar="S", help="give up after S seconds"
    )
    tls = parser.add_argument_group("mTLS (a controller run with --pki-dir)")
    tls.add_argument("--tls-cert", metavar="FILE", help="an operator certificate chain (edgectl pki issue: PREFIX.crt)")
    tls.add_argument("--tls-key", metavar="FILE", help="its private key (PREFIX.key)")
    tls.add_argument("--tls-ca", metavar="FILE", help="the trust bundle (PREFIX.bundle.pem)")
    tls.add_argument(
        "--tls-server-name", metavar="NAME", help="the name to check in the controller's certificate (default: HOST)"
    )


def register(subparsers: Any) -> None:
    """Add the placement commands to ``edgectl``'s subparsers."""
    place = subparsers.add_parser("place", help="place new instances of a service (latency-aware)")
    place.add_argument("--service", required=True, metavar="NAME", help="a service the fabric file declares")
    place.add_argument("--cpu-millis", type=int, metavar="N", help="cpu per instance (default: the service's)")
    place.add_argument("--memory-mib", type=int, metavar="N", help="memory per instance (default: the service's)")
    place.add_argument("--max-latency-ms", type=float, metavar="X", help="SLO from each --near host, over the route")
    place.add_argument("--near", action="append", default=[], metavar="HOST", help="a user host (repeatable)")
    place.add_argument("--tier", action="append", default=[], choices=["edge", "metro", "cloud"], help="allowed tier")
    place.add_argument("--affinity", action="append", default=[], metavar="SERVICE[:site]", help="run beside it")
    place.add_argument("--anti-affinity", action="append", default=[], metavar="SERVICE[:site]", help="never beside")
    place.add_argument("--replicas", type=int, default=1, metavar="N")
    place.add_argument(
        "--bandwidth-mbps",
        type=float,
        metavar="N",
        help="reserve N Mbit/s each way per instance with each near host (default: the service's; 0: none)",
    )
    place.add_argument(
        "--profile", default="", help="scoring profile: default, latency-first, kube-default-like, diktyo-like"
    )
    place.add_argument("--dry-run", action="store_true", help="decide, change nothing")
    _common(place)
    place.set_defaults(placement_handler=cmd_place)

    workloads = subparsers.add_parser("workloads", help="list placed workloads")
    workloads.add_argument("--service", default="", metavar="NAME")
    workloads.add_argument("--node", default="", metavar="NODE")
    _common(workloads)
    workloads.set_defaults(placement_handler=cmd_workloads)

    migrate = subparsers.add_parser("migrate", help="move a workload make-before-break")
    migrate.add_argument("workload")
    migrate.add_argument("--to", required=True, metavar="NODE|SITE|best", help="a node, a site, or best")
    migrate.add_argument("--timeout-s", type=float, default=0.0, metavar="S", help="convergence wait (server: 10 s)")
    migrate.add_argument(
        "--force", action="store_true", help="with --to best: move even if the best other node is no better"
    )
    _common(migrate)
    migrate.set_defaults(placement_handler=cmd_migrate)

    evict = subparsers.add_parser("evict", help="remove a workload")
    evict.add_argument("workload")
    _common(evict)
    evict.set_defaults(placement_handler=cmd_evict)


# -- commands ----------------------------------------------------------------------------------------------


def cmd_place(args: argparse.Namespace) -> int:
    if not 0 <= args.replicas < 2**32:  # the field is unsigned: a negative count cannot even be sent
        print(f"edgectl place: --replicas must be >= 0, got {args.replicas}", file=sys.stderr)
        return 2

    def call(stub: Any, pb: Any) -> Any:
        constraints = pb.Constraints(
            near=args.near,
            tiers=[pb.Tier.Value(f"TIER_{t.upper()}") for t in args.tier],
            affinity=[_term(pb, t) for t in args.affinity],
            anti_affinity=[_term(pb, t) for t in args.anti_affinity],
        )
        if args.max_latency_ms is not None:
            constraints.max_latency_ms = args.max_latency_ms
        request = pb.PlaceRequest(
            service=args.service,
            constraints=constraints,
            replicas=args.replicas,
            profile=args.profile,
            dry_run=args.dry_run,
        )
        if args.cpu_millis is not None:
            request.cpu_millis = args.cpu_millis
        if args.memory_mib is not None:
            request.memory_mib = args.memory_mib
        if args.bandwidth_mbps is not None:
            request.bandwidth_mbps = args.bandwidth_mbps
        return stub.Place(request, timeout=args.rpc_timeout)

    def show(response: Any) -> None:
        verb = "would place" if args.dry_run else f"placed (generation {response.generation})"
        print(f"{verb}:")
        _table(response.workloads)

    return _run("place", args, call, show)


def cmd_workloads(args: argparse.Namespace) -> int:
    def call(stub: Any, pb: Any) -> Any:
        return stub.List(pb.ListRequest(service=args.service, node=args.node), timeout=args.rpc_timeout)

    def show(response: Any) -> None:
        print(f"workloads at generation {response.generation} ({len(response.workloads)})")
        _table(response.workloads)

    return _run("workloads", args, call, show)


def cmd_migrate(args: argparse.Namespace) -> int:
    def call(stub: Any, pb: Any) -> Any:
        request = pb.MigrateRequest(workload_id=args.workload, timeout_s=args.timeout_s, force=args.force)
        if args.to == "best":
            request.best = True
        else:
            request.node_or_site = args.to
        return stub.Migrate(request, timeout=max(args.rpc_timeout, args.timeout_s + 5))

    def show(response: Any) -> None:
        for moved, prefix in [(response, ""), *((c, "  with it: ") for c in response.companions)]:
            w = moved.workload
            print(
                f"{prefix}{moved.from_workload_id} -> {w.id} on {w.node} ({w.site}) [{moved.migration_id}: placed at "
                f"generation {moved.placed_generation}, {moved.from_workload_id} removed at "
                f"{moved.removed_generation}]"
            )

    return _run("migrate", args, call, show)


def cmd_evict(args: argparse.Namespace) -> int:
    def call(stub: Any, pb: Any) -> Any:
        return stub.Evict(pb.EvictRequest(workload_id=args.workload), timeout=args.rpc_timeout)

    def show(response: Any) -> None:
        print(f"evicted {response.workload.id} from {response.workload.node} (generation {response.generation})")

    return _run("evict", args, call, show)


# -- plumbing ----------------------------------------------------------------------------------------------------


def _term(pb: Any, text: str) -> Any:
    service, _, scope = text.partition(":")
    return pb.AffinityTerm(service=service, scope=pb.SCOPE_SITE if scope == "site" else pb.SCOPE_NODE)


def _run(command: str, args: argparse.Namespace, call: Callable[[Any, Any], Any], show: Callable[[Any], None]) -> int:
    import grpc

    from edgectl.views import proto_view
    from placement._pb import placement_pb2 as pb
    from placement._pb import placement_pb2_grpc as pb_grpc

    try:
        credentials = channel_credentials(args)
    except (OSError, ValueError) as exc:
        print(f"edgectl {command}: {exc}", file=sys.stderr)
        return 2
    addresses = _addresses(args.api) if isinstance(args.api, str) else list(args.api)
    unreachable: list[tuple[str, str]] = []
    timed_out = False
    response: Any = None
    for address in addresses:
        if credentials is None:
            channel = grpc.insecure_channel(address)
        else:
            options = [("grpc.ssl_target_name_override", args.tls_server_name)] if args.tls_server_name else []
            channel = grpc.secure_channel(address, credentials, options=options)
        with channel:
            try:
                response = call(pb_grpc.PlacementStub(channel), pb)
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                details = exc.details() if hasattr(exc, "details") else str(exc)
                if code == grpc.StatusCode.UNAVAILABLE and not _decided(exc):
                    unreachable.append((address, str(details)))
                    continue  # another replica may answer
                if code == grpc.StatusCode.DEADLINE_EXCEEDED and not _from_server(details):
                    unreachable.append((address, str(details)))
                    timed_out = True
                    break  # the time is spent, and a write may be under way: never sent twice
                by = f" (answered by {address})" if len(addresses) > 1 else ""
                print(f"edgectl {command}: {code.name if code else 'ERROR'}: {details}{by}", file=sys.stderr)
                return 1
        if unreachable:
            print(f"edgectl {command}: answered by {address}", file=sys.stderr)
        break
    if response is None:
        where = "; ".join(f"at {address}: {details}" for address, details in unreachable)
        print(f"edgectl {command}: cannot reach the placement API {where}", file=sys.stderr)
        hint = tls_hint(unreachable[-1][1], tls_given=credentials is not None)
        if hint and not timed_out:
            print(f"  hint: {hint}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(proto_view(response), indent=2, sort_keys=True))
    else:
        show(response)
    return 0


def _decided(error: Any) -> bool:
    """An UNAVAILABLE after which the change may be made, so retrying elsewhere could make it twice: one a
    placement API decided or relayed from a leader that went away mid-call (its trailer says so), or a
    connection that broke mid-call. Only a call that never reached a server (or was relayed for a leader
    that could not be reached) is safe to send to another replica."""
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    marks = {value for key, value in trailing or () if key == DECIDED_KEY}
    if marks & {"here", "maybe"}:
        return True
    if "forwarded" in marks:
        return False
    details = error.details() if hasattr(error, "details") else str(error)
    return not never_reached_a_server(str(details or ""))


def channel_credentials(args: argparse.Namespace) -> Any:
    """``grpc.ssl_channel_credentials`` from ``--tls-cert/--tls-key/--tls-ca`` (all three), or None."""
    files = (getattr(args, "tls_cert", None), getattr(args, "tls_key", None), getattr(args, "tls_ca", None))
    if not any(files):
        return None
    if not all(files):
        raise ValueError("--tls-cert, --tls-key and --tls-ca go together")
    import grpc

    cert, key, ca = (Path(name).read_bytes() for name in files if name is not None)  # all given: checked above
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def tls_hint(details: str | None, *, tls_given: bool) -> str | None:
    """What to try when the API is UNAVAILABLE: a controller run with ``--pki-dir`` closes the socket on a
    client without a certificate from its CA ("Socket closed"), which says nothing about certificates."""
    text = str(details or "")
    if "Connection refused" in text:  # nothing listens there: certificates are not the problem
        return None
    if not tls_given:
        return (
            "a controller run with --pki-dir accepts only clients with a certificate from its CA: "
            "give --tls-cert, --tls-key and --tls-ca (edgectl pki issue)"
        )
    if "Socket closed" in text or "handshake" in text.lower():
        return (
            "the TLS handshake failed: --tls-cert/--tls-key must be a certificate from the controller's CA "
            "(edgectl pki issue) and --tls-ca its trust bundle; a controller without --pki-dir takes no TLS"
        )
    return None


def _from_server(details: str | None) -> bool:
    """A DEADLINE_EXCEEDED the server sent (a migration that did not converge) says so itself."""
    return bool(details) and "did not converge" in str(details)


def _table(workloads: Any) -> None:
    from edgectl.views import enum_label

    print(
        f"  {'id':<14} {'service':<10} {'node':<12} {'site':<10} {'tier':<6} {'cpu':>6} {'mem':>6} "
        f"{'bandwidth':>11}  latency  status"
    )
    for w in workloads:
        tier = enum_label(w.DESCRIPTOR.fields_by_name["tier"].enum_type, w.tier) or ""
        worst = max(w.latency_ms.values()) if w.latency_ms else None
        latency = f"{worst:.2f} ms" if worst is not None else "-"
        bandwidth = f"{w.bandwidth_mbps:g} Mbit/s" if w.HasField("bandwidth_mbps") else "-"
        print(
            f"  {w.id:<14} {w.service:<10} {w.node:<12} {w.site:<10} {tier:<6} {w.cpu_millis:>5}m "
            f"{w.memory_mib:>5}M {bandwidth:>11}  {latency:>7}  {w.status}"
        )
        for reason in w.reasons:
            print(f"      {reason}")
