"""`replay server`: be the recorded device for a live client, answering each request with the recorded reply that matches it.

``ServerPlayer`` is the replay without I/O.  For each live request it finds
the recorded request it stands for (``match``): the first unused one equal
to it (same command, flags and payload fields after the normalisation
rules); else the first unused one of the same command, or the last equal
one again when all are used (REPLAY_INEXACT); else none (an EINVAL error
reply, REPLAY_UNMATCHED).  It then plays what the recorded server did in
answer, in order: the server commands (DMA_READ / DMA_WRITE) it sent
before its reply, each waiting for the client's reply (compared with the
recorded one), then the reply with the live msg_id, then the server
commands that came after it before the client's next request.  Requests
that come meanwhile (a pipelining client) wait their turn, as they would
in a single-threaded device.

``run()`` is the I/O edge: the listening socket, the fds made afresh (a
memfd per recorded region fd, showing what the recording showed of the
region as the replay goes; a twin socket of its own), the capture.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, TextIO

from .. import spec
from ..core.findings import Code, kind
from ..core.records import Finding
from ..core.rules.base import declares
from ..peers.wire import STRUCTS, error_reply, unpack
from . import match
from .match import name_of
from .channel import Arrived, Channel
from .client import Divergence, Live, ReplayFailed, Send
from .fds import FdMaker
from .recording import ReplayRecording, describe, own_cred, peer_cred
from .script import MAIN, TWIN, Recorded, RecordedIrq, Script

C = spec.Command
_HDR = spec.HEADER
_ACCESS_SIZE = spec.LAYOUTS["region_access"].size


@dataclass(frozen=True, slots=True)
class Signal:
    """An interrupt for the replay server to raise: the client's eventfd for (index, vector), signalled ``count``."""

    index: int
    vector: int
    count: int
    recorded: RecordedIrq


@dataclass
class ServerTally:
    """What the replay server did, for its summary."""

    requests: int = 0
    exact: int = 0
    inexact: int = 0
    unmatched: int = 0
    recorded_requests: int = 0
    used: int = 0  # distinct recorded requests answered
    divergences: int = 0
    by_code: dict[str, int] = field(default_factory=dict)
    interrupts: int = 0  # recorded interrupts raised on the live client's eventfds
    recorded_interrupts: int = 0


@dataclass(frozen=True, slots=True)
class _Wait:
    """A server command sent, waiting for the client's reply."""

    command: Recorded
    frame: int
    since: float


