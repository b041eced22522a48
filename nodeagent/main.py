"""``edgectl agent``: the node agent's command line and its main loop (adapter).

    edgectl agent --node ea-n1 --controller 10.0.0.254:50052 --join-token TOKEN --trust-bundle bundle.pem

It attests once with the join token (or, restarted, keeps the node SVID its work directory holds while
that is valid: a token works only once), then follows WatchNode for its node forever, reconnecting with
a backoff; renews the node SVID at half-life; reports crashed workloads. SIGTERM or SIGINT: everything
it started is stopped, exit 0. Exit 2: bad flags, or no identity (the controller refused the token, or
there is no token and no valid SVID in the work directory).

Nothing heavy is imported until the command runs, so ``edgectl --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nodeagent.client import ControllerClient
    from nodeagent.identity import NodeIdentityFiles, NodeSvid
    from nodeagent.supervisor import RunAs, Supervisor

LOG = logging.getLogger("edgectl.agent")

DEFAULT_XDS_PORT = 18000
DEFAULT_WORK_ROOT = "/var/lib/edgectl-agent"
RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 10.0
STARTING_REPORT_TIMEOUT_S = 2.0
"""How long a start waits to tell the controller its app starts beside its sidecar."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--node", required=True, metavar="NODE", help="this compute node's id in the fabric")
    parser.add_argument(
        "--controller",
        required=True,
        metavar="HOST:PORT|unix:/path",
        help="the controller's node agent API (edgectl run --agent-port, default 50052, or --agent-unix); "
        "a replicated controller: every replica's, comma-separated (the next is used while one is unavailable)",
    )
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--join-token", metavar="TOKEN", help="the one-time join token (edgectl pki token --node)")
    token.add_argument("--join-token-file", metavar="FILE", help="read the join token from this file")
    parser.add_argument(
        "--trust-bundle",
        metavar="FILE",
        help="the CA certificates to trust the controller with (edgectl pki bundle); needed to attest",
    )
    parser.add_argument(
        "--xds",
        metavar="HOST:PORT|unix:/path",
        help=f"where the sidecars get their config (default: the controller's host, port {DEFAULT_XDS_PORT}); "
        "a replicated controller: every replica's, comma-separated",
    )
    parser.add_argument(
        "--xds-server-id",
        default="",
        metavar="SPIFFE_ID",
        help="the SPIFFE id the sidecars require of the xDS server (default: any certificate of the CA)",
    )
    parser.add_argument(
        "--work-dir",
        metavar="DIR",
        help=f"the node SVID, status.json and each workload's files (default {DEFAULT_WORK_ROOT}/NODE)",
    )
    parser.add_argument(
        "--drain-s",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how long a removed workload keeps running for requests in flight (1.0)",
    )
    parser.add_argument(
        "--controller-server-name",
        default="",
        metavar="NAME",
        help="the name the controller's certificate must carry when --controller's host is not in it "
        "(default: that host; localhost for a Unix socket)",
    )
    parser.add_argument("--envoy", metavar="PATH", help="the Envoy binary (default: the one beside this python)")
    parser.add_argument(
        "--run-as",
        metavar="USER",
        help="the user the apps run as (default: nobody when the agent runs as root, else the agent's own user)",
    )
    parser.add_argument(
        "--sidecar-after-app",
        action="store_true",
        help="start each sidecar once its app listens, not beside it (slower: the two start-ups add up; "
        "beside it, the controller is told the app starts and keeps it no endpoint until it listens)",
    )
    parser.add_argument(
        "--no-warm-up",
        dest="warm_up",
        action="store_false",
        help="do not open a new sidecar's connections to the services its app calls before the app's first "
        "request does (that request then waits for them: a TCP and a TLS round trip each)",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def resolve_run_as(name: str | None) -> RunAs | None:
    """``--run-as``: the user the apps run as; None: the agent's own user (no switch). Default: ``nobody``
    when the agent is root (never root: the node key is root's), else the agent's own user. ValueError
    for a user this system does not know, or a switch only root may make."""
    import pwd

    from nodeagent.supervisor import RunAs

    if name is None:
        if os.geteuid() != 0:
            return None
        name = "nobody"
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ValueError(f"--run-as {name}: no such user on this system") from None
    if entry.pw_uid == os.geteuid():
        return None
    if os.geteuid() != 0:
        raise ValueError(f"--run-as {name}: only an agent running as root can start apps as another user")
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)


