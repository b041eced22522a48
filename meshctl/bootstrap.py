"""Bootstraps for sidecars, and the ``edgectl mesh`` commands.

``render_bootstrap`` is the Envoy bootstrap a sidecar starts from: admin on 127.0.0.1, one ADS stream
(state of the world, or delta) to the control plane over TCP or a Unix socket (Envoy ``pipe``; Unix
sockets cross network namespaces, so a sidecar inside a Mininet host reaches the controller).
``render_grpc_bootstrap`` is the same for a proxyless gRPC client (``GRPC_XDS_BOOTSTRAP``).

Wired into the CLI as ``edgectl mesh bootstrap`` (``main_bootstrap``) and ``edgectl mesh status``
(``main_status``, which reads ``/api/v1/xds/clients`` from a running controller).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from meshctl.xds_types import XDS_CLUSTER

DEFAULT_XDS_ADDRESS = "127.0.0.1:18000"
DEFAULT_ADMIN_PORT = 9901
TYPE_COLUMNS = ("sds", "cds", "eds", "lds", "rds")


@dataclass(frozen=True, slots=True)
class XdsAddress:
    """Where the control plane listens: ``host``/``port``, or a Unix socket ``path``."""

    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def is_unix(self) -> bool:
        return bool(self.path)

    @property
    def grpc_target(self) -> str:
        if self.is_unix:
            return f"unix:{self.path}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_xds_address(text: str) -> XdsAddress:
    """``HOST:PORT``, ``[V6]:PORT`` or ``unix:/absolute/path``; raises ValueError saying what is wrong."""
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path.startswith("/"):
            raise ValueError(f"{text!r}: a Unix socket address needs an absolute path (unix:/run/edgectl-xds.sock)")
        return XdsAddress(path=path)
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r}: expected HOST:PORT or unix:/path")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: port must be 1-65535")
    return XdsAddress(host=host, port=int(port_text))


def parse_xds_addresses(addresses: str | Sequence[str]) -> tuple[XdsAddress, ...]:
    """One address or several: each replica of a replicated control plane (``A,B`` or a list, each item
    itself possibly comma-separated). ValueError names the address that is wrong, or the one listed twice."""
    items = [addresses] if isinstance(addresses, str) else list(addresses)
    texts = [part.strip() for item in items for part in item.split(",") if part.strip()]
    if not texts:
        raise ValueError("no xDS address given: expected HOST:PORT or unix:/path (several: comma-separated)")
    parsed: list[XdsAddress] = []
    for text in texts:
        address = parse_xds_address(text)
        if address in parsed:
            raise ValueError(f"{text!r}: the xDS address is listed twice")
        parsed.append(address)
    return tuple(parsed)


XDS_CLIENT_SECRET = "edgectl-xds-client"
"""The name of the secret in a sidecar's xDS client SDS file (``XdsClientTls.sds_file``)."""
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


@dataclass(frozen=True, slots=True)
class XdsClientTls:
    """Files a sidecar uses for mTLS to the control plane (``edgectl pki issue --out PREFIX`` writes
    ``PREFIX.crt``, ``PREFIX.key`` and ``PREFIX.bundle.pem``). ``server_id``: the SPIFFE id the control
    plane must present (``spiffe://<td>/controller/edgectl``); empty: any certificate from the CA.

    ``sds_file``: take the certificate and key from this file-based SDS file instead of ``cert_file``
    and ``key_file`` (``edgectl pki issue --out PREFIX --sds`` writes ``PREFIX.sds.json``). Envoy reads
    the certificate files once, but re-reads an SDS file each time it is replaced, so whoever renews
    that file rotates the sidecar's xDS client certificate while it runs."""

    cert_file: str
    key_file: str
    ca_file: str
    server_id: str = ""
    sds_file: str = ""


def xds_client_sds_document(cert_chain_pem: str, private_key_pem: str) -> dict[str, Any]:
    """The content of an xDS client SDS file: a DiscoveryResponse with one Secret, the certificate and
    key inline, so that one atomic replace of the file changes both at once."""
    return {
        "resources": [
            {
                "@type": SECRET_TYPE,
                "name": XDS_CLIENT_SECRET,
                "tls_certificate": {
                    "certificate_chain": {"inline_string": cert_chain_pem},
                    "private_key": {"inline_string": private_key_pem},
                },
            }
        ]
    }