class ServerPlayer:
    """The server side of a recorded connection, played for a live client (no I/O: see the module)."""

    def __init__(self, script: Script, timeout: float = 5.0) -> None:
        self.script = script
        self.timeout = timeout
        items = script.items
        self._requests = [r for r in items if r.dir == spec.C2S and not r.is_reply]
        self._keys: dict[int, tuple] = {}
        self._used: set[int] = set()
        self._served_followers: set[int] = set()
        self._backlog: deque[Live] = deque()  # requests that came while one is being answered
        # what to do next for the request in hand: ("command" | "reply" | "error" | "close" | "irq", recorded, live)
        self._plan: deque[tuple[str, Any, Live]] = deque()
        self._irqs_after: dict[int, list[RecordedIrq]] = {}  # the recorded interrupts, by the message they followed
        for irq in script.irqs:
            self._irqs_after.setdefault(irq.after, []).append(irq)
        self._irqs_done: set[int] = set()
        self._wait: _Wait | None = None
        self._last_frame = 0
        self.tally = ServerTally(recorded_requests=len(self._requests), recorded_interrupts=len(script.irqs))
        self.finished = False  # the recorded server closed here: the replay closes too

    def _key(self, r: Recorded) -> tuple:
        k = self._keys.get(r.index)
        if k is None:
            k = self._keys[r.index] = match.request_key(r.data)
        return k

    def _diverge(self, code: str, text: str, live_frame: int = 0) -> Divergence:
        self.tally.divergences += 1
        self.tally.by_code[code] = self.tally.by_code.get(code, 0) + 1
        return Divergence(code, text, live_frame or self._last_frame)

    def _note(self, code: str, text: str, live_frame: int) -> Divergence:
        self.tally.by_code[code] = self.tally.by_code.get(code, 0) + 1
        return Divergence(code, text, live_frame)

    # ------------------------------------------------------------ matching
    def match(self, data: bytes) -> tuple[Recorded | None, str]:
        """The recorded request a live one stands for, and how: "exact", "inexact", "reused" or "none"."""
        command = _HDR.unpack_from(data)[1]
        key = match.request_key(data)
        same_cmd = [r for r in self._requests if r.command == command]
        for r in same_cmd:
            if r.index not in self._used and self._key(r) == key:
                return r, "exact"
        for r in same_cmd:
            if r.index not in self._used:
                return r, "inexact"
        equal = [r for r in same_cmd if self._key(r) == key]
        if equal:
            return equal[-1], "reused"
        if same_cmd:
            return same_cmd[-1], "reused"
        return None, "none"

    # ------------------------------------------------------------ what came
    def received(self, m: Live, now: float) -> tuple[list[Send], list[Divergence]]:
        """A live client message: what to send now, and what differs."""
        self._last_frame = m.frame
        if m.is_reply:
            divs = self._client_reply(m)
            sends, more = self._advance(now)
            return sends, divs + more
        self._backlog.append(m)
        return self._advance(now)

    @declares(Code.REPLAY_EXTRA, Code.REPLAY_DIFFERS)
    def _client_reply(self, m: Live) -> list[Divergence]:
        w = self._wait
        msg_id = m.header[0]
        if w is None or w.command.msg_id != msg_id:
            return [self._diverge(Code.REPLAY_EXTRA, f"{name_of(m.data)} (id {msg_id}) answers no command the replay "
                                                     "server sent", m.frame)]
        self._wait = None
        rec_idx = self.script.reply_of.get(w.command.index)
        if rec_idx is None:
            return [self._diverge(Code.REPLAY_EXTRA, f"{name_of(m.data)} to {w.command.name}: the recorded client never"
                                                     " answered it", m.frame)]
        rec = self.script.items[rec_idx]
        diffs = match.differences(rec.data, rec.fds, m.data, m.fds)
        if not diffs:
            return []
        return [self._diverge(Code.REPLAY_DIFFERS, f"{name_of(m.data)} differs from recorded frame {rec.frame}: "
                                                   f"{match.summary(diffs)}", m.frame)]

    def _advance(self, now: float) -> tuple[list[Send], list[Divergence]]:
        """Send what may go: the plan of the request in hand up to its next server command, then the next request."""
        sends: list[Send] = []
        divs: list[Divergence] = []
        while self._wait is None:
            if not self._plan:
                if not self._backlog:
                    break
                divs += self._start(self._backlog.popleft())
                continue
            what, rec, live = self._plan.popleft()
            if what == "irq":
                sends.append(Signal(rec.index, rec.vector, rec.count, rec))  # type: ignore[arg-type]
                continue
            if rec is None or what == "error":
                msg_id, command = live.header[0], live.header[1]
                sends.append(Send(live.channel, error_reply(msg_id, command, errno.EINVAL)))
            elif what == "command":
                sends.append(Send(rec.channel, rec.data, rec.fds, rec))
                self._wait = _Wait(rec, 0, now)
            elif what == "reply":
                msg_id = live.header[0]
                sends.append(Send(live.channel, _with_id(rec.data, msg_id), rec.fds, rec))
            elif what == "close":
                self.finished = True
                break
        return sends, divs

    @declares(Code.REPLAY_UNMATCHED, Code.REPLAY_INEXACT)
    def _start(self, m: Live) -> list[Divergence]:
        """Plan the answer to one live request."""
        self.tally.requests += 1
        rec, how = self.match(m.data)
        divs: list[Divergence] = []
        if rec is None:
            self.tally.unmatched += 1
            divs.append(self._diverge(Code.REPLAY_UNMATCHED, f"{name_of(m.data)} (id {m.header[0]}): the recorded "
                                                             "client never sent that command; answered EINVAL",
                                      m.frame))
            if not m.header[3] & spec.FLAG_NO_REPLY:
                self._plan.append(("error", None, m))
            return divs
        first_use = rec.index not in self._used
        if first_use:
            self._used.add(rec.index)
            self.tally.used += 1
        if how == "exact":
            self.tally.exact += 1
        else:
            self.tally.inexact += 1
            diffs = _request_diffs(rec, m)
            why = "all recorded ones were used; answered like the last" if how == "reused" else \
                "no unused recorded request equals it"
            divs.append(self._note(Code.REPLAY_INEXACT, f"{name_of(m.data)} (id {m.header[0]}) matched recorded frame "
                                                        f"{rec.frame} by command alone ({why})"
                                   + (f": {match.summary(diffs)}" if diffs else ""), m.frame))
        items = self.script.items
        reply_idx = self.script.reply_of.get(rec.index)
        end = reply_idx if reply_idx is not None else rec.index
        if first_use:  # the server commands it made before replying (and the interrupts it raised meanwhile)
            self._irqs(rec.index, m)
            for r in items[rec.index + 1:end]:
                if r.dir == spec.S2C and not r.is_reply and r.index not in self._served_followers:
                    self._served_followers.add(r.index)
                    self._plan.append(("command", r, m))
                self._irqs(r.index, m)
        if reply_idx is not None:
            self._plan.append(("reply", items[reply_idx], m))
        if first_use:  # and those it made after, before the client's next request
            self._irqs(end, m)
            for r in items[end + 1:]:
                if r.dir == spec.C2S and not r.is_reply:
                    break
                if r.dir == spec.S2C and not r.is_reply and r.index not in self._served_followers:
                    self._served_followers.add(r.index)
                    self._plan.append(("command", r, m))
                self._irqs(r.index, m)
            if self.script.closed_first == "server" and all(r.index in self._used for r in self._requests):
                self._plan.append(("close", rec, m))
        return divs

    def _irqs(self, after: int, m: Live) -> None:
        """Plan the recorded interrupts that came right after message ``after``, once each."""
        for irq in self._irqs_after.get(after, ()):
            if irq.frame not in self._irqs_done:
                self._irqs_done.add(irq.frame)
                self._plan.append(("irq", irq, m))

    def sent(self, s: Send, frame: int) -> None:
        if self._wait is not None and s.recorded is self._wait.command:
            self._wait = _Wait(self._wait.command, frame, self._wait.since)

    # ------------------------------------------------------------ time
    def wake(self, now: float) -> float:
        return self._wait.since + self.timeout if self._wait is not None else now + 1.0

    @declares(Code.REPLAY_NO_REPLY)
    def tick(self, now: float) -> tuple[list[Send], list[Divergence]]:
        w = self._wait
        if w is None or now - w.since < self.timeout:
            return [], []
        self._wait = None
        div = self._diverge(Code.REPLAY_NO_REPLY, f"no reply to {w.command.name} within {self.timeout:g} s (the "
                                                  "recorded client answered it)", w.frame)
        sends, divs = self._advance(now)
        return sends, [div] + divs

    @declares(Code.REPLAY_MISSING)
    def client_left(self) -> Divergence | None:
        """The client closed: what of the recording it never asked for, if anything."""
        never = [r for r in self._requests if r.index not in self._used]
        if not never:
            return None
        first = never[0]
        return self._diverge(Code.REPLAY_MISSING, f"the client left with {len(never)} of {len(self._requests)} "
                                                  f"recorded requests never asked, the first {first.name}")


