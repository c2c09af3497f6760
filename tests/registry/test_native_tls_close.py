"""A TLS connection whose socket is already gone is closed without an error (native front).

On Python 3.10 the TLS transport's `get_write_buffer_size()` raises AttributeError between the socket's
loss and the protocol being told (sslproto reads its inner transport, already None); a server stop
that closed such a connection failed in CI (test_tls_and_mutual_tls, once). This replays that order of
real events: the socket transport is aborted, and the connection is closed in the loop turn after the
TLS layer learned of it but before our protocol did."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from registry.client import RpcClient
from registry.tls import TlsFiles
from tests.registry.rpc_fixtures import GROUP, ServerThread, make_certs, populate


def test_closing_a_tls_connection_whose_socket_went_raises_nothing(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    s = ServerThread(tls=TlsFiles(cert=certs["server_cert"], key=certs["server_key"]), engine="native")
    try:
        s.call(populate, s.catalog, GROUP, 3)
        with RpcClient(s.addr, tls_ca=certs["ca"]) as c:
            assert c.match(GROUP, "k").group == GROUP

            async def lose_then_close() -> None:
                (conn,) = s.rpc.connections  # type: ignore[union-attr]
                tls: Any = conn.transport
                inner = tls.get_extra_info("socket") and tls._ssl_protocol._transport
                done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

                def close_now() -> None:
                    try:
                        conn.close()
                    except BaseException as exc:  # noqa: BLE001 - handed to the test
                        done.set_exception(exc)
                    else:
                        done.set_result(None)

                inner.abort()  # schedules the TLS layer's connection_lost for the next turn
                asyncio.get_running_loop().call_soon(close_now)  # runs right after it
                await done

            asyncio.run_coroutine_threadsafe(lose_then_close(), s.loop).result(10)
    finally:
        s.stop()
