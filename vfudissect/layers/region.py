"""Region access payload layers: REGION_READ/WRITE (9/10), REGION_WRITE_MULTI (15) and its reply, and the
legacy migration-v1 region header (vfio_device_migration_info) those accesses touched."""

from __future__ import annotations

from typing import Any

from scapy.packet import Packet

from .. import spec
from .base import VfuPacket
from .fields import (DataField, DerivedField, EntryListField, LEFlagsField, layout_fields, named_struct_fields,
                     struct_fields)

LEGACY_MIGRATION_REGION = spec.PCI_NUM_REGIONS  # the first device-specific index, where libvfio-user put it
_MIG_V1_NAMES = ("device_state", "reserved", "pending_bytes", "data_offset", "data_size")


class VfuMigrationInfoV1(VfuPacket):
    """The 32-byte header of the legacy (v1, before 2023) migration region."""

    name = "migration v1 region header (historic)"
    fields_desc = [LEFlagsField("device_state", 0, 4, spec.MIG_V1_STATE_BITS)] + struct_fields(
        spec.MIG_V1_INFO, _MIG_V1_NAMES, hex_names=("data_offset",))[1:]


def _v1_members() -> list[tuple[str, int, int]]:
    out, off = [], 0
    for f, name in zip(VfuMigrationInfoV1.fields_desc, _MIG_V1_NAMES):
        out.append((name, off, f.sz))
        off += f.sz
    return out


_V1_MEMBERS = _v1_members()


def migration_v1_view(pkt: Packet) -> dict[str, Any] | None:
    """For an access to the legacy migration region (index 9) within its 32-byte header: each header
    member the access covers, with its value when the message carries the data (else None)."""
    if pkt.getfieldval("region") != LEGACY_MIGRATION_REGION:
        return None
    offset = pkt.getfieldval("offset") or 0
    count = pkt.getfieldval("count") or 0
    data = bytes(pkt.getfieldval("data") or b"")
    if offset >= spec.MIG_V1_INFO.size or count == 0:
        return None
    out: dict[str, Any] = {}
    for name, off, size in _V1_MEMBERS:
        if off >= offset and off + size <= offset + count:
            chunk = data[off - offset:off - offset + size]
            out[name] = int.from_bytes(chunk, "little") if len(chunk) == size else None
    if "device_state" in out and out["device_state"] is not None:
        st = out["device_state"]
        out["device_state"] = "|".join(n for b, n in spec.MIG_V1_STATE_BITS.items() if st & b) or "STOP"
    return out or None


class VfuRegionAccess(VfuPacket):
    """REGION_READ / REGION_WRITE request and reply: offset, region, count, then ``count`` data bytes
    (READ reply, WRITE request).  ``migration_v1`` names what an access to the legacy migration region
    touches."""

    name = "vfio-user region access"
    layout_key = "region_access"
    fields_desc = layout_fields("region_access") + [
        DataField("data", b"", length_from=lambda p: p.getfieldval("count") or 0),
        DerivedField("migration_v1", migration_v1_view),
    ]

    def key_fields(self) -> list[str]:
        """As the one-line view: a register access of 1, 2, 4 or 8 bytes also shows the number its data holds."""
        out = super().key_fields()
        data = bytes(self.getfieldval("data") or b"")
        if data and len(data) == (self.getfieldval("count") or 0) and len(data) in (1, 2, 4, 8):
            out.append(f"value=0x{int.from_bytes(data, 'little'):x}")
        return out


class VfuWriteMultiEntry(VfuPacket):
    """One REGION_WRITE_MULTI write: offset, region, count (<= 8), 8 data bytes."""

    name = "region write"
    fields_desc = named_struct_fields("write_multi_entry")


class VfuWriteMulti(VfuPacket):
    """REGION_WRITE_MULTI request: ``wr_cnt`` 24-byte writes."""

    name = "vfio-user REGION_WRITE_MULTI"
    layout_key = "write_multi"
    fields_desc = layout_fields("write_multi") + [
        EntryListField("writes", VfuWriteMultiEntry, count_from=lambda p: p.getfieldval("wr_cnt") or 0),
    ]


class VfuWriteMultiReply(VfuPacket):
    """REGION_WRITE_MULTI reply: the number of writes done."""

    name = "vfio-user REGION_WRITE_MULTI reply"
    layout_key = "write_multi_reply"
    fields_desc = layout_fields("write_multi_reply")