def _request_diffs(rec: Recorded, m: Live) -> list[match.Difference]:
    return match.header_diffs(rec.data, m.data) + match.field_diffs(rec.data, m.data, False)


def _with_id(data: bytes, msg_id: int) -> bytes:
    return struct.pack("<H", msg_id & 0xFFFF) + data[2:]


# ------------------------------------------------------------------ the I/O edge
@dataclass
class ServerOutcome:
    tally: ServerTally
    findings: list[Finding]
    capture: str
    seconds: float
    stopped: str = ""

    @property
    def diverged(self) -> bool:
        return self.tally.divergences > 0 or self.tally.inexact > 0 or self.tally.unmatched > 0


class _Regions:
    """The region fds the replay server handed out, kept showing what the recording showed of each region."""

    def __init__(self) -> None:
        self.fds: dict[int, tuple[int, int]] = {}  # region index -> (live fd, offset of the region in it)

    def replied(self, s: Send, fds: list[int]) -> None:
        r = s.recorded
        if r is None or not r.is_reply or not fds:
            return
        body = s.data[spec.HEADER_SIZE:]
        if r.command == C.DEVICE_GET_REGION_INFO and len(body) >= STRUCTS["region_info"].size:
            v = unpack("region_info", body)
            self.fds[v["index"]] = (fds[0], v["offset"])

    def shows(self, data: bytes) -> None:
        """A REGION_READ reply sent or a REGION_WRITE received: its bytes into the region's fd."""
        body = data[spec.HEADER_SIZE:]
        if len(body) <= _ACCESS_SIZE:
            return
        v = unpack("region_access", body)
        at = self.fds.get(v["region"])
        if at is None:
            return
        fd, base = at
        payload = body[_ACCESS_SIZE:_ACCESS_SIZE + v["count"]]
        try:
            if os.fstat(fd).st_size >= base + v["offset"] + len(payload):
                os.pwrite(fd, payload, base + v["offset"])
        except OSError:
            pass