def xds_transport_socket(tls: XdsClientTls) -> dict[str, Any]:
    """The xDS cluster's upstream TLS: present the sidecar's certificate, verify the controller's."""
    validation: dict[str, Any] = {"trusted_ca": {"filename": tls.ca_file}}
    if tls.server_id:
        validation["match_typed_subject_alt_names"] = [{"san_type": "URI", "matcher": {"exact": tls.server_id}}]
    common: dict[str, Any] = {"alpn_protocols": ["h2"]}
    if tls.sds_file:
        # File-based SDS: Envoy watches the file and applies each new version (a rename into place).
        common["tls_certificate_sds_secret_configs"] = [
            {
                "name": XDS_CLIENT_SECRET,
                "sds_config": {"path_config_source": {"path": tls.sds_file}, "resource_api_version": "V3"},
            }
        ]
    else:
        common["tls_certificates"] = [
            {"certificate_chain": {"filename": tls.cert_file}, "private_key": {"filename": tls.key_file}}
        ]
    common["validation_context"] = validation
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": common,
        },
    }


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _endpoint_address(address: XdsAddress) -> dict[str, Any]:
    if address.is_unix:
        return {"pipe": {"path": address.path}}
    return {"socket_address": {"address": address.host, "port_value": address.port}}


def _discovery_type(addresses: Sequence[XdsAddress]) -> str:
    """STATIC when every address is an IP or a Unix socket; STRICT_DNS (host names resolved) otherwise,
    which Envoy allows for socket addresses only."""
    named = [a for a in addresses if not a.is_unix and not _is_ip(a.host)]
    if not named:
        return "STATIC"
    if any(a.is_unix for a in addresses):
        raise ValueError(
            f"{named[0].grpc_target!r}: a host name and a Unix socket cannot both be xDS addresses "
            "(give IP addresses with the Unix sockets)"
        )
    return "STRICT_DNS"


def render_bootstrap(
    node_id: str,
    service: str,
    delta: bool = False,
    xds_address: str | Sequence[str] = DEFAULT_XDS_ADDRESS,
    admin_port: int = DEFAULT_ADMIN_PORT,
    tls: XdsClientTls | None = None,
    admin_socket: str | None = None,
) -> dict[str, Any]:
    """An Envoy v3 bootstrap (as a dict: dump it as YAML or JSON) for sidecar ``node_id``; ``tls``: mTLS
    to the control plane (needed on its TCP listener when the controller runs with ``--pki-dir``);
    ``admin_socket``: the admin API on this Unix socket instead of 127.0.0.1:``admin_port`` (reachable
    from outside the sidecar's network namespace, and no port to collide with another sidecar's).

    ``xds_address``: one control plane, or several (the replicas of a replicated controller: a list, or
    comma-separated). The xDS cluster lists them all with equal weight: when the stream to one ends,
    Envoy retries on the next (round robin) and keeps serving its last config meanwhile."""
    addresses = parse_xds_addresses(xds_address)
    discovery = _discovery_type(addresses)
    if not 0 <= admin_port < 65536:
        raise ValueError(f"admin port {admin_port} is not 0-65535")
    if admin_socket is not None and not admin_socket.startswith("/"):
        raise ValueError(f"admin socket {admin_socket!r} is not an absolute path")
    bootstrap: dict[str, Any] = {
        "node": {"id": node_id, "cluster": service},
        "admin": {
            "address": {"pipe": {"path": admin_socket}}
            if admin_socket is not None
            else {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [
                    {
                        "envoy_grpc": {
                            "cluster_name": XDS_CLUSTER,
                            # Reconnect fast after a control-plane restart (Envoy's default backoff
                            # grows to 30 s); the sidecar keeps serving its last config meanwhile.
                            "retry_policy": {"retry_back_off": {"base_interval": "0.25s", "max_interval": "5s"}},
                        }
                    }
                ],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [
                {
                    "name": XDS_CLUSTER,
                    "type": discovery,
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {
                                # HTTP/2 pings find a control plane that vanished without closing.
                                "http2_protocol_options": {"connection_keepalive": {"interval": "15s", "timeout": "5s"}}
                            },
                        }
                    },
                    "load_assignment": {
                        "cluster_name": XDS_CLUSTER,
                        "endpoints": [
                            {"lb_endpoints": [{"endpoint": {"address": _endpoint_address(a)}} for a in addresses]}
                        ],
                    },
                }
            ]
        },
    }
    if tls is not None:
        bootstrap["static_resources"]["clusters"][0]["transport_socket"] = xds_transport_socket(tls)
    return bootstrap


