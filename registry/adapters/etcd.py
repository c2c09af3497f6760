"""The etcd v3 adapter (issue 18): import services other systems write to etcd, export our catalog there.

The client: ``aetcd`` (the ``etcd`` extra, imported only when this adapter is configured).  Why: python
``etcd3`` has had no release since 2020 and its generated stubs break on protobuf 4+; ``etcetra`` pins
grpcio 1.62 / protobuf 4 (a downgrade of ours); ``etcd3gw`` goes through the JSON gateway (base64 keys, a
requests thread per call, no real watch stream).  ``aetcd`` 1.0.0 (June 2026) is asyncio on grpc.aio,
declares ``grpcio>1.66,<2`` and ``protobuf>4,<8`` (our 1.85 / 7.x fit), ships etcd's generated v3 stubs
and works on 3.10-3.13.  We use its stubs (``aetcd.rpc``: KV, Watch, Lease, Auth) on a channel we open
ourselves, not its ``Client``: the Client has no TLS (insecure channels only) and its watcher hides the
revisions a gap-free resync needs.  So TLS (``ca``/``cert``/``key``) and auth (``user``/``password``)
are passed straight to grpc and etcd.  How a member is reached (several endpoints, ``hasleader``, expired
auth tokens) is `registry.adapters.etcd_conn`.

Import (``import=true``): ``<prefix><group>/<id>`` (prefix ``/services/``) with a JSON object value
carrying ``addr`` and optionally ``tags`` (str -> str), ``replicas``, ``weight``.  On each connection the
whole prefix is read at one revision and handed over as ``replace_all`` (a resync: what vanished while we
were away is deleted), then watched from the next revision, so nothing between the read and the watch is
lost.  The read is paged (``page`` keys per Range, every page pinned to the first page's revision), so a
prefix larger than one gRPC message (grpcio receives 4 MiB at most by default) is read whole; the watch
asks for ``fragment`` so one huge revision (a DeleteRange of the prefix) arrives in pieces instead of
ending the stream.  A key whose lease expires is a DELETE event like any other.  A bad value logs one line and counts
as no service.  Keys under the export prefix are never imported (no loops).

Export (``export=true``): every live service as ``<export_prefix><dc>/<group>/<id>`` (prefix
``/registry/``), value ``{"addr", "tags", "health", "kind"}`` (plus ``replicas``/``weight`` when the
service has them, lifted out of the tags as the import format has them; the ``addr`` and ``group`` member
tags are left out, the value's addr and the key say them), under a lease kept alive by this registry,
so a dead registry's keys vanish after ``lease_ttl`` seconds.  One writer per datacenter, elected through
etcd: the key ``<export_prefix>.writers/<dc>`` is created (create_revision == 0 transaction) under the
writer's lease.  Why an election and not idempotent writes from every registry: each key is attached to
ONE lease, so with every registry writing, the last writer's lease would own a key and its death would
remove keys the live registries still export, until they noticed and wrote again; and N registries cost N
writes per change.  With one writer a change costs one write; when the writer dies its lease takes its keys
and the election key with it, a follower (watching the election key) takes over and writes the whole view.
The writer converges the prefix to the view (a key not in the view is deleted, a key with another value or
another lease is put again), on taking over and on every new view, so restarts of either side converge.
Services imported by an adapter (``origin`` non-empty) are not exported unless ``export_external=true``,
and never the ones this adapter imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from aetcd import rpc  # type: ignore[import-untyped]

from registry.adapters.base import AdapterContext, AdapterError, CatalogView, ExportedService, ExternalService
from registry.adapters.etcd_conn import Conn, Endpoints, LostError
from registry.healthtags import truncate_note

__all__ = ["EtcdAdapter"]

_TXN_OPS = 128
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _flag(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise AdapterError(f"etcd adapter: {key}={value!r} is not true or false")


def _prefix_end(prefix: bytes) -> bytes:
    """etcd's range_end for "every key starting with prefix": the prefix with its last byte + 1."""
    b = bytearray(prefix)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\0"


#: Health words an imported value may carry (an exported one of another pool does).
_HEALTH = frozenset({"passing", "warning", "critical"})


