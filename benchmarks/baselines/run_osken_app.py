"""Run one os-ken app on 127.0.0.1:PORT the way edgectl runs its own (native threads, same config).

Usage: python benchmarks/baselines/run_osken_app.py PORT MODULE
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> int:
    port, module = int(sys.argv[1]), sys.argv[2]
    os.environ["OSKEN_HUB_TYPE"] = "native"
    from os_ken.base import app_manager  # noqa: I001 - first, as in sdnctl/runtime.py
    from os_ken import cfg
    from os_ken.controller import controller  # noqa: F401 - registers the ofp-* options

    cfg.CONF(args=[], project="os_ken", default_config_files=[])
    cfg.CONF.set_override("ofp_listen_host", "127.0.0.1")
    cfg.CONF.set_override("ofp_tcp_listen_port", port)
    manager = app_manager.AppManager.get_instance()
    manager.load_apps(["os_ken.controller.ofp_handler", module])
    contexts = manager.create_contexts()
    threading.Thread(target=lambda: manager.instantiate_apps(**contexts), daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
