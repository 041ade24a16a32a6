"""Streaming pcapng writer for VFUC captures: one flushed record per event, usable on a pipe."""

from __future__ import annotations

import dataclasses
import struct
import threading
from typing import BinaryIO

from .. import __version__, spec
from ..core.events import ConnClosed, ConnOpened, IrqIn, MessageIn, NoteIn, RawIn, make_message_in
from ..core.records import Finding
from ..fastpath import fast
from . import vfuc

_SHB_MAGIC = 0x1A2B3C4D
_BT_SHB, _BT_IDB, _BT_EPB = 0x0A0D0D0A, 1, 6
_OPT_COMMENT, _OPT_END = 1, 0
_SHB_USERAPPL, _SHB_OS = 4, 3
_IF_NAME, _IF_DESCRIPTION, _IF_TSRESOL = 2, 3, 9
_EPB_FLAGS = 2

Recordable = ConnOpened | MessageIn | RawIn | NoteIn | ConnClosed | IrqIn


def _opt(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(btype: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", btype, total) + body + struct.pack("<I", total)


class PcapngWriter:
    """Low level: SHB + one IDB (link type 252, ns timestamps), then EPBs, each flushed."""

    def __init__(self, out: BinaryIO, *, comment: str = "", if_name: str = "vfio-user",
                 if_description: str = "", flush: bool = True, header: bytes | None = None) -> None:
        self._out = out
        self._flush = flush
        self.records = 0
        if not flush:  # the stream's own write, not a method around it: one call less per record
            self._write = out.write  # type: ignore[method-assign]
        if header is not None:  # another file's section and interface blocks, copied (annotate)
            self._write(header)
            return
        shb_opts = _opt(_SHB_USERAPPL, f"vfudissect {__version__} (vfucap/{spec.VFUC_VERSION})".encode())
        if comment:
            shb_opts += _opt(_OPT_COMMENT, comment.encode("utf-8", "replace"))
        shb_opts += _opt(_OPT_END, b"")
        shb = _block(_BT_SHB, struct.pack("<IHHq", _SHB_MAGIC, 1, 0, -1) + shb_opts)
        idb_opts = _opt(_IF_NAME, if_name.encode("utf-8", "replace"))
        if if_description:
            idb_opts += _opt(_IF_DESCRIPTION, if_description.encode("utf-8", "replace"))
        idb_opts += _opt(_IF_TSRESOL, b"\x09") + _opt(_OPT_END, b"")
        idb = _block(_BT_IDB, struct.pack("<HHI", spec.LINKTYPE_WIRESHARK_UPPER_PDU, 0, 0) + idb_opts)
        self._write(shb + idb)

    def _write(self, b: bytes) -> None:
        self._out.write(b)
        if self._flush:
            self._out.flush()

    def write_record(self, ts_ns: int, data: bytes, direction: str | None = None,
                     origlen: int | None = None, comment: str = "") -> int:
        """Write one EPB; returns its 1-based record number."""
        opts = b""
        if comment:
            opts = _opt(_OPT_COMMENT, comment.encode("utf-8", "replace")[:65000])
        if direction is not None:
            bits = spec.EPB_DIR_OUTBOUND if direction == spec.C2S else spec.EPB_DIR_INBOUND
            opts += _opt(_EPB_FLAGS, struct.pack("<I", bits))
        if opts:
            opts += _opt(_OPT_END, b"")
        pad = b"\0" * (-len(data) % 4)
        body = struct.pack("<IIIII", 0, (ts_ns >> 32) & 0xFFFFFFFF, ts_ns & 0xFFFFFFFF, len(data),
                           len(data) if origlen is None else origlen) + data + pad + opts
        self._write(_block(_BT_EPB, body))
        self.records += 1
        return self.records

    def write_block(self, block: bytes, packet: bool) -> int:
        """Copy a block of another file as it is; a packet block takes the next record number."""
        self._write(block)
        if packet:
            self.records += 1
        return self.records

    def close(self) -> None:
        try:
            self._out.flush()
        finally:
            self._out.close()


class CaptureWriter:
    """High level: writes engine events as VFUC records and returns them as recorded.

    The returned event carries its frame number (the last fragment's record)
    and, with a ``snaplen``, the truncated data and TRUNCATED flag: feed that
    event to the engine so the live view and ``read`` see the same thing.
    Thread-safe: the proxy may call it from several relay threads.

    With ``judged`` (the REPLY_TIMEOUT threshold the engine judges with), the file opens with a VERDICTS
    record and ``write_finding`` records each finding of the engine as a FINDING record of its own, its text
    also a packet comment (what stock Wireshark shows).
    """

    def __init__(self, out: BinaryIO, *, comment: str = "", if_name: str = "vfio-user",
                 snaplen: int | None = None, max_record: int = spec.VFUC_MAX_RECORD, flush: bool = True,
                 judged: float | None = None, header: bytes | None = None) -> None:
        self._w = PcapngWriter(out, comment=comment, if_name=if_name, flush=flush, header=header)
        self._seq: dict[tuple[int, str], int] = {}
        self._snaplen = snaplen
        self._max_record = max_record
        self._lock = threading.Lock()
        self._last_ns = 0
        self.judged = judged
        self._verdicts_due = judged is not None  # written just before the first record, with its timestamp

    def _verdicts(self, ts_ns: int) -> None:
        self._verdicts_due = False
        engine = f"vfudissect {__version__}"
        judged = self.judged or 0.0
        self._w.write_record(ts_ns, vfuc.encode_verdicts(engine, judged), comment=vfuc.verdicts_text(engine, judged))

    def copy(self, block: bytes | None, ts_ns: int, data: bytes, origlen: int) -> int:
        """A record of another capture, byte for byte (its whole block when it has one: pcapng); returns its
        frame number here."""
        with self._lock:
            if self._verdicts_due:
                self._verdicts(ts_ns)
            self._last_ns = max(self._last_ns, ts_ns)
            if block is not None:
                return self._w.write_block(block, True)
            return self._w.write_record(ts_ns, data, vfuc.direction_of(data), origlen)

    def copy_block(self, block: bytes) -> None:
        """A block of another capture that is not a packet (statistics, a new section), as it is."""
        with self._lock:
            self._w.write_block(block, False)

    def write_finding(self, f: Finding, frames: tuple[int, ...] | None = None) -> int:
        """Record one finding of the engine (``frames``: the frames as this file numbers them, default its own);
        returns the record's frame number."""
        if frames is not None and frames != f.frames:
            f = dataclasses.replace(f, frames=frames)
        with self._lock:
            ts_ns = max(int(round(f.ts * 1e9)), self._last_ns)
            self._last_ns = ts_ns
            if self._verdicts_due:
                self._verdicts(ts_ns)
            return self._w.write_record(ts_ns, vfuc.encode_finding(f),
                                        comment=vfuc.finding_comment(f.code, f.severity, f.text, f.frames))

    @property
    def records(self) -> int:
        return self._w.records

    def write(self, ev: Recordable) -> Recordable:
        if type(ev) is MessageIn and not ev.fds and self._snaplen is None and not self._verdicts_due \
                and ev.flags < 0x100:
            fast = self._write_message_fast(ev)
            if fast is not None:
                return fast
        with self._lock:
            ts_ns = max(int(round(ev.ts * 1e9)), self._last_ns)  # clamped non-decreasing
            self._last_ns = ts_ns
            if self._verdicts_due:
                self._verdicts(ts_ns)
            origlen_extra = 0
            seq = 0
            if isinstance(ev, (MessageIn, RawIn)):
                key = (ev.conn, ev.dir)
                seq = self._seq.get(key, 0)
                self._seq[key] = seq + 1
                if self._snaplen is not None and isinstance(ev, MessageIn):
                    cut = vfuc.truncate_message(ev.data, self._snaplen)
                    if len(cut) < len(ev.data):
                        origlen_extra = len(ev.data) - len(cut)
                        ev = dataclasses.replace(ev, data=cut, msg_len=ev.wire_len,
                                                 flags=ev.flags | spec.VF_TRUNCATED)
            recs = vfuc.encode(ev, seq, self._max_record)
            direction = ev.dir if isinstance(ev, (MessageIn, RawIn)) else None
            frame = 0
            for i, rec in enumerate(recs):
                last = i == len(recs) - 1
                frame = self._w.write_record(ts_ns, rec, direction,
                                             len(rec) + origlen_extra if last else None)
            if isinstance(ev, MessageIn):  # the relay's hot path: the cheap constructor, same frozen object
                return make_message_in(ev.ts, ev.conn, ev.dir, ev.data, ev.fds, frame, ev.msg_len, ev.flags)
            return dataclasses.replace(ev, frame=frame)

    def _write_message_fast(self, ev: MessageIn) -> MessageIn | None:
        """The proxy's hot path: a message without fds in one record, packed in one go (same bytes as the
        general path: tests/capture/test_writer.py compares them)."""
        data = ev.data
        n = len(data)
        reclen = _FAST_OVER + n
        if reclen > self._max_record:
            return None
        with self._lock:
            ts_ns = max(int(round(ev.ts * 1e9)), self._last_ns)
            self._last_ns = ts_ns
            d = ev.dir
            key = (ev.conn, d)
            seq = self._seq.get(key, 0)
            self._seq[key] = seq + 1
            msg_len = ev.msg_len if ev.msg_len >= 0 else n
            w = self._w
            if _pack is not None:
                w._write(_pack(ts_ns, ev.conn, _DIR_CODES[d], ev.flags, msg_len, seq, data, _PREFIX[d], _FAST_TAIL[d]))
            else:
                pad = -reclen % 4
                total = _FAST_EPB_OVER + reclen + pad
                head = _FAST_HEAD.pack(_BT_EPB, total, 0, ts_ns >> 32 & 0xFFFFFFFF, ts_ns & 0xFFFFFFFF, reclen, reclen)
                vh = _FIXED.pack(spec.VFUC_MAGIC, spec.VFUC_VERSION, spec.RecType.MSG, spec.VFUC_FIXED_SIZE, ev.conn,
                                 _DIR_CODES[d], ev.flags, 0, msg_len, 0, seq, spec.VFUC_FD_ENTRY_SIZE, 0)
                w._write(b"".join((head, _PREFIX[d], vh, data, _PADS[pad], _FAST_TAIL[d], _U32.pack(total))))
            w.records += 1
            return make_message_in(ev.ts, ev.conn, d, data, (), w.records, ev.msg_len, ev.flags)

    def close(self) -> None:
        with self._lock:
            self._w.close()


_FIXED = spec.VFUC_FIXED
_U32 = struct.Struct("<I")
_DIR_CODES = spec.DIR_CODES
_PREFIX = vfuc.EXP_PREFIX_DIR
# the compiled packer of the fast path (None: the pure path); tests set it to None to run the pure path here
_pack = fast.pack_message if fast is not None else None
_FAST_HEAD = struct.Struct("<IIIIIII")
_FAST_OVER = len(vfuc.EXP_PREFIX_DIR[spec.C2S]) + spec.VFUC_FIXED_SIZE  # record bytes before the message
_PADS = (b"", b"\0", b"\0\0", b"\0\0\0")
_FAST_TAIL = {  # the EPB flags option (direction) and end of options, as PcapngWriter.write_record writes them
    d: _opt(_EPB_FLAGS, struct.pack("<I", spec.EPB_DIR_OUTBOUND if d == spec.C2S else spec.EPB_DIR_INBOUND))
    + _opt(_OPT_END, b"") for d in (spec.C2S, spec.S2C)
}
_FAST_EPB_OVER = _FAST_HEAD.size + len(_FAST_TAIL[spec.C2S]) + 4  # EPB bytes around the record and its padding
