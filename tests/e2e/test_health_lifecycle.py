"""gRPC health follows a registry's life, on both fronts (issue 12): NOT_SERVING until it has
joined its pool and loaded its catalog, SERVING then, NOT_SERVING again from the moment SIGTERM
starts its leave, told on an open Watch before the connection closes.

Registries run as real `registry` processes; the client is grpcio's health stub.  The seed is
held back: the registries under test are started with `-registries` naming a port nobody
listens on yet, and the seed is started on that port only once they have been seen
NOT_SERVING.  Both fronts run side by side in one test (same seed), which keeps it at the
cost of one registry start.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .helpers import Registry, free_port, procs, wait_for

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
#: The overall server, the v1 API and the Go-compatible API: one status for all.
SERVICES = ("", "registry.v1.Registry", "R")
ENGINES = ("native", "grpcio")
#: How a call open when the server stops ends: UNAVAILABLE, or CANCELLED when grpc.aio's stop
#: cancels a Check it had already taken.
STOPPED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


class Watch:
    """A health Watch read on its own thread: the statuses in the order they came, then how it ended."""

    def __init__(self, channel: grpc.Channel, service: str) -> None:
        self.statuses: list[int] = []
        self.ended: grpc.StatusCode | None = None
        self._call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=service))
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for answer in self._call:
                self.statuses.append(answer.status)
        except grpc.RpcError as exc:
            self.ended = exc.code()
        else:
            self.ended = grpc.StatusCode.OK

    def close(self) -> None:
        self._call.cancel()
        self._thread.join(10)


class Poller:
    """Health Check of "" in a loop on its own thread, until the server stops answering."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.answers: list[int] = []
        self.ended: grpc.StatusCode | None = None
        self._stub = health_pb2_grpc.HealthStub(channel)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                self.answers.append(self._stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status)
            except grpc.RpcError as exc:
                self.ended = exc.code()
                return
            self._stop.wait(0.005)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(15)


def _serving_logged(reg: Registry) -> list[int]:
    """The catalog's size each time the registry logged that health says SERVING."""
    rows = [json.loads(ln) for ln in reg.proc.output().splitlines() if '"health: serving"' in ln]
    return [int(r["services"]) for r in rows]


def _checks(channel: grpc.Channel) -> set[int]:
    stub = health_pb2_grpc.HealthStub(channel)
    return {stub.Check(health_pb2.HealthCheckRequest(service=s), timeout=10).status for s in SERVICES}


def test_health_not_serving_until_joined_then_serving_then_not_serving_while_leaving(tmp_path: Path) -> None:
    seed_port = free_port()  # nobody listens here until the seed starts
    with procs() as ps:
        regs = {e: Registry(ps, tmp_path, f"reg-{e}", (f"127.0.0.1:{seed_port}",), "-rpc-engine", e) for e in ENGINES}
        channels = {e: grpc.insecure_channel(r.rpc) for e, r in regs.items()}
        watches = {(e, s): Watch(channels[e], s) for e in ENGINES for s in ("", "registry.v1.Registry")}
        try:
            # Started, listening, retrying the join: not serving, on Check and on Watch.
            for e in ENGINES:
                assert _checks(channels[e]) == {NOT_SERVING}, e
            wait_for(lambda: all(w.statuses for w in watches.values()), 30, what="first Watch answers")
            assert {k: w.statuses for k, w in watches.items()} == {k: [NOT_SERVING] for k in watches}

            seed = Registry(ps, tmp_path, "seed", (), gossip=seed_port)
            wait_for(lambda: all(w.statuses[-1:] == [SERVING] for w in watches.values()), 60,
                     what="every Watch says SERVING once joined")
            for e, reg in regs.items():
                # Serving means the catalog is loaded: it held more than itself (the seed, maybe the other
                # registry) when health said so; read from the log line of that moment, as a fast-profile
                # seed can flap later on a loaded machine.  Logged once: SERVING was set once.
                logged = _serving_logged(reg)
                assert len(logged) == 1 and logged[0] >= 2, (e, logged)
                assert _checks(channels[e]) == {SERVING}, e
            assert seed.proc.alive()

            for reg in regs.values():
                reg.proc.signal(signal.SIGTERM)
            wait_for(lambda: all(w.ended is not None for w in watches.values()), 60,
                     what="every Watch ended by the stopping registry")
            for reg in regs.values():
                assert reg.proc.wait(30) == 0, reg.proc.output()
            for (e, s), w in watches.items():
                # NOT_SERVING reached the client on the open stream before the server closed it.
                assert w.statuses == [NOT_SERVING, SERVING, NOT_SERVING], (e, s, w.statuses)
                assert w.ended in STOPPED, (e, s, w.ended)
        finally:
            for w in watches.values():
                w.close()
            for ch in channels.values():
                ch.close()


def test_health_not_serving_from_the_start_of_the_leave_until_the_connection_closes(tmp_path: Path) -> None:
    # The lan profile's leave takes at least its 1 s propagate delay: the drain the pollers must see.
    with procs() as ps:
        regs = {e: Registry(ps, tmp_path, f"alone-{e}", (), "-rpc-engine", e, profile="lan") for e in ENGINES}
        channels = {e: grpc.insecure_channel(r.rpc) for e, r in regs.items()}
        watches: dict[str, Watch] = {}
        pollers: dict[str, Poller] = {}
        try:
            for e in ENGINES:  # no -registries: a pool of one, its (empty) catalog loaded: serving once started
                assert _checks(channels[e]) == {SERVING}, e
            watches.update({e: Watch(channels[e], "R") for e in ENGINES})
            pollers.update({e: Poller(channels[e]) for e in ENGINES})
            wait_for(lambda: all(w.statuses for w in watches.values()) and all(p.answers for p in pollers.values()),
                     30, what="first Watch answers and Checks")
            for reg in regs.values():
                reg.proc.signal(signal.SIGTERM)
            wait_for(lambda: all(p.ended is not None for p in pollers.values()), 60, what="Checks refused after the stop")
            wait_for(lambda: all(w.ended is not None for w in watches.values()), 30, what="Watches ended by the stop")
            for e, reg in regs.items():
                assert reg.proc.wait(30) == 0, reg.proc.output()
                # While it left the pool and drained, the registry still answered Check, and said NOT_SERVING.
                answers = pollers[e].answers
                assert NOT_SERVING in answers, (e, answers)
                first = answers.index(NOT_SERVING)
                assert set(answers[:first]) == {SERVING} and set(answers[first:]) == {NOT_SERVING}, (e, answers)
                assert pollers[e].ended in STOPPED, (e, pollers[e].ended)
                assert watches[e].statuses == [SERVING, NOT_SERVING], (e, watches[e].statuses)
                assert watches[e].ended in STOPPED, (e, watches[e].ended)
        finally:
            for p in pollers.values():
                p.close()
            for w in watches.values():
                w.close()
            for ch in channels.values():
                ch.close()
