"""What a replay plays: one recorded connection (and its twin socket) as an ordered script of messages.

``load(path, conn)`` reads a capture, judges it with the engine to learn
which reply answers which request, and gives a ``Script``: every message of
the connection and of its twin socket in recorded order (``Recorded``), the
request each reply answers, and who closed first.  Everything a replay
cannot play faithfully stops it here, in one line (``ScriptError``): a
damaged capture, a connection that is not there, a side with nothing to
play, a message the recorder cut (snaplen) or could not frame.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field

from .. import spec
from ..capture.reader import CaptureError, open_capture
from ..core.analyzer import Analyzer, AnalyzerConfig
from ..core.events import ConnClosed, ConnOpened, FdInfo, IrqIn, MessageIn, RawIn
from ..core.records import MessageRecord

MAIN, TWIN = "main", "twin"
CLIENT, SERVER = "client", "server"
_UNPLAYABLE = spec.VF_TRUNCATED | spec.VF_BEYOND_LIMIT | spec.VF_FRAMING_ERROR


class ScriptError(Exception):
    """The capture cannot be replayed (one line for the user: what and where)."""


@dataclass(frozen=True, slots=True)
class Recorded:
    """One recorded message: where it was in the capture and the script, on which socket, what it carried."""

    index: int  # position in the script
    frame: int  # frame number in the capture
    ts: float
    channel: str  # MAIN | TWIN
    dir: str  # c2s | s2c
    data: bytes
    fds: tuple[FdInfo, ...]
    msg_id: int
    command: int
    flags: int
    error: int

    @property
    def is_reply(self) -> bool:
        return self.flags & spec.FLAG_TYPE_MASK == spec.MSG_TYPE_REPLY

    @property
    def no_reply(self) -> bool:
        return bool(self.flags & spec.FLAG_NO_REPLY)

    @property
    def sender(self) -> str:
        return CLIENT if self.dir == spec.C2S else SERVER

    @property
    def name(self) -> str:
        kind = "reply" if self.is_reply else "command"
        return f"{spec.command_name(self.command)} {kind} (frame {self.frame}, id {self.msg_id})"


@dataclass(frozen=True, slots=True)
class RecordedIrq:
    """An interrupt the recorded server raised (an IRQ record of `record --watch-irqs`), and after which message."""

    frame: int
    ts: float
    index: int
    vector: int
    count: int
    after: int  # script index of the last message before it (-1: before any)


@dataclass(frozen=True)
class Script:
    """A recorded connection in order, with its request/reply pairs."""

    path: str
    conn: int
    twin_conn: int | None
    socket_path: str
    items: tuple[Recorded, ...]
    reply_of: dict[int, int] = field(default_factory=dict)  # request index -> reply index
    request_of: dict[int, int] = field(default_factory=dict)  # reply index -> request index
    closed_first: str | None = None  # CLIENT | SERVER | None (the capture ended with it open)
    duration: float = 0.0  # seconds from the first message to the last
    irqs: tuple[RecordedIrq, ...] = ()  # the server's interrupts, when the recording watched them

    def sent_by(self, side: str) -> list[Recorded]:
        return [r for r in self.items if r.sender == side]

    @property
    def twin(self) -> bool:
        return self.twin_conn is not None


def load(path: str, conn: int | None = None, side: str = CLIENT) -> Script:
    """The script of connection ``conn`` (default: the first main connection where ``side`` sent something)."""
    if not os.path.exists(path):
        raise ScriptError(f"cannot read {path}: no such file")
    opened: dict[int, ConnOpened] = {}
    msgs: dict[int, list[MessageIn]] = {}
    raw: dict[int, RawIn] = {}
    closes: dict[int, list[ConnClosed]] = {}
    irq_events: dict[int, list[IrqIn]] = {}
    an = Analyzer(AnalyzerConfig(timeout=0))
    pairs: dict[int, int] = {}  # reply frame -> request frame
    try:
        for ev in open_capture(path):
            t = type(ev)
            if t is ConnOpened:
                opened[ev.conn] = ev  # type: ignore[union-attr]
            elif t is MessageIn:
                msgs.setdefault(ev.conn, []).append(ev)  # type: ignore[union-attr,arg-type]
            elif t is RawIn:
                raw.setdefault(ev.conn, ev)  # type: ignore[union-attr,arg-type]
            elif t is ConnClosed:
                closes.setdefault(ev.conn, []).append(ev)  # type: ignore[union-attr,arg-type]
            elif t is IrqIn:
                irq_events.setdefault(ev.conn, []).append(ev)  # type: ignore[union-attr,arg-type]
            for it in an.feed(ev):
                if type(it) is MessageRecord and it.request_frame is not None:
                    pairs[it.frame] = it.request_frame
    except CaptureError as exc:
        raise ScriptError(f"cannot replay {path}: it is damaged ({exc})") from None
    mains = sorted(c for c, o in opened.items() if o.twin_of is None) or sorted(msgs)
    if not mains:
        raise ScriptError(f"{path}: no vfio-user connection to replay in it")
    twins = {o.twin_of: c for c, o in opened.items() if o.twin_of is not None}
    if conn is None:
        want = spec.C2S if side == CLIENT else spec.S2C
        playable = [c for c in mains if any(m.dir == want for m in msgs.get(c, ()))
                    or any(m.dir == want for m in msgs.get(twins.get(c, -1), ()))]
        if not playable:
            raise ScriptError(f"{path}: no connection has {side} messages to play")
        conn = playable[0]
    elif conn not in mains:
        have = ", ".join(f"#{c}" for c in mains)
        what = f"connection #{conn} is the twin socket of #{opened[conn].twin_of}" if conn in opened else \
            f"no connection #{conn}"
        raise ScriptError(f"{path}: {what} (its connections: {have}); --conn names a main connection")
    twin = twins.get(conn)
    chans = {conn: MAIN, **({twin: TWIN} if twin is not None else {})}
    every = sorted((m for c in chans for m in msgs.get(c, ())), key=lambda m: m.frame)
    for c in chans:
        if c in raw:
            r = raw[c]
            raise ScriptError(f"{path}: frame {r.frame} of connection #{c} holds bytes that were never framed as "
                              f"messages ({r.note or 'raw'}); a replay cannot play them")
    items: list[Recorded] = []
    for m in every:
        if m.flags & _UNPLAYABLE or len(m.data) < spec.HEADER_SIZE:
            why = "cut by the recorder's snaplen" if m.flags & spec.VF_TRUNCATED else "not recorded whole"
            raise ScriptError(f"{path}: frame {m.frame} of connection #{m.conn} was {why}; a replay needs every "
                              "message whole")
        msg_id, command, _size, flags, error = spec.HEADER.unpack_from(m.data)
        items.append(Recorded(len(items), m.frame, m.ts, chans[m.conn], m.dir, bytes(m.data), m.fds, msg_id,
                              command, flags, error))
    want = spec.C2S if side == CLIENT else spec.S2C
    if not any(r.dir == want for r in items):
        raise ScriptError(f"{path}: connection #{conn} has no {side} messages to play")
    by_frame = {r.frame: r.index for r in items}
    reply_of: dict[int, int] = {}
    request_of: dict[int, int] = {}
    for rep_frame, req_frame in pairs.items():
        if rep_frame in by_frame and req_frame in by_frame:
            rq, rp = by_frame[req_frame], by_frame[rep_frame]
            reply_of.setdefault(rq, rp)
            request_of[rp] = rq
    closed_first = None
    first_close = min((e for c in chans for e in closes.get(c, ())), key=lambda e: e.frame, default=None)
    if first_close is not None and first_close.dir is not None:
        closed_first = CLIENT if first_close.dir == spec.C2S else SERVER
    o = opened.get(conn)
    duration = items[-1].ts - items[0].ts if items else 0.0
    frames = [r.frame for r in items]
    irqs = tuple(RecordedIrq(e.frame, e.ts, e.index, e.vector, e.count, bisect.bisect_left(frames, e.frame) - 1)
                 for e in irq_events.get(conn, ()))
    return Script(path, conn, twin, o.socket_path if o else "", tuple(items), reply_of, request_of, closed_first,
                  duration, irqs)
