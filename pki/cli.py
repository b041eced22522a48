"""``edgectl pki ...``: make a CA, issue and inspect SVIDs, export the bundle, force a rotation.

Wiring: ``register(subparsers)`` adds the ``pki`` command tree to edgectl's parser, and ``run(args)``
runs a parsed ``pki`` command (returns the exit code). Every refusal is one line on stderr
(``edgectl pki <command>: <reason>``) and exit 1; argparse's own usage errors exit 2. Nothing heavy is
imported until a command runs, so ``edgectl --help`` stays fast.

``rotate --dir`` works on the CA directory: it revokes every unexpired certificate the directory's
ledger lists for the SPIFFE id (``revoked.json``, a fresh ``crl.pem``) and, with ``--out``, issues a
new one. ``rotate --controller HOST:PORT`` asks a running controller (``POST /api/v1/pki/rotate`` on
its HTTP API) to rotate the SVIDs it serves for the id now, revoking the old ones; both may be given.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROG = "edgectl pki"
HTTP_ENV = "EDGECTL_HTTP"  # as edgectl.config: where the CLI finds the controller's HTTP API
DEFAULT_HTTP = "127.0.0.1:8080"
CONTROL_CERT_TTL_S = 7 * 86400
"""The controller's own certificates (gRPC, OpenFlow) live this long unless --control-cert-ttl says."""


