from collections.abc import AsyncIterator

import pytest

from registry.serf.agent import SerfAgent
from tests.gonode import gonode  # noqa: F401  (fixture)
from tests.serfagent import serf_agent  # noqa: F401  (fixture)


def _handler_errors(agent: SerfAgent) -> int:
    try:
        return agent.core.handler_errors
    except RuntimeError:  # never started
        return 0


@pytest.fixture
async def nodes() -> AsyncIterator[list[SerfAgent]]:
    """Python Serf agents a test started (append them): shut down at teardown."""
    made: list[SerfAgent] = []
    yield made
    # exceptions inside message handlers (bugs: see the log), read before shutdown drops the core
    bugs = {n.config.name: _handler_errors(n) for n in made}
    for n in made:
        await n.shutdown()
    assert not any(bugs.values()), f"drop.handler_error counted: {bugs}"