def register(subparsers: Any) -> None:
    """Add ``agent`` to edgectl's parser; a parsed ``agent`` command carries ``agent_handler``."""
    parser = subparsers.add_parser(
        "agent", help="the node agent: attest with a join token, run the workloads placed on this node"
    )
    add_arguments(parser)
    parser.set_defaults(agent_handler=run)


def default_xds(controller: str) -> str:
    """Each controller replica's host, port 18000 (comma-separated as ``--xds`` takes them)."""
    xds = []
    for address in controller_addresses(controller):
        if address.startswith("unix:"):
            raise ValueError("--controller is a Unix socket: give --xds too (the controller's --xds-unix)")
        host, _, _ = address.rpartition(":")
        xds.append(f"{host}:{DEFAULT_XDS_PORT}")
    return ",".join(xds)


def controller_addresses(text: str) -> list[str]:
    """``--controller A,B,C``: every replica of a replicated controller (ValueError if none)."""
    addresses = [part.strip() for part in text.split(",") if part.strip()]
    if not addresses:
        raise ValueError(f"--controller {text!r}: expected HOST:PORT or unix:/path (several: comma-separated)")
    return addresses


def read_token(args: argparse.Namespace) -> str:
    if args.join_token_file:
        return Path(args.join_token_file).read_text().strip()
    return str(args.join_token or "").strip()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        agent = Agent(args)
    except (ValueError, OSError) as exc:
        print(f"edgectl agent: {exc}", file=sys.stderr)
        return 2
    return agent.run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgectl agent", description="the edgectl node agent")
    add_arguments(parser)
    return run(parser.parse_args(argv))


