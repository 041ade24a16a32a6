"""Scripted vfio-user peers: fixed messages sent with real fds through a real proxy, and what it must record.

A ``Scenario`` is a list of ``Step``s: who sends (``c2s``: the client,
``s2c``: the server), the bytes (built with ``vfudissect.testing``), the
kinds of fds to pass with them (fresh memfds, eventfds, sockets), a wait
before sending, and how the bytes go out.  ``play()`` connects a scripted
client to the proxy and accepts the proxy's connection as the scripted
server, then sends each step and has the other side read exactly what the
proxy forwards before the next step starts, so the capture's frames are
deterministic: frame 1 opens the connection, then one frame per message in
order, then one per closed direction.

``model()`` says which events the proxy records for the same steps: each
step's bytes go through the deframer the relay itself uses
(core/framing.py), and the events are numbered by a real judging
``CaptureWriter`` (same fragments, snaplen and finding records);
``expected()`` feeds them to a sans-io ``Playbook``: the findings the live
proxy and ``vfudissect read`` must both report.
"""

from __future__ import annotations

import array
import io
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from .. import spec
from ..capture.judge import JudgingWriter
from ..capture.writer import CaptureWriter
from .. import __version__
from ..core.events import ConnClosed, ConnOpened, Event, FdInfo, Tick, VerdictsIn
from ..core.records import Finding
from ..core import framing
from ..core.framing import ConnectionFraming
from ..core.exchange import FD_KINDS, HOW, Scenario, Step, c2s, s2c  # noqa: F401  (the scripts' vocabulary)
from ..testing import Playbook

C2S, S2C = spec.C2S, spec.S2C
MEMFD_SIZE = 0x10000
_ANC = socket.CMSG_SPACE(253 * 4)
_BIG = 1 << 16  # steps larger than this are sent from a helper thread (the socket buffers would fill)


class ScriptError(Exception):
    """A scripted peer did not get what the script says the proxy forwards; says which step and what."""


# ------------------------------------------------------------------ the model: what the proxy records
@dataclass(frozen=True, slots=True)
class Recorded:
    """One event the proxy records, with its frame, and the step (index) it came from (None: open/close)."""

    event: Event
    step: int | None


def _fd_info(kind: str) -> FdInfo:
    if kind == "memfd":
        return FdInfo("memfd", MEMFD_SIZE, 0, 2, "/memfd:vfudissect-scripted (deleted)")
    if kind == "eventfd":
        return FdInfo("eventfd", 0, 0, 2, "anon_inode:[eventfd]")
    return FdInfo("socket", 0, 0, 2, "socket:[0]")


