"""The log's etcd probe against a stand-in client: a watch etcd did not create in time is retried."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from cluster.etcd import EtcdUnavailable
from cluster.log_bus import ClusterBus
from edgectl.bus import EventBus
from netmodel.state import FabricState


class WatchRefusedOnce:
    """Reads answer; the first watch is not created in time (its member stopped right after the read)."""

    def __init__(self) -> None:
        self.watches = 0

    def get(self, key: bytes) -> None:
        return None

    def watch(self, key: bytes, **kw: Any) -> Any:
        self.watches += 1
        if self.watches == 1:
            raise EtcdUnavailable(f"etcd watch {key!r}: no member of 127.0.0.1:1 answered within 0.5s")
        return SimpleNamespace(cancel=lambda: None)


def test_the_log_is_followed_again_after_a_watch_that_could_not_be_created() -> None:
    client = WatchRefusedOnce()
    bus = ClusterBus(client, b"edgectl/test", "r1", seed=FabricState, local_bus=EventBus)  # type: ignore[arg-type]
    try:
        bus._watch_failed(EtcdUnavailable("the log's watch: no member answered"))  # what a watch's on_error says
        assert bus.read_only_reason
        deadline = time.monotonic() + 5.0
        while bus.read_only_reason and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not bus.read_only_reason, "the probe ended on the refused watch: read-only for good"
        assert client.watches == 2
    finally:
        bus._stopping = True
        for thread in bus._threads:
            thread.join(5.0)
    assert not any(thread.is_alive() for thread in bus._threads)
