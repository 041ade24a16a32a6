"""Streaming capture reader: pcapng or classic pcap of VFUC records -> engine events.

Reads in large chunks, never holds more than one block plus the fragments of
messages still being reassembled.  Unknown block types, options, VFUC TLVs and
newer header fields are skipped by length.  A damaged file ends the stream
with a ``CaptureError`` naming the record; everything before it has already
been yielded.  A record that is damaged inside a sound block becomes a
``NoteIn`` (and a finding) and reading goes on.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterable, Iterator, NamedTuple, Sequence

from .. import spec
from ..core.events import ConnClosed, ConnOpened, Event, IrqIn, MessageIn, NoteIn, RawIn, make_message_in
from ..fastpath import fast
from . import vfuc

_CHUNK = 1 << 20
_MAX_BLOCK = spec.PCAPNG_MAX_BLOCK
CORRUPT_NOTE_PREFIX = spec.NOTE_CORRUPT_PREFIX


class CaptureError(Exception):
    """The capture cannot be read on from here (cannot be opened, not a capture, truncated, foreign link type).

    ``record`` is the 1-based record number where reading stopped, 0 for the file header, -1 when the file
    could not even be opened."""

    def __init__(self, path: str, record: int, message: str) -> None:
        self.path, self.record, self.message = path, record, message
        if record < 0:
            text = f"cannot read {path}: {message}"
        else:
            text = f"{path}: {f'record {record}' if record else 'file header'}: {message}"
        super().__init__(text)


class RawRecord(NamedTuple):
    """One packet record of the file (a NamedTuple: built once per record on the hot path)."""

    number: int  # 1-based record number, as Wireshark counts frames
    ts_ns: int
    linktype: int
    data: bytes
    origlen: int
    epb_flags: int | None


class _Buf:
    """A forward-only read buffer over a binary stream."""

    __slots__ = ("f", "buf", "pos", "consumed", "eof", "progress", "_read")

    def __init__(self, f: BinaryIO, progress: Callable[[int], None] | None) -> None:
        self.f, self.buf, self.pos, self.consumed, self.eof = f, b"", 0, 0, False
        self.progress = progress
        # read1: what is there, up to the chunk size (a pipe is read as records arrive, not a megabyte at a time)
        self._read = getattr(f, "read1", f.read)

    def need(self, n: int) -> bool:
        """Make n bytes available at pos; False at a clean or unclean end of file."""
        while len(self.buf) - self.pos < n:
            if self.eof:
                return False
            chunk = self._read(max(_CHUNK, n))
            if not chunk:
                self.eof = True
                return False
            self.consumed += self.pos
            self.buf = self.buf[self.pos:] + chunk
            self.pos = 0
            if self.progress is not None:
                self.progress(len(chunk))
        return True

    def remaining(self) -> int:
        return len(self.buf) - self.pos


class _Batch(list):  # type: ignore[type-arg]
    """Events the compiled scanner made of a run of plain message records (``_iter_pcapng(scan=True)``)."""


# the compiled scanner (None: the pure path); tests set it to None to run the pure path in this process
_scan: Callable[..., tuple[list[Event], int, int]] | None = fast.scan_messages if fast is not None else None
_FAST_PREFIXES = (vfuc.EXP_PREFIX_DIR[spec.C2S], vfuc.EXP_PREFIX_DIR[spec.S2C])
_SCAN_BATCH = 256  # events made per call: few enough that the ones waiting to be judged cost little memory


def iter_records(f: BinaryIO, path: str = "<capture>",
                 progress: Callable[[int], None] | None = None) -> Iterator[RawRecord]:
    """Yield the packet records of a pcapng or classic pcap stream."""
    b = _Buf(f, progress)
    if _is_pcapng(b, path):
        yield from _iter_pcapng(b, path)
    else:
        yield from _iter_pcap(b, path)


def _records_or_batches(f: BinaryIO, path: str, progress: Callable[[int], None] | None) -> Iterator[RawRecord]:
    """``iter_records``, with runs of plain message records already made events by the compiled scanner (each
    run a ``_Batch``) where it is built: what ``read_events`` feeds ``events_of``."""
    b = _Buf(f, progress)
    if _is_pcapng(b, path):
        yield from _iter_pcapng(b, path, scan=_scan is not None)
    else:
        yield from _iter_pcap(b, path)


def iter_blocks(f: BinaryIO, path: str = "<capture>",
                progress: Callable[[int], None] | None = None) -> Iterator[tuple[bytes | None, RawRecord | None]]:
    """(block bytes, record) for every block of a pcapng stream, in order: ``record`` is None for blocks that
    are not packets (section and interface headers, statistics, ...), which ``annotate`` copies as they are.
    A classic pcap stream has no blocks to copy: its records come with ``None`` bytes."""
    b = _Buf(f, progress)
    if _is_pcapng(b, path):
        yield from _iter_pcapng(b, path, blocks=True)  # type: ignore[misc]
    else:
        for r in _iter_pcap(b, path):
            yield None, r


def _is_pcapng(b: _Buf, path: str) -> bool:
    if not b.need(4):
        raise CaptureError(path, 0, "empty file, not a pcap or pcapng capture")
    magic = b.buf[b.pos:b.pos + 4]
    if magic == b"\x0a\x0d\x0d\x0a":
        return True
    if magic in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"):
        return False
    raise CaptureError(path, 0, f"not a pcap or pcapng capture (starts with {magic.hex()})")


def _iter_pcap(b: _Buf, path: str) -> Iterator[RawRecord]:
    if not b.need(24):
        raise CaptureError(path, 0, "truncated pcap file header")
    m = b.buf[b.pos:b.pos + 4]
    e = "<" if m in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nano = m in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack_from(e + "I", b.buf, b.pos + 20)[0] & 0x0FFFFFFF
    b.pos += 24
    rec = struct.Struct(e + "IIII")
    n = 0
    while True:
        if not b.need(16):
            if b.remaining():
                raise CaptureError(path, n + 1, "truncated record header")
            return
        sec, frac, caplen, origlen = rec.unpack_from(b.buf, b.pos)
        if caplen > _MAX_BLOCK:
            raise CaptureError(path, n + 1, f"record length {caplen} is implausible")
        if not b.need(16 + caplen):
            raise CaptureError(path, n + 1, f"truncated record ({b.remaining() - 16} of {caplen} bytes)")
        n += 1
        data = b.buf[b.pos + 16:b.pos + 16 + caplen]
        b.pos += 16 + caplen
        yield RawRecord(n, sec * 1_000_000_000 + (frac if nano else frac * 1000), linktype, data, origlen, None)


def _iter_pcapng(b: _Buf, path: str, blocks: bool = False, scan: bool = False) -> Iterator[RawRecord]:
    e = "<"
    ifaces: list[tuple[int, int]] = []  # (linktype, ticks per second)
    fast_ifs = b""  # per interface: 1 where the compiled scanner may take its packets (link type 252, ns)
    scanner = _scan if scan else None
    c2s, s2c = spec.C2S, spec.S2C
    p0, p1 = _FAST_PREFIXES
    n = 0
    while True:
        if scanner is not None and fast_ifs and e == "<":
            evs, pos, n = scanner(b.buf, b.pos, fast_ifs, n, p0, p1, c2s, s2c, MessageIn, _SCAN_BATCH)
            if evs:
                b.pos = pos
                yield _Batch(evs)  # type: ignore[misc]
        if not b.need(8):
            if b.remaining():
                raise CaptureError(path, n + 1, "truncated block header")
            return
        if b.buf[b.pos:b.pos + 4] == b"\x0a\x0d\x0d\x0a":
            if not b.need(12):
                raise CaptureError(path, n + 1, "truncated section header")
            bom = b.buf[b.pos + 8:b.pos + 12]
            if bom == b"\x4d\x3c\x2b\x1a":
                e = "<"
            elif bom == b"\x1a\x2b\x3c\x4d":
                e = ">"
            else:
                raise CaptureError(path, n + 1, "bad section header byte-order magic")
            ifaces = []
            fast_ifs = b""
        btype, blen = struct.unpack_from(e + "II", b.buf, b.pos)
        if blen < 12 or blen % 4 or blen > _MAX_BLOCK:
            raise CaptureError(path, n + 1, f"block length {blen} is invalid")
        if not b.need(blen):
            raise CaptureError(path, n + 1, f"truncated block ({b.remaining()} of {blen} bytes)")
        body_off = b.pos + 8
        end = b.pos + blen - 4
        if btype == 1:  # IDB
            linktype = struct.unpack_from(e + "H", b.buf, body_off)[0]
            tps = 1_000_000
            opt = body_off + 8
            while opt + 4 <= end:
                code, olen = struct.unpack_from(e + "HH", b.buf, opt)
                if code == 0:
                    break
                if code == 9 and olen >= 1:
                    r = b.buf[opt + 4]
                    tps = 2 ** (r & 0x7F) if r & 0x80 else 10 ** r
                opt += 4 + olen + (-olen % 4)
            ifaces.append((linktype, tps))
            fast_ifs += b"\1" if (linktype, tps) == (spec.LINKTYPE_WIRESHARK_UPPER_PDU, 1_000_000_000) else b"\0"
            if blocks:
                yield b.buf[b.pos:b.pos + blen], None  # type: ignore[misc]
        elif btype == 6:  # EPB
            n += 1
            if_id, hi, lo, caplen, origlen = struct.unpack_from(e + "IIIII", b.buf, body_off)
            if if_id >= len(ifaces):
                raise CaptureError(path, n, f"packet on undeclared interface {if_id}")
            dstart = body_off + 20
            if dstart + caplen > end:
                raise CaptureError(path, n, f"captured length {caplen} runs past its block")
            data = b.buf[dstart:dstart + caplen]
            flags = None  # EPB options (direction flags) are redundant with the VFUC header
            linktype, tps = ifaces[if_id]
            ticks = (hi << 32) | lo
            ts_ns = ticks if tps == 1_000_000_000 else ticks * 1_000_000_000 // tps
            if blocks:
                yield b.buf[b.pos:b.pos + blen], RawRecord(n, ts_ns, linktype, data, origlen, flags)  # type: ignore[misc]
            else:
                yield RawRecord(n, ts_ns, linktype, data, origlen, flags)
        elif btype == 3:  # SPB
            n += 1
            if not ifaces:
                raise CaptureError(path, n, "simple packet before any interface")
            origlen = struct.unpack_from(e + "I", b.buf, body_off)[0]
            data = b.buf[body_off + 4:end]
            rec = RawRecord(n, 0, ifaces[0][0], data[:origlen], origlen, None)
            if blocks:
                yield b.buf[b.pos:b.pos + blen], rec  # type: ignore[misc]
            else:
                yield rec
        elif blocks:
            yield b.buf[b.pos:b.pos + blen], None  # type: ignore[misc]
        b.pos += blen


@dataclass(slots=True)
class _Partial:
    first: vfuc.VfucRecord
    parts: list[bytes]
    have: int


def not_ours(r: RawRecord, path: str) -> CaptureError | None:
    """What a record read before any record of ours says of the file: None when it is ours (a vfucap exported PDU),
    else the error refusing the file as not a vfudissect capture (another link type, another dissector's exported
    PDUs).  A record that is merely damaged is not a refusal: the reader notes it and goes on."""
    if r.linktype != spec.LINKTYPE_WIRESHARK_UPPER_PDU:
        hint = " (a sockdump capture: `vfudissect import --sockdump` makes one of it)" if r.linktype == 147 else ""
        return CaptureError(path, r.number, f"link type {r.linktype} is not {spec.LINKTYPE_WIRESHARK_UPPER_PDU} "
                            f"(exported PDU): not a vfudissect capture{hint}")
    try:
        name, _p2p, _off = vfuc.strip_exported_pdu(r.data)
    except (vfuc.VfucError, struct.error):
        return None
    if name == spec.EXPORTED_PDU_DISSECTOR_NAME:
        return None
    what = f"for dissector {name!r}" if name is not None else "without a dissector name"
    return CaptureError(path, r.number, f"exported PDU {what}, not {spec.EXPORTED_PDU_DISSECTOR_NAME!r}: not a "
                        "vfudissect capture")


def read_events(f: BinaryIO, path: str = "<capture>",
                progress: Callable[[int], None] | None = None) -> Iterator[Event]:
    """Yield engine events for every record of a VFUC capture, reassembling fragments."""
    return events_of(_records_or_batches(f, path, progress), path)


def read_event_batches(f: BinaryIO, path: str = "<capture>",
                       progress: Callable[[int], None] | None = None) -> Iterator[Sequence[Event]]:
    """``read_events`` in batches (``event_batches_of``)."""
    return event_batches_of(_records_or_batches(f, path, progress), path)


def events_of(records: Iterable[RawRecord], path: str = "<capture>") -> Iterator[Event]:
    """Engine events of a stream of packet records (a file's, or annotate's renumbered copy), fragments
    reassembled; each event is yielded as soon as its last record has been taken."""
    for batch in event_batches_of(records, path):
        yield from batch


def event_batches_of(records: Iterable[RawRecord], path: str = "<capture>") -> Iterator[Sequence[Event]]:
    """``events_of`` in batches: the compiled scanner's run of events as it made them, any other event alone (a
    loop over them costs no generator step per event: what ``stats`` reads).

    Fast path: a whole message with no fds behind the two fixed exported-PDU
    prefixes our writer emits is decoded with one struct call; everything else
    goes through the general decoder (vfuc.decode).
    """
    partial: dict[tuple[int, str | None, int], _Partial] = {}
    decode = vfuc.decode
    strip = vfuc.strip_exported_pdu
    MSG, RAW, ORIGINAL = spec.RecType.MSG, spec.RecType.RAW, spec.RecType.ORIGINAL
    MORE = spec.VF_MORE_FRAGMENTS
    fast_prefix = {vfuc.EXP_PREFIX_DIR[d]: d for d in spec.DIRECTIONS}
    plen = len(vfuc.EXP_PREFIX_DIR[spec.C2S])
    fixed = spec.VFUC_FIXED.unpack_from
    vmagic = spec.VFUC_MAGIC
    fsize = spec.VFUC_FIXED_SIZE
    upper_pdu = spec.LINKTYPE_WIRESHARK_UPPER_PDU
    ours = False  # a record of ours has been read: a foreign one after it is damage, before it a foreign file
    for r in records:
        if type(r) is _Batch:  # events already (the compiled scanner's, of records the fast path below would take)
            ours = True
            yield r
            continue
        data = r.data
        ts = r.ts_ns / 1e9
        if r.linktype != upper_pdu:
            raise not_ours(r, path)  # type: ignore[misc]  # another link type: never a record of ours
        d = fast_prefix.get(data[:plen])
        if d is not None and len(data) >= plen + fsize:
            (magic, _v, rt, hdr_len, conn, _d, flags, n_fds, msg_len, frag_off, _seq, _fl, _r) = fixed(data, plen)
            if magic == vmagic and rt == MSG and hdr_len == fsize and not n_fds and not frag_off \
                    and not flags & MORE:
                ours = True
                payload = data[plen + fsize:]
                yield (make_message_in(ts, conn, d, payload, (), r.number, msg_len if msg_len else len(payload),
                                       flags),)
                continue
        try:
            name, _p2p, off = strip(data)
            if name != spec.EXPORTED_PDU_DISSECTOR_NAME:
                if not ours:  # another dissector's capture altogether, not a damaged record of ours
                    raise not_ours(r, path)  # type: ignore[misc]
                raise vfuc.VfucError(f"exported PDU for dissector {name!r}, not {spec.EXPORTED_PDU_DISSECTOR_NAME!r}")
            rec = decode(data, off)
            ours = True
        except (vfuc.VfucError, struct.error) as exc:
            yield (NoteIn(ts, 0, f"{CORRUPT_NOTE_PREFIX}{exc}", None, r.number),)
            continue
        rt = rec.rec_type
        if rt == MSG or rt == RAW or rt == ORIGINAL:
            if rec.dir is None:
                yield (NoteIn(ts, rec.conn, f"{CORRUPT_NOTE_PREFIX}message record without direction", None, r.number),)
                continue
            payload = rec.payload
            flags = rec.flags
            if rec.frag_off or flags & MORE:
                key = (rec.conn, rec.dir, rec.msg_seq)
                p = partial.get(key)
                if p is None:
                    if rec.frag_off != 0:
                        yield (NoteIn(ts, rec.conn, f"{CORRUPT_NOTE_PREFIX}fragment at offset {rec.frag_off} "
                                     "without its start", rec.dir, r.number),)
                        continue
                    partial[key] = _Partial(rec, [payload], len(payload))
                    continue
                if rec.frag_off != p.have:
                    del partial[key]
                    yield (NoteIn(ts, rec.conn, f"{CORRUPT_NOTE_PREFIX}fragment at offset {rec.frag_off}, "
                                 f"expected {p.have}", rec.dir, r.number),)
                    continue
                p.parts.append(payload)
                p.have += len(payload)
                if flags & MORE:
                    continue
                del partial[key]
                payload = b"".join(p.parts)
                flags = (p.first.flags | flags) & ~MORE
                first = p.first
            else:
                first = rec
            if rt != RAW:
                yield (MessageIn(ts, rec.conn, rec.dir, payload, first.fds, r.number,
                                first.msg_len if first.msg_len else len(payload),
                                flags | spec.VF_WITHHELD if rt == ORIGINAL else flags),)
            else:
                yield (RawIn(ts, rec.conn, rec.dir, payload, first.fds, r.number, first.tlv_text(spec.Tlv.NOTE),
                             flags),)
        elif rt == spec.RecType.CONN_OPEN:
            twin = rec.tlv(spec.Tlv.TWIN_OF)
            yield (ConnOpened(ts, rec.conn, rec.tlv_text(spec.Tlv.SOCKET_PATH),
                             vfuc.cred_from(rec.tlv(spec.Tlv.CLIENT_CRED)),
                             vfuc.cred_from(rec.tlv(spec.Tlv.SERVER_CRED)),
                             struct.unpack("<I", twin[:4])[0] if twin and len(twin) >= 4 else None, r.number),)
        elif rt == spec.RecType.CONN_CLOSE:
            yield (ConnClosed(ts, rec.conn, rec.dir, r.number),)
        elif rt == spec.RecType.NOTE:
            errno_v = rec.tlv(spec.Tlv.PROXY_ERRNO)
            yield (NoteIn(ts, rec.conn, rec.tlv_text(spec.Tlv.NOTE), rec.dir, r.number,
                         struct.unpack("<I", errno_v[:4])[0] if errno_v and len(errno_v) >= 4 else 0),)
        elif rt == spec.RecType.FINDING:
            try:
                yield (vfuc.finding_event(rec, ts, r.number),)
            except vfuc.VfucError as exc:
                yield (NoteIn(ts, rec.conn, f"{CORRUPT_NOTE_PREFIX}{exc}", None, r.number),)
        elif rt == spec.RecType.VERDICTS:
            yield (vfuc.verdicts_event(rec, ts, r.number),)
        elif rt == spec.RecType.IRQ:
            if len(rec.payload) < spec.IRQ_RECORD.size:
                yield (NoteIn(ts, rec.conn, f"{CORRUPT_NOTE_PREFIX}IRQ record of {len(rec.payload)} bytes", None,
                              r.number),)
                continue
            index, vector, count = spec.IRQ_RECORD.unpack_from(rec.payload)
            yield (IrqIn(ts, rec.conn, index, vector, count, r.number),)
        # unknown record types from newer writers are skipped
    for (conn, d2, _seq), p in partial.items():
        yield (NoteIn(0.0, conn, f"{CORRUPT_NOTE_PREFIX}capture ended inside a fragmented message "
                     f"({p.have} of {p.first.msg_len} bytes)", d2, 0),)


def open_input(path: str) -> tuple[BinaryIO, str]:
    """The stream a path names ("-" = stdin) and the name to say it by; CaptureError, one line, when it cannot be
    opened.  The caller closes it (not stdin)."""
    import sys

    if path == "-":
        return sys.stdin.buffer, "<stdin>"
    try:
        return open(path, "rb"), path
    except IsADirectoryError:
        raise CaptureError(path, -1, "it is a directory, not a capture") from None
    except OSError as exc:
        raise CaptureError(path, -1, exc.strerror or str(exc)) from None


def open_capture(path: str, progress: Callable[[int], None] | None = None) -> Iterator[Event]:
    """Open a capture by path ("-" = stdin) and yield its events."""
    return events_at(path, read_events, progress)


def events_at(path: str, decode: Callable[[BinaryIO, str, Callable[[int], None] | None], Iterator[Any]],
              progress: Callable[[int], None] | None = None) -> Iterator[Any]:
    """The events (or batches of them) ``decode`` makes of the stream a path names ("-" = stdin), the file closed
    after them."""
    fh, label = open_input(path)
    try:
        yield from decode(fh, label, progress)
    finally:
        if path != "-":
            fh.close()
