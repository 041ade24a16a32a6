"""record --watch-irqs: the server's interrupts pass through the proxy's own eventfds, reach the client, and are
recorded where they came; without it the eventfds go through untouched."""

from __future__ import annotations

import os

from tests.proxy_harness import Proxy
from vfudissect import spec
from vfudissect.capture.reader import open_capture
from vfudissect.core.events import IrqIn, MessageIn
from vfudissect.peers.client import Client, run_session
from vfudissect.peers.server import DeviceServer

C = spec.Command


def _session(sockdir: str, watch: bool):  # type: ignore[no-untyped-def]
    srv = DeviceServer(os.path.join(sockdir, "dev.sock")).start()
    try:
        p = Proxy(sockdir, srv.path, watch_irqs=watch)
        try:
            with Client(p.path, timeout=3.0) as c:
                rep = run_session(c, irq_wait=2.0)
            p.wait_messages(2 * rep.messages)
            relay = p.relay
        finally:
            p.stop()
    finally:
        srv.stop()
    return rep, list(open_capture(p.capture)), relay


def test_interrupts_reach_the_client_and_are_recorded_after_what_raised_them(sockdir: str) -> None:
    rep, evs, relay = _session(sockdir, watch=True)
    assert rep.ok and rep.interrupts_seen == 2 and relay.interrupts == 2
    irqs = [e for e in evs if isinstance(e, IrqIn)]
    assert [(e.index, e.vector, e.count) for e in irqs] == [(0, 0, 1), (1, 1, 1)]
    msgs = [e for e in evs if isinstance(e, MessageIn)]
    for irq in irqs:  # each after the doorbell write that rang it (its reply may come before or after)
        before = [m for m in msgs if m.frame < irq.frame and m.dir == "c2s"][-1]
        assert spec.HEADER.unpack_from(before.data)[1] == C.REGION_WRITE
    set_irqs = [m for m in msgs if spec.HEADER.unpack_from(m.data)[1] == C.DEVICE_SET_IRQS and m.fds]
    assert [[fd.kind for fd in m.fds] for m in set_irqs] == [["eventfd"], ["eventfd", "eventfd"]]  # the client's
    assert relay._irqs == {}  # DATA_NONE teardown (and the close) let go of every eventfd


def test_without_watch_irqs_nothing_is_swapped_and_no_irq_is_recorded(sockdir: str) -> None:
    rep, evs, relay = _session(sockdir, watch=False)
    assert rep.ok and rep.interrupts_seen == 2 and relay.interrupts == 0
    assert not any(isinstance(e, IrqIn) for e in evs)
