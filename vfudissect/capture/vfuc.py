"""The VFUC v1 record codec: engine events <-> exported-PDU record bytes (pure, no I/O).

A record is: exported-PDU TLVs (big-endian; dissector name "vfucap", P2P
direction) || the 32-byte little-endian ``VFUC`` pseudo-header || fd entries ||
VFUC TLVs || payload.  Messages whose record would exceed ``max_record`` are
split into fragments sharing ``msg_seq``; fds ride on the first fragment.
See docs/capture-format.md for the layout.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .. import spec
from ..core.events import ConnClosed, ConnOpened, Cred, FdInfo, FindingIn, IrqIn, MessageIn, NoteIn, RawIn, VerdictsIn
from ..core.findings import SEVERITIES, SEVERITY_RANK
from ..core.records import Finding

_BE_TLV = struct.Struct(">HH")
_EXP_NAME = spec.EXPORTED_PDU_DISSECTOR_NAME.encode() + b"\0\0"  # padded to 8
EXP_PREFIX_DIR = {
    d: _BE_TLV.pack(spec.EXP_PDU_TAG_DISSECTOR_NAME, len(_EXP_NAME)) + _EXP_NAME
    + _BE_TLV.pack(spec.EXP_PDU_TAG_P2P_DIRECTION, 4) + struct.pack(">i", code)
    + _BE_TLV.pack(spec.EXP_PDU_TAG_END, 0)
    for d, code in spec.DIR_CODES.items()
}
_EXP_PREFIX_NODIR = (_BE_TLV.pack(spec.EXP_PDU_TAG_DISSECTOR_NAME, len(_EXP_NAME)) + _EXP_NAME
                     + _BE_TLV.pack(spec.EXP_PDU_TAG_END, 0))
_CRED = struct.Struct("<III")
_FIXED = spec.VFUC_FIXED
_FDENT = spec.VFUC_FD_ENTRY


class VfucError(ValueError):
    """A record that is not a well-formed VFUC v1 record."""


@dataclass(frozen=True, slots=True)
class VfucRecord:
    """One decoded record (a fragment, for split messages)."""

    rec_type: int
    conn: int
    dir: str | None
    flags: int
    fds: tuple[FdInfo, ...]
    msg_len: int
    frag_off: int
    msg_seq: int
    tlvs: tuple[tuple[int, bytes], ...]
    payload: bytes
    version: int = spec.VFUC_VERSION

    def tlv(self, tag: int) -> bytes | None:
        for t, v in self.tlvs:
            if t == tag:
                return v
        return None

    def tlv_text(self, tag: int) -> str:
        v = self.tlv(tag)
        return v.decode("utf-8", "replace") if v is not None else ""


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def _tlv(tag: int, value: bytes) -> bytes:
    return _pad4(spec.VFUC_TLV.pack(tag, len(value)) + value)


def _fd_bytes(fds: tuple[FdInfo, ...]) -> tuple[bytes, bytes]:
    ents = b"".join(
        _FDENT.pack(spec.FD_KIND_CODES.get(fd.kind, 0), 0, 0, fd.status_flags & 0xFFFFFFFF,
                    fd.size & 0xFFFFFFFFFFFFFFFF, fd.ino & 0xFFFFFFFFFFFFFFFF)
        for fd in fds
    )
    paths = b"".join(
        _tlv(spec.Tlv.FD_PATH, struct.pack("<HH", i, 0) + fd.path.encode("utf-8", "replace")[:1024])
        for i, fd in enumerate(fds) if fd.path
    )
    return ents, paths


def _header(rec_type: int, conn: int, dir_: str | None, flags: int, fds_blob: bytes, n_fds: int,
            tlv_blob: bytes, msg_len: int, frag_off: int, msg_seq: int) -> bytes:
    hdr_len = spec.VFUC_FIXED_SIZE + len(fds_blob) + len(tlv_blob)
    d = spec.DIR_CODES[dir_] if dir_ is not None else spec.VFUC_DIR_NONE
    return _FIXED.pack(spec.VFUC_MAGIC, spec.VFUC_VERSION, rec_type, hdr_len, conn, d, flags & 0xFF, n_fds,
                       msg_len, frag_off, msg_seq, spec.VFUC_FD_ENTRY_SIZE, 0) + fds_blob + tlv_blob


def encode(ev: ConnOpened | MessageIn | RawIn | NoteIn | ConnClosed | IrqIn, msg_seq: int = 0,
           max_record: int = spec.VFUC_MAX_RECORD) -> list[bytes]:
    """Encode one event as one or more records (fragments), each at most ``max_record`` bytes."""
    if isinstance(ev, (MessageIn, RawIn)):
        rec_type = spec.RecType.MSG if isinstance(ev, MessageIn) else spec.RecType.RAW
        if ev.flags & spec.VF_WITHHELD:  # the flags byte has no room for it: its own record type
            rec_type = spec.RecType.ORIGINAL
        prefix = EXP_PREFIX_DIR[ev.dir]
        ents, paths = _fd_bytes(ev.fds)
        extra = paths + (_tlv(spec.Tlv.NOTE, ev.note.encode()) if isinstance(ev, RawIn) and ev.note else b"")
        data = ev.data
        msg_len = ev.wire_len if isinstance(ev, MessageIn) else len(data)
        first_over = len(prefix) + spec.VFUC_FIXED_SIZE + len(ents) + len(extra)
        if first_over + len(data) <= max_record:
            return [prefix + _header(rec_type, ev.conn, ev.dir, ev.flags, ents, len(ev.fds), extra,
                                     msg_len, 0, msg_seq) + data]
        out: list[bytes] = []
        off = 0
        base_flags = ev.flags & ~spec.VF_MORE_FRAGMENTS
        while True:
            first = off == 0
            over = first_over if first else len(prefix) + spec.VFUC_FIXED_SIZE
            room = max_record - over
            if room <= 0:
                raise VfucError("fd entries do not fit in one record")
            chunk = data[off:off + room]
            last = off + len(chunk) >= len(data)
            fl = base_flags | (0 if last else spec.VF_MORE_FRAGMENTS)
            out.append(prefix + _header(rec_type, ev.conn, ev.dir, fl, ents if first else b"",
                                        len(ev.fds) if first else 0, extra if first else b"",
                                        msg_len, off, msg_seq) + chunk)
            off += len(chunk)
            if last:
                return out
    if isinstance(ev, ConnOpened):
        tl = _tlv(spec.Tlv.SOCKET_PATH, ev.socket_path.encode("utf-8", "replace"))
        if ev.client is not None:
            tl += _tlv(spec.Tlv.CLIENT_CRED, _CRED.pack(ev.client.pid, ev.client.uid, ev.client.gid))
        if ev.server is not None:
            tl += _tlv(spec.Tlv.SERVER_CRED, _CRED.pack(ev.server.pid, ev.server.uid, ev.server.gid))
        if ev.twin_of is not None:
            tl += _tlv(spec.Tlv.TWIN_OF, struct.pack("<I", ev.twin_of))
        return [_EXP_PREFIX_NODIR + _header(spec.RecType.CONN_OPEN, ev.conn, None, 0, b"", 0, tl, 0, 0, 0)]
    if isinstance(ev, ConnClosed):
        prefix = EXP_PREFIX_DIR[ev.dir] if ev.dir else _EXP_PREFIX_NODIR
        return [prefix + _header(spec.RecType.CONN_CLOSE, ev.conn, ev.dir, 0, b"", 0, b"", 0, 0, 0)]
    if isinstance(ev, IrqIn):
        body = spec.IRQ_RECORD.pack(ev.index, ev.vector, ev.count)
        return [EXP_PREFIX_DIR[spec.S2C] + _header(spec.RecType.IRQ, ev.conn, spec.S2C, 0, b"", 0, b"", len(body), 0,
                                                   0) + body]
    if isinstance(ev, NoteIn):
        prefix = EXP_PREFIX_DIR[ev.dir] if ev.dir else _EXP_PREFIX_NODIR
        tl = _tlv(spec.Tlv.NOTE, ev.text.encode("utf-8", "replace"))
        if ev.proxy_errno:
            tl += _tlv(spec.Tlv.PROXY_ERRNO, struct.pack("<I", ev.proxy_errno))
        return [prefix + _header(spec.RecType.NOTE, ev.conn, ev.dir, 0, b"", 0, tl, 0, 0, 0)]
    raise TypeError(f"cannot encode {type(ev).__name__}")


def encode_finding(f: Finding) -> bytes:
    """A FINDING record: the engine's verdict on the frames it names (code, severity, text as TLVs)."""
    frames = f.frames[:4096]
    tl = (_tlv(spec.Tlv.FINDING_CODE, f.code.encode("ascii", "replace"))
          + _tlv(spec.Tlv.SEVERITY, bytes((SEVERITY_RANK.get(f.severity, 0),)))
          + _tlv(spec.Tlv.FRAMES, struct.pack(f"<{len(frames)}I", *(x & 0xFFFFFFFF for x in frames)))
          + _tlv(spec.Tlv.NOTE, f.text.encode("utf-8", "replace")[:16384]))
    return _EXP_PREFIX_NODIR + _header(spec.RecType.FINDING, f.conn & 0xFFFFFFFF, None, 0, b"", 0, tl, 0, 0, 0)