def render_grpc_bootstrap(node_id: str, xds_address: str | Sequence[str] = DEFAULT_XDS_ADDRESS) -> dict[str, Any]:
    """The JSON a proxyless gRPC client reads from ``GRPC_XDS_BOOTSTRAP`` (then dials ``xds:///<service>``).
    Several addresses: every one is listed in ``xds_servers`` (gRPC falls back to the next when the first
    is unreachable)."""
    return {
        "xds_servers": [
            {"server_uri": address.grpc_target, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}
            for address in parse_xds_addresses(xds_address)
        ],
        "node": {"id": node_id, "locality": {}},
    }


def bootstrap_yaml(bootstrap: dict[str, Any]) -> str:
    import yaml

    return str(yaml.safe_dump(bootstrap, sort_keys=False, default_flow_style=False))


# -- edgectl mesh ------------------------------------------------------------------------------------

MESH_USAGE = """usage: edgectl mesh COMMAND ...

  bootstrap   print a sidecar's Envoy bootstrap (or, with --grpc, a proxyless gRPC client's)
  status      what each sidecar has applied, from a running controller
"""


def main_mesh(argv: Sequence[str]) -> int:
    """``edgectl mesh <bootstrap|status> ...``: one entry point for the CLI to hand the rest to."""
    commands = {"bootstrap": main_bootstrap, "status": main_status}
    if not argv or argv[0] not in commands:
        stream = sys.stdout if argv and argv[0] in ("-h", "--help") else sys.stderr
        stream.write(MESH_USAGE)
        return 0 if stream is sys.stdout else 2
    return commands[argv[0]](argv[1:])


# -- edgectl mesh bootstrap ---------------------------------------------------------------------------


def bootstrap_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgectl mesh bootstrap", description="print a sidecar's Envoy bootstrap")
    parser.add_argument("--node-id", required=True, help="the workload id (or host id for a client sidecar)")
    parser.add_argument("--service", required=True, help="the service the sidecar belongs to (node.cluster)")
    parser.add_argument("--delta", action="store_true", help="use incremental (delta) xDS")
    parser.add_argument(
        "--xds-address",
        action="append",
        metavar="HOST:PORT|unix:/path",
        help=f"the control plane ({DEFAULT_XDS_ADDRESS}); a replicated one: every replica, the flag repeated "
        "or comma-separated (the sidecar moves to another when its replica goes away)",
    )
    parser.add_argument("--admin-port", type=int, default=DEFAULT_ADMIN_PORT, help="Envoy admin port on 127.0.0.1")
    parser.add_argument(
        "--admin-socket", metavar="PATH", help="Envoy admin on this Unix socket instead (reachable across namespaces)"
    )
    parser.add_argument("--format", choices=["yaml", "json"], default="yaml")
    parser.add_argument("--grpc", action="store_true", help="print a proxyless gRPC client's bootstrap (JSON) instead")
    tls = parser.add_argument_group("mTLS to the control plane (a controller run with --pki-dir)")
    tls.add_argument(
        "--tls-cert", metavar="FILE", help="the sidecar's certificate chain (edgectl pki issue: PREFIX.crt)"
    )
    tls.add_argument("--tls-key", metavar="FILE", help="its private key (PREFIX.key)")
    tls.add_argument(
        "--tls-sds",
        metavar="FILE",
        help="instead of --tls-cert/--tls-key: the certificate and key as an SDS file that Envoy re-reads "
        "when it is replaced (edgectl pki issue --sds: PREFIX.sds.json), so it can be renewed while Envoy runs",
    )
    tls.add_argument("--tls-ca", metavar="FILE", help="the trust bundle (PREFIX.bundle.pem)")
    tls.add_argument(
        "--xds-server-id", default="", metavar="SPIFFE_ID", help="require this id of the control plane (optional)"
    )
    return parser


