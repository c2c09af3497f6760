"""Adapters (issue 18): keep the catalog in sync with other registries (etcd, a file, a third party's).

Why a package imported only when ``-adapter`` is given: a registry without adapters behaves and costs
as before (nothing of this package in ``sys.modules``; ``tests/footprint.py`` checks it).

The layers:

- `registry.adapters.base`: the interface (`Adapter`, `AdapterContext`, `ExternalService`, `Imports`,
  `CatalogView`); the only module a third party's adapter imports.
- `registry.adapters.loader`: ``-adapter NAME:key=value,...`` -> the entry point NAME of group
  ``registry.adapters`` called with the key=values (a bad spec or key: `AdapterError`, one line).
- `registry.adapters.host`: runs each adapter on its own thread and event loop, restarts one that
  returns or raises (with backoff), hands its imports to the registry's loop in order, and gives
  exporters coalesced catalog views.
- `registry.adapters.file`: static services from a JSON or TOML file, reloaded on change.
- `registry.adapters.etcd`: import from and export to an etcd v3 prefix.

The catalog side: imported services are ``ServiceKind.EXTERNAL``, keyed by (group, id) like TTL
services, with ``Service.origin`` the adapter's name (Members, the CLI and the metrics show it).
"""