def register(subparsers: Any) -> None:
    """Add ``pki`` and its subcommands to an argparse subparsers object."""
    pki = subparsers.add_parser("pki", help="the workload CA: SPIFFE identities (X.509-SVIDs)")
    commands = pki.add_subparsers(dest="pki_command", required=True, metavar="COMMAND")

    init = commands.add_parser("init", help="create a CA (root + intermediate, ECDSA P-256) in a new directory")
    init.add_argument("--trust-domain", required=True, metavar="NAME", help="e.g. example.org")
    init.add_argument("--dir", required=True, metavar="DIR", help="CA directory (must not hold a CA yet)")
    _add_passphrase(init, "encrypt the private keys with the passphrase in")
    init.add_argument("--root-ttl-days", type=int, default=3650, metavar="DAYS", help="root lifetime (3650)")
    init.add_argument(
        "--intermediate-ttl-days", type=int, default=365, metavar="DAYS", help="issuing CA lifetime (365)"
    )

    issue = commands.add_parser("issue", help="issue an X.509-SVID (from a CSR, or with a key made here)")
    issue.add_argument("--dir", required=True, metavar="DIR", help="CA directory")
    issue.add_argument("--spiffe-id", required=True, metavar="ID", help="spiffe://<trust-domain>/<path>")
    issue.add_argument("--csr", metavar="FILE", help="PKCS#10 request (PEM or DER); without it a key is made here")
    issue.add_argument(
        "--out",
        metavar="PREFIX",
        help="write PREFIX.crt (chain), PREFIX.key (0600, made here) and PREFIX.bundle.pem; default for a key "
        "made here: the id's path with '/' as '-' in the current directory (spiffe://td/operator/alice: "
        "operator-alice); with --csr and no --out the chain goes to stdout (a key is never printed)",
    )
    issue.add_argument(
        "--sds",
        action="store_true",
        help="also write PREFIX.sds.json (0600): the certificate and key as an Envoy SDS file for "
        "edgectl mesh bootstrap --tls-sds; issuing again to the same PREFIX renews it in a running Envoy",
    )
    issue.add_argument("--ttl", type=int, metavar="SECONDS", help="lifetime (default 3600)")
    issue.add_argument("--dns", action="append", default=[], metavar="NAME", help="extra DNS SAN (key made here)")
    issue.add_argument("--ip", action="append", default=[], metavar="ADDR", help="extra IP SAN (key made here)")
    _add_passphrase(issue, "the CA key's passphrase is in")

    inspect = commands.add_parser("inspect", help="summarise a certificate (chain): SPIFFE id, expiry, chain check")
    inspect.add_argument("file", metavar="FILE", help="PEM certificate chain, leaf first")
    source = inspect.add_mutually_exclusive_group()
    source.add_argument("--bundle", metavar="FILE", help="verify against this trust bundle")
    source.add_argument("--dir", metavar="DIR", help="verify against this CA (and its revocation list)")

    bundle = commands.add_parser("bundle", help="print the trust bundle (PEM)")
    bundle.add_argument("--dir", required=True, metavar="DIR", help="CA directory")

    rotate = commands.add_parser(
        "rotate",
        help="revoke every current certificate of a SPIFFE id (compromised key); with --out issue a new one",
        description="With --dir: adds the serials the CA directory's ledger (issued.jsonl) lists for the id "
        "to revoked.json and rewrites crl.pem. With --controller: a running controller issues new keys for "
        "the id now and revokes the old certificates (pushed to sidecars at once).",
    )
    rotate.add_argument("--dir", metavar="DIR", help="CA directory")
    rotate.add_argument(
        "--controller", metavar="HOST:PORT", help="a running controller's HTTP API (edgectl run --http-*)"
    )
    rotate.add_argument("--spiffe-id", required=True, metavar="ID")
    rotate.add_argument("--out", metavar="PREFIX", help="issue a replacement (key made here) as PREFIX.crt/.key")
    rotate.add_argument("--ttl", type=int, metavar="SECONDS", help="lifetime of the replacement")
    _add_passphrase(rotate, "the CA key's passphrase is in")

    token = commands.add_parser(
        "token",
        help="a one-time join token for a node agent (edgectl agent --join-token), from a running controller",
        description="Asks a running controller (POST /api/v1/pki/join-tokens on its HTTP API, served on "
        "loopback only) for a token that attests NODE once, before it expires. The token goes to stdout, "
        "its expiry to stderr.",
    )
    token.add_argument("--node", required=True, metavar="NODE", help="the compute node the token is for")
    token.add_argument(
        "--ttl", default="10m", metavar="DURATION", help="how long it may be used: 600, 30s, 10m, 1h (10m; 10 s-24 h)"
    )
    token.add_argument(
        "--http",
        "--api",
        dest="http",
        default=os.environ.get(HTTP_ENV) or DEFAULT_HTTP,
        metavar="HOST:PORT",
        help=f"the controller's HTTP API (default: ${HTTP_ENV}, else {DEFAULT_HTTP})",
    )

    revoke_node = commands.add_parser(
        "revoke-node",
        help="cut a node agent off now: revoke its node identity on a running controller (--restore undoes it)",
        description="Asks a running controller (POST /api/v1/pki/node-revocations on its HTTP API, served on "
        "loopback only) to refuse every node SVID of NODE on every agent API call, renewal included, and to "
        "end its watches. Kept in the controller's memory: remove the node from the fabric for good.",
    )
    revoke_node.add_argument("--node", required=True, metavar="NODE", help="the compute node to cut off")
    revoke_node.add_argument("--restore", action="store_true", help="accept the node's identity again")
    revoke_node.add_argument(
        "--http",
        "--api",
        dest="http",
        default=os.environ.get(HTTP_ENV) or DEFAULT_HTTP,
        metavar="HOST:PORT",
        help=f"the controller's HTTP API (default: ${HTTP_ENV}, else {DEFAULT_HTTP})",
    )


def _add_passphrase(parser: argparse.ArgumentParser, what: str) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--passphrase-file", metavar="FILE", help=f"{what} FILE (first line)")
    group.add_argument("--passphrase-env", metavar="VAR", help=f"{what} environment variable VAR")


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``pki`` command; 0 on success, 1 with a one-line reason on stderr otherwise."""
    from pki.errors import PkiError

    command = args.pki_command
    handler = _COMMANDS[command]
    try:
        return handler(args)
    except PkiError as exc:
        return _fail(command, str(exc))
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(command, f"{where}{exc.strerror or exc}")
    except (ValueError, KeyError) as exc:  # an empty passphrase, a bad number, a reply without a field
        return _fail(command, str(exc))
    except Exception as exc:  # a bug must still not print a traceback at the user
        return _fail(command, f"internal error: {exc!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry (``python -m pki.cli init ...``), the same tree as under ``edgectl``."""
    parser = argparse.ArgumentParser(prog="edgectl")
    register(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(["pki", *(sys.argv[1:] if argv is None else argv)]))


