"""DMA payload layers: DMA_MAP (2), DMA_UNMAP (3) with the legacy dirty bitmap, DMA_READ/WRITE (11/12) in
the spec layout and QEMU's older u32-count layout, and the historic DIRTY_PAGES (14)."""

from __future__ import annotations

import struct

from scapy.fields import ConditionalField, StrLenField
from scapy.packet import Packet

from .. import spec
from .base import VfuPacket
from .fields import DataField, DerivedField, flag_value, layout_fields, named_struct_fields

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_UNMAP_GET_DIRTY_BITMAP = next(bit for bit, n in spec.DMA_UNMAP_FLAGS.items() if n == "GET_DIRTY_BITMAP")
_DIRTY_GET_BITMAP = next(bit for bit, n in spec.DIRTY_PAGES_FLAGS.items() if n == "GET_BITMAP")

DMA_LAYOUT_SPEC = "spec"  # address u64, count u64, data at +16 (the spec's struct; libvfio-user)
DMA_LAYOUT_QEMU = "qemu"  # address u64, count u32, data at +12 (QEMU's VFIOUserDMARW, pre-May-2021 libvfio-user)
DMA_LAYOUT_SPEC_12 = "spec-12"  # the spec table's 12-byte DMA_WRITE reply: address u64, count u32

class VfuDmaMap(VfuPacket):
    """DMA_MAP request: one region, optionally backed by the fd passed with it."""

    name = "vfio-user DMA_MAP"
    layout_key = "dma_map"
    fields_desc = layout_fields("dma_map")


def _unmap_bitmap(pkt: Packet) -> bool:
    return bool(flag_value(pkt.getfieldval("flags")) & _UNMAP_GET_DIRTY_BITMAP)


class VfuDmaUnmap(VfuPacket):
    """DMA_UNMAP request and reply; with GET_DIRTY_BITMAP the 16-byte bitmap header (and, in the reply,
    the bitmap) follow (historic, still handled by libvfio-user)."""

    name = "vfio-user DMA_UNMAP"
    layout_key = "dma_unmap"
    fields_desc = layout_fields("dma_unmap") + [
        ConditionalField(f, _unmap_bitmap) for f in named_struct_fields("unmap_bitmap", prefix="bitmap_")
    ] + [
        ConditionalField(StrLenField("bitmap", b"", length_from=lambda p: p.getfieldval("bitmap_size") or 0),
                         _unmap_bitmap),
    ]


def _layout_of(pkt: Packet) -> str:
    hdr = pkt.underlayer
    if hdr is None or "command" not in hdr.fieldtype:
        return str(pkt.default_layout)
    return dma_layout(int(hdr.getfieldval("command") or 0), bool(hdr.is_reply), bytes(pkt))


class VfuDmaAccess(VfuPacket):
    """DMA_READ / DMA_WRITE (server -> client) in the spec layout: address, u64 count, data at +16.
    ``dma_layout`` says which layout the message fits (see :func:`dma_layout`)."""

    name = "vfio-user DMA access"
    layout_key = "dma_access"
    default_layout = DMA_LAYOUT_SPEC
    fields_desc = layout_fields("dma_access") + [
        DataField("data", b"", length_from=lambda p: p.getfieldval("count") or 0),
        DerivedField("dma_layout", _layout_of, str),
    ]


class VfuDmaAccessQemu(VfuDmaAccess):
    """DMA_READ / DMA_WRITE with a u32 count: QEMU's layout (VFIOUserDMARW, data at +12), or the spec
    table's 12-byte DMA_WRITE reply."""

    name = "vfio-user DMA access (u32 count)"
    default_layout = DMA_LAYOUT_QEMU
    fields_desc = named_struct_fields("qemu_dma_access") + [
        DataField("data", b"", length_from=lambda p: p.getfieldval("count") or 0),
        DerivedField("dma_layout", _layout_of, str),
    ]

    def key_fields(self) -> list[str]:
        return super().key_fields() + [f"layout={_layout_of(self)}"]


def dma_layout(command: int, is_reply: bool, payload: bytes) -> str:
    """Which DMA_READ/WRITE layout a payload fits, judged from the lengths alone.

    ``spec``: u64 count at +8, data at +16 (for a DMA_WRITE reply: the 16 bytes libvfio-user sends);
    ``qemu``: u32 count at +8, data at +12; ``spec-12``: the 12-byte DMA_WRITE reply of the spec's table.
    When both fit (a QEMU payload whose first four data bytes are zero) the answer is ``spec``.
    """
    n = len(payload)
    if n < 12:
        return DMA_LAYOUT_SPEC
    c32 = _U32.unpack_from(payload, 8)[0]
    if command == spec.Command.DMA_WRITE and is_reply:
        return DMA_LAYOUT_SPEC_12 if n == 12 else DMA_LAYOUT_SPEC
    if command == spec.Command.DMA_READ and not is_reply:  # the fixed part only
        return DMA_LAYOUT_QEMU if n == 12 else DMA_LAYOUT_SPEC
    if n >= 16 and _U64.unpack_from(payload, 8)[0] == n - 16:
        return DMA_LAYOUT_SPEC
    if c32 in (n - 12, n - 16):
        return DMA_LAYOUT_QEMU
    return DMA_LAYOUT_SPEC


def choose_dma_access(hdr: Packet, payload: bytes) -> type[Packet]:
    layout = dma_layout(int(hdr.getfieldval("command") or 0), bool(hdr.is_reply), payload)
    return VfuDmaAccess if layout == DMA_LAYOUT_SPEC else VfuDmaAccessQemu


def _dirty_bitmap(pkt: Packet) -> bool:
    return bool(flag_value(pkt.getfieldval("flags")) & _DIRTY_GET_BITMAP)


class VfuDirtyPages(VfuPacket):
    """DIRTY_PAGES (historic, removed 2023): START / STOP / GET_BITMAP with its 32-byte range and bitmap."""

    name = "vfio-user DIRTY_PAGES (historic)"
    layout_key = "dirty_pages"
    fields_desc = layout_fields("dirty_pages") + [
        ConditionalField(f, _dirty_bitmap) for f in named_struct_fields("dirty_bitmap")
    ] + [
        ConditionalField(StrLenField("bitmap", b"", length_from=lambda p: p.getfieldval("bitmap_size") or 0),
                         _dirty_bitmap),
    ]
