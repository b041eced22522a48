"""The election follower's loop against a stand-in client: a watch etcd did not create in time is retried."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from cluster.election import Candidate
from cluster.etcd import EtcdUnavailable
from cluster.member import ClusterMember


class WatchRefusedOnce:
    """Reads answer; the first watch is not created in time (its member stopped right after the read)."""

    def __init__(self) -> None:
        self.watches = 0
        self.watching = threading.Event()

    def get_prefix(self, prefix: bytes) -> tuple[list[Any], int]:
        return [], 1

    def watch(self, key: bytes, **kw: Any) -> Any:
        self.watches += 1
        if self.watches == 1:
            raise EtcdUnavailable(f"etcd watch {key!r}: no member of 127.0.0.1:1 answered within 0.5s")
        self.watching.set()
        return SimpleNamespace(cancel=lambda: None)


def test_the_election_is_followed_again_after_a_watch_that_could_not_be_created() -> None:
    client = WatchRefusedOnce()
    member = ClusterMember(client, b"edgectl/test", "r1", Candidate("r1", 0, 0, "127.0.0.1:1"))  # type: ignore[arg-type]
    follower = threading.Thread(target=member._follow_election, name="test-election", daemon=True)
    follower.start()
    try:
        assert client.watching.wait(5.0), "the election thread ended on the refused watch"
        assert client.watches == 2
    finally:
        member._stopping.set()
        follower.join(5.0)
    assert not follower.is_alive()
