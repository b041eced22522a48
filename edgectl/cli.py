"""The ``edgectl`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from edgectl.config import (
    DEFAULT_HTTP,
    HTTP_ENV,
    ClusterOptions,
    GitOptions,
    RunConfig,
    empty_document,
    load_desired,
    load_fabric,
    parse_document,
    replica_id_problem,
)
from edgectl.desired_store import load_document
from netmodel.fabric_file import FabricFileError
from pki import cli as pki_cli  # loads no cryptography until a pki command runs
from pki.errors import PkiError

if TYPE_CHECKING:
    from sdnctl.roles import Mastership

LOG = logging.getLogger("edgectl")


def _add_address(parser: argparse.ArgumentParser, name: str, what: str, port: int) -> None:
    parser.add_argument(f"--{name}-bind", default="127.0.0.1", metavar="ADDR", help=f"{what} bind address")
    parser.add_argument(f"--{name}-port", type=int, default=port, metavar="PORT", help=f"{what} port ({port})")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, not {text!r}")
    return value


def _static_role(text: str) -> Mastership:
    from sdnctl.roles import parse_static_role

    try:
        return parse_static_role(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgectl",
        description="SDN and service-mesh controller for edge/cloud",
        epilog=f"environment: EDGECTL_API=HOST:PORT (the placement API; --api of place, workloads, migrate, "
        f"evict) and {HTTP_ENV}=HOST:PORT (the HTTP API; --http of routes and mesh status) replace the "
        "default addresses",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the controller: OpenFlow, xDS, placement gRPC, HTTP API")
    run.add_argument(
        "--config",
        metavar="PATH",
        help="the desired-state document: a fabric file or a directory of them; changes are applied warm "
        "(SIGHUP: read it now). With --git-repo: the state to start from until the first commit is applied",
    )
    run.add_argument("--git-repo", metavar="URL", help="take the desired state from this git repository")
    run.add_argument("--git-ref", default="main", metavar="REF", help="the branch or tag to follow (main)")
    run.add_argument("--git-path", default="", metavar="PATH", help="the document's file or directory in the repo")
    run.add_argument(
        "--git-interval",
        type=float,
        default=180.0,
        metavar="S",
        help="fetch every S seconds (180); POST /api/v1/git/sync (a webhook) fetches at once",
    )
    run.add_argument(
        "--reload-interval",
        type=float,
        default=1.0,
        metavar="S",
        help="check --config for changes this often (1; 0: only on SIGHUP)",
    )
    run.add_argument(
        "--prune",
        action="store_true",
        help="tear down what the desired state no longer declares (default: keep it, reported as an orphan)",
    )
    _add_address(run, "openflow", "OpenFlow 1.3 listener", 6653)
    _add_address(run, "http", "HTTP endpoint (/healthz, /metrics, /api/v1)", 8080)
    _add_address(run, "xds", "Envoy xDS (ADS) gRPC server", 18000)
    _add_address(run, "api", "placement gRPC API", 50051)
    run.add_argument(
        "--agent-port",
        type=int,
        default=50052,
        metavar="PORT",
        help="node agent API (gRPC, TLS) port on --api-bind, served with --pki-dir (50052; 0: none)",
    )
    run.add_argument("--agent-unix", metavar="PATH", help="also serve the node agent API on this Unix socket")
    run.add_argument(
        "--xds-unix", metavar="PATH", help="also serve xDS on this Unix socket (sidecars in network namespaces)"
    )
    run.add_argument(
        "--wait-for-sidecars",
        action="store_true",
        help="a workload gets traffic only once its Envoy sidecar serves (ACKed its inbound listener and "
        "certificate); migrations wait for it before withdrawing the old instance",
    )
    run.add_argument(
        "--mesh-app-host",
        default="127.0.0.2",
        metavar="ADDR",
        help="where apps listen behind their sidecars (127.0.0.2); not 127.0.0.1, where callers' sidecars take "
        "127.0.0.1:PORT for each service they call: a node running an app and a caller of its port would "
        "have both on one address",
    )
    run.add_argument(
        "--no-tcp-fast-open",
        dest="tcp_fast_open",
        action="store_false",
        help="under mTLS, sidecars open connections to each other without TCP Fast Open (with it, a new "
        "connection to an address reached before costs one round trip less where the node's "
        "net.ipv4.tcp_fastopen is 3)",
    )
    run.add_argument(
        "--placement-profile",
        default="default",
        metavar="NAME",
        help="the scoring profile of the controller's own placements (declared replicas, failover, migrate --to "
        "best): default, latency-first, or a baseline (kube-default-like, diktyo-like); default: default",
    )
    run.add_argument(
        "--endpoint-order",
        default="nearest",
        metavar="ORDER",
        help="nearest: each caller's nearest instances first, the others as failover (default); round-robin: every "
        "reachable instance alike for every caller, as a mesh without locality",
    )
    run.add_argument("--state-dir", metavar="DIR", help="keep placements here across restarts")
    run.add_argument(
        "--drift-interval",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="re-read every programmed switch's flows and groups this often and put back what was changed "
        "behind the controller's back (10; 0: never)",
    )
    run.add_argument(
        "--port-stats-interval",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="read every switch's port counters this often, for the links' load in /metrics (5; 0: never)",
    )
    cluster = run.add_argument_group("replicated mode (docs/cluster.md)")
    cluster.add_argument(
        "--etcd",
        metavar="URLS",
        help="join a cluster of replicas on this etcd (http://host:port,...): the model, placements and the "
        "election live there; one replica leads the switches and placements, every one serves xDS and reads",
    )
    cluster.add_argument("--replica-id", default="", metavar="ID", help="this replica's name, unique in the cluster")
    cluster.add_argument(
        "--cluster-name", default="default", metavar="NAME", help="the cluster's keys are under edgectl/NAME/ (default)"
    )
    cluster.add_argument(
        "--advertise-host",
        default="",
        metavar="ADDR",
        help="where the other replicas and clients reach this one (default: the bind address; required when "
        "it is a wildcard such as 0.0.0.0)",
    )
    cluster.add_argument(
        "--lease-ttl",
        type=int,
        default=1,
        metavar="S",
        help="a leader that hangs or loses etcd is replaced after S seconds (1; a leader whose process dies is "
        "replaced at once). etcd raises a TTL below 1.5 of its election timeout silently",
    )
    run.add_argument(
        "--static-role",
        type=_static_role,
        metavar="master:GEN|slave:GEN",
        help=argparse.SUPPRESS,  # OpenFlow roles pinned without a cluster (docs/cluster.md): tests, orchestrators
    )
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    pki_cli.add_run_options(run)

    validate = sub.add_parser(
        "validate", help="check a fabric file or directory; print FILE:LINE: field: problem, or its revision"
    )
    validate.add_argument("file", metavar="PATH", help="a fabric file, or a directory of *.yaml / *.yml files")

    topo = sub.add_parser("topo", help="fabric file tools")
    topo_sub = topo.add_subparsers(dest="topo_command", required=True, metavar="COMMAND")
    show = topo_sub.add_parser("show", help="print the fabric a file (or directory) declares")
    show.add_argument("file", metavar="PATH", help="a fabric file, or a directory of *.yaml / *.yml files")
    show.add_argument("--format", choices=["table", "json", "graphml"], default="table")
    mesh = sub.add_parser("mesh", help="service mesh: Envoy bootstraps, xDS client status")
    mesh.add_argument("mesh_command", choices=["bootstrap", "status"], help="bootstrap | status")
    mesh.add_argument("mesh_args", nargs=argparse.REMAINDER, help="see `edgectl mesh bootstrap --help`")

    pki_cli.register(sub)
    from edgectl.gitops_cli import register as register_gitops_commands
    from nodeagent.main import register as register_agent_command
    from placement.cli import register as register_placement_commands

    register_gitops_commands(sub)
    register_placement_commands(sub)
    register_agent_command(sub)

    routes = sub.add_parser("routes", help="print the routes a running controller has programmed")
    _view_options(routes)

    links = sub.add_parser(
        "links", help="print each link's capacity, reserved and residual bandwidth, and measured load"
    )
    _view_options(links)

    paths = sub.add_parser(
        "paths", help="print users' request times over the call graph and the instances each caller's calls go to"
    )
    _view_options(paths)

    cluster_cmd = sub.add_parser(
        "cluster", help="replicated mode: the replicas, the leader, etcd, each switch's master"
    )
    cluster_sub = cluster_cmd.add_subparsers(dest="cluster_command", required=True, metavar="COMMAND")
    cluster_status_cmd = cluster_sub.add_parser("status", help="every replica's role, etcd's health, switch masters")
    _view_options(cluster_status_cmd)

    policy = sub.add_parser("policy", help="the authorization policy of a running controller: show it, check a call")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    policy_show = policy_sub.add_parser("show", help="who may call each service, and the recent denials")
    policy_check = policy_sub.add_parser(
        "check",
        help="may A call B? the decision of the sidecar and of the switches, and why (exit 0 allowed, 1 denied)",
    )
    policy_check.add_argument(
        "--from", dest="caller", required=True, metavar="A", help="a service, a host id or a spiffe:// id"
    )
    policy_check.add_argument("--to", dest="callee", required=True, metavar="B", help="the service called")
    policy_check.add_argument("--path", help="the HTTP path (for rules limited to paths)")
    policy_check.add_argument("--method", help="the HTTP method (for rules limited to methods)")
    for command in (policy_show, policy_check):
        _view_options(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    placement_handler = getattr(args, "placement_handler", None)
    if placement_handler is not None:
        return int(placement_handler(args))
    gitops_handler = getattr(args, "gitops_handler", None)
    if gitops_handler is not None:
        return int(gitops_handler(args))
    agent_handler = getattr(args, "agent_handler", None)
    if agent_handler is not None:
        return int(agent_handler(args))
    if args.command == "validate":
        return cmd_validate(args.file)
    if args.command == "topo":
        return cmd_topo_show(args.file, args.format)
    if args.command == "run":
        return cmd_run(args)
    if args.command == "routes":
        return cmd_routes(args.http, args.output)
    if args.command == "paths":
        return cmd_paths(args.http, args.output)
    if args.command == "links":
        return cmd_links(args.http, args.output)
    if args.command == "policy":
        return cmd_policy(args)
    if args.command == "cluster":
        return cmd_cluster_status(args.http, args.output)
    if args.command == "pki":
        return pki_cli.run(args)
    if args.command == "mesh":
        from meshctl.bootstrap import main_bootstrap, main_status

        command = main_bootstrap if args.mesh_command == "bootstrap" else main_status
        return command(args.mesh_args)
    return 2


def cmd_cluster_status(http: str, output: str) -> int:
    """Ask every replica listed in ``--http A,B,C`` for its view and merge them (exit 1 on a problem)."""
    from edgectl.cluster_view import cluster_status, cluster_text

    answers = []
    for address in [a.strip() for a in http.split(",") if a.strip()]:
        view = _get_view("cluster status", address, "/api/v1/cluster")
        answers.append((address, view, "" if view is not None else "unreachable, or not in replicated mode"))
    status = cluster_status(answers)
    print(json.dumps(status, indent=2) if output == "json" else cluster_text(status))
    return 1 if status["problems"] or not any(r["reachable"] for r in status["replicas"]) else 0


def cmd_validate(path: str) -> int:
    try:
        document = load_desired(path)
    except FabricFileError as exc:
        for problem in exc.problems:
            print(problem.format(path), file=sys.stderr)
        return 1
    except Exception as exc:  # a loader bug must still not print a traceback at the user
        print(f"{path}:1: <file>: internal error while reading: {exc!r}", file=sys.stderr)
        return 1
    spec = document.spec
    files = f", {len(document.files)} files" if os.path.isdir(path) else ""
    print(
        f"{path}: ok ({len(spec.sites)} sites, {len(spec.switches)} switches, {len(spec.cables)} links, "
        f"{len(spec.hosts)} hosts, {len(spec.nodes)} nodes, {len(spec.services)} services){files}, "
        f"revision {document.short_revision}"
    )
    from edgectl.policy_view import refused_calls

    rules = sum(len(s.allow_from) for s in spec.services)
    guarded = sum(1 for s in spec.services if s.allow_from)
    print(
        f"  authorization: default {spec.default_policy.value}, {rules} allow_from rules "
        f"on {guarded} of {len(spec.services)} services"
    )
    for refused in refused_calls(spec.services, spec.default_policy):
        print(f"{path}: warning: {refused}", file=sys.stderr)
    return 0


def cmd_topo_show(path: str, fmt: str) -> int:
    from edgectl import topo_show

    try:
        spec = load_fabric(path)
    except FabricFileError as exc:
        print(exc, file=sys.stderr)
        return 1
    if fmt == "json":
        print(json.dumps(topo_show.as_json(spec), indent=2))
    elif fmt == "graphml":
        sys.stdout.write(topo_show.as_graphml(spec))
    else:
        sys.stdout.write(topo_show.as_table(spec))
    return 0


def _view_options(parser: argparse.ArgumentParser) -> None:
    """--http and --output of the commands that show a running controller's view."""
    parser.add_argument(
        "--http",
        default=os.environ.get(HTTP_ENV) or DEFAULT_HTTP,
        metavar="HOST:PORT",
        help=f"the controller's HTTP API (default: ${HTTP_ENV}, else {DEFAULT_HTTP})",
    )
    parser.add_argument("--output", choices=["table", "json"], default="table")


