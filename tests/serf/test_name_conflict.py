"""Name conflicts in a pool of two (two registries, say): nobody but the two claimants exists, and
a claimant never answers the conflict query about its own name, so the vote has no voter.  Go's serf
then shuts down both: a newcomer started with a taken name took the incumbent's gossip with it (seen
with two `registry -id r1`).  Here the incumbent keeps its name and the newcomer, whose join's reply
showed the holder alive, loses."""

from __future__ import annotations

import pytest

from registry.memberlist.config import Config
from registry.serf.agent import SerfAgent
from registry.serf.config import SerfConfig
from registry.serf.member import MemberStatus

pytestmark = pytest.mark.timeout(60)


async def make(name: str) -> SerfAgent:
    a = SerfAgent(SerfConfig(name=name, tags={"role": name},
                             memberlist=Config.fast(bind_addr="127.0.0.1", bind_port=0)))
    await a.start()
    return a


async def test_in_a_pool_of_two_the_incumbent_keeps_its_name_and_the_newcomer_loses() -> None:
    a = await make("a")
    imp = await make("a")  # the same name, another port
    try:
        await imp.join([str(a.address)])
        assert imp.core.name_taken_by is not None and a.address is not None
        assert imp.core.name_taken_by.port == a.address.port
        # The incumbent saw the conflict and ran its query; wait for the verdict of both.
        decided = await a.wait_for(
            lambda: a.core.stats["conflict.unopposed"] + a.core.stats["conflict.won"]
            + a.core.stats["conflict.lost"] > 0 and imp.is_shutdown, 30)
        assert decided, (dict(a.core.stats), imp.is_shutdown)
        assert not a.core.conflict_lost and not a.is_shutdown
        assert imp.core.conflict_lost
        # The incumbent still gossips: a third node joins through it and sees it alive.
        c = await make("c")
        try:
            await c.join([str(a.address)])
            assert await c.wait_for(lambda: c.status_of("a") == MemberStatus.ALIVE, 20)
            held = c.core.member("a")
            assert held is not None and held.port == a.address.port
        finally:
            await c.shutdown()
    finally:
        await imp.shutdown()
        await a.shutdown()
