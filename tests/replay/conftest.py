"""Replay test rig: sessions recorded through the real proxy between the emulated peers (clean, and with a twin socket)."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Iterator

import pytest

from tests.proxy_harness import Proxy
from vfudissect.peers.client import TWIN_VERSION_JSON, Client, run_session
from vfudissect.peers.server import DeviceServer


def record_session(d: str, twin: bool = False, irqs: bool = False) -> str:
    """A QEMU-shaped session of the emulated client with the emulated server, recorded by `record`; its capture."""
    srv = DeviceServer(os.path.join(d, "rec-dev.sock")).start()
    try:
        p = Proxy(d, srv.path, watch_irqs=irqs)
        try:
            with Client(p.path, timeout=5.0) as c:
                rep = run_session(c, **({"json_text": TWIN_VERSION_JSON} if twin else {}))
            assert rep.config_ok and rep.interrupts_seen == 2 and rep.dma_to_device_ok
            p.wait_messages(2 * rep.messages + 6)
        finally:
            p.stop()
    finally:
        srv.stop()
    out = os.path.join(d, "twin.pcapng" if twin else "irqs.pcapng" if irqs else "clean.pcapng")
    os.rename(p.capture, out)
    return out


@pytest.fixture(scope="session")
def recorded() -> Iterator[dict[str, str]]:
    """{"clean": capture, "twin": capture, "irqs": capture (record --watch-irqs)}: made once per test run."""
    d = tempfile.mkdtemp(prefix="vfurp", dir="/tmp")
    try:
        yield {"clean": record_session(d), "twin": record_session(d, twin=True), "irqs": record_session(d, irqs=True)}
    finally:
        shutil.rmtree(d, ignore_errors=True)