def listen(path: str) -> socket.socket:
    """A listening socket at ``path``: a leftover socket nobody listens on is replaced, anything else refused."""
    if os.path.lexists(path):
        import stat

        st = os.lstat(path)
        if not stat.S_ISSOCK(st.st_mode):
            raise ReplayFailed(f"cannot listen on {path}: it exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)
        except OSError as exc:
            raise ReplayFailed(f"cannot listen on {path}: {exc.strerror or exc}") from None
        else:
            raise ReplayFailed(f"cannot listen on {path}: a server is listening there already")
        finally:
            probe.close()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(path)
        s.listen(1)
    except OSError as exc:
        s.close()
        raise ReplayFailed(f"cannot listen on {path}: {exc.strerror or exc}") from None
    return s


@declares(Code.REPLAY_CLOSED)
def run(script: Script, path: str, out_path: str, *, timeout: float = 5.0, quiet: bool = False,
        view: TextIO | None = None, color: bool = False, accept_timeout: float | None = None,
        ready: "callable | None" = None) -> ServerOutcome:  # type: ignore[valid-type]
    """Listen at ``path``, serve one client as the recorded server of ``script``, record into ``out_path``."""
    lsock = listen(path)
    try:
        if view is not None and not quiet:
            view.write(f"replaying the device of connection #{script.conn} of {script.path}: listening on {path}\n")
            view.flush()
        if ready is not None:
            ready()
        r, _w, _x = select.select([lsock], [], [], accept_timeout)
        if not r:
            raise ReplayFailed(f"no client connected to {path} within {accept_timeout:g} s")
        sock, _addr = lsock.accept()
    finally:
        lsock.close()
        try:
            os.unlink(path)
        except OSError:
            pass
    rec = ReplayRecording(out_path, timeout, f"vfudissect replay server of {script.path} connection #{script.conn}",
                          view=view, quiet=quiet, color=color)
    player = ServerPlayer(script, timeout)
    maker = FdMaker()
    regions = _Regions()
    irq_fds: dict[tuple[int, int], int] = {}  # (index, vector) -> the live client's eventfd (SET_IRQS)
    chans: dict[str, Channel] = {MAIN: Channel(sock, MAIN, spec.C2S)}
    conns = {MAIN: 1, TWIN: 2}
    rec.opened(1, path, peer_cred(sock), own_cred())
    start = time.time()
    stopped = ""
    twin_peer: list[socket.socket] = []

    def emit(d: Divergence) -> None:
        frames = (d.live_frame,) if d.live_frame else ()
        rec.finding(Finding(d.code, kind(d.code).severity, 1, frames, d.text, time.time()))

    def send(s: Send | Signal) -> None:
        if isinstance(s, Signal):
            fd = irq_fds.get((s.index, s.vector))
            if fd is None:
                rec.note(1, f"the recorded server raised {spec.PCI_IRQS.get(s.index, s.index)} vector {s.vector} "
                            f"(frame {s.recorded.frame}); the live client gave no eventfd for it", spec.S2C)
                return
            try:
                os.eventfd_write(fd, s.count)
            except OSError as exc:
                rec.note(1, f"raising {s.index}/{s.vector} failed: {exc.strerror or exc}", spec.S2C)
                return
            player.tally.interrupts += 1
            rec.irq(1, s.index, s.vector, s.count)
            return
        fds = [maker.make(info) for info in s.fds]
        if s.recorded is not None and s.recorded.command == C.VERSION and s.recorded.is_reply and s.fds:
            fds = _twin_for(s, fds, chans, twin_peer, rec, path, maker)
        ch = chans.get(s.channel) or chans[MAIN]
        ch.send(s.data, tuple(fds))
        regions.replied(s, fds)
        if s.recorded is not None and s.recorded.command == C.REGION_READ and s.recorded.is_reply:
            regions.shows(s.data)
        frame = rec.message(conns[ch.name], spec.S2C, s.data, describe(tuple(fds)))
        player.sent(s, frame)

    try:
        while True:
            now = time.time()
            sends, divs = player.tick(now)
            for d in divs:
                emit(d)
            for s in sends:
                send(s)
            if player.finished:
                break
            rlist = list(chans.values())
            wlist = [c for c in rlist if c.sending]
            try:
                r, w, _x = select.select(rlist, wlist, [], max(0.0, min(player.wake(now) - now, 0.25)))
            except InterruptedError:
                continue
            for c in w:
                c.flush()
            gone = False
            for c in r:
                for a in c.receive():
                    for s, d in _take(a, rec, conns, player, regions, irq_fds):
                        if d is not None:
                            emit(d)
                        if s is not None:
                            send(s)
                if c.eof:
                    rec.closed(conns[c.name], spec.C2S)
                    gone = gone or c.name == MAIN
            if gone:
                d = player.client_left()
                if d is not None:
                    emit(d)
                    stopped = d.text
                break
            broken = next((c for c in chans.values() if c.broken), None)
            if broken is not None:
                stopped = f"sending to the client failed ({broken.broken})"
                emit(player._diverge(Code.REPLAY_CLOSED, stopped))
                break
            rec.tick()
            rec.flush()
    except KeyboardInterrupt:
        stopped = "interrupted; the replay's capture is complete up to here"
    finally:
        end = time.time() + 2.0
        while any(c.sending and not c.broken for c in chans.values()) and time.time() < end:
            select.select([], [c for c in chans.values() if c.sending], [], 0.1)
            for c in chans.values():
                c.flush()
        for c in chans.values():
            c.close()
        for t in twin_peer:
            t.close()
        rec.closed(1, spec.S2C)
        rec.close()
        maker.close()
        for fd in irq_fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
    return ServerOutcome(player.tally, rec.findings, out_path, time.time() - start, stopped)


def _twin_for(s: Send, fds: list[int], chans: dict[str, Channel], twin_peer: list[socket.socket],
              rec: ReplayRecording, path: str, maker: FdMaker) -> list[int]:
    """A VERSION reply that negotiated a twin socket: a socketpair of the replay's own, one end sent."""
    from ..core.framing import twin_socket_index, version_capabilities

    idx = twin_socket_index(version_capabilities(s.data), len(fds))
    if idx is None:
        return fds
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    twin_peer.append(theirs)  # closed once sent (the kernel holds the client's copy)
    chans[TWIN] = Channel(mine, TWIN, spec.C2S)
    rec.opened(2, path, None, own_cred(), twin_of=1)
    out = list(fds)
    out[idx] = theirs.fileno()
    return out


def _irq_eventfds(data: bytes, fds: tuple[int, ...], irq_fds: dict[tuple[int, int], int]) -> tuple[int, ...]:
    """A live SET_IRQS: the eventfds it gives for triggers, kept by (index, vector); one that tears an index's
    triggers down closes them.  Returns the fds kept."""
    if len(data) < 36 or spec.HEADER.unpack_from(data)[1] != C.DEVICE_SET_IRQS or match.msg_type(data) != "command":
        return ()
    _argsz, flags, index, start, count = struct.unpack_from("<IIIII", data, 16)
    if flags & spec.IRQ_SET_ACTION_MASK != spec.IRQ_SET_ACTION_TRIGGER:
        return ()
    if flags & spec.IRQ_SET_DATA_MASK == spec.IRQ_SET_DATA_NONE and count == 0:
        for key in [k for k in irq_fds if k[0] == index]:
            os.close(irq_fds.pop(key))
        return ()
    if flags & spec.IRQ_SET_DATA_MASK != spec.IRQ_SET_DATA_EVENTFD or len(fds) != count:
        return ()
    for i, fd in enumerate(fds):
        old = irq_fds.pop((index, start + i), None)
        if old is not None:
            os.close(old)
        irq_fds[(index, start + i)] = fd
    return fds


def _take(a: Arrived, rec: ReplayRecording, conns: dict[str, int], player: ServerPlayer,
          regions: _Regions, irq_fds: dict[tuple[int, int], int]) -> list[tuple[Send | Signal | None,
                                                                                   Divergence | None]]:
    conn = conns[a.channel]
    o = a.out
    infos = describe(a.fds)
    kept = _irq_eventfds(bytes(o.data), a.fds, irq_fds) if a.is_message else ()
    for fd in a.fds:  # the client's memfds: described, not used; its SET_IRQS eventfds kept to raise interrupts
        if fd not in kept:
            try:
                os.close(fd)
            except OSError:
                pass
    if not a.is_message:
        if o.kind == "note":
            if o.note:
                rec.note(conn, o.note, spec.C2S)
        else:
            rec.raw(conn, spec.C2S, bytes(o.data), o.note, o.flags)
        return []
    data = bytes(o.data)
    frame = rec.message(conn, spec.C2S, data, infos, o.flags, o.ts or None)
    if _HDR.unpack_from(data)[1] == C.REGION_WRITE and match.msg_type(data) == match.COMMAND:
        regions.shows(data)
    sends, divs = player.received(Live(a.channel, data, infos, frame, o.ts or time.time()), time.time())
    out: list[tuple[Send | None, Divergence | None]] = [(None, d) for d in divs]
    out += [(s, None) for s in sends]
    return out
