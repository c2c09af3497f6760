"""Issue 17: mirrors of other datacenters' catalogs (registry/federation)."""
