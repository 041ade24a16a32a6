"""Capture record layers: the exported-PDU TLVs (link type 252) and the VFUC v1 pseudo-header with its fd
entries and TLVs (docs/capture-format.md section 2); the vfio-user message follows as the next layer."""

from __future__ import annotations

import struct
from typing import Any

from scapy.config import conf
from scapy.fields import (
    Field, LEIntEnumField, LEIntField, LEShortEnumField, LEShortField, ShortEnumField, ShortField,
    SignedIntEnumField, StrField, StrLenField,
)
from scapy.packet import Packet

from .. import spec
from .base import VfuPacket
from .fields import DerivedField, EntryListField, LEFlagsField, TlvListField, struct_fields
from .header import VfioUser

# ---------------------------------------------------------------- exported PDU (big-endian TLVs)
EXP_PDU_TAGS: dict[int, str] = {
    v: name.removeprefix("EXP_PDU_TAG_") for name, v in vars(spec).items()
    if name.startswith("EXP_PDU_TAG_") and isinstance(v, int)
}
P2P_DIRS: dict[int, str] = {code: f"{name} ({'sent' if code == 0 else 'received'})"
                            for name, code in spec.DIR_CODES.items()}
_BE_TLV = struct.Struct(">HH")


class ExportedPduTlv(VfuPacket):
    """One exported-PDU TLV (tag, length, value), big-endian, unpadded."""

    name = "exported PDU TLV"
    fields_desc = [ShortEnumField("tag", 0, EXP_PDU_TAGS), ShortField("len", None),
                   StrLenField("value", b"", length_from=lambda p: p.getfieldval("len") or 0)]

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        if self.getfieldval("len") is None:
            pkt = pkt[:2] + struct.pack(">H", (len(pkt) - 4) & 0xFFFF) + pkt[4:]
        return pkt + pay


class ExportedPduName(ExportedPduTlv):
    """Tag 12: the name of the dissector the PDU is for (zero-padded)."""

    name = "exported PDU dissector name"
    fields_desc = [ShortEnumField("tag", spec.EXP_PDU_TAG_DISSECTOR_NAME, EXP_PDU_TAGS), ShortField("len", None),
                   StrLenField("proto_name", b"", length_from=lambda p: p.getfieldval("len") or 0)]


class ExportedPduDir(ExportedPduTlv):
    """Tag 35: P2P direction, int32 (0 client -> server = sent, 1 server -> client = received)."""

    name = "exported PDU P2P direction"
    fields_desc = [ShortEnumField("tag", spec.EXP_PDU_TAG_P2P_DIRECTION, EXP_PDU_TAGS), ShortField("len", None),
                   SignedIntEnumField("p2p_dir", 0, P2P_DIRS)]


def _exp_tlv_class(tag: int, length: int) -> type[Packet]:
    if tag == spec.EXP_PDU_TAG_DISSECTOR_NAME:
        return ExportedPduName
    if tag == spec.EXP_PDU_TAG_P2P_DIRECTION and length == 4:
        return ExportedPduDir
    return ExportedPduTlv


def _exp_name(pkt: Packet) -> str | None:
    for t in pkt.getfieldval("tlvs") or []:
        if isinstance(t, ExportedPduName):
            return bytes(t.getfieldval("proto_name") or b"").rstrip(b"\0").decode("utf-8", "replace")
    return None


def _exp_dir(pkt: Packet) -> int | None:
    for t in pkt.getfieldval("tlvs") or []:
        if isinstance(t, ExportedPduDir):
            return int(t.getfieldval("p2p_dir"))
    return None


