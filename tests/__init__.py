"""The test tree is one package, `tests`, so a shared helper has one import name everywhere.

Helpers are imported by their path (`from tests.serfagent import SerfAgent`,
`from tests.registry.rpc_fixtures import GROUP`): pytest puts the checkout on sys.path (the root of
this package), mypy names each file from its path (`explicit_package_bases`), so `python -m mypy tests`
type-checks the helpers' callers instead of seeing `Any` for a bare name pytest alone could resolve.
"""