def finding_comment(code: str, severity: str, text: str, frames: tuple[int, ...]) -> str:
    """The packet comment of a FINDING record: what stock Wireshark shows without the plugin."""
    where = ""
    if frames:
        where = f" [frame{'s' if len(frames) > 1 else ''} {', '.join(map(str, frames))}]"
    return f"vfio-user {severity} {code}: {text}{where}"


def encode_verdicts(engine: str, timeout: float) -> bytes:
    """The VERDICTS record that opens a judged capture: who judged, with which REPLY_TIMEOUT threshold."""
    tl = (_tlv(spec.Tlv.ENGINE, engine.encode("utf-8", "replace")) + _tlv(spec.Tlv.TIMEOUT, f"{timeout:g}".encode())
          + _tlv(spec.Tlv.NOTE, verdicts_text(engine, timeout).encode("utf-8", "replace")))
    return _EXP_PREFIX_NODIR + _header(spec.RecType.VERDICTS, 0, None, 0, b"", 0, tl, 0, 0, 0)


def verdicts_text(engine: str, timeout: float) -> str:
    """The VERDICTS record's note (and packet comment)."""
    limit = f"REPLY_TIMEOUT after {timeout:g} s" if timeout > 0 else "REPLY_TIMEOUT off"
    return f"vfio-user findings by {engine} ({limit}) follow as records of their own"


