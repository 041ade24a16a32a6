"""`replay client`: play a capture's client side against a live server, and compare what it answers with the recording.

``ClientPlayer`` is the replay without I/O: it says which recorded client
message may go now (``ready``), takes each live server message
(``received``), and tells, on ``tick``, what never came.  The rules:

- A client request goes out, with its recorded msg_id, once every server
  message that preceded it in the capture has come (or was given up on
  after --timeout): pipelined requests stay pipelined, and nothing waits
  for what came later.  With ``pace`` it also waits for its recorded time.
- A live reply answers the request the replay sent with its id (oldest
  first); it is compared with the recorded reply to that request.
- A live server command (DMA_READ / DMA_WRITE) is matched with the next
  recorded server command of the same kind still to come, compared with
  it, and answered at once from the replay's memory (guest memory as the
  capture shows it), on the socket it came on.
- Every difference is a finding (REPLAY_*), naming the recorded frame.

``run()`` is the I/O edge: the sockets, the fds, the memory and the
replay's own capture.
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
from typing import TextIO

from .. import spec
from ..core.events import FdInfo
from ..core.findings import Code, kind
from ..core.framing import twin_socket_index, version_capabilities
from ..core.records import Finding
from ..core.rules.base import declares
from ..peers.wire import STRUCTS, ProtocolError, error_reply, reply, unpack
from . import match
from .match import name_of
from .channel import Arrived, Channel
from .fds import FdMaker, GuestMemory
from .recording import ReplayRecording, describe, own_cred, peer_cred
from .script import MAIN, SERVER, TWIN, Recorded, Script

C = spec.Command
_HDR = spec.HEADER
_DMA = spec.LAYOUTS["dma_access"]


@dataclass(frozen=True, slots=True)
class Live:
    """A message that came in live, as the replay's capture numbers it."""

    channel: str
    data: bytes
    fds: tuple[FdInfo, ...]
    frame: int
    ts: float

    @property
    def header(self) -> tuple[int, int, int, int, int]:
        return _HDR.unpack_from(self.data)  # type: ignore[return-value]

    @property
    def is_reply(self) -> bool:
        return self.header[3] & spec.FLAG_TYPE_MASK == spec.MSG_TYPE_REPLY


@dataclass(frozen=True, slots=True)
class Send:
    """A message for the replay to send: on which socket, its bytes, the recorded fds to stand up for it."""

    channel: str
    data: bytes
    fds: tuple[FdInfo, ...] = ()
    recorded: Recorded | None = None


@dataclass(frozen=True, slots=True)
class Divergence:
    """A finding of the replay, before it has a frame of the replay's capture: what, about which frames."""

    code: str
    text: str
    live_frame: int = 0
    recorded_frame: int = 0


@dataclass
class Tally:
    """What the replay saw, for its summary line."""

    sent: int = 0
    received: int = 0
    compared: int = 0
    divergences: int = 0
    by_code: dict[str, int] = field(default_factory=dict)