def _get_view(command: str, address: str, path: str) -> dict[str, Any] | None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as response:
            view: dict[str, Any] = json.load(response)
            return view
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"edgectl {command}: cannot reach the controller at {address}: {exc}", file=sys.stderr)
        return None


def cmd_links(address: str, output: str) -> int:
    from edgectl.bandwidth_view import links_text

    view = _get_view("links", address, "/api/v1/links")
    if view is None:
        return 1
    sys.stdout.write(json.dumps(view, indent=2) + "\n" if output == "json" else links_text(view))
    return 0


def cmd_paths(address: str, output: str) -> int:
    view = _get_view("paths", address, "/api/v1/service-paths")
    if view is None:
        return 1
    if output == "json":
        print(json.dumps(view, indent=2))
        return 0
    print(f"users' requests over the call graph (generation {view['generation']}; network round trips only)")
    for user in view["users"]:
        took = "unreachable" if user["request_ms"] is None else f"{user['request_ms']:.1f} ms"
        print(f"  {user['host']:<8} -> {user['service']:<16} {took}")
    print(f"  {'service':<16} {'from':<8} {'calls/req':>9}  instances (round trip)")
    for call in view["calls"]:
        used = ", ".join(
            f"{i['workload']} on {i['node']} "
            + ("(unreachable)" if i["round_trip_ms"] is None else f"({i['round_trip_ms']:.1f} ms)")
            for i in call["instances"]
        )
        print(f"  {call['service']:<16} {call['from_switch']:<8} {call['calls_per_request']:>9.2f}  {used or '-'}")
    return 0


