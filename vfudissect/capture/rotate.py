"""Rotated captures (`record --rotate-size`): numbered files, each opening with the context it needs to be read alone.

``capture.pcapng`` fills up to the limit, then ``capture-2.pcapng``,
``capture-3.pcapng`` ... follow.  A new file starts with the CONN_OPEN of
every connection still open and, flagged CONTEXT, the recorded messages
that set state the analysis depends on: the VERSION exchange, the device,
region and IRQ info replies, the DMA mappings still in place, the last
migration state set, and the requests still waiting for their reply.  So
``vfudissect read capture-3.pcapng`` judges that file's traffic as it
would in one long capture, without a false VERSION_NOT_FIRST, unmatched
reply or unmapped DMA access, and the CONTEXT copies draw no findings.
"""

from __future__ import annotations

import bisect
import dataclasses
import os
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Protocol

from .. import spec
from ..core.events import ConnClosed, ConnOpened, Event, MessageIn, NoteIn, RawIn, make_message_in
from ..core.records import Finding
from .writer import CaptureWriter, Recordable

_HDR = spec.HEADER
C = spec.Command
_UNMAP_ALL = next(bit for bit, name in spec.DMA_UNMAP_FLAGS.items() if name == "ALL")


def _at(layout: str, name: str) -> int:
    """Offset of a request field in the whole message (header included)."""
    return spec.HEADER_SIZE + spec.LAYOUTS[layout].offset_of(name)


_REGION_INDEX, _IRQ_INDEX = _at("region_info", "index"), _at("irq_info", "index")
_MAP_ADDRESS, _MAP_SIZE = _at("dma_map", "address"), _at("dma_map", "size")
_UNMAP_FLAGS, _UNMAP_ADDRESS, _UNMAP_SIZE = _at("dma_unmap", "flags"), _at("dma_unmap", "address"), _at("dma_unmap",
                                                                                                         "size")
_FEATURE_FLAGS = _at("device_feature", "flags")
_MAX_PENDING_IDS = 1024  # requests awaiting replies kept per connection for the next file's context


class _Sink(Protocol):
    written: int

    def write(self, data: bytes) -> int: ...

    def commit(self) -> None: ...

    def close(self) -> None: ...


def part_path(path: str, n: int) -> str:
    """The n-th file of a rotated capture: part 1 is ``path`` itself, then ``stem-2.ext``, ``stem-3.ext`` ..."""
    if n <= 1:
        return path
    stem, ext = os.path.splitext(path)
    return f"{stem}-{n}{ext}"


def _u32(data: bytes, off: int) -> int:
    return struct.unpack_from("<I", data, off)[0] if len(data) >= off + 4 else -1


def _u64(data: bytes, off: int) -> int:
    return struct.unpack_from("<Q", data, off)[0] if len(data) >= off + 8 else -1


@dataclass
class _Conn:
    opened: tuple[int, ConnOpened]
    closed: set[str] = field(default_factory=set)
    state: dict[tuple, tuple[tuple[int, MessageIn], ...]] = field(default_factory=dict)
    pending: dict[tuple[str, int], deque[tuple[int, MessageIn]]] = field(default_factory=dict)


