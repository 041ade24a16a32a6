"""sockdump captures (``sockdump.py --format pcap``: eBPF copies of UNIX-socket sendmsg) -> engine events.

What sockdump writes (mechpen/sockdump, ``sockdump.py``; lines as of master 81ddb53, 2026-04-19)
--------------------------------------------------------------------------------------------------
* A classic pcap file: ``pcap_write_header`` (l. 331-333) packs ``'=IHHiIII'`` = magic 0xa1b2c3d4,
  version 2.4, thiszone 0, sigfigs 0, snaplen, network -- in the *native* byte order of the capturing
  host ('='), microsecond timestamps.  ``main`` (l. 404) passes ``snaplen = --seg-size`` (default
  ``SS_MAX_SEG_SIZE`` = 51200, l. 178) and ``network = PCAP_LINK_TYPE`` = 147, LINKTYPE_USER0 (l. 248).
* One record per iovec segment of one sendmsg: kprobes on ``unix_stream_sendmsg`` and
  ``unix_dgram_sendmsg`` (l. 382-385) submit one perf event per segment of ``msg->msg_iter``, at most
  ``--segs-per-msg`` (default 10, l. 179) of them (l. 145-169: the loop stops there, *silently*); a
  single-buffer iterator (ITER_UBUF, kernels >= 6.0, l. 105-125) is one segment of the whole ``len``; any
  other iterator, or one with ``iov_offset != 0``, is submitted with no data at all and ``len`` the whole
  sendmsg (l. 127-135; its SS_PACKET_F_ERR flag is not written to the pcap).
* The record (``pcap_output``, l. 340-352): ``pcap_write_record`` (l. 335-338) packs ``'=IIII'`` =
  ts_sec, ts_usec (``time.time()`` when the userspace reader got the event, l. 345-347, not when
  sendmsg ran), incl_len = len(data), orig_len; data = prefix + segment bytes, ``orig_len = len(prefix)
  + packet.len`` (l. 350-351) where ``packet.len`` is the segment's length (``iov_len``, l. 150).
* The prefix, current version (l. 348, since df6dbeb "Added capture of socket name", 2026-02-25, merged
  to master in 81ddb53): ``struct.pack('>109pQQ', path, peer_pid, pid)`` = the socket path as a Pascal
  string of UNIX_PATH_MAX + 1 = 109 bytes (one length byte, at most 108 path bytes, NUL padding), then
  the *peer's* pid and the *sender's* pid as big-endian u64 (both u32 in the kernel struct: l. 29-37,
  ``pid`` = the sender's tgid, l. 96; ``peer_pid`` = ``sk_peer_pid`` of the sending socket, l. 99):
  125 bytes.  The path is the sending socket's own address when it matches the path filter, else its
  peer's (l. 62-86, 98): the server's path on both sides.  An abstract socket's name starts with NUL,
  which the ctypes field (``c_char * 108``, l. 244) reads as an empty path; the open pull request #34
  keeps the NUL (``sanitize_pathname``).  The Wireshark example dissector (wireshark/dummy.lua) labels the two pids
  "src" then "dst", the reverse of what sockdump.py packs: the Python writer is what counts here.
* Older versions (40bc0a4 "also capture peer pid", 2019-12-19, to f7f092c, 2026-03-28, l. 348 there):
  prefix ``struct.pack('>QQ', peer_pid, pid)``, 16 bytes, no path.  The first pcap version (18e33b1,
  2018-10-16, l. 231) packed ``'>QQ', 0, pid``: the peer is unknown (0).
* How much of a segment is there: the eBPF program copies at most ``sizeof(packet->data)`` = seg-size
  bytes (l. 155-159) and submits the packet up to that size (l. 162-166); ``parse_event`` (l. 262-265)
  keeps ``min(packet.len, size)`` bytes where ``size`` is the perf sample's size, which the kernel rounds
  up to 8 bytes (kernel/events/core.c ``perf_prepare_sample``: ``raw->size = round_up(sum + sizeof(u32),
  sizeof(u64)) - sizeof(u32)``, the pad zero-filled).  So a segment longer than seg-size is cut
  (incl_len < orig_len), and when seg-size is not a multiple of 8 up to 7 bytes after it may be padding
  zeros, not data: this reader trusts at most ``snaplen`` (= seg-size) segment bytes of a record.
* Send side only: no fds (SCM_RIGHTS), no close, no record of what the receiver read.

How this module reads it
------------------------
* Layout: the first record decides between the 125-byte and the 16-byte prefix (a u32 pid in a u64
  leaves 4 zero bytes; a Pascal string is NUL-padded; a sender's pid is never 0); every record after it
  must have the same layout.  Not pcap, another link type, a record that is cut short or whose prefix
  is not sockdump's: one ``CaptureError`` naming the record (what came before it has been yielded).
* Connections: records with the same socket path and the same pair of pids {sender, peer}.  A record's
  sender is the side whose stream it is.  The client is the side that sends VERSION first; when the
  capture begins later, the first message decides (a command's sender is its spec requester, a
  reply's the other side) and a note says so; a new connection's records wait until its first
  sender's first 16 bytes are there.  With the first version's unknown peer (0), one path's first two
  senders are its sides.  Two connections between the same two processes on the same path (a
  reconnection) cannot be told apart: they read as one.  Both ends in one process: each segment's
  direction from the message it begins (a continuation keeps the one before it).
* Framing: each direction's segments, in record order, through ``core.framing``'s deframer
  (limits from VERSION, as the relay frames).  Events are numbered 1, 2, ... in ``frame`` (as if each
  were one record of a capture: unique, as the views need).  A message's timestamp is its last
  segment's.
* What sockdump cannot know is said once: a note per connection when it opens (no fds, no close,
  prefix ``FDS_UNSEEN_NOTE_PREFIX``), at the end a note per direction that lost bytes, and one for a
  side that sent nothing; ConnClosed (the whole connection) at the capture's last timestamp.
* Not knowable, not repaired: timestamps are the reader's (above), and bcc reads the per-CPU perf
  buffers one after the other, so two processes' records can come out of order (a reply before its
  request); the probe copies what sendmsg is asked to send, at its entry, so a non-blocking sendmsg that
  sends part of it and is called again with the rest would be recorded twice; segments past --segs-per-msg and
  perf-buffer overruns leave no trace (rule 3 below limits the damage).

The resync rule (a segment cut at seg-size)
-------------------------------------------
The bytes sockdump did not keep are known in number (orig_len - what is trusted), so the stream offset
is never lost by a cut, only the bytes:

1. The hole falls inside the body of the message in hand (its header arrived): that message is
   recorded as it arrived up to the hole, flagged ``VF_TRUNCATED`` with ``msg_len`` its size (the engine
   says CAPTURE_TRUNCATED, not MESSAGE_INCOMPLETE); the rest of it, in the following segments, is
   skipped by count, and framing goes on at the exact next message: nothing is misframed.
2. The hole reaches past the end of the message in hand, or falls on a header: where the next message
   starts is lost.  The direction then waits for a segment that *starts* with a plausible vfio-user
   header (16 bytes: a defined command, size 16 .. 64 MiB + slack, type command or reply, no reserved
   flag bits, no error in a command) and frames from it.  This holds because QEMU and libvfio-user
   write whole messages per sendmsg (QEMU one iovec per message; libvfio-user the header iovec, then the
   payload's), so the next sendmsg's first segment begins with a header.  The bytes skipped meanwhile
   are counted in the direction's note.
3. A direction starts framed (one probe call submits all segments of a sendmsg, so a capture begins at
   a sendmsg) unless its first 16 bytes are no header; then it waits as in 2.  A raw stretch (a header
   the deframer could not frame: sockdump also loses segments silently) ends the same way.  The segment
   framing resumes at must hold the whole header (libvfio-user's header iovec does).

fds: the engine raises FDS_MISSING (DMA_MAP with MMAP/FILE_IO, region info MMAP, region io fds),
DMA_MAP_DEGENERATE (an offset without an fd) and TWIN_SOCKET_BAD (fd_index past the fds) from fds
that are absent here; the note (spec.NOTE_FDS_UNSEEN_PREFIX) turns exactly those checks off on its
connection, so the engine judges what sockdump can see.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterator, Sequence

from .. import spec
from ..core import framing
from ..core.analyzer import Analyzer, AnalyzerConfig
from ..core.events import ConnClosed, ConnOpened, Cred, Event, MessageIn, NoteIn, make_message_in
from .reader import CaptureError, events_at, iter_records

LINKTYPE_USER0 = 147  # sockdump.py PCAP_LINK_TYPE
UNIX_PATH_MAX = 108
PATH_FIELD = UNIX_PATH_MAX + 1  # '109p': length byte + 108 bytes
PREFIX_WITH_PATH = PATH_FIELD + 16  # 125
PREFIX_PIDS = 16
WITH_PATH, PIDS_ONLY = "path+pids", "pids"  # the two record layouts
FDS_UNSEEN_NOTE_PREFIX = spec.NOTE_FDS_UNSEEN_PREFIX  # the engine turns its fd checks off on such a connection

_PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\x4d\x3c\xb2\xa1": "<",
                b"\xa1\xb2\x3c\x4d": ">"}
_PCAPNG = b"\x0a\x0d\x0d\x0a"
_HDR = spec.HEADER.unpack_from
_U64 = struct.Struct(">Q").unpack_from


@dataclass(frozen=True, slots=True)
class Segment:
    """One sockdump record: one iovec segment of one sendmsg, the bytes of it to trust and how many are lost."""

    number: int  # 1-based record number in the pcap
    ts: float
    path: str  # the socket path ("@name" for an abstract socket; "" when not recorded)
    peer_pid: int  # 0: not recorded (sockdump's first pcap version)
    pid: int  # the sender
    data: bytes
    lost: int  # bytes of the segment sockdump did not keep (cut at --seg-size, or sent without data)


@dataclass(frozen=True, slots=True)
class FileHeader:
    """What the file's header says: classic pcap or pcapng, link type, snaplen (0: unknown)."""

    kind: str  # "pcap" | "pcapng"
    linktype: int
    snaplen: int