def cmd_policy(args: argparse.Namespace) -> int:
    """``policy show`` (exit 0, 2 when the controller cannot answer) and ``policy check`` (0 allowed, 1 denied,
    2 an error: the controller unreachable, an unknown caller or service)."""
    import urllib.error
    import urllib.parse
    import urllib.request

    from edgectl.policy_view import as_text, check_text

    if args.policy_command == "show":
        path = "/api/v1/policy"
    else:
        query = {"from": args.caller, "to": args.callee, "path": args.path, "method": args.method}
        path = "/api/v1/policy/check?" + urllib.parse.urlencode({k: v for k, v in query.items() if v})
    try:
        with urllib.request.urlopen(f"http://{args.http}{path}", timeout=5) as response:
            view: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            message = json.load(exc).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        print(f"edgectl policy {args.policy_command}: {message}", file=sys.stderr)
        return 2
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(
            f"edgectl policy {args.policy_command}: cannot reach the controller at {args.http}: {exc}", file=sys.stderr
        )
        return 2
    if args.output == "json":
        print(json.dumps(view, indent=2))
    else:
        sys.stdout.write(as_text(view) if args.policy_command == "show" else check_text(view))
    if args.policy_command == "check":
        return 0 if view.get("allowed") else 1
    return 0


def cmd_routes(address: str, output: str) -> int:
    view = _get_view("routes", address, "/api/v1/routes")
    if view is None:
        return 1
    if output == "json":
        print(json.dumps(view, indent=2))
        return 0
    print(f"routes of generation {view['generation']} ({len(view['routes'])})")
    print(f"  {'src':<8} {'dst':<8} {'latency_ms':>10}  path")
    for route in view["routes"]:
        path = " > ".join(route["path"])
        print(f"  {route['src']:<8} {route['dst']:<8} {route['latency_us'] / 1000:>10.2f}  {path}")
    return 0


