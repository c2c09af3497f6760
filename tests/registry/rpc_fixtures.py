"""Helpers for the gRPC tests: a real Catalog behind a real gRPC server on 127.0.0.1:0, either
front (`ENGINES`: the native one and grpc.aio), so every test of answers runs against both.

`ServerThread` runs the server on its own event loop thread so blocking clients can be
tested from the test thread; async tests start the server on their own loop instead.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from registry.catalog import Catalog
from registry.native import NativeServer, start_native
from registry.rpc import RpcServer, start_rpc
from registry.tls import TlsFiles
from tests.waiting import aeventually, eventually

T = TypeVar("T")
GROUP = "web"
# the suite's condition waits (tests/waiting.py), under the names the gRPC tests import them by
wait_for = eventually
async_wait_for = aeventually
ENGINES = ("native", "grpcio")
AnyServer = RpcServer | NativeServer


async def start_server(catalog: Catalog, engine: str, addr: str = "127.0.0.1:0",
                       tls: TlsFiles | None = None) -> AnyServer:
    if engine == "native":
        return await start_native(catalog, addr, tls=tls)
    return await start_rpc(catalog, addr, tls=tls)


def tags(group: str, addr: str, replicas: int = 40, **extra: str) -> dict[str, str]:
    return {"group": group, "addr": addr, "replicas": str(replicas), **extra}


def populate(catalog: Catalog, group: str = GROUP, count: int = 5, replicas: int = 40) -> list[str]:
    names = [f"{group}-{i}" for i in range(count)]
    for i, name in enumerate(names):
        catalog.apply(name, tags(group, f"10.0.0.{i + 1}:8080", replicas))
    return names


class ServerThread:
    """Catalog + gRPC server on a private loop thread; `call` runs a function on that loop."""

    def __init__(self, catalog: Catalog | None = None, tls: TlsFiles | None = None, engine: str = "") -> None:
        self.catalog = catalog if catalog is not None else Catalog()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.engine = engine or "native"
        self.rpc: AnyServer = asyncio.run_coroutine_threadsafe(
            start_server(self.catalog, self.engine, tls=tls), self.loop
        ).result(30)
        self.addr = f"127.0.0.1:{self.rpc.port}"

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        async def run() -> T:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def apply(self, name: str, member_tags: Mapping[str, str] | None) -> None:
        self.call(self.catalog.apply, name, member_tags)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.rpc.stop(None), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def make_certs(tmp: Path) -> dict[str, str]:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("test-ca")).issuer_name(name("test-ca"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, usage: x509.ObjectIdentifier) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)

    files = {"ca": ca.public_bytes(serialization.Encoding.PEM)}
    files["server_cert"], files["server_key"] = leaf("server", ExtendedKeyUsageOID.SERVER_AUTH)
    files["client_cert"], files["client_key"] = leaf("client", ExtendedKeyUsageOID.CLIENT_AUTH)
    out = {}
    for k, data in files.items():
        path = tmp / f"{k}.pem"
        path.write_bytes(data)
        out[k] = str(path)
    return out


def populated_server(engine: str) -> Iterator[ServerThread]:
    """A ServerThread on `engine` with 5 services in GROUP, stopped at the end: the module fixture of the
    client tests (`yield from populated_server(request.param)`)."""
    s = ServerThread(engine=engine)
    s.call(populate, s.catalog, GROUP, 5)
    try:
        yield s
    finally:
        s.stop()
