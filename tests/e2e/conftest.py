"""Every end-to-end test fails on a bug logged by a node in the test process (tests/logcheck.py);
`procs()` (helpers.py) does the same for the processes it starts."""

from tests.logcheck import no_handler_errors  # noqa: F401  (autouse fixture)
