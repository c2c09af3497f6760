import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))

from gonode import gonode  # noqa: F401  (fixture)
from serfagent import serf_agent  # noqa: F401  (fixture)
