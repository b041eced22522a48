"""The CA directory on disk: which file holds what, written with the right modes, never half-overwritten.

Adapter (file I/O only; no cryptography). Layout of ``DIR``::

    ca.json            trust domain, format, whether keys are encrypted   (written last: marks a whole CA)
    root.crt           the root certificate                                0644
    root.key           the root's private key (PKCS#8, maybe encrypted)    0600
    intermediate.crt   the issuing certificate                             0644
    intermediate.key   the issuing key                                     0600
    bundle.pem         the trust bundle peers load (the root)              0644
    issued.jsonl       one line per SVID issued by the CLI (serial, id, not_after): what `rotate` revokes
    revoked.json       the revocation list (``RevocationList.as_dict``)
    crl.pem            a CRL signed by the intermediate, rewritten by `rotate`
    root-crl.pem       an empty CRL signed by the root at init, valid until the intermediate expires

Key files are created with ``O_EXCL`` and mode 0600 from the first byte (never written wide and then
chmod-ed), whatever the umask.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netmodel.ids import SpiffeId
from pki.errors import CaCorrupt, CaExists, CaNotFound
from pki.policy import CertInfo, RevocationList

FORMAT = 1
SECRET_MODE = 0o600
PUBLIC_MODE = 0o644
DIR_MODE = 0o700


@dataclass(frozen=True)
class CaFiles:
    directory: Path

    @property
    def meta(self) -> Path:
        return self.directory / "ca.json"

    @property
    def root_cert(self) -> Path:
        return self.directory / "root.crt"

    @property
    def root_key(self) -> Path:
        return self.directory / "root.key"

    @property
    def intermediate_cert(self) -> Path:
        return self.directory / "intermediate.crt"

    @property
    def intermediate_key(self) -> Path:
        return self.directory / "intermediate.key"

    @property
    def bundle(self) -> Path:
        return self.directory / "bundle.pem"

    @property
    def ledger(self) -> Path:
        return self.directory / "issued.jsonl"

    @property
    def revoked(self) -> Path:
        return self.directory / "revoked.json"

    @property
    def crl(self) -> Path:
        return self.directory / "crl.pem"

    @property
    def root_crl(self) -> Path:
        """An empty CRL signed by the root when the CA was made, valid as long as the intermediate: TLS
        stacks that check revocation along the whole chain (Envoy with CRLs in its trusted CA) need a CRL
        for the intermediate too, and the root key is not at hand at run time to sign one."""
        return self.directory / "root-crl.pem"

    def ca_files(self) -> tuple[Path, ...]:
        return (self.meta, self.root_cert, self.root_key, self.intermediate_cert, self.intermediate_key, self.bundle)


def write_new_ca(directory: str | os.PathLike[str], meta: Mapping[str, Any], files: Mapping[str, bytes]) -> CaFiles:
    """Create a CA directory. Refuses (``CaExists``) if any CA file is already there.

    ``files`` maps a file name of the layout to its bytes; ``*.key`` files get mode 0600. ``ca.json`` is
    written last, so a directory without it is an interrupted init (and still refused: keys exist).
    """
    layout = CaFiles(Path(directory))
    present = [path.name for path in layout.ca_files() if path.exists()]
    if present:
        raise CaExists(
            f"{layout.directory} already holds a CA ({', '.join(present)}): refusing to overwrite it; "
            "choose another --dir or remove it yourself"
        )
    layout.directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    for name, data in files.items():
        mode = SECRET_MODE if name.endswith(".key") else PUBLIC_MODE
        create_exclusive(layout.directory / name, data, mode)
    create_exclusive(layout.meta, (json.dumps({**meta, "format": FORMAT}, indent=2) + "\n").encode(), PUBLIC_MODE)
    return layout


def read_ca(directory: str | os.PathLike[str]) -> tuple[CaFiles, dict[str, Any]]:
    layout = CaFiles(Path(directory))
    if not layout.directory.is_dir():
        raise CaNotFound(f"{layout.directory} is not a directory (create a CA with `edgectl pki init`)")
    if not layout.meta.exists():
        if layout.intermediate_key.exists():
            raise CaCorrupt(f"{layout.directory} has keys but no ca.json: an interrupted `pki init`?")
        raise CaNotFound(f"{layout.directory} holds no CA (no ca.json; create one with `edgectl pki init`)")
    try:
        meta = json.loads(layout.meta.read_text())
    except (OSError, ValueError) as exc:
        raise CaCorrupt(f"{layout.meta} is unreadable: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("trust_domain"), str):
        raise CaCorrupt(f"{layout.meta} is not an edgectl CA description (format {FORMAT})")
    return layout, meta


def read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CaCorrupt(f"{what} {path} is missing") from None
    except OSError as exc:
        raise CaCorrupt(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def create_exclusive(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start; fail if it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed (or the caller widened) the mode
        with os.fdopen(fd, "wb", closefd=False) as handle:
            handle.write(data)
            handle.flush()
            os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: str | os.PathLike[str], data: bytes, mode: int) -> None:
    """Write ``path`` atomically (temporary file in the same directory, then rename) with ``mode``.

    A reader sees the old file or the new one, never a torn one; a key file is 0600 from its first byte.
    """
    target = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def append_ledger(layout: CaFiles, info: CertInfo, issued_at: float) -> None:
    line = json.dumps(
        {"serial": format(info.serial, "x"), "spiffe_id": info.spiffe_id, "not_after": info.not_after, "at": issued_at}
    )
    fd = os.open(layout.ledger, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PUBLIC_MODE)
    with os.fdopen(fd, "a") as handle:
        handle.write(line + "\n")


def read_ledger(layout: CaFiles) -> Iterator[CertInfo]:
    """Issued certificates, oldest first; unreadable lines are skipped (the ledger is advisory)."""
    try:
        lines = layout.ledger.read_text().splitlines()
    except FileNotFoundError:
        return
    for line in lines:
        try:
            raw = json.loads(line)
            yield CertInfo(SpiffeId(str(raw["spiffe_id"])), int(raw["serial"], 16), 0, int(raw["not_after"]))
        except (ValueError, KeyError, TypeError):
            continue


def read_revocations(layout: CaFiles) -> RevocationList:
    try:
        return RevocationList.from_dict(json.loads(layout.revoked.read_text()))
    except FileNotFoundError:
        return RevocationList()
    except (OSError, ValueError) as exc:
        raise CaCorrupt(f"{layout.revoked} is unreadable: {exc}") from None


def write_revocations(layout: CaFiles, revocations: RevocationList) -> None:
    replace_file(layout.revoked, (json.dumps(revocations.as_dict(), indent=2) + "\n").encode(), PUBLIC_MODE)
