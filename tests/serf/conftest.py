import os
import sys
from collections.abc import AsyncIterator

import pytest

from registry.serf.agent import SerfAgent

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))

from gonode import gonode  # noqa: F401  (fixture)
from serfagent import serf_agent  # noqa: F401  (fixture)


@pytest.fixture
async def nodes() -> AsyncIterator[list[SerfAgent]]:
    """Python Serf agents a test started (append them): shut down at teardown."""
    made: list[SerfAgent] = []
    yield made
    for n in made:
        await n.shutdown()