class ClientPlayer:
    """The client side of a recorded connection, played against a live server (no I/O: see the module)."""

    def __init__(self, script: Script, timeout: float = 5.0, pace: bool = False,
                 memory: GuestMemory | None = None) -> None:
        self.script = script
        self.timeout = timeout
        self.pace = pace
        self.memory = memory if memory is not None else GuestMemory()
        items = script.items
        self._requests = [r for r in items if r.dir == spec.C2S and not r.is_reply]
        self._next = 0  # next request to send
        self._server = [r.index for r in items if r.dir == spec.S2C]  # what must come, in order
        self._lo = 0  # first of _server not yet accounted for
        self._accounted: set[int] = set()
        self._inflight: dict[tuple[str, int], deque[tuple[Recorded, int]]] = {}  # (channel, id) -> (request, frame)
        self._id_offset: int | None = None
        self._sent_frame: dict[int, int] = {}  # recorded index -> live frame
        self._last_live_frame = 0
        self._progress = 0.0  # when the last message went or came
        self._t0: float | None = None  # live time of the first send (for pace)
        self.tally = Tally()
        self.closed_early = False

    # ------------------------------------------------------------ what to send
    def _first_unaccounted(self) -> int | None:
        srv, acc = self._server, self._accounted
        while self._lo < len(srv) and srv[self._lo] in acc:
            self._lo += 1
        return srv[self._lo] if self._lo < len(srv) else None

    def ready(self, now: float) -> list[Send]:
        """The recorded requests that may go now, in order."""
        out: list[Send] = []
        while self._next < len(self._requests):
            r = self._requests[self._next]
            first = self._first_unaccounted()
            if first is not None and first < r.index:
                break
            if self.pace and self._t0 is not None and now - self._t0 < r.ts - self._requests[0].ts:
                break
            out.append(Send(r.channel, r.data, r.fds, r))
            self._next += 1
        return out

    def wake(self, now: float) -> float:
        """When ``ready`` or ``tick`` may have something new without any message coming (a pace or a timeout)."""
        t = self._progress + self.timeout if self._first_unaccounted() is not None else now + 1.0
        if self.pace and self._t0 is not None and self._next < len(self._requests):
            t = min(t, self._t0 + self._requests[self._next].ts - self._requests[0].ts)
        return t

    def sent(self, s: Send, frame: int, now: float) -> None:
        """A message went out, as the replay's capture numbers it."""
        self.tally.sent += 1
        self._progress = now
        if self._t0 is None:
            self._t0 = now
        self._last_live_frame = frame
        r = s.recorded
        if r is None:
            return
        self._sent_frame[r.index] = frame
        if not r.is_reply and not r.no_reply:
            self._inflight.setdefault((r.channel, r.msg_id), deque()).append((r, frame))

    @property
    def done(self) -> bool:
        return self._next >= len(self._requests) and self._first_unaccounted() is None

    @property
    def played(self) -> str:
        return f"{self._next} of {len(self._requests)} recorded requests"

    # ------------------------------------------------------------ what came
    def _account(self, idx: int) -> None:
        self._accounted.add(idx)

    def _diverge(self, code: str, text: str, live_frame: int = 0, recorded_frame: int = 0) -> Divergence:
        self.tally.divergences += 1
        self.tally.by_code[code] = self.tally.by_code.get(code, 0) + 1
        return Divergence(code, text, live_frame or self._last_live_frame, recorded_frame)

    def received(self, m: Live, now: float) -> tuple[list[Send], list[Divergence]]:
        """A live server message: the answer to send (for a server command) and what differs."""
        self.tally.received += 1
        self._progress = now
        self._last_live_frame = m.frame
        msg_id, command, _size, flags, _err = m.header
        if flags & spec.FLAG_TYPE_MASK == spec.MSG_TYPE_REPLY:
            return [], self._reply(m, msg_id)
        return self._server_command(m, msg_id, command, flags)

    @declares(Code.REPLAY_EXTRA)
    def _reply(self, m: Live, msg_id: int) -> list[Divergence]:
        q = self._inflight.get((m.channel, msg_id))
        if not q and m.channel == TWIN:
            q = self._inflight.get((MAIN, msg_id))
        if not q:
            return [self._diverge(Code.REPLAY_EXTRA, f"{name_of(m.data)} (id {msg_id}) answers no request the replay "
                                                    "sent (nothing with that id is outstanding)", m.frame)]
        req, _req_frame = q.popleft()
        exp = self.script.reply_of.get(req.index)
        if exp is None:
            return [self._diverge(Code.REPLAY_EXTRA, f"{name_of(m.data)} to {req.name}: the recorded server never "
                                                    "answered that request", m.frame, req.frame)]
        rec = self.script.items[exp]
        late = exp in self._accounted
        self._account(exp)
        out = self._compare(rec, m, None)
        if late and not out:
            return []
        return out

    @declares(Code.REPLAY_EXTRA)
    def _server_command(self, m: Live, msg_id: int, command: int,
                        flags: int) -> tuple[list[Send], list[Divergence]]:
        items = self.script.items
        rec: Recorded | None = None
        first = self._first_unaccounted()
        for i in range(self._lo, len(self._server)):
            idx = self._server[i]
            r = items[idx]
            if idx not in self._accounted and not r.is_reply and r.command == command:
                rec = r
                break
        if rec is None and first is not None and not items[first].is_reply:
            rec = items[first]  # in the place of the server command due now, whatever it names
        divs: list[Divergence] = []
        if rec is None:
            divs.append(self._diverge(Code.REPLAY_EXTRA, f"{name_of(m.data)} (id {msg_id}): the recorded server sent no "
                                                        "more commands here", m.frame))
        else:
            self._account(rec.index)
            if self._id_offset is None:
                self._id_offset = (msg_id - rec.msg_id) & 0xFFFF
            divs += self._compare(rec, m, self._id_offset)
        answer = self._answer(m, msg_id, command, flags, rec)
        return ([answer] if answer is not None else []), divs

    @declares(Code.REPLAY_DIFFERS)
    def _compare(self, rec: Recorded, m: Live, id_offset: int | None) -> list[Divergence]:
        self.tally.compared += 1
        diffs = match.differences(rec.data, rec.fds, m.data, m.fds, id_offset)
        if rec.channel != m.channel:
            diffs.insert(0, match.Difference("socket", rec.channel, m.channel))
        if not diffs:
            return []
        return [self._diverge(Code.REPLAY_DIFFERS, f"{name_of(m.data)} differs from recorded frame {rec.frame}: "
                                                   f"{match.summary(diffs)}", m.frame, rec.frame)]

    def _answer(self, m: Live, msg_id: int, command: int, flags: int, rec: Recorded | None) -> Send | None:
        """The client's reply to a live server command: the recorded reply's shape, the replay's memory."""
        if flags & spec.FLAG_NO_REPLY:
            return None
        rec_reply = self.script.items[self.script.reply_of[rec.index]] if rec is not None and \
            rec.index in self.script.reply_of else None
        payload = m.data[spec.HEADER_SIZE:]
        if command not in (C.DMA_READ, C.DMA_WRITE) or len(payload) < _DMA.size:
            err = errno.ENOSYS if command not in (C.DMA_READ, C.DMA_WRITE) else errno.EINVAL
            return Send(m.channel, error_reply(msg_id, command, err), (), rec_reply)
        address, count = STRUCTS["dma_access"].unpack_from(payload)
        if command == C.DMA_READ:
            data = self.memory.read(address, count)
            if data is None and rec_reply is not None and not rec_reply.flags & spec.FLAG_ERROR:
                data = rec_reply.data[spec.HEADER_SIZE + _DMA.size:][:count]  # not mapped here: as recorded
            if data is None:
                return Send(m.channel, error_reply(msg_id, command, errno.EFAULT), (), rec_reply)
            body = payload[:_DMA.size] + data
        else:
            if not self.memory.write(address, payload[_DMA.size:_DMA.size + count]) and rec_reply is None:
                return Send(m.channel, error_reply(msg_id, command, errno.EFAULT), (), rec_reply)
            if rec_reply is not None and rec_reply.flags & spec.FLAG_ERROR:
                return Send(m.channel, error_reply(msg_id, command, rec_reply.error), (), rec_reply)
            # the recorded reply's length: libvfio-user's 16-byte DMA_WRITE reply, or QEMU's header alone
            keep = len(rec_reply.data) - spec.HEADER_SIZE if rec_reply is not None else _DMA.size
            body = payload[:min(keep, _DMA.size)]
        return Send(m.channel, reply(msg_id, command, body), (), rec_reply)

    # ------------------------------------------------------------ time
    @declares(Code.REPLAY_NO_REPLY, Code.REPLAY_MISSING)
    def tick(self, now: float) -> list[Divergence]:
        """What should have come by now and has not (after --timeout without progress): given up on, said."""
        out: list[Divergence] = []
        if now - self._progress < self.timeout:
            return out
        # what is owed: everything the server sent before the next request in the recording (all of it once every
        # request has gone), given up on together, each its own finding
        horizon = self._requests[self._next].index if self._next < len(self._requests) else len(self.script.items)
        while True:
            first = self._first_unaccounted()
            if first is None or first > horizon:
                if out:
                    self._progress = now
                return out
            rec = self.script.items[first]
            self._account(first)
            if rec.is_reply:
                req = self.script.request_of.get(first)
                req_frame = self._sent_frame.get(req, 0) if req is not None else 0
                what = self.script.items[req].name if req is not None else "a request"
                out.append(self._diverge(Code.REPLAY_NO_REPLY, f"no reply to {what} within {self.timeout:g} s "
                                                               f"(recorded reply: frame {rec.frame})", req_frame,
                                         rec.frame))
            else:
                out.append(self._diverge(Code.REPLAY_MISSING, f"the server did not send {rec.name} within "
                                                              f"{self.timeout:g} s", 0, rec.frame))

    @declares(Code.REPLAY_CLOSED)
    def peer_closed(self) -> Divergence | None:
        """The server closed: a divergence unless the recording had everything done (or the server closing)."""
        if self.done or (self.script.closed_first == SERVER and self._next >= len(self._requests)):
            return None
        self.closed_early = True
        return self._diverge(Code.REPLAY_CLOSED, f"the server closed the connection after {self.played} "
                                                 f"(the recorded one went on)")


