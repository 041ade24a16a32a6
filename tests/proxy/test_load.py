"""The proxy under sustained load: a pipelined flood through the real proxy whose recorder is slowed on purpose.

Whatever the recording costs, no message waits in the proxy longer than the bound, memory stays bounded, every
message reaches the capture, and a server that answered promptly draws no REPLY_TIMEOUT.
"""

from __future__ import annotations

import os
import resource
import socket
import threading
import time

from vfudissect import spec
from vfudissect.core.events import MessageIn
from vfudissect.core.records import Finding
from vfudissect.analysis import analyze
from vfudissect.core.analyzer import AnalyzerConfig
from vfudissect.core.build import region_read, version, version_reply
from tests.proxy.conftest import shutdown_quietly
from tests.proxy_harness import Proxy

HDR = spec.HEADER


class EchoServer:
    """Answers every REGION_READ at once (4 bytes of data), in its own thread: a server that is never late."""

    def __init__(self, path: str) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(1)
        self.path = path
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        c, _ = self.listener.accept()
        f = c.makefile("rb")
        while True:
            head = f.read(16)
            if len(head) < 16:
                break
            msg_id, cmd, size, _flags, _err = HDR.unpack(head)
            body = f.read(size - 16)
            if cmd == spec.Command.VERSION:
                c.sendall(version_reply(msg_id))
            else:
                c.sendall(HDR.pack(msg_id, cmd, 16 + 16 + 4, 1, 0) + body[:16] + b"\1\2\3\4")
        c.close()

    def close(self) -> None:
        shutdown_quietly(self.listener)  # a thread still in accept() wakes, before its fd is freed
        self.listener.close()


def flood(path: str, n: int, outstanding: int = 32) -> list[float]:
    """Pipelined 4-byte REGION_READs; the round trip of each, in seconds."""
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(path)
    f = c.makefile("rb")
    c.sendall(version(0))
    head = f.read(16)
    f.read(HDR.unpack(head)[2] - 16)
    sent: dict[int, float] = {}
    rtts: list[float] = []
    issued = 0
    while len(rtts) < n:
        batch = b""
        while issued < n and issued - len(rtts) < outstanding:
            issued += 1
            sent[issued & 0xFFFF] = time.monotonic()
            batch += region_read(issued & 0xFFFF, 0, 0, 4)
        if batch:
            c.sendall(batch)
        head = f.read(16)
        msg_id, _cmd, size, _fl, _err = HDR.unpack(head)
        f.read(size - 16)
        rtts.append(time.monotonic() - sent.pop(msg_id))
    c.close()
    return rtts


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
    rtts = flood(px.path, n)
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
    rtts = flood(px.path, 600)
    events = px.events()
    srv.close()
    assert ticks_while_full == []
    assert relay.peak_events <= 50 + 64  # one batch of reads past the bound at most
    assert len([e for e in events if isinstance(e, MessageIn)]) == 2 * 600 + 2
    assert relay.longest_wait < relay.cfg.max_hold + 0.02
    assert max(rtts) < 1.0
