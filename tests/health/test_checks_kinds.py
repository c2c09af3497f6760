"""Each check kind flips a real service's published health and back (issue 14's "Done when").

A registry process on loopback, services in this process (`Register`, gossip on its own thread),
real targets: an HTTP server that starts answering 500 (and 429), a TCP port that closes, a grpcio
health server that goes NOT_SERVING, a callable that raises.  Health is read where the pool sees it:
the service's tags in the registry's Members(all=True), and Match (a healthy anchor service in the same
group takes the keys while the checked one is critical).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from registry.checks import CheckState
from registry.register import CallableCheck, GrpcCheck, Health, HttpCheck, Register, TcpCheck
from tests.e2e.helpers import TOLERANT, Registry, procs, wait_for

from .checks_support import HttpTarget, Pool, TcpTarget, grpc_health_server


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    with procs() as ps:
        p = Pool(Registry(ps, tmp_path_factory.mktemp("checks"), "reg-checks", profile=TOLERANT).wait_ready())
        try:
            yield p
        finally:
            p.close()


def _service(pool: Pool, group: str, *checks: object) -> Register:
    return Register(f"{group}-svc", "127.0.0.1:0", "", pool.registry.gossip, group, "127.0.0.1:8001",
                    profile=TOLERANT, checks=list(checks))  # type: ignore[arg-type]


def _cycle_routing(pool: Pool, group: str, want_in: bool) -> None:
    svc = f"{group}-svc"
    wait_for(lambda: (svc in pool.routed(group)) == want_in, 20,
             what=f"{svc} {'back in' if want_in else 'out of'} Match")


def test_http_check_500_is_critical_429_warning_2xx_passing(pool: Pool) -> None:
    target = HttpTarget()
    anchor = pool.anchor("chk-http")
    reg = _service(pool, "chk-http", HttpCheck(target.url, interval=0.05, timeout=2.0))
    try:
        reg.start()
        pool.wait_health("chk-http", "chk-http-svc", "passing")
        _cycle_routing(pool, "chk-http", True)
        target.code, target.body = 500, "database unreachable"
        row = pool.wait_health("chk-http", "chk-http-svc", "critical", "http: HTTP 500")
        assert "database unreachable" in row[1] and row[2] == "alive", row
        _cycle_routing(pool, "chk-http", False)
        assert reg.health[0] is Health.CRITICAL
        target.code, target.body = 429, "slow down"
        pool.wait_health("chk-http", "chk-http-svc", "warning", "HTTP 429")
        _cycle_routing(pool, "chk-http", True)  # warning stays routed (Consul's DNS does too)
        target.code = 204
        pool.wait_health("chk-http", "chk-http-svc", "passing")
        assert reg.health == (Health.PASSING, "")
        [state] = reg.checks()
        assert isinstance(state, CheckState) and (state.name, state.kind, state.status) == ("http", "http", Health.PASSING)
    finally:
        reg.stop()
        anchor.stop()
        target.close()


def test_tcp_check_port_closed_is_critical_and_reopened_passing(pool: Pool) -> None:
    target = TcpTarget()
    anchor = pool.anchor("chk-tcp")
    reg = _service(pool, "chk-tcp", TcpCheck(f"127.0.0.1:{target.port}", name="db", interval=0.05, timeout=2.0))
    try:
        reg.start()
        pool.wait_health("chk-tcp", "chk-tcp-svc", "passing")
        _cycle_routing(pool, "chk-tcp", True)
        target.close()
        pool.wait_health("chk-tcp", "chk-tcp-svc", "critical", "db: Connection refused")
        _cycle_routing(pool, "chk-tcp", False)
        target.open()
        pool.wait_health("chk-tcp", "chk-tcp-svc", "passing")
        _cycle_routing(pool, "chk-tcp", True)
    finally:
        reg.stop()
        anchor.stop()
        target.close()


def test_grpc_check_not_serving_is_critical(pool: Pool) -> None:
    from grpc_health.v1 import health_pb2

    with grpc_health_server() as (addr, servicer):
        anchor = pool.anchor("chk-grpc")
        reg = _service(pool, "chk-grpc", GrpcCheck(addr, interval=0.05, timeout=2.0))
        try:
            reg.start()
            pool.wait_health("chk-grpc", "chk-grpc-svc", "passing")
            _cycle_routing(pool, "chk-grpc", True)
            servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
            pool.wait_health("chk-grpc", "chk-grpc-svc", "critical", "NOT_SERVING")
            _cycle_routing(pool, "chk-grpc", False)
            servicer.set("", health_pb2.HealthCheckResponse.SERVING)
            pool.wait_health("chk-grpc", "chk-grpc-svc", "passing")
            _cycle_routing(pool, "chk-grpc", True)
        finally:
            reg.stop()
            anchor.stop()


def test_grpc_check_of_a_named_service_unknown_to_the_server_is_critical(pool: Pool) -> None:
    with grpc_health_server() as (addr, _):
        reg = _service(pool, "chk-grpc-name", GrpcCheck(addr, "billing", interval=0.05, timeout=2.0))
        try:
            reg.start()
            pool.wait_health("chk-grpc-name", "chk-grpc-name-svc", "critical", "NOT_FOUND")
        finally:
            reg.stop()


def test_callable_check_raising_is_critical_with_the_exception_as_note(pool: Pool) -> None:
    broken: list[str] = []

    def db_ok() -> str:
        if broken:
            raise RuntimeError(broken[0])
        return "passing"

    anchor = pool.anchor("chk-fn")
    reg = _service(pool, "chk-fn", CallableCheck(db_ok, name="db", interval=0.05, timeout=2.0))
    try:
        reg.start()
        pool.wait_health("chk-fn", "chk-fn-svc", "passing")
        _cycle_routing(pool, "chk-fn", True)
        broken.append("pool exhausted")
        pool.wait_health("chk-fn", "chk-fn-svc", "critical", "db: RuntimeError: pool exhausted")
        _cycle_routing(pool, "chk-fn", False)
        broken.clear()
        pool.wait_health("chk-fn", "chk-fn-svc", "passing")
        _cycle_routing(pool, "chk-fn", True)
    finally:
        reg.stop()
        anchor.stop()


def test_a_service_without_checks_publishes_no_health_tag(pool: Pool) -> None:
    """Go-compatible: nothing new in the tags of a service that declares no checks."""
    anchor = pool.anchor("chk-none")
    try:
        assert pool.published("chk-none", "chk-none-anchor") == ("", "", "alive")
        assert "health" not in anchor.tags and anchor.health == (Health.PASSING, "")
    finally:
        anchor.stop()


def test_worst_check_is_published_and_the_note_names_it(pool: Pool) -> None:
    target = TcpTarget()
    reg = _service(pool, "chk-two", TcpCheck(f"127.0.0.1:{target.port}", name="cache", interval=0.05, timeout=2.0),
                   CallableCheck(lambda: ("warning", "disk 91% full"), name="disk", interval=0.05, timeout=2.0))
    try:
        reg.start()
        pool.wait_health("chk-two", "chk-two-svc", "warning", "disk: disk 91% full")
        target.close()
        pool.wait_health("chk-two", "chk-two-svc", "critical", "cache: Connection refused")
        assert [(s.name, s.status) for s in reg.checks()] == [("cache", Health.CRITICAL), ("disk", Health.WARNING)]
    finally:
        reg.stop()
        target.close()