class Agent:
    client: ControllerClient
    files: NodeIdentityFiles
    svid: NodeSvid
    supervisor: Supervisor

    def __init__(self, args: argparse.Namespace) -> None:
        from meshctl.bootstrap import parse_xds_addresses

        self.args = args
        self.node = args.node
        self.controllers = controller_addresses(args.controller)
        self.xds = args.xds or default_xds(args.controller)
        parse_xds_addresses(self.xds)  # ValueError names what is wrong
        if not args.drain_s >= 0:
            raise ValueError(f"--drain-s must be >= 0, not {args.drain_s}")
        self.work_dir = Path(args.work_dir or f"{DEFAULT_WORK_ROOT}/{self.node}").absolute()
        self.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if args.envoy:
            envoy = Path(args.envoy)
            if not os.access(envoy, os.X_OK):
                raise ValueError(f"--envoy {envoy}: not an executable file")
            # EnvoySidecar looks the binary up by name; the agent runs exactly --envoy (see SidecarSettings).
            os.environ["PATH"] = f"{envoy.resolve().parent}{os.pathsep}{os.environ.get('PATH', '')}"
        self.run_as = resolve_run_as(args.run_as)
        self.stop = threading.Event()
        self._watch_lock = threading.Lock()
        self._watch_call: Any = None
        self._next_watch: Any = None
        """A WatchNode stream opened on the channel of a renewed node SVID, to follow once the old ends."""

    # -- identity ----------------------------------------------------------------------------------

    def _identity(self) -> NodeSvid:
        """The node SVID: the one kept in the work directory while valid, else a new one by attestation.
        Raises SystemExit(2) when there is none to be had."""
        from nodeagent.client import AttestRefused
        from nodeagent.identity import NodeIdentityFiles, new_key_and_csr, svid_from

        self.files = NodeIdentityFiles(self.work_dir)
        kept = self.files.load()
        now = time.time()
        ours = kept is not None and kept.spiffe_id.endswith(f"/node/{self.node}")
        if kept is not None and ours and kept.valid(now + 5) and self.files.bundle.exists():
            LOG.info(
                "using the node SVID %s kept in %s (expires in %.0f s)",
                kept.spiffe_id,
                self.work_dir,
                kept.not_after - now,
            )
            return kept
        token = read_token(self.args)
        if not token:
            raise SystemExit(self._fail("no valid node SVID in the work directory and no --join-token to attest with"))
        if not self.args.trust_bundle:
            raise SystemExit(self._fail("--trust-bundle is needed to attest (the controller's CA: edgectl pki bundle)"))
        bundle = Path(self.args.trust_bundle).read_bytes()
        key_pem, csr_pem = new_key_and_csr(self.node)
        delay = RECONNECT_FIRST_S
        while not self.stop.is_set():
            try:
                issued = self.client.attest(self.node, token, csr_pem, bundle)
                break
            except AttestRefused as exc:
                raise SystemExit(self._fail(f"the controller refused the join token: {exc}")) from None
            except Exception as exc:
                LOG.warning("cannot attest at %s yet: %s; again in %.1f s", self.args.controller, _short(exc), delay)
                self.stop.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
        else:
            raise SystemExit(0)
        svid = svid_from(issued.cert_chain_pem, key_pem)
        self.files.store(svid, issued.trust_bundle_pem or bundle.decode())
        LOG.info("attested %s as %s (expires in %.0f s)", self.node, svid.spiffe_id, svid.not_after - time.time())
        return svid

    def _fail(self, message: str) -> int:
        print(f"edgectl agent: {message}", file=sys.stderr)
        return 2

    def _renew_forever(self) -> None:
        from nodeagent.identity import new_key_and_csr, svid_from

        delay = RECONNECT_FIRST_S
        while not self.stop.wait(max(self.svid.renew_at() - time.time(), 0)):
            try:
                key_pem, csr_pem = new_key_and_csr(self.node)
                issued = self.client.renew(csr_pem)
                svid = svid_from(issued.cert_chain_pem, key_pem)
                self.files.store(svid, issued.trust_bundle_pem)
            except Exception as exc:
                LOG.warning("cannot renew the node SVID yet: %s; again in %.1f s", _short(exc), delay)
                if self.stop.wait(delay):
                    return
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            delay = RECONNECT_FIRST_S
            self.svid = svid
            self.client.use_identity(svid.cert_chain_pem, svid.private_key_pem, self.files.bundle_pem())
            self.supervisor.write_status()
            LOG.info("renewed the node SVID %s (expires in %.0f s)", svid.spiffe_id, svid.not_after - time.time())
            self._move_watch()

    def _move_watch(self) -> None:
        """Follow WatchNode on the renewed SVID's channel: the old stream's connection presents the old
        certificate, and ends when that expires. The new stream is opened first, then the old one is
        cancelled (no moment without a stream); the new one starts with a SNAPSHOT, the whole truth."""
        try:
            opened = self.client.watch(self.node, starts_beside=self._starts_beside)
        except Exception as exc:
            LOG.warning("cannot open WatchNode with the renewed node SVID yet: %s", _short(exc))
            return
        with self._watch_lock:
            old, self._next_watch = self._watch_call, opened
        if old is not None:
            old.cancel()

    # -- placements --------------------------------------------------------------------------------

    def _watch_forever(self) -> None:
        import grpc

        delay = RECONNECT_FIRST_S
        while not self.stop.is_set():
            with self._watch_lock:
                opened, self._next_watch = self._next_watch, None
            try:
                call, events = opened or self.client.watch(self.node, starts_beside=self._starts_beside)
                with self._watch_lock:
                    self._watch_call = call
                if self.stop.is_set():
                    call.cancel()
                for kind, workloads, generation, held in events:
                    if delay > RECONNECT_FIRST_S:
                        LOG.info("following the placements of %s again", self.node)
                    delay = RECONNECT_FIRST_S
                    LOG.debug("%s: %s at generation %d", kind.value, [w.id for w in workloads], generation)
                    self.supervisor.update(kind, workloads, held)
                reason = "the controller ended the stream"
            except grpc.RpcError as exc:
                reason = f"{exc.code().name}: {exc.details()}"
            except Exception as exc:
                reason = _short(exc)
            if self.stop.is_set():
                return
            with self._watch_lock:
                moved = self._next_watch is not None
            if moved:
                LOG.info("WatchNode %s: following on the channel of the renewed node SVID", self.node)
                continue
            LOG.warning("WatchNode %s: %s; reconnecting to %s in %.1f s", self.node, reason, self.client.target, delay)
            self.stop.wait(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    def _report(self, workload_id: str, healthy: bool, reason: str) -> None:
        """Tell the controller on a thread of its own: the supervisor never waits for the network."""

        def send() -> None:
            try:
                self.client.report_health(workload_id, healthy, reason)
            except Exception as exc:
                LOG.error("cannot report %s %s: %s", workload_id, "healthy" if healthy else "unhealthy", _short(exc))

        threading.Thread(target=send, name=f"report-{workload_id}", daemon=True).start()

    @property
    def _starts_beside(self) -> bool:
        return not self.args.sidecar_after_app

    def _announce(self, workload_id: str, listening: bool) -> None:
        """Tell the controller, on the start's own thread, that an app starts beside its sidecar or now
        listens (``nodeagent.supervisor.Announce``)."""
        import grpc

        from nodeagent.supervisor import Refused

        try:
            if listening:
                self.client.report_health(workload_id, True, "app listening")
            else:
                # Short: a start that cannot say so soon starts its sidecar after the app instead.
                self.client.report_starting(workload_id, timeout=STARTING_REPORT_TIMEOUT_S)
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED):
                raise Refused(_short(exc)) from None
            raise

    # -- the whole ---------------------------------------------------------------------------------

    def run(self) -> int:
        from nodeagent.client import ControllerClient
        from nodeagent.plan import NodeContext
        from nodeagent.supervisor import SidecarSettings, Supervisor

        def on_signal(signum: int, _frame: Any) -> None:
            LOG.info("%s: stopping everything this agent started", signal.Signals(signum).name)
            self.stop.set()
            call = self._watch_call
            if call is not None:
                call.cancel()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.client = ControllerClient(self.controllers, server_name=self.args.controller_server_name)
        try:
            self.svid = self._identity()
        except SystemExit as exit_:
            self.client.close()
            return int(exit_.code or 0)
        self.client.use_identity(self.svid.cert_chain_pem, self.svid.private_key_pem, self.files.bundle_pem())
        context = NodeContext(self.node, sys.executable, str(self.work_dir))
        sidecars = SidecarSettings(
            xds_address=self.xds,
            bundle_file=str(self.files.bundle),
            sds_file=str(self.files.sds),
            server_id=self.args.xds_server_id or "",
            envoy=str(Path(self.args.envoy).resolve()) if self.args.envoy else "",
            warm_up=self.args.warm_up,
        )
        self.supervisor = Supervisor(
            context,
            sidecars,
            drain_s=self.args.drain_s,
            report=self._report,
            announce=self._announce if self._starts_beside else None,
            identity=lambda: (self.svid.spiffe_id, self.svid.not_after),
            run_as=self.run_as,
        ).start()
        threads = [
            threading.Thread(target=self._watch_forever, name="agent-watch", daemon=True),
            threading.Thread(target=self._renew_forever, name="agent-renew", daemon=True),
        ]
        for thread in threads:
            thread.start()
        LOG.info(
            "agent of %s: controller %s, xDS %s, work dir %s", self.node, self.args.controller, self.xds, self.work_dir
        )
        while not self.stop.wait(1.0):
            pass
        with self._watch_lock:
            calls = [self._watch_call, self._next_watch[0] if self._next_watch is not None else None]
        for call in calls:
            if call is not None:
                call.cancel()
        self.supervisor.stop_all()
        for thread in threads:
            thread.join(5)
        self.client.close()
        LOG.info("agent of %s stopped", self.node)
        return 0


def _short(exc: BaseException) -> str:
    import grpc

    if isinstance(exc, grpc.RpcError):
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else ""
        return f"{code.name if code is not None else 'error'}: {details}"
    return f"{type(exc).__name__}: {exc}"


if __name__ == "__main__":
    raise SystemExit(main())