# ------------------------------------------------------------------ the file
def _read_head(f: BinaryIO, n: int, have: bytes = b"") -> bytes:
    read = getattr(f, "read1", f.read)
    while len(have) < n:
        chunk = read(n - len(have))
        if not chunk:
            break
        have += chunk
    return have


def _header(head: bytes, f: BinaryIO | None = None) -> tuple[FileHeader | None, bytes]:
    """The file header from its first bytes (read on from ``f`` for a pcapng's first interface); None when
    it is neither pcap nor pcapng.  Returns the bytes read so far too."""
    magic = head[:4]
    if magic in _PCAP_MAGICS:
        if len(head) < 24:
            return None, head
        e = _PCAP_MAGICS[magic]
        snaplen, network = struct.unpack_from(e + "II", head, 16)
        return FileHeader("pcap", network & 0x0FFFFFFF, snaplen), head
    if magic == _PCAPNG and len(head) >= 12:
        e = "<" if head[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
        shb_len = struct.unpack_from(e + "I", head, 4)[0]
        if f is not None and shb_len <= 1 << 20:
            head = _read_head(f, shb_len + 16, head)
        if len(head) >= shb_len + 16 and struct.unpack_from(e + "I", head, shb_len)[0] == 1:
            linktype, _r, snaplen = struct.unpack_from(e + "HHI", head, shb_len + 8)
            return FileHeader("pcapng", linktype, snaplen), head
        return FileHeader("pcapng", -1, 0), head
    return None, head


def is_sockdump(path: str) -> bool:
    """The file is a pcap (or pcapng) of link type 147 (USER0), as sockdump writes; False if unreadable."""
    try:
        with open(path, "rb") as fh:
            hdr, _ = _header(_read_head(fh, 24), fh)
    except OSError:
        return False
    return hdr is not None and hdr.linktype == LINKTYPE_USER0


class _Replay:
    """A stream whose first bytes were already read: they come back first."""

    def __init__(self, head: bytes, f: BinaryIO) -> None:
        self._head, self._read = head, getattr(f, "read1", f.read)

    def read1(self, n: int = -1) -> bytes:
        if self._head:
            h, self._head = self._head, b""
            return h
        return self._read(n)

    read = read1


def _fits(d: bytes) -> tuple[bool, bool]:
    """(fits the 125-byte prefix, fits the 16-byte prefix)."""
    with_path = False
    if len(d) >= PREFIX_WITH_PATH and d[0] <= UNIX_PATH_MAX:
        n = d[0]
        with_path = (not any(d[1 + n:PATH_FIELD]) and b"\0" not in d[2:1 + n]
                     and not any(d[PATH_FIELD:PATH_FIELD + 4]) and not any(d[PATH_FIELD + 8:PATH_FIELD + 12])
                     and any(d[PATH_FIELD + 12:PATH_FIELD + 16]))
    pids = len(d) >= PREFIX_PIDS and not any(d[0:4]) and not any(d[8:12]) and any(d[12:16])
    return with_path, pids


def _path_text(raw: bytes) -> str:
    if raw[:1] == b"\0":
        return "@" + raw[1:].decode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def segments(f: BinaryIO, path: str = "<sockdump>", progress: Callable[[int], None] | None = None,
             on_header: Callable[[FileHeader], None] | None = None) -> Iterator[Segment]:
    """The records of a sockdump pcap, parsed (``CaptureError`` on a foreign or damaged file); ``on_header``
    is told the file header once it has been read."""
    hdr, head = _header(_read_head(f, 24), f)
    if hdr is None:
        if not head:
            raise CaptureError(path, 0, "empty file, not a sockdump pcap")
        raise CaptureError(path, 0, f"not a pcap capture (starts with {head[:4].hex()}), so not sockdump's")
    if hdr.linktype != LINKTYPE_USER0:
        raise CaptureError(path, 0, f"link type {hdr.linktype} is not {LINKTYPE_USER0} (USER0, what sockdump "
                                    "--format pcap writes): not a sockdump capture")
    if on_header is not None:
        on_header(hdr)
    snaplen = hdr.snaplen
    layout: str | None = None
    for r in iter_records(_Replay(head, f), path, progress):  # type: ignore[arg-type]
        d = r.data
        if r.linktype != LINKTYPE_USER0:
            raise CaptureError(path, r.number, f"link type {r.linktype} is not {LINKTYPE_USER0}")
        fit_path, fit_pids = _fits(d)
        if layout is None:
            if not (fit_path or fit_pids):
                raise CaptureError(path, r.number, f"{len(d)}-byte record does not start with sockdump's prefix "
                                   "(socket path, peer pid, sender pid; or the two pids): not a sockdump capture")
            layout = WITH_PATH if fit_path else PIDS_ONLY
        if layout == WITH_PATH:
            if not fit_path:
                raise CaptureError(path, r.number, "record does not start with sockdump's 125-byte prefix "
                                   "(socket path, peer pid, sender pid) as the records before it do")
            plen = PREFIX_WITH_PATH
            sock = _path_text(d[1:1 + d[0]])
            peer, pid = _U64(d, PATH_FIELD)[0], _U64(d, PATH_FIELD + 8)[0]
        else:
            if not fit_pids:
                raise CaptureError(path, r.number, "record does not start with sockdump's 16-byte prefix "
                                   "(peer pid, sender pid) as the records before it do")
            plen = PREFIX_PIDS
            sock = ""
            peer, pid = _U64(d, 0)[0], _U64(d, 8)[0]
        seg_len = r.origlen - plen
        if seg_len < len(d) - plen:
            raise CaptureError(path, r.number, f"captured length {len(d)} exceeds the original {r.origlen}")
        payload = d[plen:]
        if snaplen and len(payload) > snaplen:
            payload = payload[:snaplen]  # beyond --seg-size: perf padding, never data
        yield Segment(r.number, r.ts_ns / 1e9, sock, peer, pid, payload, seg_len - len(payload))


# ------------------------------------------------------------------ framing
def starts_message(data: bytes) -> bool:
    """The bytes begin with a plausible vfio-user header (where framing may resume)."""
    if len(data) < spec.HEADER_SIZE:
        return False
    _id, cmd, size, flags, err = _HDR(data)
    if cmd not in spec.COMMANDS or size < spec.HEADER_SIZE or size > framing.ABSOLUTE_LIMIT \
            or flags & spec.FLAG_RESERVED_MASK:
        return False
    mtype = flags & spec.FLAG_TYPE_MASK
    if mtype == spec.MSG_TYPE_COMMAND:
        return err == 0 and not flags & spec.FLAG_ERROR
    return mtype == spec.MSG_TYPE_REPLY and err <= spec.MAX_ERRNO


def _role(data: bytes) -> tuple[str, str] | None:
    """(the sender's role, "client" | "server"; the message that says so, "a DMA_READ command") from the
    message the bytes begin with; None when they begin none."""
    if not starts_message(data):
        return None
    _id, cmd, _size, flags, _err = _HDR(data)
    info = spec.COMMANDS[cmd]
    is_cmd = flags & spec.FLAG_TYPE_MASK == spec.MSG_TYPE_COMMAND
    client = (info.requester == spec.C2S) == is_cmd
    return ("client" if client else "server"), f"a {info.name} {'command' if is_cmd else 'reply'}"


_VERSION_FIRST = "a VERSION command"


class _Stream:
    """One direction of one connection: framing state and what sockdump lost of it."""

    __slots__ = ("d", "synced", "started", "skip", "cuts", "lost", "truncated", "skipped", "resyncs", "sent",
                 "first_cut")

    def __init__(self, d: str) -> None:
        self.d = d
        self.synced = False  # framing follows the stream (else: waiting for a segment that starts a message)
        self.started = False
        self.skip = 0  # bytes still to drop: the rest of a message recorded truncated
        self.cuts = self.lost = self.truncated = self.skipped = self.resyncs = 0
        self.sent = False
        self.first_cut = 0  # the sockdump record number of the first segment cut short


class _Conn:
    """One connection: its sides' pids, both directions' streams and framing."""

    __slots__ = ("num", "path", "client", "server", "streams", "cf", "same_pid", "last_dir")

    def __init__(self, num: int, path: str, client: int, server: int) -> None:
        self.num, self.path, self.client, self.server = num, path, client, server
        self.streams = {d: _Stream(d) for d in spec.DIRECTIONS}
        self.cf = framing.ConnectionFraming()
        self.same_pid = client == server and client != 0
        self.last_dir = spec.C2S

    def df(self, d: str) -> framing.Deframer:
        return self.cf.of(d)

    def fresh(self, d: str) -> None:
        old = self.cf.of(d)
        setattr(self.cf, d, framing.Deframer(d, old.limit, old.stall_timeout))


class _Importer:
    """Segments in, engine events out (see the module's rules)."""

    def __init__(self) -> None:
        self.conns: dict[tuple[Any, ...], _Conn] = {}
        self.pending: dict[tuple[Any, ...], list[Segment]] = {}  # records of connections not yet opened
        self.order: list[_Conn] = []
        self.frame = 0
        self.snaplen = 0
        self.last_ts = 0.0
        self.out: list[Event] = []

    # events, numbered
    def emit(self, ev: Event) -> None:
        self.frame += 1
        if type(ev) is MessageIn:
            ev = make_message_in(ev.ts, ev.conn, ev.dir, ev.data, ev.fds, self.frame, ev.msg_len, ev.flags)
        else:
            ev = dataclasses.replace(ev, frame=self.frame)  # type: ignore[arg-type]
        self.out.append(ev)

    def note(self, ts: float, conn: int, text: str, d: str | None = None) -> None:
        self.emit(NoteIn(ts, conn, text, d))

    def put(self, c: _Conn, d: str, outs: list[framing.Out]) -> None:
        for o in outs:
            if o.kind == framing.MESSAGE and not o.flags & spec.VF_TRUNCATED:
                c.cf.saw(d, o.data)
            ev = framing.to_event(o, c.num, d)
            if ev is not None:
                self.emit(ev)

    # connections
    def key_of(self, seg: Segment) -> tuple[Any, ...]:
        pid, peer = seg.pid, seg.peer_pid
        if peer:
            return seg.path, min(pid, peer), max(pid, peer)
        c0 = self.conns.get((seg.path, 0))
        if c0 is not None and pid not in (c0.client, c0.server) and c0.client and c0.server:
            return seg.path, 0, pid  # a third sender with no peer recorded: a connection of its own
        return seg.path, 0

    def dir_of(self, c: _Conn, seg: Segment) -> str:
        if c.same_pid:
            r = _role(seg.data)
            d = c.last_dir if r is None else (spec.C2S if r[0] == "client" else spec.S2C)
            c.last_dir = d
            return d
        if not seg.peer_pid and seg.pid not in (c.client, c.server):  # the unknown other side speaks
            if c.client == 0:
                c.client = seg.pid
            else:
                c.server = seg.pid
        return spec.C2S if seg.pid == c.client else spec.S2C

    def open(self, key: tuple[Any, ...], seg: Segment, head: bytes) -> _Conn:
        """A connection first seen: its sides from ``head``, the first bytes its first sender sent."""
        r = _role(head)
        sender_is_client = r is None or r[0] == "client"
        other = seg.peer_pid
        client, server = (seg.pid, other) if sender_is_client else (other, seg.pid)
        c = _Conn(len(self.order) + 1, seg.path, client, server)
        self.conns[key] = c
        self.order.append(c)
        ts = seg.ts
        self.emit(ConnOpened(ts, c.num, seg.path, Cred(client, 0, 0) if client else None,
                             Cred(server, 0, 0) if server else None))
        self.note(ts, c.num, f"{FDS_UNSEEN_NOTE_PREFIX}sockdump copies the bytes each process hands to sendmsg, "
                             "not the fds passed with them (SCM_RIGHTS): DMA_MAP memfds, SET_IRQS eventfds and "
                             "region fds are absent and the checks that need them are not made; it does not see "
                             "the connection close either (closed here when the capture ends)")
        if c.same_pid:
            self.note(ts, c.num, f"both ends are pid {seg.pid}: each segment's direction is taken from the "
                                 "message it starts (a continuation keeps the one before it)")
        elif r is None:
            self.note(ts, c.num, f"pid {seg.pid} is taken as the client: its first bytes do not begin with a "
                                 "vfio-user header (the capture began inside the connection)")
        elif r[1] != _VERSION_FIRST:
            role = "client" if sender_is_client else "server"
            self.note(ts, c.num, f"the capture began after this connection's VERSION: pid {seg.pid} is taken as "
                                 f"the {role}, its first message being {r[1]}")
        return c

    # bytes
    def segment(self, seg: Segment) -> None:
        """One record: to its connection; a new connection's records wait until its first sender's first 16
        bytes say who is the client (or the other side speaks, or bytes are lost)."""
        self.last_ts = max(self.last_ts, seg.ts)
        key = self.key_of(seg)
        c = self.conns.get(key)
        if c is not None:
            self.framed(c, seg)
            return
        waiting = self.pending.setdefault(key, [])
        waiting.append(seg)
        if waiting[0].pid == seg.pid and not seg.lost and sum(len(w.data) for w in waiting) < spec.HEADER_SIZE:
            return
        self.opened(key)

    def opened(self, key: tuple[Any, ...]) -> None:
        waiting = self.pending.pop(key)
        first = waiting[0].pid
        head = b"".join(w.data for w in waiting if w.pid == first)
        c = self.open(key, waiting[0], head)
        for w in waiting:
            self.framed(c, w)

    def framed(self, c: _Conn, seg: Segment) -> None:
        d = self.dir_of(c, seg)
        s = c.streams[d]
        s.sent = True
        data, ts = seg.data, seg.ts
        if not s.started and (len(data) < spec.HEADER_SIZE or starts_message(data)):
            s.synced = True  # a capture begins at a sendmsg (its segments are submitted together)
        if s.skip:
            k = min(s.skip, len(data))
            s.skip -= k
            s.skipped += k
            data = data[k:]
        elif not s.synced or c.df(d).raw:
            if starts_message(data):
                if s.started:
                    s.resyncs += 1
                c.fresh(d)
                s.synced = True
            elif not s.synced:
                s.skipped += len(data)
                data = b""
        if data:
            self.put(c, d, c.df(d).feed(data, ts=ts))
        if seg.lost:
            if not s.cuts:
                s.first_cut = seg.number
            s.cuts += 1
            s.lost += seg.lost
            self.hole(c, s, seg.lost, ts)
        s.started = True

    def cut_short(self, c: _Conn, s: _Stream, ts: float) -> int:
        """The message in hand ends here, recorded truncated; returns how many of its bytes are still to come
        (0 when none is in hand, -1 when its header was cut: no one knows)."""
        d = s.d
        df = c.df(d)
        rest = 0
        if df.mode == framing.BODY:
            size, rest = df.size, df.size - df.got
            msg = df.close(ts)[0]
            self.put(c, d, [framing.Out(framing.MESSAGE, msg.data, (), msg.flags | spec.VF_TRUNCATED, size,
                                        ts=ts)])
            s.truncated += 1
        elif df.mode == framing.PASS:
            rest = df.pass_left  # a message beyond the limit: its header went out, its body is lost from here
        elif df.mode == framing.HEADER and df.hgot:
            s.skipped += df.hgot
            rest = -1
        c.fresh(d)
        return rest

    def hole(self, c: _Conn, s: _Stream, n: int, ts: float) -> None:
        if s.skip:
            if n <= s.skip:
                s.skip -= n
            else:
                s.skip, s.synced = 0, False
            return
        if not s.synced or c.df(s.d).raw:
            return
        rest = self.cut_short(c, s, ts)
        if 0 < n <= rest:
            s.skip = rest - n
        else:
            s.synced = False

    def finish(self) -> None:
        for key in list(self.pending):
            self.opened(key)
        ts = self.last_ts
        for c in self.order:
            for d in spec.DIRECTIONS:
                s = c.streams[d]
                df = c.df(d)
                if s.synced and not s.skip and df.mode == framing.BODY:
                    got, size = df.got, df.size
                    self.cut_short(c, s, ts)
                    s.truncated -= 1
                    self.note(ts, c.num, f"{d} message cut short: the capture ended after {got} of its {size} "
                                         "bytes", d)
                if s.cuts or s.skipped or s.resyncs:
                    parts = []
                    if s.cuts:
                        at = f" of {self.snaplen} bytes" if self.snaplen else ""
                        parts.append(f"{s.cuts} segments were cut short by sockdump (at its --seg-size{at}, or "
                                     f"sent without data), the first in sockdump record {s.first_cut}: {s.lost} "
                                     f"bytes not captured; {s.truncated} messages recorded truncated")
                    if s.resyncs:
                        parts.append(f"framing lost its place {s.resyncs} times and resumed at the next segment that "
                                     "began with a vfio-user header")
                    if s.skipped:
                        parts.append(f"{s.skipped} captured bytes skipped, framing could not place them")
                    self.note(ts, c.num, f"{d}: " + "; ".join(parts), d)
            for d, role, pid in ((spec.C2S, "client", c.client), (spec.S2C, "server", c.server)):
                if not c.streams[d].sent and not c.same_pid:
                    who = f"the {role} (pid {pid})" if pid else f"the {role}"
                    self.note(ts, c.num, f"{who} sent nothing in this capture: sockdump records what each process "
                                         f"sends, so the {d} direction is empty")
            self.emit(ConnClosed(ts, c.num))


def sockdump_events(f: BinaryIO, path: str = "<sockdump>",
                    progress: Callable[[int], None] | None = None) -> Iterator[Event]:
    """Engine events of a sockdump pcap stream (``CaptureError`` on a foreign or damaged file, after every
    event of the records before it)."""
    imp = _Importer()
    out = imp.out

    def header(h: FileHeader) -> None:
        imp.snaplen = h.snaplen

    for seg in segments(f, path, progress, header):
        imp.segment(seg)
        if out:
            yield from out
            out.clear()
    imp.finish()
    yield from out
    out.clear()


def open_sockdump(path: str, progress: Callable[[int], None] | None = None) -> Iterator[Event]:
    """Open a sockdump pcap by path ("-" = stdin) and yield its events."""
    return events_at(path, sockdump_events, progress)


def open_events(path: str, progress: Callable[[int], None] | None = None) -> Iterator[Event]:
    """A vfudissect capture's events, or a sockdump pcap's (link type 147, told by its header; stdin too)."""
    return events_at(path, _sniffed_events, progress)


def open_event_batches(path: str, progress: Callable[[int], None] | None = None) -> Iterator[Sequence[Event]]:
    """``open_events`` in batches (reader.event_batches_of; a sockdump pcap's events one by one)."""
    return events_at(path, _sniffed_batches, progress)


def _sniffed_events(f: BinaryIO, label: str, progress: Callable[[int], None] | None) -> Iterator[Event]:
    """The events of a stream, read as a sockdump pcap or a vfudissect capture as its header says (the decoder's
    own iterator, not one more generator around it: each event passes through it)."""
    from .reader import read_events

    replay, sockdump = _sniffed(f)
    if sockdump:
        return sockdump_events(replay, label, progress)  # type: ignore[arg-type]
    return read_events(replay, label, progress)  # type: ignore[arg-type]


def _sniffed_batches(f: BinaryIO, label: str, progress: Callable[[int], None] | None) -> Iterator[Sequence[Event]]:
    from .reader import read_event_batches

    replay, sockdump = _sniffed(f)
    if sockdump:
        return ((ev,) for ev in sockdump_events(replay, label, progress))  # type: ignore[arg-type]
    return read_event_batches(replay, label, progress)  # type: ignore[arg-type]


def _sniffed(f: BinaryIO) -> tuple[_Replay, bool]:
    """The stream with its first bytes put back, and whether its header says sockdump (link type 147)."""
    hdr, head = _header(_read_head(f, 24), f)
    return _Replay(head, f), hdr is not None and hdr.linktype == LINKTYPE_USER0


# ------------------------------------------------------------------ the engine, fd-blind connections
def write_judged(f: BinaryIO, out: BinaryIO, name: str = "<sockdump>", *,
                 timeout: float = spec.DEFAULT_REPLY_TIMEOUT, flush: bool = False,
                 progress: Callable[[int], None] | None = None) -> int:
    """A sockdump pcap as a judged vfudissect capture (``import --sockdump``); returns the records written.
    ``CaptureError`` on a foreign or damaged file (what was written before it stays written)."""
    from .judge import JudgingWriter
    from .writer import CaptureWriter

    w = CaptureWriter(out, comment=f"imported from the sockdump capture {name}", flush=flush, judged=timeout)
    judge = JudgingWriter(w, Analyzer(AnalyzerConfig(timeout)))
    last = 0.0
    for ev in sockdump_events(f, name, progress):
        judge.write(ev)
        last = max(last, ev.ts)
    judge.finish(last)
    return w.records