def dma_prefill(script: Script) -> list[tuple[int, bytes]]:
    """Guest memory as the capture shows it: (address, bytes) of every DMA_READ the recorded client answered, in
    recorded order (a later read of the same bytes wins)."""
    out: list[tuple[int, bytes]] = []
    for rp_idx in sorted(script.request_of):
        rq, rp = script.items[script.request_of[rp_idx]], script.items[rp_idx]
        if rq.command == C.DMA_READ and rq.dir == spec.S2C and not rp.flags & spec.FLAG_ERROR:
            body = rp.data[spec.HEADER_SIZE:]
            if len(body) > _DMA.size:
                out.append((STRUCTS["dma_access"].unpack_from(body)[0], body[_DMA.size:]))
    return out


# ------------------------------------------------------------------ the I/O edge
class ReplayFailed(Exception):
    """The replay could not start or go on (one line: what and where); ``status`` is the exit status it means."""

    def __init__(self, text: str, status: int = 2) -> None:
        super().__init__(text)
        self.status = status


@dataclass
class Outcome:
    """How a replay went: its tally, the findings it made, where its capture is, and the line that ended it."""

    tally: Tally
    findings: list[Finding]
    capture: str
    seconds: float
    stopped: str = ""  # why it ended early ("" when it played everything)

    @property
    def diverged(self) -> bool:
        return self.tally.divergences > 0


