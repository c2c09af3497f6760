"""A bug in a Serf message handler (they run inside memberlist's handlers, as its delegate)
is raised by a strict simulation and counted as memberlist's "drop.handler_error" (issue 13)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from registry.memberlist.config import Config
from registry.memberlist.simnet import SimNetwork
from registry.serf import messages as M
from registry.serf.config import SerfConfig
from registry.serf.core import Serf
from tests.serf.serf_sim import SerfCluster, addr


def _bug(msg: M.UserEventMsg) -> bool:
    raise ZeroDivisionError("bug")


class BuggySerf(Serf):
    """Serf with a bug in its user-event handler (Serf's handlers run inside memberlist's)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._user_events.handle = _bug  # type: ignore[method-assign]


def test_a_serf_handler_bug_is_raised_in_a_simulation() -> None:
    c = SerfCluster(SimNetwork(seed=4))
    cfg = SerfConfig(memberlist=Config.fast())
    good = Serf(cfg.replace(name="s0"), addr(0), rng=random.Random(1), now=0.0)
    bad = BuggySerf(cfg.replace(name="s1"), addr(1), rng=random.Random(2), now=0.0)
    c.net.add(good, addr(0))
    c.net.add(bad, addr(1))
    assert bad.strict and good.strict
    bad.join([addr(0)], 0.0)
    c.net.kick()
    assert c.net.run_until_true(lambda: len(good.members()) == 2, 10)
    good.user_event("deploy", b"v1", coalesce=False, now=c.net.now)
    c.net.kick()
    with pytest.raises(ZeroDivisionError):
        c.net.run_for(2.0)
    assert bad.handler_errors == 1


@pytest.mark.handler_errors("ZeroDivisionError")  # injected on purpose
def test_a_serf_handler_bug_is_counted_when_not_strict() -> None:
    """Off strict (a running agent), the node keeps going and counts the bug."""
    net = SimNetwork(seed=4, strict=False)
    cfg = SerfConfig(memberlist=Config.fast())
    good = Serf(cfg.replace(name="s0"), addr(0), rng=random.Random(1), now=0.0)
    bad = BuggySerf(cfg.replace(name="s1"), addr(1), rng=random.Random(2), now=0.0)
    net.add(good, addr(0))
    net.add(bad, addr(1))
    assert not bad.strict
    bad.join([addr(0)], 0.0)
    net.kick()
    assert net.run_until_true(lambda: len(good.members()) == 2, 10)
    good.user_event("deploy", b"v1", coalesce=False, now=net.now)
    net.kick()
    assert net.run_until_true(lambda: bad.handler_errors >= 1, 5)
    assert net.handler_errors() == {addr(1): bad.handler_errors}