def finding_event(rec: VfucRecord, ts: float, frame: int) -> FindingIn:
    """The FindingIn of a decoded FINDING record (VfucError when its code is missing)."""
    code = rec.tlv(spec.Tlv.FINDING_CODE)
    if not code:
        raise VfucError("finding record without a code")
    sev = rec.tlv(spec.Tlv.SEVERITY)
    raw = rec.tlv(spec.Tlv.FRAMES) or b""
    frames = struct.unpack_from(f"<{len(raw) // 4}I", raw) if len(raw) >= 4 else ()
    severity = SEVERITIES[sev[0]] if sev and sev[0] < len(SEVERITIES) else "note"
    return FindingIn(ts, rec.conn, code.decode("ascii", "replace"), severity, tuple(frames),
                     rec.tlv_text(spec.Tlv.NOTE), frame)


def verdicts_event(rec: VfucRecord, ts: float, frame: int) -> VerdictsIn:
    try:
        timeout: float | None = float(rec.tlv_text(spec.Tlv.TIMEOUT))
    except ValueError:
        timeout = None
    return VerdictsIn(ts, rec.tlv_text(spec.Tlv.ENGINE), timeout, frame)


def strip_exported_pdu(rec: bytes) -> tuple[str | None, int | None, int]:
    """Parse the big-endian exported-PDU TLVs: (dissector name, p2p dir, offset of the PDU)."""
    off = 0
    name: str | None = None
    p2p: int | None = None
    n = len(rec)
    while True:
        if off + 4 > n:
            raise VfucError("exported-PDU tags run past the record")
        tag, length = _BE_TLV.unpack_from(rec, off)
        off += 4
        if tag == spec.EXP_PDU_TAG_END:
            return name, p2p, off
        if off + length > n:
            raise VfucError(f"exported-PDU tag {tag} runs past the record")
        if tag == spec.EXP_PDU_TAG_DISSECTOR_NAME:
            name = rec[off:off + length].rstrip(b"\0").decode("ascii", "replace")
        elif tag == spec.EXP_PDU_TAG_P2P_DIRECTION and length == 4:
            p2p = struct.unpack_from(">i", rec, off)[0]
        off += length


_DIR_BY_CODE = {0: spec.C2S, 1: spec.S2C}
_VERDICT_TYPES = frozenset({spec.RecType.FINDING, spec.RecType.VERDICTS})


def is_verdict(rec: bytes) -> bool:
    """A FINDING or VERDICTS record of ours (what ``annotate`` replaces); False for anything else."""
    try:
        name, _p2p, off = strip_exported_pdu(rec)
    except VfucError:
        return False
    return (name == spec.EXPORTED_PDU_DISSECTOR_NAME and len(rec) >= off + spec.VFUC_FIXED_SIZE
            and rec[off:off + 4] == spec.VFUC_MAGIC and rec[off + 5] in _VERDICT_TYPES)


