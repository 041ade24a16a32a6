"""Sans-io framing: one direction's bytes, fds and time in; whole messages, raw bytes and notes out.

The relay, the emulated peers and replay drive the same deframer; it does
no I/O.  Feed it what a read returned (``feed``), or let a read fill the
buffer it offers (``buffer`` / ``received``: exactly ``want()`` bytes, so a
read never spans two messages and the fds a read brings belong to the
message it reads).  Rules:

1. A message is framed by its header: 16 bytes, then ``size - 16`` more.
2. fds arrive with the chunk of bytes they came with and belong to the
   message that chunk's first byte is in; they are *late* when that byte is
   not the message's first (VF_FDS_NOT_AT_MSG_START).
3. A header whose size is below 16 cannot be framed: it is put out alone
   (VF_FRAMING_ERROR) and the direction is relayed raw from then on.
4. A message larger than its receiver accepts (``limit``: what the receiving
   side negotiated, capped at ``ABSOLUTE_LIMIT``) is never held: its header
   goes out at once as a message flagged VF_BEYOND_LIMIT (``msg_len`` the
   size it claims), its body as raw chunks as they arrive (VF_BEYOND_LIMIT),
   then framing resumes after it.
5. No progress inside a message for ``stall_timeout`` (seen by ``tick``):
   what arrived goes out as it is, and the direction is relayed raw.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple, Sequence

from .. import spec
from . import capabilities

HEADER_SIZE = spec.HEADER_SIZE
# The largest fixed part of a data command (header + region/DMA/migration access): what goes with a body.
FIXED_MAX = HEADER_SIZE + max(spec.LAYOUTS[k].size for k in ("region_access", "dma_access", "mig_data"))
DEFAULT_LIMIT = spec.DEFAULT_MAX_DATA_XFER_SIZE + FIXED_MAX + spec.FRAMING_SLACK
ABSOLUTE_LIMIT = spec.QEMU_MAX_MAX_DATA_XFER_SIZE + FIXED_MAX + spec.FRAMING_SLACK  # never held whole beyond this
RAW_CHUNK = 65536
_SIZE = struct.Struct("<I").unpack_from  # a header's size field, at offset 4
_FDS_LATE, _FDS_CTRUNC = spec.VF_FDS_NOT_AT_MSG_START, spec.VF_FDS_CTRUNC

MESSAGE, RAW, NOTE = "message", "raw", "note"  # Out.kind
HEADER, BODY, HEAD, PASS, RAWMODE, CLOSED = range(6)  # Deframer.mode


class Out(NamedTuple):
    """What framing puts out: a message (``kind`` MESSAGE), bytes that are not one (RAW), or a note (NOTE).

    ``fds`` are the caller's tokens (the fds themselves, in the relay), in arrival order; ``msg_len`` is the
    message's length on the wire (larger than ``data`` for a message beyond its receiver's limit).  Immutable
    like a frozen dataclass, built five times faster: one per message the relay forwards."""

    kind: str
    data: bytes | bytearray = b""
    fds: tuple[Any, ...] = ()
    flags: int = 0  # VFUC record flags: VF_FDS_NOT_AT_MSG_START, VF_FDS_CTRUNC, VF_FRAMING_ERROR, ...
    msg_len: int = -1
    note: str = ""
    ts: float = 0.0


def limit_for(max_data_xfer_size: int) -> int:
    """The largest message a receiver that negotiated ``max_data_xfer_size`` is held whole for: never below the
    default (a VERSION reply, a region's capabilities or a dirty bitmap may exceed a small data size, and holding
    1 MiB is no burden), never above ``ABSOLUTE_LIMIT``."""
    return min(max(max_data_xfer_size, spec.DEFAULT_MAX_DATA_XFER_SIZE) + FIXED_MAX + spec.FRAMING_SLACK,
               ABSOLUTE_LIMIT)


class Deframer:
    """One direction of one connection's byte stream, framed message by message (see the module's rules)."""

    __slots__ = ("dir", "limit", "stall_timeout", "mode", "hbuf", "hview", "hgot", "body", "bview", "size", "got",
                 "fds", "late", "ctrunc", "progress", "pass_left", "raw_note", "_scratch")

    def __init__(self, d: str = spec.C2S, limit: int = DEFAULT_LIMIT, stall_timeout: float = 0.5) -> None:
        self.dir = d
        self.limit = limit
        self.stall_timeout = stall_timeout
        self.mode = HEADER
        self.hbuf = bytearray(HEADER_SIZE)
        self.hview = memoryview(self.hbuf)
        self.hgot = 0
        self.body: bytearray | None = None
        self.bview: memoryview | None = None
        self.size = 0
        self.got = 0
        self.fds: list[Any] = []
        self.late = False
        self.ctrunc = False
        self.progress = 0.0  # when the message in hand last grew
        self.pass_left = 0  # PASS: body bytes still to come of a message beyond the limit
        self.raw_note = ""
        self._scratch: memoryview | None = None

    # ------------------------------------------------------------ what a read should do
    @property
    def partial(self) -> bool:
        """A message is in hand (some of it arrived, not all)."""
        return self.hgot > 0 or self.body is not None

    @property
    def raw(self) -> bool:
        return self.mode == RAWMODE

    def want(self) -> int:
        """How many bytes the next read should ask for (0 once closed)."""
        m = self.mode
        if m == HEADER:
            return HEADER_SIZE - self.hgot
        if m == BODY or m == HEAD:
            return self.size - self.got
        if m == PASS:
            return min(self.pass_left, RAW_CHUNK)
        return RAW_CHUNK if m == RAWMODE else 0

    def buffer(self) -> memoryview:
        """Where the next read may put exactly ``want()`` bytes."""
        m = self.mode
        if m == HEADER:
            return self.hview[self.hgot:]
        if m == BODY or m == HEAD:
            return self.bview[self.got:self.size]  # type: ignore[index]
        if self._scratch is None:
            self._scratch = memoryview(bytearray(RAW_CHUNK))
        return self._scratch[:self.want()]

    # ------------------------------------------------------------ bytes in
    def received(self, n: int, fds: Sequence[Any] = (), ctrunc: bool = False, ts: float = 0.0) -> list[Out]:
        """``n`` bytes were read into ``buffer()`` (with these fds): what that completes."""
        out: list[Out] = []
        m = self.mode
        if m == CLOSED or (not n and (m == RAWMODE or m == PASS)):
            if fds:  # nothing to go with: the caller closes them
                out.append(Out(NOTE, fds=tuple(fds), note=f"{len(fds)} fds arrived with no bytes", ts=ts))
            return out
        if fds or ctrunc:
            if m == HEADER or m == BODY or m == HEAD:
                if self.partial:
                    self.late = self.late or bool(fds)
                self.fds.extend(fds)
                self.ctrunc = self.ctrunc or ctrunc
        if m == RAWMODE or m == PASS:
            if n:
                self._raw_chunk(out, n, fds, ctrunc, ts)
            return out
        if not n:
            return out
        self.progress = ts
        if m == HEADER:
            self.hgot += n
            if self.hgot == HEADER_SIZE:
                self._header(out, ts)
        else:
            self.got += n
            if self.got == self.size:
                if m == BODY:
                    self._deliver(out, ts)
                else:
                    self._deliver_head(out, ts)
        return out

    def feed(self, data: bytes, fds: Sequence[Any] = (), ctrunc: bool = False, ts: float = 0.0) -> list[Out]:
        """Any chunk of the stream (the fds came with its first byte): every message and raw chunk it completes."""
        out: list[Out] = []
        view = memoryview(data)
        first = True
        while view and self.mode != CLOSED:
            buf = self.buffer()
            k = min(len(buf), len(view))
            buf[:k] = view[:k]
            view = view[k:]
            out.extend(self.received(k, fds if first else (), ctrunc if first else False, ts))
            first = False
        if first and (fds or ctrunc):  # fds with no bytes at all
            out.extend(self.received(0, fds, ctrunc, ts))
        return out

    def _header(self, out: list[Out], ts: float) -> None:
        size = _SIZE(self.hbuf, 4)[0]
        if HEADER_SIZE < size <= self.limit:  # the usual: a body to read (_start_body(size, BODY), inline)
            body = bytearray(size)
            body[:HEADER_SIZE] = self.hbuf
            self.body, self.bview, self.size, self.got, self.mode = body, memoryview(body), size, HEADER_SIZE, BODY
            return
        if size == HEADER_SIZE:
            self._emit(out, bytes(self.hbuf), ts, 0, -1)
            return
        if size < HEADER_SIZE:
            self._emit(out, bytes(self.hbuf), ts, spec.VF_FRAMING_ERROR, -1)
            why = f"header size {size} is below 16"
            out.append(Out(NOTE, note=f"{self.dir} {why}: relaying raw from here", ts=ts))
            self.mode, self.raw_note = RAWMODE, why
            return
        # beyond the limit: not held, the header goes out now, the body as it comes
        self._start_body(HEADER_SIZE, HEAD)
        self.pass_left = size - HEADER_SIZE
        self._deliver_head(out, ts)

    def _start_body(self, size: int, mode: int) -> None:
        body = bytearray(size)
        body[:HEADER_SIZE] = self.hbuf
        self.body, self.bview, self.size, self.got, self.mode = body, memoryview(body), size, HEADER_SIZE, mode

    def _deliver(self, out: list[Out], ts: float) -> None:
        """The message in hand is whole: out it goes (_emit and _reset, inline: once per message)."""
        body = self.body
        assert body is not None
        flags = (_FDS_LATE if self.late else 0) | (_FDS_CTRUNC if self.ctrunc else 0)
        out.append(Out(MESSAGE, bytes(body) if self.size <= 65536 else body, tuple(self.fds), flags, -1, "", ts))
        self.bview.release()  # type: ignore[union-attr]
        self.body = self.bview = None
        self.hgot = self.size = self.got = 0
        self.fds = []
        self.late = self.ctrunc = False
        self.mode = HEADER

    def _deliver_head(self, out: list[Out], ts: float) -> None:
        body = self.body
        assert body is not None
        size = spec.HEADER.unpack_from(self.hbuf)[2]
        left = self.pass_left
        self._emit(out, bytes(body), ts, spec.VF_BEYOND_LIMIT, size)
        out.append(Out(NOTE, note=f"{self.dir} message of {size} bytes is beyond what its receiver accepts "
                                  f"({self.limit}): its body is forwarded and recorded as raw bytes as it comes", ts=ts))
        if left:
            self.mode, self.pass_left = PASS, left

    def _emit(self, out: list[Out], data: bytes | bytearray, ts: float, extra: int, msg_len: int) -> None:
        flags = extra | (spec.VF_FDS_NOT_AT_MSG_START if self.late else 0) | (spec.VF_FDS_CTRUNC if self.ctrunc else 0)
        out.append(Out(MESSAGE, data, tuple(self.fds), flags, msg_len, ts=ts))
        self._reset()

    def _reset(self) -> None:
        self.hgot = 0
        if self.bview is not None:
            self.bview.release()
        self.body = self.bview = None
        self.size = self.got = 0
        self.fds = []
        self.late = self.ctrunc = False
        self.mode = HEADER if self.mode in (BODY, HEAD, HEADER) else self.mode

    def _raw_chunk(self, out: list[Out], n: int, fds: Sequence[Any], ctrunc: bool, ts: float) -> None:
        assert self._scratch is not None
        data = bytes(self._scratch[:n])
        flags = spec.VF_FDS_CTRUNC if ctrunc else 0
        if self.mode == PASS:
            self.pass_left -= n
            out.append(Out(RAW, data, tuple(fds), flags | spec.VF_BEYOND_LIMIT, len(data), "body beyond the limit",
                           ts))
            if not self.pass_left:
                self.mode = HEADER
            return
        out.append(Out(RAW, data, tuple(fds), flags, len(data), self.raw_note, ts))
        self.raw_note = ""

    # ------------------------------------------------------------ time and the end
    def tick(self, ts: float) -> list[Out]:
        """Time passed: a message in hand with no progress for ``stall_timeout`` goes out as far as it came."""
        if self.partial and self.mode in (HEADER, BODY, HEAD) and ts - self.progress > self.stall_timeout:
            out = self._incomplete(ts, f"no progress for {self.stall_timeout:g} s; forwarded as far as it came, "
                                       "relaying raw from here")
            self.mode, self.raw_note = RAWMODE, "after a stalled message"
            return out
        return []

    def close(self, ts: float, why: str = "peer closed mid-message") -> list[Out]:
        """The stream ended (EOF, teardown): what arrived of the message in hand, and any fds with no bytes."""
        out = self._incomplete(ts, why) if self.partial else []
        if self.mode == PASS and self.pass_left:
            out.append(Out(NOTE, note=f"{self.dir} message beyond the limit cut short: its last {self.pass_left} "
                                      f"bytes never came ({why})", ts=ts))
        if self.fds:
            out.append(Out(NOTE, fds=tuple(self.fds), note=f"{len(self.fds)} fds arrived with no bytes", ts=ts))
            self.fds = []
        self.mode = CLOSED
        return out

    def _incomplete(self, ts: float, why: str) -> list[Out]:
        fds, flags = tuple(self.fds), (spec.VF_FDS_NOT_AT_MSG_START if self.late else 0) | (
            spec.VF_FDS_CTRUNC if self.ctrunc else 0)
        if self.body is not None:
            data, size = bytes(self.bview[:self.got]), self.size  # type: ignore[index]
            if self.mode == HEAD:
                size = spec.HEADER.unpack_from(self.hbuf)[2]
            out = [Out(MESSAGE, data, fds, flags, -1, ts=ts),
                   Out(NOTE, note=f"{self.dir} message cut short: {len(data)} of {size} bytes ({why})", ts=ts)]
        else:
            data = bytes(self.hbuf[:self.hgot])
            out = [Out(RAW, data, fds, flags, len(data), f"{len(data)}-byte partial header ({why})", ts),
                   Out(NOTE, note=f"{self.dir} partial header of {len(data)} bytes ({why})", ts=ts)]
        self.fds = []
        self._reset()
        return out


class ConnectionFraming:
    """Both directions of one connection, each framed against what its receiver negotiated in VERSION."""

    __slots__ = ("c2s", "s2c", "xfer")

    def __init__(self, stall_timeout: float = 0.5, limit: int = DEFAULT_LIMIT) -> None:
        self.c2s = Deframer(spec.C2S, limit, stall_timeout)
        self.s2c = Deframer(spec.S2C, limit, stall_timeout)
        self.xfer = {spec.C2S: 0, spec.S2C: 0}  # max_data_xfer_size each sender said it can receive

    def of(self, d: str) -> Deframer:
        return self.c2s if d == spec.C2S else self.s2c

    def saw(self, d: str, data: bytes | bytearray) -> dict[str, Any] | None:
        """A message framed in direction ``d``: a VERSION proposal or reply sets the other direction's limit (the
        sender of the JSON is the receiver of the other direction).  Returns the capabilities of a VERSION."""
        if len(data) < HEADER_SIZE + 4 or data[2] != spec.Command.VERSION or data[3] != 0:
            return None
        flags = spec.HEADER.unpack_from(data)[3]
        is_reply = flags & spec.FLAG_TYPE_MASK == spec.MSG_TYPE_REPLY
        if d != (spec.S2C if is_reply else spec.C2S) or flags & spec.FLAG_ERROR:
            return None
        caps = version_capabilities(data)
        xfer = capabilities.cap(caps, "max_data_xfer_size", 0)
        self.xfer[d] = xfer
        receiving = self.s2c if d == spec.C2S else self.c2s  # d's sender receives the other direction
        receiving.limit = limit_for(xfer or spec.DEFAULT_MAX_DATA_XFER_SIZE)
        return caps


def to_event(o: Out, conn: int, d: str, fds: tuple[Any, ...] = ()) -> Any:
    """The engine event for what framing put out on connection ``conn``, direction ``d`` (``fds``: the fds'
    descriptions, FdInfo, in place of the caller's tokens); None for a note that says nothing."""
    from .events import NoteIn, RawIn, make_message_in

    if o.kind == MESSAGE:
        return make_message_in(o.ts, conn, d, o.data, fds, 0, o.msg_len, o.flags)
    if o.kind == RAW:
        return RawIn(o.ts, conn, d, bytes(o.data), fds, 0, o.note, o.flags)
    return NoteIn(o.ts, conn, o.note, d) if o.note else None


def version_capabilities(data: bytes | bytearray) -> dict[str, Any]:
    """The capabilities object of a VERSION message, {} when absent or malformed (as the engine reads it)."""
    vd, _problems = capabilities.parse_version_data(bytes(data[HEADER_SIZE + 4:]))
    return vd.capabilities or {}


def twin_socket_index(caps: dict[str, Any], nfds: int) -> int | None:
    """The fd index a VERSION reply's capabilities name for the twin socket, None when it names none usable."""
    tw = caps.get("twin_socket")
    if isinstance(tw, dict) and tw.get("supported") is True:
        idx = tw.get("fd_index")
        if isinstance(idx, int) and not isinstance(idx, bool) and 0 <= idx < nfds:
            return idx
    return None
