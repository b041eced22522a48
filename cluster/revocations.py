"""The revocation list shared by the replicas: one etcd key (``<root>/revocations``), kept beside the CA
directory's ``revoked.json`` (adapter). Same interface as ``pki.revocation_store.FileRevocationStore``:
a certificate revoked at one replica (an eviction, a forced rotation) or a node cut off there is refused
by every replica's sidecars, and by a replica started later. A write is a transaction that succeeds only
if the key is still at the revision read; the version is that mod revision.
"""

from __future__ import annotations

import json

from cluster.etcd import Compare, EtcdClient, EtcdError, Op
from pki.errors import CaCorrupt, RevocationsUnavailable
from pki.policy import RevocationList


class EtcdRevocationStore:
    def __init__(self, client: EtcdClient, root: bytes) -> None:
        self._client = client
        self._key = root.rstrip(b"/") + b"/revocations"

    def version(self) -> object:
        kvs, _revision = self._client.get_prefix(self._key, keys_only=True)  # (the revision, not the list)
        return next((kv.mod_revision for kv in kvs if kv.key == self._key), None)

    def read(self) -> tuple[RevocationList, object]:
        try:
            kv = self._client.get(self._key)
        except EtcdError as exc:
            raise RevocationsUnavailable(f"the cluster's revocation list: {exc}") from exc
        if kv is None:
            return RevocationList(), None
        try:
            return RevocationList.from_dict(json.loads(kv.value)), kv.mod_revision
        except ValueError as exc:
            raise CaCorrupt(f"the cluster's revocation list in etcd is unreadable: {exc}") from None

    def write(self, revocations: RevocationList, expected: object) -> object | None:
        unchanged = (
            Compare.mod_revision(self._key, "=", int(expected))  # type: ignore[call-overload]
            if expected is not None
            else Compare.create_revision(self._key, "=", 0)
        )
        value = json.dumps(revocations.as_dict(), indent=1).encode()
        result = self._client.txn([unchanged], [Op.put(self._key, value)])
        return result.revision if result.succeeded else None

    def refresh(self, now: float) -> None:
        """Nothing is derived from the list in etcd (each replica signs its own CRL for its sidecars)."""