class ExportedPdu(VfuPacket):
    """LINKTYPE_WIRESHARK_UPPER_PDU (252): TLVs up to and including the END tag, then the PDU."""

    name = "Exported PDU"
    fields_desc = [
        TlvListField("tlvs", ExportedPduTlv, _BE_TLV, pad4=False, stop_type=spec.EXP_PDU_TAG_END,
                     dispatch=_exp_tlv_class),
        DerivedField("dissector_name", _exp_name),
        DerivedField("p2p_dir", _exp_dir),
    ]

    @classmethod
    def for_vfucap(cls, direction: str | None) -> "ExportedPdu":
        """The TLVs the recorder writes: dissector name ``vfucap``, the direction if any, END."""
        name = spec.EXPORTED_PDU_DISSECTOR_NAME.encode()
        tlvs: list[Packet] = [ExportedPduName(proto_name=name + b"\0" * (-len(name) % 4))]
        if direction is not None:
            tlvs.append(ExportedPduDir(p2p_dir=spec.DIR_CODES[direction]))
        tlvs.append(ExportedPduTlv(tag=spec.EXP_PDU_TAG_END))
        return cls(tlvs=tlvs)

    def next_layer(self, payload: bytes) -> type[Packet]:
        if _exp_name(self) == spec.EXPORTED_PDU_DISSECTOR_NAME and payload[:4] == spec.VFUC_MAGIC:
            return super().next_layer(payload)
        return conf.raw_layer  # type: ignore[no-any-return]


# ---------------------------------------------------------------- VFUC pseudo-header
VFUC_DIRS: dict[int, str] = {**{code: name for name, code in spec.DIR_CODES.items()}, spec.VFUC_DIR_NONE: "none"}
_ARROWS = {code: f"{name[0].upper()}→{name[-1].upper()}" for name, code in spec.DIR_CODES.items()}
VFUC_FIXED_NAMES = ("magic", "version", "rec_type", "hdr_len", "conn_id", "dir", "flags", "n_fds", "msg_len",
                    "frag_off", "msg_seq", "fd_ent_len", "reserved")


def _vfuc_fixed() -> list[Field[Any, Any]]:
    out = struct_fields(spec.VFUC_FIXED, VFUC_FIXED_NAMES, values={"rec_type": spec.REC_TYPE_NAMES, "dir": VFUC_DIRS})
    defaults: dict[str, Any] = {"magic": spec.VFUC_MAGIC, "version": spec.VFUC_VERSION, "hdr_len": None,
                                "n_fds": None, "msg_len": None, "fd_ent_len": spec.VFUC_FD_ENTRY_SIZE}
    for i, f in enumerate(out):
        if f.name == "flags":
            out[i] = f = LEFlagsField("flags", 0, f.sz, spec.VFUC_FLAGS)
        if f.name in defaults:
            f.default = defaults[f.name]
    return out


def _fd_path(fd: Packet) -> str | None:
    rec = fd.underlayer
    if rec is None or "fds" not in rec.fieldtype:
        return None
    fds = rec.getfieldval("fds") or []
    index = next((i for i, e in enumerate(fds) if e is fd), None)
    for t in rec.getfieldval("tlvs") or []:
        if isinstance(t, VfuCapTlvFdPath) and t.getfieldval("fd_index") == index:
            return bytes(t.getfieldval("path") or b"").decode("utf-8", "replace")
    return None


class VfuCapFd(VfuPacket):
    """One fd entry (24 bytes in v1): kind, F_GETFL status flags, st_size, st_ino; ``path`` from FD_PATH."""

    name = "VFUC fd"
    fields_desc = struct_fields(spec.VFUC_FD_ENTRY, ("kind", "reserved1", "reserved2", "status_flags", "size", "ino"),
                                values={"kind": spec.FD_KINDS}, hex_names=("status_flags",)) + [
        DerivedField("path", _fd_path, str),
    ]


