"""Issue 17: the WAN pool of registries (registry/wan.py), -datacenter and the dc tag."""
