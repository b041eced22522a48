"""A caller in a testbed namespace (run there with ``python -m mininet_topos.probe``): call HOST:PORT until
the result is the one wanted, then print ``at <wall clock> <result>``; or ``never <last result>`` when the
time runs out. What the zero-trust checks use to see each layer on its own.

    python -m mininet_topos.probe tcp 10.0.9.10 5432 open 2
        a raw TCP connect, bypassing any sidecar: "open" or "closed" (refused, or dropped: timed out)
    python -m mininet_topos.probe tls 10.0.9.10 5432 403 3 --cert u1.crt --key u1.key --ca bundle.pem
        an HTTP GET over mTLS with that certificate, as a sidecar would call: the HTTP status, or "error"
"""

from __future__ import annotations

import argparse
import socket
import ssl
import sys
import time
from collections.abc import Callable, Sequence

CONNECT_TIMEOUT_S = 0.3
INTERVAL_S = 0.02


def tcp_result(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return "open"
    except OSError:
        return "closed"


def tls_result(host: str, port: int, context: ssl.SSLContext) -> str:
    try:
        with (
            socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S) as raw,
            context.wrap_socket(raw) as conn,
        ):
            conn.settimeout(2.0)
            conn.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            words = conn.recv(64).split(b"\r\n")[0].split()
            return words[1].decode() if len(words) > 1 else "error"
    except OSError:
        return "error"


def mtls_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # a SPIFFE certificate names no host: the chain to the CA is checked
    context.load_verify_locations(ca)
    context.load_cert_chain(cert, key)
    return context


def until(call: Callable[[], str], want: str, timeout_s: float) -> tuple[float | None, str]:
    """(when ``call`` first gave ``want``, it) or (None, its last result)."""
    deadline, last = time.time() + timeout_s, ""
    while True:
        last = call()
        if last == want:
            return time.time(), last
        if time.time() >= deadline:
            return None, last
        time.sleep(INTERVAL_S)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mininet_topos.probe")
    parser.add_argument("mode", choices=["tcp", "tls"])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("want", help="the result to wait for: open|closed (tcp), an HTTP status (tls)")
    parser.add_argument("timeout", type=float, help="seconds")
    parser.add_argument("--cert", default="")
    parser.add_argument("--key", default="")
    parser.add_argument("--ca", default="")
    args = parser.parse_args(argv)
    if args.mode == "tls":
        if not (args.cert and args.key and args.ca):
            parser.error("tls needs --cert, --key and --ca")
        context = mtls_context(args.cert, args.key, args.ca)
        at, result = until(lambda: tls_result(args.host, args.port, context), args.want, args.timeout)
    else:
        at, result = until(lambda: tcp_result(args.host, args.port), args.want, args.timeout)
    print(f"at {at} {result}" if at is not None else f"never {result}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