class VfuCapTlv(VfuPacket):
    """One VFUC TLV (little-endian type and length, value, zero padding to 4 bytes)."""

    name = "VFUC TLV"
    fields_desc = [LEShortEnumField("type", 0, spec.TLV_NAMES), LEShortField("len", None),
                   StrLenField("value", b"", length_from=lambda p: p.getfieldval("len") or 0),
                   StrField("pad", None)]

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        if self.getfieldval("len") is None:
            n = len(pkt) - spec.VFUC_TLV.size - len(self.getfieldval("pad") or b"")
            pkt = pkt[:2] + struct.pack("<H", n & 0xFFFF) + pkt[4:]
        if self.getfieldval("pad") is None:
            pkt += b"\0" * (-len(pkt) % 4)
        return pkt + pay


def _tlv_head(default_type: int) -> list[Field[Any, Any]]:
    return [LEShortEnumField("type", default_type, spec.TLV_NAMES), LEShortField("len", None)]


class VfuCapTlvText(VfuCapTlv):
    """SOCKET_PATH / NOTE: UTF-8 text."""

    name = "VFUC TLV text"
    fields_desc = _tlv_head(spec.Tlv.NOTE) + [
        StrLenField("text", b"", length_from=lambda p: p.getfieldval("len") or 0), StrField("pad", None)]


class VfuCapTlvCred(VfuCapTlv):
    """CLIENT_CRED / SERVER_CRED: SO_PEERCRED pid, uid, gid."""

    name = "VFUC TLV credentials"
    fields_desc = _tlv_head(spec.Tlv.CLIENT_CRED) + [
        LEIntField("pid", 0), LEIntField("uid", 0), LEIntField("gid", 0), StrField("pad", None)]


class VfuCapTlvFdPath(VfuCapTlv):
    """FD_PATH: fd index, reserved, the fd's readlink / memfd name."""

    name = "VFUC TLV fd path"
    fields_desc = _tlv_head(spec.Tlv.FD_PATH) + [
        LEShortField("fd_index", 0), LEShortField("reserved", 0),
        StrLenField("path", b"", length_from=lambda p: max(0, (p.getfieldval("len") or 0) - 4)),
        StrField("pad", None)]


class VfuCapTlvErrno(VfuCapTlv):
    """PROXY_ERRNO: the errno the proxy met."""

    name = "VFUC TLV proxy errno"
    fields_desc = _tlv_head(spec.Tlv.PROXY_ERRNO) + [
        LEIntEnumField("proxy_errno", 0, dict(spec.ERRNO_NAMES)), StrField("pad", None)]


class VfuCapTlvTwinOf(VfuCapTlv):
    """TWIN_OF: the connection this twin socket belongs to."""

    name = "VFUC TLV twin of"
    fields_desc = _tlv_head(spec.Tlv.TWIN_OF) + [LEIntField("twin_of", 0), StrField("pad", None)]


def _vfuc_tlv_class(typ: int, length: int) -> type[Packet]:
    if typ in (spec.Tlv.SOCKET_PATH, spec.Tlv.NOTE):
        return VfuCapTlvText
    if typ in (spec.Tlv.CLIENT_CRED, spec.Tlv.SERVER_CRED) and length == 12:
        return VfuCapTlvCred
    if typ == spec.Tlv.FD_PATH and length >= 4:
        return VfuCapTlvFdPath
    if typ == spec.Tlv.PROXY_ERRNO and length == 4:
        return VfuCapTlvErrno
    if typ == spec.Tlv.TWIN_OF and length == 4:
        return VfuCapTlvTwinOf
    return VfuCapTlv


def _fd_stride(pkt: Packet, avail: int) -> int:
    """fd_ent_len; one below the v1 entry size is malformed and read as v1 entries."""
    return max(pkt.getfieldval("fd_ent_len") or 0, spec.VFUC_FD_ENTRY_SIZE)


def _tlvs_len(pkt: Packet) -> int:
    hdr_len = pkt.getfieldval("hdr_len") or 0
    used = spec.VFUC_FIXED_SIZE + sum(len(fd) for fd in pkt.getfieldval("fds") or [])
    return hdr_len - used


