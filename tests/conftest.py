"""Shared fixtures: the real-traffic captures, hypothesis profiles ("fast" in CI, "deep" on demand)."""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
from typing import Iterator

import pytest
from hypothesis import HealthCheck, settings

ROOT = pathlib.Path(__file__).resolve().parent.parent
CAPTURES = ROOT / "captures"
QEMU = CAPTURES / "qemu-10.2-gpio-pci-idio-16.pcapng"
LVU = CAPTURES / "libvfio-user-sample-client-server.pcapng"

# function_scoped_fixture: tests/capture's codec_path fixture picks the codec for the whole test, every example alike
_QUIET = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
settings.register_profile("fast", max_examples=150, deadline=None, suppress_health_check=_QUIET)
settings.register_profile("deep", max_examples=5000, deadline=None, suppress_health_check=_QUIET)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))


@pytest.fixture(params=[QEMU, LVU], ids=["qemu", "libvfio-user"])
def real_capture(request: pytest.FixtureRequest) -> pathlib.Path:
    return request.param


@pytest.fixture
def sockdir() -> Iterator[str]:
    """A short directory for AF_UNIX socket paths (108-byte limit), removed afterwards."""
    d = tempfile.mkdtemp(prefix="vfu", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)