class ContextTracker:
    """Watches the recorded events and keeps, per open connection, what a new file must replay first."""

    def __init__(self) -> None:
        self._conns: dict[int, _Conn] = {}
        self._seq = 0

    def observe(self, ev: Event) -> None:
        if isinstance(ev, ConnOpened):
            self._seq += 1
            self._conns[ev.conn] = _Conn((self._seq, ev))
        elif isinstance(ev, ConnClosed):
            c = self._conns.get(ev.conn)
            if c is not None:
                c.closed.update((spec.C2S, spec.S2C) if ev.dir is None else (ev.dir,))
                if len(c.closed) == 2:
                    del self._conns[ev.conn]
        elif isinstance(ev, RawIn) and not ev.flags & spec.VF_BEYOND_LIMIT:
            c = self._conns.get(ev.conn)
            if c is not None:  # that direction lost its framing: its requests will never be paired
                for key in [k for k in c.pending if k[0] == ev.dir]:
                    del c.pending[key]
        elif isinstance(ev, MessageIn):
            self._message(ev)

    def _message(self, ev: MessageIn) -> None:
        c = self._conns.get(ev.conn)
        data = ev.data
        if c is None or len(data) < spec.HEADER_SIZE or ev.flags & (spec.VF_FRAMING_ERROR | spec.VF_CONTEXT):
            return
        self._seq += 1
        item = (self._seq, ev)
        msg_id, cmd, _size, flags, _err = _HDR.unpack_from(data)
        mtype = flags & spec.FLAG_TYPE_MASK
        if mtype == spec.MSG_TYPE_COMMAND:
            if not flags & spec.FLAG_NO_REPLY:
                c.pending.setdefault((ev.dir, msg_id), deque(maxlen=16)).append(item)
                if len(c.pending) > _MAX_PENDING_IDS:  # a peer that never answers: keep the newest
                    del c.pending[next(iter(c.pending))]
            return
        if mtype != spec.MSG_TYPE_REPLY:
            return
        req_dir = spec.S2C if ev.dir == spec.C2S else spec.C2S
        q = c.pending.get((req_dir, msg_id))
        if not q:
            return
        req_item = q.popleft()
        if not q:
            del c.pending[(req_dir, msg_id)]
        if flags & spec.FLAG_ERROR:
            return
        req = req_item[1].data
        rcmd = _HDR.unpack_from(req)[1]
        pair = (req_item, item)
        if rcmd == C.VERSION:
            c.state[("version",)] = pair
        elif rcmd == C.DEVICE_GET_INFO:
            c.state[("info",)] = pair
        elif rcmd == C.DEVICE_GET_REGION_INFO:
            c.state[("region", _u32(req, _REGION_INDEX))] = pair
        elif rcmd == C.DEVICE_GET_IRQ_INFO:
            c.state[("irq", _u32(req, _IRQ_INDEX))] = pair
        elif rcmd == C.DMA_MAP:
            c.state[("dma", _u64(req, _MAP_ADDRESS), _u64(req, _MAP_SIZE))] = pair
        elif rcmd == C.DMA_UNMAP:
            if _u32(req, _UNMAP_FLAGS) & _UNMAP_ALL:
                for key in [k for k in c.state if k[0] == "dma"]:
                    del c.state[key]
            else:
                c.state.pop(("dma", _u64(req, _UNMAP_ADDRESS), _u64(req, _UNMAP_SIZE)), None)
        elif rcmd == C.DEVICE_FEATURE:
            fl = _u32(req, _FEATURE_FLAGS)
            if fl & spec.FEATURE_MASK == spec.FEATURE_MIG_DEVICE_STATE and fl & spec.FEATURE_SET:
                c.state[("mig_state",)] = pair

    def context(self) -> list[tuple[int, Recordable]]:
        """(original frame, copy) of the CONN_OPEN of every open connection and its context messages, in their
        original order (so their original timestamps stay in order too)."""
        items: list[tuple[int, Recordable]] = []
        for c in self._conns.values():
            items.append(c.opened)
            for pair in c.state.values():
                items.extend(pair)
            for q in c.pending.values():
                items.extend(q)
        out: list[tuple[int, Recordable]] = []
        for _seq, ev in sorted(items, key=lambda it: it[0]):
            orig = ev.frame
            if isinstance(ev, MessageIn):
                ev = make_message_in(ev.ts, ev.conn, ev.dir, ev.data, ev.fds, 0, ev.msg_len,
                                     ev.flags | spec.VF_CONTEXT)
            out.append((orig, ev))
        return out