def _tlv_text(pkt: Packet, typ: int) -> str | None:
    for t in pkt.getfieldval("tlvs") or []:
        if isinstance(t, VfuCapTlvText) and t.getfieldval("type") == typ:
            return bytes(t.getfieldval("text") or b"").decode("utf-8", "replace")
    return None


class VfuCap(VfuPacket):
    """The VFUC v1 record header (32 bytes, little-endian), fd entries, TLVs; then the message bytes.

    MSG records that are whole messages continue with :class:`VfioUser`; fragments (MORE_FRAGMENTS or
    frag_off > 0), RAW records and anything else stay Raw.
    """

    name = "VFUC capture record"
    fields_desc = _vfuc_fixed() + [
        EntryListField("fds", VfuCapFd, count_from=lambda p: p.getfieldval("n_fds") or 0,
                       stride_from=_fd_stride, length_from=lambda p: (p.getfieldval("hdr_len") or 0) - spec.VFUC_FIXED_SIZE),
        TlvListField("tlvs", VfuCapTlv, spec.VFUC_TLV, pad4=True, length_from=_tlvs_len, dispatch=_vfuc_tlv_class),
    ]

    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        if self.getfieldval("hdr_len") is None and len(pkt) >= spec.VFUC_FIXED_SIZE:
            pkt = pkt[:6] + struct.pack("<H", len(pkt) & 0xFFFF) + pkt[8:]
        if self.getfieldval("n_fds") is None and len(pkt) >= spec.VFUC_FIXED_SIZE:
            pkt = pkt[:14] + struct.pack("<H", len(self.getfieldval("fds") or []) & 0xFFFF) + pkt[16:]
        if self.getfieldval("msg_len") is None and len(pkt) >= spec.VFUC_FIXED_SIZE:
            pkt = pkt[:16] + struct.pack("<I", len(pay) & 0xFFFFFFFF) + pkt[20:]
        return pkt + pay

    @property
    def is_fragment(self) -> bool:
        return bool(int(self.getfieldval("flags") or 0) & spec.VF_MORE_FRAGMENTS) or bool(
            self.getfieldval("frag_off"))

    def next_layer(self, payload: bytes) -> type[Packet]:
        if (self.getfieldval("magic") != spec.VFUC_MAGIC or self.getfieldval("rec_type") != spec.RecType.MSG
                or self.is_fragment):
            return conf.raw_layer  # type: ignore[no-any-return]
        return super().next_layer(payload)

    def socket_path(self) -> str | None:
        return _tlv_text(self, spec.Tlv.SOCKET_PATH)

    def note(self) -> str | None:
        return _tlv_text(self, spec.Tlv.NOTE)

    def answers(self, other: Packet) -> int:
        if not isinstance(other, VfuCap):
            return 0
        if not isinstance(self.payload, VfioUser) or not isinstance(other.payload, VfioUser):
            return 0
        return self.payload.answers(other.payload)

    def mysummary(self) -> str:
        conn = self.getfieldval("conn_id")
        rec = self.getfieldval("rec_type")
        arrow = _ARROWS.get(self.getfieldval("dir"), "")
        if self.cut_at is not None:
            return f"VFUC record cut at {self.cut_at}"
        if rec == spec.RecType.CONN_OPEN:
            return f"#{conn} open {self.socket_path() or ''}".rstrip()
        if rec == spec.RecType.CONN_CLOSE:
            return f"#{conn} {arrow} close".replace("  ", " ")
        if rec == spec.RecType.NOTE:
            return f"#{conn} note {self.note() or ''}".rstrip()
        head = f"#{conn} {arrow}"
        if rec == spec.RecType.RAW:
            return f"{head} raw {len(self.payload)} bytes"
        if rec == spec.RecType.MSG and self.is_fragment:
            return f"{head} [fragment at offset {self.getfieldval('frag_off')} of {self.getfieldval('msg_len')}]"
        if rec != spec.RecType.MSG:
            return f"#{conn} record type {rec}"
        return head