def _fail(command: str, reason: str) -> int:
    print(f"{PROG} {command}: {' '.join(reason.split())}", file=sys.stderr)
    return 1


# -- passphrases -----------------------------------------------------------------------------------


def read_passphrase(passphrase_file: str | None, passphrase_env: str | None) -> bytes | None:
    """The passphrase from a file (its first line) or an environment variable; None if neither given."""
    if passphrase_file:
        with open(passphrase_file, "rb") as handle:
            lines = handle.read().splitlines()
        value = lines[0] if lines else b""
    elif passphrase_env:
        if passphrase_env not in os.environ:
            raise ValueError(f"environment variable {passphrase_env} (the passphrase) is not set")
        value = os.environb[passphrase_env.encode()]
    else:
        return None
    if not value:
        raise ValueError("the passphrase is empty")
    return value


def _passphrase(args: argparse.Namespace) -> bytes | None:
    return read_passphrase(getattr(args, "passphrase_file", None), getattr(args, "passphrase_env", None))


# -- commands --------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    from pki.ca import CertificateAuthority
    from pki.certs import format_time

    for name in ("root_ttl_days", "intermediate_ttl_days"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive")
    if args.intermediate_ttl_days > args.root_ttl_days:
        raise ValueError("--intermediate-ttl-days must not exceed --root-ttl-days")
    passphrase = _passphrase(args)
    ca = CertificateAuthority.init(
        args.dir,
        args.trust_domain,
        passphrase,
        root_ttl_s=args.root_ttl_days * 86400,
        intermediate_ttl_s=args.intermediate_ttl_days * 86400,
    )
    print(f"CA for spiffe://{ca.trust_domain} in {ca.directory}")
    print(f"  root          expires {format_time(ca.root.not_valid_after_utc.timestamp())}  (root.crt, root.key)")
    print(f"  intermediate  expires {format_time(ca.not_after)}  (intermediate.crt, intermediate.key)")
    print(f"  keys          {'encrypted with the passphrase' if passphrase else 'not encrypted'}, mode 0600")
    print(f"  trust bundle  {ca.directory / 'bundle.pem' if ca.directory else 'bundle.pem'}")
    return 0


def cmd_issue(args: argparse.Namespace) -> int:
    from pki import store
    from pki.ca import CertificateAuthority

    if args.csr is not None and (args.dns or args.ip):
        raise ValueError("--dns/--ip apply to keys made here; with --csr the SANs are the SPIFFE id only")
    if args.csr is not None and getattr(args, "sds", False):
        raise ValueError("--sds needs the key, which stays with the CSR's owner: issue without --csr")
    ca = CertificateAuthority.load(args.dir, _passphrase(args))
    if args.csr is None and args.out is None:  # a key made here goes to a file, never to stdout
        args.out = default_out_prefix(args.spiffe_id, ca.trust_domain)
    now = time.time()
    if args.csr is not None:
        svid = ca.issue_from_csr(Path(args.csr).read_bytes(), args.spiffe_id, now, ttl_s=args.ttl)
    else:
        svid = ca.issue_with_new_key(args.spiffe_id, now, ttl_s=args.ttl, dns_names=args.dns, ip_addresses=args.ip)
    store.append_ledger(store.CaFiles(Path(args.dir)), svid.info, now)
    if args.out is None:
        sys.stdout.write(svid.cert_chain_pem)
        return 0
    written = write_svid(args.out, svid, ca.bundle_pem)
    _print_issued(svid, written)
    if getattr(args, "sds", False):
        from pki.tls import write_xds_client_sds

        print(f"  sds     {write_xds_client_sds(f'{args.out}.sds.json', svid)} (0600)")
    return 0


def default_out_prefix(spiffe_id: str, trust_domain: str) -> str:
    """Where ``issue`` writes a key made here when no ``--out`` is given: the id's path with '/' as '-', in
    the current directory (``spiffe://td/svc/web/w/web-1`` -> ``svc-web-w-web-1``): one name per identity."""
    from pki.policy import parse_leaf_spiffe_id

    return "-".join(parse_leaf_spiffe_id(spiffe_id, trust_domain).segments)


@dataclass(frozen=True)
class WrittenSvid:
    chain: Path
    bundle: Path
    key: Path | None


def write_svid(prefix: str, svid: Any, bundle_pem: str) -> WrittenSvid:
    """PREFIX.crt (chain), PREFIX.bundle.pem, and PREFIX.key (0600) when the SVID carries a key."""
    from pki.store import PUBLIC_MODE, SECRET_MODE, replace_file

    chain, bundle, key = Path(f"{prefix}.crt"), Path(f"{prefix}.bundle.pem"), Path(f"{prefix}.key")
    if svid.private_key_pem:
        replace_file(key, svid.private_key_pem.encode(), SECRET_MODE)
    replace_file(chain, svid.cert_chain_pem.encode(), PUBLIC_MODE)
    replace_file(bundle, bundle_pem.encode(), PUBLIC_MODE)
    return WrittenSvid(chain, bundle, key if svid.private_key_pem else None)


def _print_issued(svid: Any, written: WrittenSvid) -> None:
    from pki.certs import format_time

    print(f"issued {svid.spiffe_id}  serial {svid.info.serial:x}  not after {format_time(svid.info.not_after)}")
    print(f"  chain   {written.chain}")
    if written.key is not None:
        print(f"  key     {written.key} (0600)")
    print(f"  bundle  {written.bundle}")


def cmd_inspect(args: argparse.Namespace) -> int:
    from pki import certs, store
    from pki.errors import PkiError
    from pki.verify import TrustBundle, check_leaf_profile, verify_svid

    chain = certs.load_pem_chain(Path(args.file).read_bytes(), f"file {args.file}")
    leaf = chain[0]
    now = time.time()
    try:
        spiffe_id = str(check_leaf_profile(leaf))
    except PkiError as exc:
        spiffe_id = f"none ({exc})"
    not_after = certs.to_epoch(leaf.not_valid_after_utc)
    left = not_after - now
    when = f"in {_duration(left)}" if left > 0 else f"expired {_duration(-left)} ago"
    rows = [
        ("file", f"{args.file} ({len(chain)} certificate{'s' if len(chain) != 1 else ''})"),
        ("spiffe id", spiffe_id),
        ("subject", certs.describe_name(leaf.subject)),
        ("issuer", certs.describe_name(leaf.issuer)),
        ("serial", f"{leaf.serial_number:x}"),
        ("not before", certs.format_time(certs.to_epoch(leaf.not_valid_before_utc))),
        ("not after", f"{certs.format_time(not_after)} ({when})"),
        ("key", certs.describe_public_key(leaf.public_key())),
    ]
    bundle: TrustBundle | None = None
    revocations = None
    if args.bundle:
        bundle = TrustBundle.from_pem(Path(args.bundle).read_bytes())
    elif args.dir:
        layout, meta = store.read_ca(args.dir)
        bundle = TrustBundle.from_pem(store.read_bytes(layout.bundle, "trust bundle"), meta["trust_domain"])
        revocations = store.read_revocations(layout)
    failed = False
    if bundle is None:
        verdict = "not checked (give --bundle FILE or --dir DIR)"
    else:
        try:
            verify_svid(chain, bundle, now, revocations=revocations)
            verdict = f"ok (trust domain {bundle.trust_domain})" if bundle.trust_domain else "ok"
        except PkiError as exc:
            verdict, failed = f"FAILED: {exc}", True
    rows.append(("chain", verdict))
    for label, value in rows:
        print(f"{label + ':':<12} {value}")
    return 1 if failed else 0


def cmd_bundle(args: argparse.Namespace) -> int:
    from pki import store

    layout, _meta = store.read_ca(args.dir)
    sys.stdout.write(store.read_bytes(layout.bundle, "trust bundle").decode("ascii", "replace"))
    return 0


def rotate_on_controller(address: str, spiffe_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """``POST http://ADDRESS/api/v1/pki/rotate``; the controller's JSON reply. Raises ``PkiError``."""
    return _post_to_controller(address, "/api/v1/pki/rotate", {"spiffe_id": spiffe_id}, timeout_s)


def _post_to_controller(address: str, path: str, body: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
    import json
    import urllib.error
    import urllib.request

    from pki.errors import PkiError

    address = address.removeprefix("http://").rstrip("/")
    request = urllib.request.Request(
        f"http://{address}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return dict(json.load(response))
    except urllib.error.HTTPError as exc:
        try:
            reason = json.load(exc).get("error", exc.reason)
        except ValueError:
            reason = exc.reason
        hint = " (is it running with --pki-dir?)" if exc.code == 404 else ""
        raise PkiError(f"the controller at {address} refused: {reason}{hint}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise PkiError(f"cannot reach the controller at {address}: {exc}") from None


def cmd_rotate(args: argparse.Namespace) -> int:
    if not args.dir and not args.controller:
        return _fail(
            "rotate", "give --dir DIR (the CA directory), --controller HOST:PORT (a running controller), or both"
        )
    if args.controller:
        reply = rotate_on_controller(args.controller, args.spiffe_id)
        subjects = ", ".join(reply.get("rotated", [])) or "none"
        print(
            f"controller {args.controller}: rotated {args.spiffe_id} (subjects: {subjects}), old certificates revoked"
        )
        _warn_if_not_stored(reply)
    if args.dir:
        return _rotate_in_directory(args)
    return 0


def _warn_if_not_stored(reply: dict[str, Any]) -> None:
    if reply.get("stored") is False:
        print(
            "warning: the controller could not store its revocation list (see its log): in force now, but a restart"
            " before it is stored forgets it",
            file=sys.stderr,
        )


def parse_duration(text: str) -> int:
    """``600``, ``30s``, ``10m``, ``1h`` -> seconds. ``ValueError`` for anything else."""
    units = {"s": 1, "m": 60, "h": 3600}
    value = text.strip()
    factor = units.get(value[-1:].lower(), 0) if value else 0
    number = value[:-1] if factor else value
    try:
        amount = float(number)
    except ValueError:
        raise ValueError(f"--ttl {text!r} is not a duration (600, 30s, 10m, 1h)") from None
    seconds = amount * (factor or 1)
    if not seconds == seconds or seconds != int(seconds):
        raise ValueError(f"--ttl {text!r} is not a whole number of seconds")
    return int(seconds)


def cmd_token(args: argparse.Namespace) -> int:
    from pki.certs import format_time
    from pki.join_tokens import check_ttl

    ttl = check_ttl(parse_duration(args.ttl))
    reply = _post_to_controller(args.http, "/api/v1/pki/join-tokens", {"node": args.node, "ttl_s": ttl})
    print(reply["token"])
    print(
        f"join token for node {reply['node']} ({reply.get('spiffe_id', '')}): one use, "
        f"until {format_time(float(reply['expires_at']))}",
        file=sys.stderr,
    )
    return 0


def _rotate_in_directory(args: argparse.Namespace) -> int:
    from pki import store
    from pki.ca import CertificateAuthority
    from pki.errors import PkiError
    from pki.policy import parse_leaf_spiffe_id
    from pki.revocation_store import ATTEMPTS, FileRevocationStore

    now = time.time()
    ca = CertificateAuthority.load(args.dir, _passphrase(args))
    spiffe_id = str(parse_leaf_spiffe_id(args.spiffe_id, ca.trust_domain))
    layout = store.CaFiles(Path(args.dir))
    live = [info for info in store.read_ledger(layout) if info.spiffe_id == spiffe_id and info.not_after > now]
    # A running controller writes the same list (its own revocations): a compare-and-set, never a lost update.
    revocation_file = FileRevocationStore(layout.directory, sign_crl=lambda revocations: ca.crl_pem(revocations, now))
    for _attempt in range(ATTEMPTS):
        before, version = revocation_file.read()
        revocations = before.revoke_certificates(live).pruned(now)
        if revocation_file.write(revocations, version) is not None:
            break
    else:
        raise PkiError(f"{layout.revoked} kept changing under this command: try again")
    newly = sorted(set(revocations.serials) - set(before.serials))
    if newly:
        serials = ", ".join(f"{serial:x}" for serial in newly)
        print(f"revoked {len(newly)} certificate(s) of {spiffe_id}: {serials}")
    else:
        print(f"no unrevoked, unexpired certificate of {spiffe_id} in {layout.ledger.name}")
    print(f"  revocation list  {layout.revoked}   CRL  {layout.crl}")
    if args.out is not None:
        svid = ca.issue_with_new_key(spiffe_id, now, ttl_s=args.ttl)
        store.append_ledger(layout, svid.info, now)
        _print_issued(svid, write_svid(args.out, svid, ca.bundle_pem))
    return 0


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m {seconds % 60}s"
    if seconds < 3 * 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d"


def cmd_revoke_node(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"node": args.node, "restore": True} if args.restore else {"node": args.node}
    reply = _post_to_controller(args.http, "/api/v1/pki/node-revocations", body)
    state = "revoked: its agent is refused from now on" if reply.get("revoked") else "accepted again"
    print(f"node {reply['node']} ({reply.get('spiffe_id', '')}): {state}")
    _warn_if_not_stored(reply)
    return 0


_COMMANDS = {
    "init": cmd_init,
    "issue": cmd_issue,
    "inspect": cmd_inspect,
    "bundle": cmd_bundle,
    "rotate": cmd_rotate,
    "token": cmd_token,
    "revoke-node": cmd_revoke_node,
}


# -- `edgectl run` options -------------------------------------------------------------------------


@dataclass(frozen=True)
class PkiRunOptions:
    directory: str
    passphrase: bytes | None
    svid_ttl_s: int
    openflow_tls: bool
    control_cert_ttl_s: int = CONTROL_CERT_TTL_S


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Options of ``edgectl run`` that turn the PKI on."""
    group = parser.add_argument_group("PKI (SPIFFE identities; mTLS)")
    group.add_argument("--pki-dir", metavar="DIR", help="CA directory (edgectl pki init): issue SVIDs to workloads")
    exclusive = group.add_mutually_exclusive_group()
    exclusive.add_argument("--pki-passphrase-file", metavar="FILE", help="the CA key's passphrase is in FILE")
    exclusive.add_argument("--pki-passphrase-env", metavar="VAR", help="the CA key's passphrase is in VAR")
    group.add_argument("--svid-ttl", type=int, default=3600, metavar="SECONDS", help="SVID lifetime (3600)")
    group.add_argument(
        "--control-cert-ttl",
        type=int,
        metavar="SECONDS",
        help="lifetime of the controller's own certificates (gRPC, OpenFlow), renewed at half-life (604800)",
    )
    group.add_argument(
        "--openflow-tls",
        action="store_true",
        help="OpenFlow over TLS only (switches use ssl:); needs --pki-dir",
    )


def run_options(args: argparse.Namespace) -> PkiRunOptions | None:
    """The PKI options of ``edgectl run``, checked; None when the PKI is off. Raises ``ValueError``."""
    control_ttl = getattr(args, "control_cert_ttl", None)
    if not args.pki_dir:
        if args.openflow_tls:
            raise ValueError("--openflow-tls needs --pki-dir")
        if control_ttl is not None:
            raise ValueError("--control-cert-ttl needs --pki-dir")
        return None
    from pki.policy import check_ttl

    check_ttl(args.svid_ttl)
    control_ttl = CONTROL_CERT_TTL_S if control_ttl is None else control_ttl
    if control_ttl < 2:
        raise ValueError(f"--control-cert-ttl must be at least 2 seconds, not {control_ttl}")
    check_ttl(control_ttl)
    return PkiRunOptions(
        directory=args.pki_dir,
        passphrase=read_passphrase(args.pki_passphrase_file, args.pki_passphrase_env),
        svid_ttl_s=args.svid_ttl,
        openflow_tls=args.openflow_tls,
        control_cert_ttl_s=control_ttl,
    )


if __name__ == "__main__":
    sys.exit(main())
