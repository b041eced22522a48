"""mTLS settings of the controller's gRPC servers (xDS and placement API). Adapter (grpc).

One type for both: the server's chain and key, the roots client certificates must lead to (a client
without such a certificate fails the handshake), and ``authorize``, each server's check of the verified
client certificate (xDS: ``(node id, PEM) -> refusal``; placement: ``(PEM) -> refusal``). It lives in
pki because it is PEM material the CA issues; meshctl and placement both use it, and neither may
import the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

import grpc

Authorize = TypeVar("Authorize")


@dataclass(frozen=True)
class ServerTls(Generic[Authorize]):
    """mTLS for one gRPC listener; ``authorize`` (optional) is asked about each verified client."""

    cert_chain_pem: str
    private_key_pem: str = field(repr=False)
    client_ca_pem: str = field(repr=False)
    authorize: Authorize | None = None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key_pem.encode(), self.cert_chain_pem.encode())],
            root_certificates=self.client_ca_pem.encode(),
            require_client_auth=True,
        )
