"""Peer test rig: the short socket directory and device fixtures shared with the proxy tests."""

from tests.proxy.conftest import device, sockdir  # noqa: F401  (fixtures)