def parse_service(group_id: str, value: bytes) -> ExternalService:
    """``<group>/<id>`` and a JSON value -> the service; ValueError (one line) if either is bad.

    ``health`` (and ``health_note``), optional, is honoured: a pool importing another pool's export prefix
    must not route keys to the services that pool has taken off its rings."""
    group, sep, sid = group_id.partition("/")
    if not sep or not group or not sid:
        raise ValueError(f"key must be <prefix><group>/<id>, got {group_id!r}")
    doc = json.loads(value)
    if not isinstance(doc, dict) or not isinstance(doc.get("addr"), str) or not doc["addr"]:
        raise ValueError("value must be a JSON object with a string addr")
    tags = doc.get("tags", {})
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise ValueError("tags must be an object of strings")
    ints: dict[str, int | None] = {}
    for name in ("replicas", "weight"):
        n = doc.get(name)
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise ValueError(f"{name} must be a positive integer")
        ints[name] = n
    tags = dict(tags)
    health, note = doc.get("health", "passing"), doc.get("health_note", "")
    if health not in _HEALTH or not isinstance(note, str):
        raise ValueError("health must be passing, warning or critical and health_note a string")
    if health != "passing":  # as a member's health tags say it: a critical import is on no ring
        tags.update(health=health, health_note=truncate_note(note))
    return ExternalService(group, sid, doc["addr"], tags, ints["replicas"], ints["weight"])