def model(scn: Scenario, socket_path: str = "scripted.sock") -> list[Recorded]:
    """The events the proxy records for ``scn``, with frames: each step's bytes through the deframer the relay
    uses, numbered by a real judging CaptureWriter (fragments, snaplen and the findings' own records included)."""
    ts = 1000.0
    closed: set[str] = set()
    conn = ConnectionFraming(stall_timeout=1e9)
    events: list[tuple[Event, int | None]] = [(ConnOpened(ts, 1, socket_path), None)]

    def put(outs: list, d: str, infos: tuple[FdInfo, ...], i: int | None) -> None:
        for o in outs:
            if o.kind == framing.MESSAGE:
                conn.saw(d, o.data)
            ev = framing.to_event(o, 1, d, infos if o.fds else ())
            if ev is not None:
                events.append((ev, i))

    for i, st in enumerate(scn.steps):
        ts += 0.001 + st.delay
        d = st.dir
        if d in closed:
            raise ValueError(f"step {i}: the {d} direction was already closed")
        df = conn.of(d)
        infos = () if st.starve_fds else tuple(_fd_info(k) for k in st.fds)
        tokens = tuple(range(len(infos)))  # stand-ins for the fds the relay would hold (none when starved)
        if st.how == "close":
            put(df.close(ts), d, (), i)
            events.append((ConnClosed(ts, 1, d), i))
            closed.add(d)
            continue
        if st.how == "split":
            if df.raw:
                raise ValueError(f"step {i}: a split step in a raw direction is read in timing-dependent pieces")
            put(df.feed(st.data[:spec.HEADER_SIZE], ts=ts), d, (), i)
            put(df.feed(st.data[spec.HEADER_SIZE:], tokens, st.starve_fds, ts), d, infos, i)
        else:
            if st.how == "whole" and not df.raw and st.size != len(st.data) and st.size >= spec.HEADER_SIZE \
                    and st.size <= df.limit:
                raise ValueError(f"step {i}: header size {st.size} but {len(st.data)} bytes (use how='cut')")
            put(df.feed(st.data, tokens, st.starve_fds, ts), d, infos, i)
        if st.how == "cut":
            put(df.close(ts), d, (), i)
            events.append((ConnClosed(ts, 1, d), i))
            closed.add(d)
    for d in (C2S, S2C):  # the orderly end: the client closes first, then the server
        if d not in closed:
            ts += 0.001
            put(conn.of(d).close(ts), d, (), None)
            events.append((ConnClosed(ts, 1, d), None))
    writer = CaptureWriter(io.BytesIO(), snaplen=scn.snaplen, judged=scn.timeout)
    judge = JudgingWriter(writer, timeout=scn.timeout)
    out: list[Recorded] = [Recorded(VerdictsIn(events[0][0].ts, f"vfudissect {__version__}", scn.timeout, 1), None)]
    for ev, i in events:
        # the proxy's clock ticks while it waits: a REPLY_TIMEOUT is recorded before the late reply comes
        out.extend(Recorded(f, None) for f in judge.record_findings(judge.analyzer.feed(Tick(ev.ts))))
        recorded = writer.write(ev)  # type: ignore[arg-type]
        out.append(Recorded(recorded, i))
        # the engine's findings take frame numbers of their own, as in the proxy's capture
        out.extend(Recorded(f, None) for f in judge.record_findings(judge.analyzer.feed(recorded)))
    out.extend(Recorded(f, None) for f in judge.record_findings(judge.analyzer.finish(ts)))
    return out


def expected(scn: Scenario) -> Playbook:
    """The sans-io run of what the proxy records for ``scn``: the findings it and `read` must report."""
    pb = Playbook(timeout=scn.timeout, open_conn=False)
    for rec in model(scn):
        pb.feed(rec.event)
    pb.finish()
    return pb


def step_frames(scn: Scenario) -> dict[int, tuple[int, ...]]:
    """Frames recorded for each step, by step index."""
    out: dict[int, tuple[int, ...]] = {}
    for rec in model(scn):
        if rec.step is not None:
            out[rec.step] = out.get(rec.step, ()) + (rec.event.frame,)  # type: ignore[union-attr]
    return out


def findings_key(findings: Sequence[Finding]) -> list[tuple[str, tuple[int, ...]]]:
    """(code, frames) of every finding, sorted: what live, read and the model are compared on."""
    return sorted((f.code, tuple(f.frames)) for f in findings)


# ------------------------------------------------------------------ the peers
class FdStarver(Protocol):
    """Makes the proxy unable to take new file descriptors for a moment (see RecordProcess)."""

    def starve_fds(self) -> None: ...

    def feed_fds(self) -> None: ...


def _make_fds(kinds: Sequence[str]) -> tuple[list[int], list[int]]:
    """Fresh fds of the given kinds: (to pass, to close afterwards)."""
    send: list[int] = []
    close: list[int] = []
    try:
        for k in kinds:
            if k == "memfd":
                fd = os.memfd_create("vfudissect-scripted", os.MFD_CLOEXEC)
                os.ftruncate(fd, MEMFD_SIZE)
                send.append(fd)
                close.append(fd)
            elif k == "eventfd":
                fd = os.eventfd(0, os.EFD_CLOEXEC)
                send.append(fd)
                close.append(fd)
            else:
                a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                send.append(a.detach())
                close.extend((send[-1], b.detach()))
    except OSError:
        _close(close)
        raise
    return send, close


