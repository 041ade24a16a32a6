"""The proxy under sustained load: a pipelined flood through the real proxy whose recorder is slowed on purpose.

Whatever the recording costs, no message waits in the proxy longer than the bound, memory stays bounded, every
message reaches the capture, and a server that answered promptly draws no REPLY_TIMEOUT.
"""

from __future__ import annotations

import os
import resource
import time

from vfudissect.core.events import MessageIn
from vfudissect.core.records import Finding
from vfudissect.analysis import analyze
from vfudissect.core.analyzer import AnalyzerConfig
from tests.proxy.flood_peers import EchoServer, flood_from_child
from tests.proxy_harness import Proxy


def test_a_slow_recorder_slows_the_flood_but_holds_no_message_long(sockdir: str) -> None:
    srv = EchoServer(os.path.join(sockdir, "dev.sock"))
    px = Proxy(sockdir, srv.path, timeout=0.5)
    record = px.session.recorder.record  # type: ignore[union-attr]

    def slow(ev):  # type: ignore[no-untyped-def]
        time.sleep(0.0002)  # recording at 5,000 events/s at best: far below what the peers would do
        record(ev)

    px.session.relay.recorder.record = slow  # type: ignore[union-attr]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    n = 3000
    rtts = flood_from_child(px.path, n)
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    relay = px.relay
    bound = relay.cfg.max_hold
    events = px.events()
    srv.close()
    # slowed to the recording rate, smoothly: sockets with data never wait for recording beyond the bound
    assert relay.longest_wait < bound + 0.02, f"a message waited {relay.longest_wait * 1e3:.1f} ms for the relay"
    # and the peers only see the rate: 32 in flight at (at best) 5,000 recorded events a second
    assert max(rtts) < 32 * 2 * 0.0004 + 0.1, f"worst round trip {max(rtts) * 1e3:.1f} ms"
    assert grew < 64 << 10, f"the process grew by {grew} KiB"
    assert relay.peak_events <= relay.cfg.max_events
    msgs = [e for e in events if isinstance(e, MessageIn)]
    assert len(msgs) == 2 * n + 2  # every message in the capture
    found = [it.code for it in analyze(iter(events), AnalyzerConfig(timeout=0.5)) if isinstance(it, Finding)]
    assert "REPLY_TIMEOUT" not in found and "NO_REPLY" not in found
    live = [f.code for f in px.session.recorder.findings]  # type: ignore[union-attr]
    assert "REPLY_TIMEOUT" not in live


def test_a_full_queue_holds_reads_back_and_queues_no_tick(sockdir: str) -> None:
    """While reads are held back, the relay queues no Tick: replies it has not read yet are not the peer's lag."""
    srv = EchoServer(os.path.join(sockdir, "dev.sock"))
    px = Proxy(sockdir, srv.path, timeout=0.5)
    relay = px.relay
    from vfudissect.core.events import Tick

    ticks_while_full = []
    orig = relay._enqueue

    def enqueue(ev, size=0):  # type: ignore[no-untyped-def]
        if isinstance(ev, Tick) and relay.full:
            ticks_while_full.append(ev)
        orig(ev, size)

    relay._enqueue = enqueue  # type: ignore[method-assign]
    object.__setattr__(relay.cfg, "max_events", 50)  # a tiny queue: full all the time under the flood
    record = px.session.recorder.record  # type: ignore[union-attr]

    def slow(ev):  # type: ignore[no-untyped-def]
        time.sleep(0.0005)
        record(ev)

    relay.recorder.record = slow  # type: ignore[method-assign]
    rtts = flood_from_child(px.path, 600)
    events = px.events()
    srv.close()
    assert ticks_while_full == []
    assert relay.peak_events <= 50 + 64  # one batch of reads past the bound at most
    assert len([e for e in events if isinstance(e, MessageIn)]) == 2 * 600 + 2
    assert relay.longest_wait < relay.cfg.max_hold + 0.02
    assert max(rtts) < 1.0