@declares(Code.REPLAY_CLOSED)
def run(script: Script, connect: str, out_path: str, *, timeout: float = 5.0, pace: bool = False,
        quiet: bool = False, view: TextIO | None = None, color: bool = False) -> Outcome:
    """Play ``script``'s client side against the server at ``connect``, recording into ``out_path``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(connect)
    except FileNotFoundError:
        sock.close()
        raise ReplayFailed(f"cannot connect to {connect}: no such socket") from None
    except ConnectionRefusedError:
        sock.close()
        raise ReplayFailed(f"cannot connect to {connect}: nobody listens on it") from None
    except OSError as exc:
        sock.close()
        raise ReplayFailed(f"cannot connect to {connect}: {exc.strerror or exc}") from None
    rec = ReplayRecording(out_path, timeout, f"vfudissect replay client of {script.path} connection #{script.conn}",
                          view=view, quiet=quiet, color=color)
    memory = GuestMemory()
    maker = FdMaker()
    player = ClientPlayer(script, timeout, pace, memory)
    irqs = _Irqs()
    prefill = dma_prefill(script)
    chans: dict[str, Channel] = {MAIN: Channel(sock, MAIN, spec.S2C)}
    conns = {MAIN: 1, TWIN: 2}
    rec.opened(1, connect, own_cred(), peer_cred(sock))
    start = time.time()
    stopped = ""
    keep: list[int] = []  # fds that came in and stay open while the replay runs (the twin socket's)

    def emit(d: Divergence) -> None:
        ch_conn = 1
        frames = (d.live_frame,) if d.live_frame else ()
        text = d.text
        rec.finding(Finding(d.code, kind(d.code).severity, ch_conn, frames, text, time.time()))

    def send(s: Send) -> None:
        ch = chans.get(s.channel) or chans[MAIN]
        fds = tuple(_stand_up(s, maker, memory, prefill, irqs))
        ch.send(s.data, fds)
        frame = rec.message(conns[ch.name], spec.C2S, s.data, describe(fds))
        player.sent(s, frame, time.time())

    try:
        while True:
            now = time.time()
            for s in player.ready(now):
                send(s)
            if player.done:
                break
            for d in player.tick(now):
                emit(d)
            rlist = list(chans.values())
            wlist = [c for c in rlist if c.sending]
            wait = max(0.0, min(player.wake(now) - now, 0.25))
            try:
                r, w, _x = select.select(rlist + list(irqs.of), wlist, [], wait)
            except InterruptedError:
                continue
            for c in w:
                c.flush()
            gone = False
            for c in r:
                if isinstance(c, int):
                    irqs.fired(c, rec)
                    continue
                for a in c.receive():
                    twin = _take(a, rec, conns, player, emit, send, chans, keep)
                    if twin is not None:
                        chans[TWIN] = Channel(twin, TWIN, spec.S2C)
                        rec.opened(2, connect, own_cred(), peer_cred(twin), twin_of=1)
                if c.eof:
                    rec.closed(conns[c.name], spec.S2C)
                    if c.name == MAIN:
                        gone = True
            broken = next((c for c in chans.values() if c.broken), None)
            if broken is not None and not gone:
                stopped = f"sending to the server failed ({broken.broken}) after {player.played}"
                emit(player._diverge(Code.REPLAY_CLOSED, stopped))
                break
            if gone:
                d = player.peer_closed()
                if d is not None:
                    emit(d)
                    stopped = d.text
                break
            rec.tick()
            rec.flush()
        if not stopped:
            _finish(player, chans, rec, emit, script)
            for fd in [fd for fd in irqs.of if select.select([fd], [], [], 0)[0]]:  # the last ones, if any
                irqs.fired(fd, rec)
            _compare_irqs(player, irqs, emit)
    finally:
        for c in chans.values():
            c.close()
        rec.closed(1, spec.C2S)
        if TWIN in chans:
            rec.closed(2, spec.C2S)
        rec.close()
        memory.close()
        maker.close()
        for fd in keep:
            _close(fd)
    return Outcome(player.tally, rec.findings, out_path, time.time() - start, stopped)


@declares(Code.REPLAY_EXTRA, Code.REPLAY_MISSING)
def _finish(player: ClientPlayer, chans: dict[str, Channel], rec: ReplayRecording, emit, script: Script) -> None:
    """Everything was played: send what is queued, then, as the recorded client did, close (or, when the recorded
    server closed first, wait for it to)."""
    end = time.time() + 5.0
    while any(c.sending for c in chans.values()) and time.time() < end:
        select.select([], [c for c in chans.values() if c.sending], [], 0.1)
        for c in chans.values():
            c.flush()
    if script.closed_first == SERVER:
        main = chans[MAIN]
        deadline = time.time() + player.timeout
        while not main.eof and time.time() < deadline:
            r, _w, _x = select.select([main], [], [], 0.1)
            if r:
                for a in main.receive():
                    if a.is_message:
                        data = bytes(a.out.data)
                        frame = rec.message(1, spec.S2C, data, describe(a.fds))
                        emit(player._diverge(Code.REPLAY_EXTRA, f"{name_of(data)} after everything recorded",
                                             frame))
                    for fd in a.fds:
                        _close(fd)
        if not main.eof:
            emit(player._diverge(Code.REPLAY_MISSING, f"the recorded server closed the connection here; the live "
                                                      f"one kept it open for {player.timeout:g} s"))
        else:
            rec.closed(1, spec.S2C)


def _take(a: Arrived, rec: ReplayRecording, conns: dict[str, int], player: ClientPlayer, emit, send,
          chans: dict[str, Channel], keep: list[int]) -> socket.socket | None:
    """One thing framed on a channel: recorded, compared, answered; returns the twin socket a VERSION reply gave."""
    conn = conns[a.channel]
    o = a.out
    infos = describe(a.fds)
    twin: socket.socket | None = None
    if not a.is_message:
        if o.kind == "note":
            if o.note:
                rec.note(conn, o.note, spec.S2C)
        else:
            rec.raw(conn, spec.S2C, bytes(o.data), o.note, o.flags)
        for fd in a.fds:
            _close(fd)
        return None
    data = bytes(o.data)
    frame = rec.message(conn, spec.S2C, data, infos, o.flags, o.ts or None)
    _id, command, _size, flags, _err = _HDR.unpack_from(data)
    if command == C.VERSION and flags & spec.FLAG_TYPE_MASK == spec.MSG_TYPE_REPLY and a.fds and TWIN not in chans:
        idx = twin_socket_index(version_capabilities(data), len(a.fds))
        if idx is not None:
            twin = socket.socket(fileno=a.fds[idx])
    for i, fd in enumerate(a.fds):
        if twin is None or fd != twin.fileno():
            _close(fd)
    answers, divs = player.received(Live(a.channel, data, infos, frame, o.ts or time.time()), time.time())
    for d in divs:
        emit(d)
    for s in answers:
        send(s)
    return twin


class _Irqs:
    """The eventfds the replay gave the server with SET_IRQS, watched: each signal is an interrupt of the live
    server, recorded in the replay's capture and counted against the recorded ones (record --watch-irqs)."""

    def __init__(self) -> None:
        self.of: dict[int, tuple[int, int]] = {}  # eventfd -> (index, vector)
        self.seen: dict[tuple[int, int], int] = {}  # (index, vector) -> signals counted

    def given(self, data: bytes, fds: list[int]) -> None:
        if len(data) < 36:
            return
        _argsz, flags, index, start, count = struct.unpack_from("<IIIII", data, 16)
        if flags & spec.IRQ_SET_DATA_MASK == spec.IRQ_SET_DATA_EVENTFD and len(fds) == count:
            for i, fd in enumerate(fds):
                self.of[fd] = (index, start + i)

    def fired(self, fd: int, rec: ReplayRecording) -> None:
        try:
            n = os.eventfd_read(fd)
        except OSError:
            self.of.pop(fd, None)
            return
        index, vector = self.of[fd]
        self.seen[(index, vector)] = self.seen.get((index, vector), 0) + n
        rec.irq(1, index, vector, n)