class EtcdAdapter:
    """``-adapter etcd:endpoints=HOST:PORT,...,prefix=/services/,export_prefix=/registry/,...``"""

    name = "etcd"

    def __init__(
        self,
        endpoints: str | None = None,
        endpoint: str | None = None,
        prefix: str = "/services/",
        export_prefix: str = "/registry/",
        lease_ttl: str = "10",
        retry: str = "1",
        user: str | None = None,
        password: str | None = None,
        ca: str | None = None,
        cert: str | None = None,
        key: str | None = None,
        export_external: str = "false",
        page: str = "1000",
        **flags: str,
    ) -> None:
        if endpoints is not None and endpoint is not None:
            raise AdapterError("etcd adapter: give endpoints or endpoint (its alias), not both")
        hosts = [h.strip() for h in (endpoints or endpoint or "127.0.0.1:2379").split(",")]
        if not all(hosts):
            raise AdapterError(f"etcd adapter: endpoints={endpoints or endpoint!r} has an empty item")
        #: The member in use (the first until one fails).
        self.endpoint = hosts[0]
        self.prefix = prefix.encode()
        self.export_prefix = export_prefix.encode()
        for k in flags:
            if k not in ("import", "export"):
                raise AdapterError(f"etcd adapter: unknown option {k!r}")
        self.do_import = _flag("import", flags.get("import", "true"))
        self.do_export = _flag("export", flags.get("export", "true"))
        self.export_external = _flag("export_external", export_external)
        try:
            self.lease_ttl = int(lease_ttl)
            self.retry = float(retry)
            self.page = int(page)
        except ValueError:
            raise AdapterError(
                f"etcd adapter: lease_ttl={lease_ttl!r} retry={retry!r} page={page!r} must be numbers"
            ) from None
        if self.lease_ttl < 2 or self.retry <= 0 or self.page < 1:
            raise AdapterError("etcd adapter: lease_ttl must be >= 2, retry > 0 and page >= 1")
        if (user is None) != (password is None):
            raise AdapterError("etcd adapter: user and password go together")
        self.user, self.password = user, password
        if (cert is None) != (key is None):
            raise AdapterError("etcd adapter: cert and key go together")
        ca_p, cert_p, key_p = (None if p is None else Path(p) for p in (ca, cert, key))
        tls = (ca_p, cert_p, key_p)
        self._members = Endpoints(hosts, user=user, password=password, tls=tls, timeout=self.lease_ttl)
        self._view: CatalogView | None = None
        self._view_changed: asyncio.Event | None = None
        self._outage = False
        #: (group, id) -> (the service as last encoded, its key, its value): `_wanted` encodes a service
        #: only when it changed, so a view of N services with one change costs N comparisons, not N dumps.
        self._encoded: dict[tuple[str, str], tuple[ExportedService, bytes, bytes]] = {}
        self._encoded_dc = ""

    # ---- connection ----------------------------------------------------------------------------------

    async def run(self, ctx: AdapterContext) -> None:
        """Connect, import and export until cancelled; on a lost connection log one line and start again
        on the next member (after ``retry`` seconds once every member has failed in a row) with a resync
        (import) and the lease adopted or a fresh one and an election (export)."""
        self._view_changed = asyncio.Event()
        views = asyncio.ensure_future(self._follow_views(ctx)) if self.do_export else None
        try:
            while True:
                try:
                    conn = await self._members.connect(ctx.log)
                except (grpc.aio.AioRpcError, OSError) as e:
                    self._lost(ctx, self._members.current, e)
                    if self._members.move_on():
                        await asyncio.sleep(self.retry)
                    continue
                self.endpoint = conn.endpoint
                try:
                    parts = []
                    if self.do_import:
                        parts.append(self._import(ctx, conn))
                    if self.do_export:
                        parts.append(self._export(ctx, conn))
                    await _first_failure(parts)
                except (grpc.aio.AioRpcError, LostError, asyncio.TimeoutError) as e:
                    self._lost(ctx, conn.endpoint, e)
                finally:
                    await conn.close()
                if self._members.move_on():
                    await asyncio.sleep(self.retry)
        finally:
            if views is not None:
                views.cancel()

    def _lost(self, ctx: AdapterContext, endpoint: str, e: BaseException) -> None:
        """One warning per outage, not one per retry (an etcd down for an hour is one line, then one
        line when it is back: `_back`)."""
        if not self._outage:
            if len(self._members.all) > 1:
                how = "trying the next endpoint (each retried every %gs while none answers)"
            else:
                how = "retrying every %gs"
            ctx.log.warning("etcd %s: %s; " + how, endpoint or ",".join(self._members.all), _why(e), self.retry)
            self._outage = True

    def _back(self, ctx: AdapterContext, conn: Conn) -> None:
        self._members.worked()
        if self._outage:
            ctx.log.warning("etcd %s: reachable again, resyncing", conn.endpoint)
            self._outage = False

    async def _range_all(self, conn: Conn, key: bytes, end: bytes) -> tuple[int, list[Any]]:
        """Every key in [key, end) at one revision, read ``page`` keys at a time (the page halved when etcd's
        answer would not fit one gRPC message): (the revision, the kvs)."""
        kv, limit, revision, out = rpc.KVStub(conn.channel), self.page, 0, []
        while True:
            try:
                resp = await conn.unary(
                    kv.Range, rpc.RangeRequest(key=key, range_end=end, limit=limit, revision=revision)
                )
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or limit == 1:
                    raise
                limit //= 2
                continue
            revision = revision or resp.header.revision
            out.extend(resp.kvs)
            if not resp.more or not resp.kvs:
                return revision, out
            key = resp.kvs[-1].key + b"\0"

    async def _follow_views(self, ctx: AdapterContext) -> None:
        assert self._view_changed is not None
        async for view in ctx.exports():
            self._view = view
            self._view_changed.set()

    # ---- import --------------------------------------------------------------------------------------

    def _service(self, ctx: AdapterContext, key: bytes, value: bytes) -> ExternalService | None:
        try:
            return parse_service(key[len(self.prefix) :].decode(), value)
        except (ValueError, UnicodeDecodeError) as e:
            ctx.log.warning("etcd: ignoring %s: %s", key.decode(errors="replace"), str(e).splitlines()[0])
            return None

    def _ours(self, key: bytes) -> bool:
        return self.do_export and key.startswith(self.export_prefix)

    async def _import(self, ctx: AdapterContext, conn: Conn) -> None:
        end = _prefix_end(self.prefix)
        revision, kvs = await self._range_all(conn, self.prefix, end)
        self._back(ctx, conn)
        found = [self._service(ctx, k.key, k.value) for k in kvs if not self._ours(k.key)]
        ctx.imports.replace_all([s for s in found if s is not None])
        # fragment: a revision bigger than etcd's --max-request-bytes comes in several responses (we apply
        # events as they come, so no reassembly), not as one message over grpc's 4 MiB receive limit.
        create = rpc.WatchCreateRequest(key=self.prefix, range_end=end, start_revision=revision + 1, fragment=True)
        call = await conn.watch(create)
        async for wr in call:
            if wr.canceled or wr.compact_revision:
                raise LostError(f"watch canceled: {wr.cancel_reason or 'compacted'}")
            for ev in wr.events:
                key = ev.kv.key
                if self._ours(key):
                    continue
                group_id = key[len(self.prefix) :].decode(errors="replace")
                svc = self._service(ctx, key, ev.kv.value) if ev.type == rpc.Event.PUT else None
                if svc is not None:
                    ctx.imports.upsert(svc)
                else:
                    group, _, sid = group_id.partition("/")
                    ctx.imports.delete(group, sid)
        raise LostError("watch stream ended")

    # ---- export --------------------------------------------------------------------------------------

    async def _export(self, ctx: AdapterContext, conn: Conn) -> None:
        lease = rpc.LeaseStub(conn.channel)
        lease_id = await self._lease(ctx, conn)
        self._back(ctx, conn)
        try:
            await _first_failure([self._keepalive(conn, lease_id), self._write_when_elected(ctx, conn, lease_id)])
        except asyncio.CancelledError:
            # A clean stop revokes the lease: our keys (and our election key) go now, not lease_ttl later,
            # so another registry takes over at once.  A crash leaves that to the lease's expiry.
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.TimeoutError):
                await lease.LeaseRevoke(rpc.LeaseRevokeRequest(ID=lease_id), metadata=conn.metadata, timeout=1)
            raise

    def _elect_key(self, ctx: AdapterContext) -> bytes:
        dc = self._view.datacenter if self._view is not None else ctx.datacenter
        return self.export_prefix + b".writers/" + dc.encode()

    async def _lease(self, ctx: AdapterContext, conn: Conn) -> int:
        """Our lease: the one still holding our election key if there is one (we were the writer before
        this reconnect, or before this process restarted with the same id: etcd keeps leases across its
        own restarts), else a new one.  Why adopt it: a new lease would leave the old one's keys and
        election key in place until they expire, and we would wait that long to write again."""
        lease = rpc.LeaseStub(conn.channel)
        held = await conn.unary(rpc.KVStub(conn.channel).Range, rpc.RangeRequest(key=self._elect_key(ctx)))
        if held.kvs and held.kvs[0].value == ctx.registry_id.encode() and held.kvs[0].lease:
            ttl = await conn.unary(lease.LeaseTimeToLive, rpc.LeaseTimeToLiveRequest(ID=held.kvs[0].lease))
            if ttl.TTL > 0:
                return int(held.kvs[0].lease)
        grant = await conn.unary(lease.LeaseGrant, rpc.LeaseGrantRequest(TTL=self.lease_ttl))
        return int(grant.ID)

    async def _keepalive(self, conn: Conn, lease_id: int) -> None:
        call = conn.keepalive()
        while True:
            await call.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
            resp = await asyncio.wait_for(call.read(), self.lease_ttl)
            if resp is grpc.aio.EOF or resp.TTL <= 0:
                raise LostError("lease expired")
            await asyncio.sleep(self.lease_ttl / 3)

    async def _write_when_elected(self, ctx: AdapterContext, conn: Conn, lease_id: int) -> None:
        kv = rpc.KVStub(conn.channel)
        elect = self._elect_key(ctx)
        while True:
            txn = await conn.unary(
                kv.Txn,
                rpc.TxnRequest(
                    compare=[
                        rpc.Compare(key=elect, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL, create_revision=0)
                    ],
                    success=[
                        rpc.RequestOp(
                            request_put=rpc.PutRequest(key=elect, value=ctx.registry_id.encode(), lease=lease_id)
                        )
                    ],
                    failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=elect))],
                ),
            )
            holder = [] if txn.succeeded else txn.responses[0].response_range.kvs
            if txn.succeeded or (holder and holder[0].lease == lease_id):  # ours already: an adopted lease
                break
            await self._wait_deleted(conn, elect, txn.header.revision + 1)
        ctx.log.info("etcd: this registry writes %s", elect.decode())
        assert self._view_changed is not None
        written: dict[bytes, bytes] | None = None  # what etcd holds under our lease, once read
        while True:
            self._view_changed.clear()
            if self._view is not None:
                written = await self._converge(conn, self._view, lease_id, written)
            await self._view_changed.wait()

    async def _wait_deleted(self, conn: Conn, key: bytes, revision: int) -> None:
        call = await conn.watch(rpc.WatchCreateRequest(key=key, start_revision=revision))
        async for wr in call:
            if wr.canceled or wr.compact_revision:
                raise LostError("election watch canceled")
            if any(ev.type == rpc.Event.DELETE for ev in wr.events):
                call.cancel()
                return
        raise LostError("election watch ended")

    def _wanted(self, view: CatalogView) -> dict[bytes, bytes]:
        """The export prefix's keys and values for ``view``: a service equal to the one encoded for the last
        view reuses that encoding (a view with one change re-encodes one service)."""
        base = self.export_prefix + view.datacenter.encode() + b"/"
        if view.datacenter != self._encoded_dc:
            self._encoded, self._encoded_dc = {}, view.datacenter
        cache, fresh = self._encoded, {}
        out: dict[bytes, bytes] = {}
        for s in view.services:
            if s.origin and (s.origin == self.name or not self.export_external):
                continue
            k = (s.group, s.id)
            hit = cache.get(k)
            if hit is None or (hit[0] is not s and hit[0] != s):  # the view cache reuses records
                hit = (s, base + f"{s.group}/{s.id}".encode(), _encode(s))
            fresh[k] = hit
            out[hit[1]] = hit[2]
        self._encoded = fresh
        return out

    async def _converge(
        self, conn: Conn, view: CatalogView, lease_id: int, written: dict[bytes, bytes] | None
    ) -> dict[bytes, bytes]:
        """Make ``<export_prefix><dc>/`` exactly the view, writing only the keys that differ: on taking
        over (``written`` None) against what etcd holds (a previous writer's keys, a stale prefix after
        restarts), then against what we wrote (one write per changed service, no read)."""
        base = self.export_prefix + view.datacenter.encode() + b"/"
        want = self._wanted(view)
        kv = rpc.KVStub(conn.channel)
        if written is None:
            _, have = await self._range_all(conn, base, _prefix_end(base))
            written = {k.key: k.value for k in have if k.lease == lease_id}
            stale = [k.key for k in have if k.key not in want]
        else:
            stale = [k for k in written if k not in want]
        ops = [rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key)) for key in stale]
        for key in stale:
            written.pop(key, None)
        for key, value in want.items():
            if written.get(key) != value:
                ops.append(rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease_id)))
                written[key] = value
        # In transactions of up to _TXN_OPS writes (etcd's default --max-txn-ops is 128): one round trip and
        # one fsync per batch, not per key (10,000 keys took 41 s one Put at a time).
        for i in range(0, len(ops), _TXN_OPS):
            await conn.unary(kv.Txn, rpc.TxnRequest(success=ops[i : i + _TXN_OPS]))
        return written


