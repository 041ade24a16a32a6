"""Peer test rig: the short socket directory and device fixtures shared with the proxy tests."""

from tests.proxy.conftest import device  # noqa: F401  (fixture; sockdir comes from tests/conftest.py)