class RotatingCaptureWriter:
    """A CaptureWriter over numbered files, moving on to the next one once ``limit`` bytes are written.

    Frame numbers it returns are global (``base of the part + its record number``), so the engine that
    follows the whole session never confuses frame 40 of one part with frame 40 of another; ``locate``
    turns one back into (file, frame in that file), and ``write_finding`` records a finding in the part being
    written, naming its frames as that part numbers them: a frame of an earlier part by its CONTEXT copy
    here (a request still waiting, the mapping a DMA access hits), a frame with no copy here not at all.
    """

    def __init__(self, path: str, limit: int, open_sink: Callable[[str], _Sink], *, comment: str = "",
                 if_name: str = "vfio-user", snaplen: int | None = None,
                 on_rotate: Callable[[str, int], None] | None = None,
                 error: Callable[[str], None] | None = None, judged: float | None = None) -> None:
        self.path = path
        self.limit = limit
        self._open_sink = open_sink
        self._comment = comment
        self._if_name = if_name
        self._snaplen = snaplen
        self._on_rotate = on_rotate
        self._error = error
        self.judged = judged
        self.tracker = ContextTracker()
        self.part = 1
        self.paths = [path]
        self.bases = [0]  # per part: the global number of the record before its first
        self._copies: dict[int, int] = {}  # global frame of an earlier part's message -> its copy's frame here
        self.sink = open_sink(path)
        self._w = self._writer(comment)
        self._context_records = 0  # a file holds at least one record of its own, however big its context

    def _writer(self, comment: str) -> CaptureWriter:
        w = CaptureWriter(self.sink, comment=comment, if_name=self._if_name, snaplen=self._snaplen,  # type: ignore[arg-type]
                          flush=False, judged=self.judged)
        self.sink.commit()  # the file header right away
        return w

    @property
    def records(self) -> int:
        return self._w.records

    @property
    def _base(self) -> int:
        return self.bases[-1]

    def write(self, ev: Recordable) -> Recordable:
        if self.sink.written >= self.limit and self._w.records > self._context_records \
                and not isinstance(ev, ConnClosed):
            self._rotate(ev.ts)
        out = self._w.write(ev)
        if self._base:
            out = _renumber(out, self._base + out.frame)
        self.tracker.observe(out)
        return out

    def write_finding(self, f: Finding, frames: tuple[int, ...] | None = None) -> int:
        """Record ``f`` in the current part, its frames as this part numbers them; returns the global frame."""
        here = tuple(x for x in (self.local_frame(g) for g in f.frames) if x is not None)
        return self._base + self._w.write_finding(f, here)

    def local_frame(self, frame: int) -> int | None:
        """A global frame as the current part numbers it: its own, or its CONTEXT copy here; None if neither."""
        if frame > self._base:
            return frame - self._base
        return self._copies.get(frame)

    def label(self, frame: int) -> str:
        """A global frame as a reader of the files finds it: its number in the current part, else ``N of FILE``."""
        if self.part == 1:
            return str(frame)
        local = self.local_frame(frame)  # its own number here, or its CONTEXT copy's
        if local is not None:
            return str(local)
        path, n = self.locate(frame)
        return f"{n} of {os.path.basename(path)}"

    def locate(self, frame: int) -> tuple[str, int]:
        """(file, frame number in that file) of a global frame."""
        i = bisect.bisect_left(self.bases, frame) - 1
        i = max(i, 0)
        return self.paths[i], frame - self.bases[i]

    def _rotate(self, ts: float) -> None:
        prev = self.paths[-1]
        path = part_path(self.path, self.part + 1)
        try:
            sink = self._open_sink(path)
        except Exception as exc:  # noqa: BLE001 - the open callable's own error, whatever it is
            self.limit = 1 << 62  # keep writing where we are
            if self._error is not None:
                self._error(f"{exc}; the capture goes on in {prev}")
            return
        self._w.write(NoteIn(ts, 0, f"{spec.NOTE_CONTINUED_PREFIX}{os.path.basename(path)}"))
        self.sink.close()
        self.bases.append(self._base + self._w.records)
        self.part += 1
        self.sink = sink
        self.paths.append(path)
        note = f"part {self.part} of a rotated capture, continuing {os.path.basename(prev)}"
        self._w = self._writer(f"{self._comment}\n{note}" if self._comment else note)
        context = self.tracker.context()
        self._copies = {}
        for orig, ev in context:
            copy = self._w.write(ev)
            if orig:
                self._copies[orig] = copy.frame
        self._context_records = self._w.records
        if self._on_rotate is not None:
            self._on_rotate(path, len(context))

    @property
    def broken(self) -> bool:
        return bool(getattr(self.sink, "broken", False))

    @property
    def error(self) -> str:
        return str(getattr(self.sink, "error", ""))

    def commit(self) -> None:
        self.sink.commit()

    def close(self) -> None:
        self.sink.close()


def _renumber(ev: Recordable, frame: int) -> Recordable:
    if type(ev) is MessageIn:
        return make_message_in(ev.ts, ev.conn, ev.dir, ev.data, ev.fds, frame, ev.msg_len, ev.flags)
    return dataclasses.replace(ev, frame=frame)