def direction_of(rec: bytes) -> str | None:
    """The exported-PDU P2P direction of a record, None when it has none (or is not ours)."""
    try:
        return _DIR_BY_CODE.get(strip_exported_pdu(rec)[1])  # type: ignore[arg-type]
    except VfucError:
        return None


def decode(rec: bytes, start: int = 0) -> VfucRecord:
    """Decode the VFUC part of a record beginning at ``start`` (after the exported-PDU tags)."""
    n = len(rec)
    if n - start < spec.VFUC_FIXED_SIZE:
        raise VfucError(f"record too short for a VFUC header ({n - start} bytes)")
    (magic, version, rec_type, hdr_len, conn, d, flags, n_fds, msg_len, frag_off, msg_seq,
     fd_ent_len, _res) = _FIXED.unpack_from(rec, start)
    if magic != spec.VFUC_MAGIC:
        raise VfucError(f"bad VFUC magic {magic!r}")
    if version < 1:
        raise VfucError(f"VFUC version {version} unknown")
    if hdr_len < spec.VFUC_FIXED_SIZE or start + hdr_len > n:
        raise VfucError(f"VFUC hdr_len {hdr_len} out of range")
    if n_fds and fd_ent_len < spec.VFUC_FD_ENTRY_SIZE:
        raise VfucError(f"VFUC fd_ent_len {fd_ent_len} too small")
    fd_end = start + spec.VFUC_FIXED_SIZE + n_fds * fd_ent_len
    if fd_end > start + hdr_len:
        raise VfucError(f"{n_fds} fd entries run past hdr_len")
    raw_fds = []
    off = start + spec.VFUC_FIXED_SIZE
    for _ in range(n_fds):
        kind, _r1, _r2, stf, size, ino = _FDENT.unpack_from(rec, off)
        raw_fds.append((spec.FD_KINDS.get(kind, "unknown"), size, ino, stf))
        off += fd_ent_len
    tlvs: list[tuple[int, bytes]] = []
    off = fd_end
    end = start + hdr_len
    while off + 4 <= end:
        tag, length = spec.VFUC_TLV.unpack_from(rec, off)
        if off + 4 + length > end:
            raise VfucError(f"VFUC TLV {tag} runs past hdr_len")
        tlvs.append((tag, rec[off + 4:off + 4 + length]))
        off += 4 + length + (-(4 + length) % 4)
    paths: dict[int, str] = {}
    for tag, val in tlvs:
        if tag == spec.Tlv.FD_PATH and len(val) >= 4:
            paths[struct.unpack_from("<H", val)[0]] = val[4:].decode("utf-8", "replace")
    fds = tuple(FdInfo(k, s, i, f, paths.get(idx, "")) for idx, (k, s, i, f) in enumerate(raw_fds))
    return VfucRecord(rec_type, conn, _DIR_BY_CODE.get(d), flags, fds, msg_len, frag_off, msg_seq,
                      tuple(tlvs), rec[end:], version)


def cred_from(v: bytes | None) -> Cred | None:
    if v is None or len(v) < 12:
        return None
    return Cred(*_CRED.unpack_from(v))


_BULK_TAILS = frozenset({"data", "bitmap", "dirty"})  # guest memory and device data; the rest is control data


def truncate_message(data: bytes, snaplen: int) -> bytes:
    """Keep the header, the command's fixed fields and the first ``snaplen`` bytes of bulk data.

    Only bulk tails (region/DMA/migration data, dirty bitmaps) are cut; control
    payloads such as VERSION's JSON or a region's capability chain are kept whole.
    """
    if len(data) < spec.HEADER_SIZE:
        return data
    _mid, cmd, _size, flags, _err = spec.HEADER.unpack_from(data)
    info = spec.COMMANDS.get(cmd)
    if info is None:
        return data
    is_reply = (flags & spec.FLAG_TYPE_MASK) == spec.MSG_TYPE_REPLY
    key = info.reply_layout if is_reply else info.request_layout
    lay = spec.LAYOUTS.get(key) if key else None
    if lay is None or lay.tail not in _BULK_TAILS:
        return data
    keep = spec.HEADER_SIZE + lay.size + max(snaplen, 0)
    return data if len(data) <= keep else data[:keep]