#: Member tags the key or the value's own fields say: left out of the value's ``tags``.
_NOT_TAGS = frozenset({"addr", "group", "dc", "health", "health_note"})


def _encode(s: ExportedService) -> bytes:
    """The export value: ``{"addr", "health", "kind", "tags"}`` plus ``health_note`` when there is one and
    ``replicas``/``weight`` as integers when set, as the import format has them (so another pool can
    import our prefix, health included); the tags the key or those fields say are left out."""
    doc: dict[str, Any] = {"addr": s.addr, "health": s.health, "kind": s.kind}
    tags = {k: v for k, v in s.tags.items() if k not in _NOT_TAGS}
    note = s.tags.get("health_note", "")
    if note and s.health != "passing":
        doc["health_note"] = note
    for ring in ("replicas", "weight"):
        if tags.get(ring, "").isdigit():
            doc[ring] = int(tags.pop(ring))
    doc["tags"] = tags
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


async def _first_failure(coros: list[Any]) -> None:
    """Run the coroutines together; the first to raise (or return) ends them all, and its error is raised."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            t.result()
        raise LostError("a stream ended")
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _why(e: BaseException) -> str:
    if isinstance(e, grpc.aio.AioRpcError):
        return f"{e.code().name}: {e.details()}"
    return str(e) or type(e).__name__
