"""PEM files of a gRPC server, for either front: grpcio's credentials or a Python `ssl` context.

Neither grpc nor ssl is imported until asked for: a registry without TLS loads neither."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ssl

__all__ = ["TlsFiles"]


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for the gRPC server; with `ca` clients must present a certificate it signed."""

    cert: str
    key: str
    ca: str | None = None

    def read(self) -> tuple[bytes, bytes, bytes | None]:
        """(certificate chain, private key, CA bundle or None), read now so errors surface at start."""
        with open(self.cert, "rb") as f:
            cert = f.read()
        with open(self.key, "rb") as f:
            key = f.read()
        ca = None
        if self.ca:
            with open(self.ca, "rb") as f:
                ca = f.read()
        return cert, key, ca

    def credentials(self) -> Any:
        """grpcio server credentials (the grpcio front)."""
        import grpc

        cert, key, ca = self.read()
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)

    def ssl_context(self) -> ssl.SSLContext:
        """A TLS 1.2+ server context offering only HTTP/2 by ALPN, as gRPC clients require (the native front)."""
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"TLS: cannot load certificate {self.cert} with key {self.key}: {exc}") from None
        if self.ca:
            try:
                ctx.load_verify_locations(cafile=self.ca)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"TLS: cannot load CA bundle {self.ca}: {exc}") from None
            ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.set_alpn_protocols(["h2"])
        return ctx
