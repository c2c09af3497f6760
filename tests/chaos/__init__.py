"""Chaos suite: real registries and services in network namespaces, faults made with iptables."""
