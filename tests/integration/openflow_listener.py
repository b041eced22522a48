"""`python -m tests.integration.openflow_listener --port P ...`: os-ken with the edgectl app alone, as
``sdnctl.runtime.start_openflow`` starts it, with the echo and handshake limits a test chooses (they
are not `edgectl run` flags). Logs to stderr; runs until SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

FABRIC = Path(__file__).resolve().parents[1] / "data" / "fabrics" / "diamond.yaml"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--echo-interval", type=float, default=2.0)
    parser.add_argument("--max-handshaking", type=int, default=256)
    parser.add_argument("--handshake-timeout", type=float, default=10.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    from netmodel.fabric import build_state
    from netmodel.fabric_file import parse_fabric
    from sdnctl.admission import ConnectionLimits
    from sdnctl.runtime import start_openflow

    state = build_state(parse_fabric(FABRIC.read_text(), str(FABRIC)))

    def publish(_event: Any) -> Future[Any]:
        done: Future[Any] = Future()
        done.set_result(None)
        return done

    start_openflow(
        "127.0.0.1",
        args.port,
        publish,
        lambda: state,
        echo_interval_s=args.echo_interval,
        limits=ConnectionLimits(max_handshaking=args.max_handshaking, handshake_timeout_s=args.handshake_timeout),
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()


if __name__ == "__main__":
    main()
