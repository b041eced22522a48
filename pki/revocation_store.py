"""Where the revocation list outlives the controller: the CA directory's ``revoked.json`` (adapter: files).

A running controller's revocations (an evicted workload's certificate, a forced rotation, a node cut off)
and ``pki rotate --dir``'s are one list: each writer merges what the other changed
(``pki.policy.merge_revocations``) and writes with a compare-and-set, so neither loses the other's. Every
``RevocationStore`` has the same three calls; a replicated controller keeps the list in etcd as well
(``cluster.revocations.EtcdRevocationStore``), one list for every replica.

The file is replaced whole (temporary file, fsync, rename, directory fsync) under an exclusive ``flock``
of the CA directory, and only if it is still the version the writer read; ``crl.pem`` beside it is
signed anew with every write, for verifiers outside the mesh, and again once half its validity has
passed while a controller runs (``refresh``): it does not lapse while the list stays the same.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from pki.policy import RevocationList
from pki.store import PUBLIC_MODE, CaFiles, read_revocations, replace_file, write_revocations


class RevocationStore(Protocol):
    def version(self) -> object:
        """What identifies the stored list's current version (None: nothing stored yet), cheaply: a
        writer reads the list again only when this differs from what it read last."""
        ...

    def read(self) -> tuple[RevocationList, object]:
        """The stored list and its version. Raises ``CaCorrupt`` (a ``PkiError``) when it is unreadable."""
        ...

    def write(self, revocations: RevocationList, expected: object) -> object | None:
        """Store ``revocations`` if the stored version is still ``expected``: its new version, or None
        (another writer came first: read, merge, try again)."""
        ...

    def refresh(self, now: float) -> None:
        """Keep what is derived from the list current while nothing changes it (called every poll)."""
        ...


ATTEMPTS = 16
"""Compare-and-set rounds a writer makes before giving up (another writer kept coming first)."""
CRL_VALID_S = 3600
"""``crl.pem``'s validity (``CertificateAuthority.crl_pem``'s next update, as ``pki rotate --dir`` signs it)."""


class FileRevocationStore:
    def __init__(self, directory: str | os.PathLike[str], sign_crl: Callable[[RevocationList], str] | None = None):
        self.layout = CaFiles(Path(directory))
        self._sign_crl = sign_crl

    def version(self) -> object:
        try:
            stat = os.stat(self.layout.revoked)
        except FileNotFoundError:
            return None
        # Every write is a new file renamed over the old one: a new inode, whatever the clock says.
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def read(self) -> tuple[RevocationList, object]:
        with self._locked():
            return read_revocations(self.layout), self.version()

    def write(self, revocations: RevocationList, expected: object) -> object | None:
        with self._locked() as directory_fd:
            if self.version() != expected:
                return None
            crl = self._sign_crl(revocations) if self._sign_crl is not None else None  # (fails before a write)
            write_revocations(self.layout, revocations)
            if crl is not None:
                replace_file(self.layout.crl, crl.encode(), PUBLIC_MODE)
            os.fsync(directory_fd)  # the renames themselves are durable
            return self.version()

    def refresh(self, now: float) -> None:
        """Sign ``crl.pem`` again from the stored list once it is half its validity old (or missing while
        a list is stored)."""
        if self._sign_crl is None or not self.layout.revoked.exists():
            return
        try:
            age = now - os.stat(self.layout.crl).st_mtime
        except FileNotFoundError:
            age = float("inf")
        if age < CRL_VALID_S / 2:
            return
        with self._locked() as directory_fd:
            replace_file(self.layout.crl, self._sign_crl(read_revocations(self.layout)).encode(), PUBLIC_MODE)
            os.fsync(directory_fd)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        """An exclusive lock on the CA directory, held by every reader-then-writer of the list."""
        fd = os.open(self.layout.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # (closing the descriptor releases the lock)