def client_tls(args: argparse.Namespace) -> XdsClientTls | None:
    """``--tls-cert/--tls-key/--tls-ca`` (all three or none), or ``--tls-sds/--tls-ca`` (ValueError)."""
    sds = getattr(args, "tls_sds", None)
    if sds:
        if args.tls_cert or args.tls_key:
            raise ValueError("--tls-sds replaces --tls-cert and --tls-key: give one or the other")
        if not args.tls_ca:
            raise ValueError("--tls-sds needs --tls-ca")
        return XdsClientTls("", "", args.tls_ca, args.xds_server_id, sds_file=sds)
    files = (args.tls_cert, args.tls_key, args.tls_ca)
    if not any(files):
        if args.xds_server_id:
            raise ValueError("--xds-server-id needs --tls-cert, --tls-key and --tls-ca")
        return None
    if not all(files):
        raise ValueError("--tls-cert, --tls-key and --tls-ca go together")
    return XdsClientTls(args.tls_cert, args.tls_key, args.tls_ca, args.xds_server_id)


def main_bootstrap(argv: Sequence[str] | None = None) -> int:
    args = bootstrap_parser().parse_args(argv)
    xds_addresses = args.xds_address or [DEFAULT_XDS_ADDRESS]
    try:
        tls = client_tls(args)
        if args.grpc:
            if tls is not None:
                raise ValueError("--grpc with --tls-* is not supported yet (use the Unix socket)")
            print(json.dumps(render_grpc_bootstrap(args.node_id, xds_addresses), indent=2))
            return 0
        bootstrap = render_bootstrap(
            args.node_id, args.service, args.delta, xds_addresses, args.admin_port, tls, args.admin_socket
        )
    except ValueError as exc:
        print(f"edgectl mesh bootstrap: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps(bootstrap, indent=2))
    else:
        sys.stdout.write(bootstrap_yaml(bootstrap))
    return 0


# -- edgectl mesh status ------------------------------------------------------------------------------


def status_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgectl mesh status", description="what each sidecar has applied")
    parser.add_argument(
        "--http",
        default=os.environ.get("EDGECTL_HTTP") or "127.0.0.1:8080",
        metavar="HOST:PORT",
        help="the controller's HTTP API (default: $EDGECTL_HTTP, else 127.0.0.1:8080)",
    )
    parser.add_argument("--output", choices=["table", "json"], default="table")
    return parser


def main_status(argv: Sequence[str] | None = None) -> int:
    args = status_parser().parse_args(argv)
    url = f"http://{args.http}/api/v1/xds/clients"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            view = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"edgectl mesh status: cannot reach the controller at {args.http}: {exc}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(view, indent=2))
    else:
        sys.stdout.write(format_status(view))
    return 0


def _cell(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "-"
    nack = entry.get("last_nack")
    acked_at = entry.get("acked_at")
    if entry.get("pending_nonce"):
        return "wait"
    if nack and (acked_at is None or nack["at"] >= acked_at):
        return "NACK"
    if entry.get("current"):
        return "ok"
    return "old" if entry.get("acked") else "-"


def format_status(view: dict[str, Any]) -> str:
    """The clients view as a table, then every NACK and build problem in full."""
    nodes = view.get("nodes", {})
    lines = [f"xDS clients: {view.get('connected', 0)} connected, {view.get('in_sync', 0)} in sync"]
    header = ["NODE", "MODE", "STREAMS", "GEN", "SYNCED", *(t.upper() for t in TYPE_COLUMNS)]
    rows = []
    for node, entry in sorted(nodes.items()):
        types = entry.get("types", {})
        rows.append(
            [
                node,
                entry.get("mode") or "-",
                str(entry.get("streams", 0)),
                str(entry.get("generation") if entry.get("generation") is not None else "-"),
                "yes" if entry.get("in_sync") else "no",
                *(_cell(types.get(t)) for t in TYPE_COLUMNS),
            ]
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    details = []
    for node, entry in sorted(nodes.items()):
        for type_name, status in sorted(entry.get("types", {}).items()):
            nack = status.get("last_nack")
            if nack:
                when = datetime.datetime.fromtimestamp(nack["at"], datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
                error = " ".join(str(nack["error"]).split())  # Envoy's messages span lines
                details.append(f"  {node} {type_name} rejected {nack['version']} at {when}Z: {error}")
        details.extend(f"  {node}: {problem}" for problem in entry.get("problems", []))
    if details:
        lines += ["", "NACKs and problems:", *details]
    return "\n".join(lines) + "\n"