def _close(fds: Sequence[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _sendmsg(sock: socket.socket, data: bytes, fds: Sequence[int]) -> None:
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
    n = sock.sendmsg([data], anc)
    if n < len(data):
        sock.sendall(memoryview(data)[n:])


def _send_step(sock: socket.socket, st: Step, fds: Sequence[int]) -> None:
    if st.how == "split":
        _sendmsg(sock, st.data[:spec.HEADER_SIZE], ())
        _sendmsg(sock, st.data[spec.HEADER_SIZE:], fds)
    elif st.how == "close":
        sock.shutdown(socket.SHUT_WR)
    else:
        _sendmsg(sock, st.data, fds)
        if st.how == "cut":
            sock.shutdown(socket.SHUT_WR)


@dataclass
class _Received:
    data: bytearray = field(default_factory=bytearray)
    fds: int = 0


def _recv(sock: socket.socket, n: int, what: str) -> _Received:
    """Exactly n bytes (fds are counted and closed)."""
    got = _Received()
    while len(got.data) < n:
        try:
            data, anc, _flags, _ = sock.recvmsg(min(n - len(got.data), 1 << 20), _ANC)
        except TimeoutError:
            raise ScriptError(f"{what}: got {len(got.data)} of {n} bytes, then nothing more") from None
        for level, kind, blob in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                a = array.array("i")
                a.frombytes(blob[:len(blob) - len(blob) % 4])
                got.fds += len(a)
                _close(a)
        if not data:
            raise ScriptError(f"{what}: connection closed after {len(got.data)} of {n} bytes")
        got.data += data
    return got


def _expect_eof(sock: socket.socket, what: str) -> None:
    try:
        data = sock.recv(1 << 16)
    except TimeoutError:
        raise ScriptError(f"{what}: expected the other side to close, nothing came") from None
    if data:
        raise ScriptError(f"{what}: expected the other side to close, got {len(data)} more bytes")


def play(scn: Scenario, connect_path: str, listener: socket.socket, starver: FdStarver | None = None,
         timeout: float = 10.0) -> None:
    """Run ``scn`` through the proxy listening at ``connect_path``, which forwards to ``listener``."""
    if scn.needs_fd_starving and starver is None:
        raise ValueError(f"{scn.name}: starving the proxy of fds needs a proxy process (RecordProcess)")
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server: socket.socket | None = None
    try:
        client.settimeout(timeout)
        client.connect(connect_path)
        listener.settimeout(timeout)
        try:
            server, _ = listener.accept()
        except TimeoutError:
            raise ScriptError(f"{scn.name}: the proxy never connected to the scripted server") from None
        server.settimeout(timeout)
        ends = {C2S: (client, server), S2C: (server, client)}
        for i, st in enumerate(scn.steps):
            what = f"{scn.name} step {i} ({st.dir} {st.how})"
            src, dst = ends[st.dir]
            if st.delay:
                time.sleep(st.delay)
            send, close = _make_fds(st.fds)
            try:
                if st.starve_fds:
                    starver.starve_fds()  # type: ignore[union-attr]
                try:
                    if len(st.data) > _BIG:
                        t = threading.Thread(target=_send_step, args=(src, st, send), daemon=True)
                        t.start()
                        _recv(dst, len(st.data), what)
                        t.join(timeout)
                    else:
                        _send_step(src, st, send)
                        if st.data:
                            _recv(dst, len(st.data), what)
                finally:
                    if st.starve_fds:
                        starver.feed_fds()  # type: ignore[union-attr]
            finally:
                _close(close)
            if st.how in ("cut", "close"):
                _expect_eof(dst, what)
        closed = {st.dir for st in scn.steps if st.how in ("cut", "close")}
        if C2S not in closed:
            client.shutdown(socket.SHUT_WR)
            _expect_eof(server, f"{scn.name} end")
        if S2C not in closed:
            server.shutdown(socket.SHUT_WR)
            _expect_eof(client, f"{scn.name} end")
    finally:
        client.close()
        if server is not None:
            server.close()