def _placement_and_endpoint_problem(profile: str, endpoint_order: str) -> str | None:
    """Why ``--placement-profile`` or ``--endpoint-order`` names nothing known, with the known names; or None.
    (Imported here, not at the top: numpy and the scheduler load only when a controller starts.)"""
    from meshctl.paths import ENDPOINT_ORDERS
    from placement.baseline_profiles import all_profiles

    profiles = all_profiles()
    if profile not in profiles:
        return f"unknown --placement-profile {profile!r} (known: {', '.join(sorted(profiles))})"
    if endpoint_order not in ENDPOINT_ORDERS:
        return f"unknown --endpoint-order {endpoint_order!r} (known: {', '.join(ENDPOINT_ORDERS)})"
    return None


def _raise_open_files_limit(most: int = 65536) -> None:
    """The soft open-files limit up to the hard one (at most ``most``): switches, sidecars' streams and
    dashboards each hold a descriptor, and a 1024 default runs out long before the CPU does."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = most if hard == resource.RLIM_INFINITY else min(hard, most)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def cmd_run(args: argparse.Namespace) -> int:
    _raise_open_files_limit()
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr
    )
    if args.reload_interval < 0:
        print("edgectl run: --reload-interval must be >= 0", file=sys.stderr)
        return 1
    if not args.config and not args.git_repo:
        print("edgectl run: give --config PATH, --git-repo URL, or both", file=sys.stderr)
        return 1
    if args.git_repo and not args.git_interval > 0:
        print("edgectl run: --git-interval must be > 0", file=sys.stderr)
        return 1
    try:
        document = load_desired(args.config) if args.config else empty_document()
    except FabricFileError as exc:
        print(exc, file=sys.stderr)
        return 1
    spec, revision = document.spec, document.short_revision
    git = None
    if args.git_repo:
        git = GitOptions(args.git_repo, args.git_ref, args.git_path, args.git_interval)
        saved = load_document(args.state_dir) if args.state_dir and not args.config else None
        if saved is not None and saved.source.startswith("git "):
            # Restart from the commit applied last (and its pause): saved placements refer to its services.
            try:
                spec, _content = parse_document(saved.files)
            except FabricFileError as exc:
                LOG.warning("the document saved in %s is not used: %s", args.state_dir, exc)
            else:
                revision = saved.revision
                git = replace(git, applied_sha=saved.revision, paused=saved.paused)
    problem = _placement_and_endpoint_problem(args.placement_profile, args.endpoint_order)
    if problem:
        print(f"edgectl run: {problem}", file=sys.stderr)
        return 1
    try:
        pki_options = pki_cli.run_options(args)
    except ValueError as exc:
        print(f"edgectl run: {exc}", file=sys.stderr)
        return 1
    if args.agent_unix and pki_options is None:
        print("edgectl run: --agent-unix needs --pki-dir (the agent API serves node identities)", file=sys.stderr)
        return 1
    if not 0 <= args.agent_port <= 65535:
        print(f"edgectl run: --agent-port must be 0 (none) or a port, not {args.agent_port}", file=sys.stderr)
        return 1
    cluster_options, problem = _cluster_options(args)
    if problem:
        print(f"edgectl run: {problem}", file=sys.stderr)
        return 1
    config = RunConfig(
        cluster=cluster_options,
        fabric_file=args.config or "",
        git=git,
        pki=pki_options,
        openflow_host=args.openflow_bind,
        openflow_port=args.openflow_port,
        http_host=args.http_bind,
        http_port=args.http_port,
        xds_host=args.xds_bind,
        xds_port=args.xds_port,
        xds_unix=args.xds_unix,
        wait_for_sidecars=args.wait_for_sidecars,
        mesh_app_host=args.mesh_app_host,
        tcp_fast_open=args.tcp_fast_open,
        api_host=args.api_bind,
        api_port=args.api_port,
        agent_port=args.agent_port,
        agent_unix=args.agent_unix,
        state_dir=args.state_dir,
        prune=args.prune,
        config_watch_interval_s=args.reload_interval,
        drift_interval_s=args.drift_interval,
        placement_profile=args.placement_profile,
        endpoint_order=args.endpoint_order,
        port_stats_interval_s=args.port_stats_interval,
        static_role=args.static_role,
    )
    from edgectl.controller import CannotStart, Controller

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        LOG.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    controller = Controller(config, spec, revision)
    signal.signal(signal.SIGHUP, lambda _signum, _frame: controller.reload_config_soon())
    try:
        controller.start()
    except (OSError, PkiError, CannotStart) as exc:
        LOG.error("cannot start: %s", exc)
        controller.stop()
        return 1
    LOG.info(
        "edgectl running (fabric %s, revision %s, %d switches declared)",
        spec.name,
        revision or "(none)",
        len(spec.switches),
    )
    while not stop.wait(1.0):
        pass
    controller.stop()
    LOG.info("stopped")
    return 0


def _cluster_options(args: argparse.Namespace) -> tuple[ClusterOptions | None, str | None]:
    """``--etcd`` and its companions, checked: (options or None, the problem)."""
    if not args.etcd:
        if args.replica_id:
            return None, "--replica-id needs --etcd (a replica of which cluster?)"
        return None, None
    problem = replica_id_problem(args.replica_id)
    if problem:
        return None, problem
    if not 1 <= args.lease_ttl <= 60:
        return None, f"--lease-ttl must be 1..60 seconds, not {args.lease_ttl}"
    if args.static_role is not None:
        return None, "--static-role and --etcd: in a cluster the election gives the OpenFlow role"
    if args.state_dir:
        return None, "--state-dir and --etcd: in replicated mode placements live in etcd (drop --state-dir)"
    if args.git_repo:
        return None, "--git-repo and --etcd: a cluster takes its desired state from --config (git is not supported yet)"
    if replica_id_problem(args.cluster_name):
        return None, f"--cluster-name {args.cluster_name!r}: at most 64 letters, digits, '.', '_' or '-'"
    try:
        from cluster.etcd import EtcdClient

        EtcdClient.from_urls(args.etcd).close()  # only parses: the connection is made when used
    except ValueError as exc:
        return None, f"--etcd: {exc}"
    binds = {args.http_bind, args.api_bind, args.xds_bind}
    if not args.advertise_host and any(host in ("0.0.0.0", "::", "") for host in binds):
        return (
            None,
            "--etcd with a wildcard bind address: say where the other replicas reach this one (--advertise-host)",
        )
    return (
        ClusterOptions(
            args.etcd, args.replica_id, args.cluster_name, args.lease_ttl, advertise_host=args.advertise_host
        ),
        None,
    )


if __name__ == "__main__":
    sys.exit(main())