@declares(Code.REPLAY_MISSING, Code.REPLAY_EXTRA)
def _compare_irqs(player: ClientPlayer, irqs: _Irqs, emit) -> None:  # type: ignore[no-untyped-def]
    """Interrupts by (index, vector): as many as the recorded server raised (only when it recorded them)."""
    if not player.script.irqs:
        return
    want: dict[tuple[int, int], int] = {}
    for i in player.script.irqs:
        want[(i.index, i.vector)] = want.get((i.index, i.vector), 0) + i.count
    for key in sorted(set(want) | set(irqs.seen)):
        w, got = want.get(key, 0), irqs.seen.get(key, 0)
        name = f"{spec.PCI_IRQS.get(key[0], key[0])} vector {key[1]}"
        if got < w:
            emit(player._diverge(Code.REPLAY_MISSING, f"the recorded server raised {name} {w} time(s), the live one "
                                                      f"{got}"))
        elif got > w:
            emit(player._diverge(Code.REPLAY_EXTRA, f"the live server raised {name} {got} time(s), the recorded one "
                                                    f"{w}"))


def _stand_up(s: Send, maker: FdMaker, memory: GuestMemory, prefill: list[tuple[int, bytes]],
              irqs: _Irqs | None = None) -> list[int]:
    """The live fds for a message the replay sends, and what they mean for its memory (a DMA_MAP maps them) or its
    interrupts (a SET_IRQS's eventfds are watched)."""
    fds = [maker.make(info) for info in s.fds]
    r = s.recorded
    if r is not None and r.command == C.DEVICE_SET_IRQS and not r.is_reply and irqs is not None:
        irqs.given(s.data, fds)
    if r is None or r.command != C.DMA_MAP or r.is_reply:
        return fds
    p = r.data[spec.HEADER_SIZE:]
    try:
        v = unpack("dma_map", p)
    except ProtocolError:
        return fds
    address, size, offset = v.get("address", 0), v.get("size", 0), v.get("offset", 0)
    if size > 1 << 36:
        return fds  # a range no replay can back with memory (said by the engine as it is)
    memory.map(address, size, fds[0] if fds else None, offset if fds else 0)
    for addr, data in prefill:
        if address <= addr and addr + len(data) <= address + size:
            memory.write(addr, data)
    return fds


def _close(fd: int) -> None:
    import os

    try:
        os.close(fd)
    except OSError:
        pass
