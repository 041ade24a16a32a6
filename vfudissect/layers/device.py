"""Device query and interrupt payload layers: DEVICE_GET_INFO (4), GET_REGION_INFO (5) with its capability
chain, GET_REGION_IO_FDS (6) entries, GET_IRQ_INFO (7), SET_IRQS (8)."""

from __future__ import annotations

from scapy.config import conf
from scapy.fields import ByteEnumField, ConditionalField, FieldListField, StrField
from scapy.packet import Packet

from .. import spec
from .base import VfuPacket
from .fields import DerivedField, EntryListField, flag_value, layout_fields, layout_size, named_struct_fields


class VfuDeviceInfo(VfuPacket):
    """DEVICE_GET_INFO request and reply."""

    name = "vfio-user DEVICE_GET_INFO"
    layout_key = "device_info"
    fields_desc = layout_fields("device_info")


class VfuIrqInfo(VfuPacket):
    """DEVICE_GET_IRQ_INFO request and reply."""

    name = "vfio-user DEVICE_GET_IRQ_INFO"
    layout_key = "irq_info"
    fields_desc = layout_fields("irq_info")


def _irq_bool(pkt: Packet) -> bool:
    return bool(flag_value(pkt.getfieldval("flags")) & spec.IRQ_SET_DATA_BOOL)


def _group(pkt: Packet, mask: int, prefix: str) -> str:
    flags = flag_value(pkt.getfieldval("flags")) & mask
    names = [n.removeprefix(prefix) for bit, n in spec.IRQ_SET_FLAGS.items() if flags & bit]
    return "|".join(names) if names else "none"


class VfuIrqSet(VfuPacket):
    """DEVICE_SET_IRQS request: one DATA and one ACTION bit; with DATA_BOOL one bool byte per sub-index."""

    name = "vfio-user DEVICE_SET_IRQS"
    layout_key = "irq_set"
    fields_desc = layout_fields("irq_set") + [
        DerivedField("data_type", lambda p: _group(p, spec.IRQ_SET_DATA_MASK, "DATA_"), str),
        DerivedField("action", lambda p: _group(p, spec.IRQ_SET_ACTION_MASK, "ACTION_"), str),
        ConditionalField(FieldListField("bools", [], ByteEnumField("bool", 0, {0: "false", 1: "true"}),
                                        count_from=lambda p: p.getfieldval("count") or 0), _irq_bool),
    ]


# ---------------------------------------------------------------- region info and capabilities
class VfuSparseArea(VfuPacket):
    """One sparse-mmap area: offset (added to the region's mmap offset) and size."""

    name = "sparse mmap area"
    fields_desc = named_struct_fields("sparse_area")


class VfuRegionCap(VfuPacket):
    """A region capability of an id this dissector does not know: header, then its bytes."""

    name = "region capability"
    fields_desc = named_struct_fields("region_cap") + [StrField("cap_data", b"")]


class VfuCapSparseMmap(VfuPacket):
    """Capability 1 SPARSE_MMAP: the mmap-able areas of the region."""

    name = "region capability SPARSE_MMAP"
    fields_desc = named_struct_fields("region_cap") + named_struct_fields("sparse_mmap") + [
        EntryListField("areas", VfuSparseArea, count_from=lambda p: p.getfieldval("nr_areas") or 0),
    ]


class VfuCapType(VfuPacket):
    """Capability 2 TYPE: a device-specific region's type/subtype (type 3 subtype 1 = legacy migration)."""

    name = "region capability TYPE"
    fields_desc = named_struct_fields("region_cap") + named_struct_fields("region_type")


CAP_CLASSES: dict[int, type[Packet]] = {spec.REGION_CAP_SPARSE_MMAP: VfuCapSparseMmap, spec.REGION_CAP_TYPE: VfuCapType}
_CAP_HEAD = spec.REGION_CAP_HEADER
_FIXED = layout_size("region_info")


def _known_cap_size(cid: int, s: bytes, off: int) -> int | None:
    if cid == spec.REGION_CAP_SPARSE_MMAP and len(s) - off >= _CAP_HEAD.size + spec.SPARSE_MMAP_HEAD.size:
        nr = spec.SPARSE_MMAP_HEAD.unpack_from(s, off + _CAP_HEAD.size)[0]
        return _CAP_HEAD.size + spec.SPARSE_MMAP_HEAD.size + nr * spec.SPARSE_AREA.size
    if cid == spec.REGION_CAP_TYPE:
        return _CAP_HEAD.size + spec.REGION_TYPE_CAP.size
    return None


def _cap_starts(s: bytes, first: int) -> list[int]:
    """Offsets (relative to ``s``) of the caps on the chain that begins at ``first``; loop-safe."""
    starts: list[int] = []
    off = first
    while 0 <= off <= len(s) - _CAP_HEAD.size and off not in starts:
        starts.append(off)
        nxt = _CAP_HEAD.unpack_from(s, off)[2] - _FIXED
        if nxt < 0:
            break
        off = nxt
    return starts


class RegionCapsField(EntryListField):
    """The bytes after the fixed region info: the capabilities found by walking the chain from
    ``cap_offset`` (or from the first byte after the fixed part), in byte order, with any bytes no cap
    covers kept as Raw entries in between; so every payload round-trips.  Each cap spans its known size
    (sparse mmap: 16 + 16 * nr_areas, type: 16), or up to the next cap of the chain.  The chain order is
    :meth:`VfuRegionInfo.cap_chain`."""

    def __init__(self, name: str) -> None:
        super().__init__(name, VfuRegionCap)

    def getfield(self, pkt: Packet, s: bytes) -> tuple[bytes, list[Packet]]:  # type: ignore[override]
        first = (pkt.getfieldval("cap_offset") or 0) - _FIXED
        starts = sorted(_cap_starts(s, first) or _cap_starts(s, 0))
        out: list[Packet] = []
        pos = 0
        for i, start in enumerate(starts):
            if start > pos:
                out.append(conf.raw_layer(s[pos:start], _internal=1, _underlayer=pkt))
            limit = starts[i + 1] if i + 1 < len(starts) else len(s)
            cid = _CAP_HEAD.unpack_from(s, start)[0]
            known = _known_cap_size(cid, s, start)
            end = min(limit, start + known) if known is not None else limit
            end = max(end, min(start + _CAP_HEAD.size, limit))
            out.append(CAP_CLASSES.get(cid, VfuRegionCap)(s[start:end], _internal=1, _underlayer=pkt))
            pos = end
        if pos < len(s):
            out.append(conf.raw_layer(s[pos:], _internal=1, _underlayer=pkt))
        return b"", out


def _chain_text(chain: list[tuple[int, Packet]]) -> str:
    if not chain:
        return "none"
    return " -> ".join(f"{spec.REGION_CAP_IDS.get(c.getfieldval('id'), c.getfieldval('id'))}@{off}"
                       for off, c in chain)


class VfuRegionInfo(VfuPacket):
    """DEVICE_GET_REGION_INFO request and reply; the reply's capabilities follow the 32 fixed bytes
    (``caps``: the caps in byte order, Raw entries for bytes outside every cap; ``chain``: the order
    ``cap_offset`` and the ``next`` links give)."""

    name = "vfio-user DEVICE_GET_REGION_INFO"
    layout_key = "region_info"
    fields_desc = layout_fields("region_info") + [
        RegionCapsField("caps"),
        DerivedField("chain", lambda p: p.cap_chain(), _chain_text),
    ]

    def caps_by_offset(self) -> dict[int, Packet]:
        """Each capability by its offset in the payload."""
        off = _FIXED
        out = {}
        for cap in self.getfieldval("caps") or []:
            if isinstance(cap, VfuPacket):
                out[off] = cap
            off += len(cap)
        return out

    def cap_chain(self) -> list[tuple[int, Packet]]:
        """(offset, cap) in chain order from ``cap_offset`` along ``next``; stops at 0, a gap or a loop.
        Empty when the CAPS flag is clear."""
        if not flag_value(self.getfieldval("flags")) & spec.REGION_FLAG_CAPS:
            return []
        by_off = self.caps_by_offset()
        out: list[tuple[int, Packet]] = []
        seen: set[int] = set()
        off = self.getfieldval("cap_offset") or 0
        while off in by_off and off not in seen:
            seen.add(off)
            cap = by_off[off]
            out.append((off, cap))
            off = cap.getfieldval("next") or 0
        return out


# ---------------------------------------------------------------- region I/O fds
class VfuIoFdEntry(VfuPacket):
    """One GET_REGION_IO_FDS entry in the spec's 40-byte layout (datamatch at +32)."""

    name = "I/O fd entry (spec, 40 bytes)"
    fields_desc = named_struct_fields("io_fd")


class VfuIoFdEntryLvu(VfuPacket):
    """One GET_REGION_IO_FDS entry in libvfio-user's 48-byte layout (shadow memory, datamatch at +40)."""

    name = "I/O fd entry (libvfio-user, 48 bytes)"
    fields_desc = named_struct_fields("io_fd_lvu")


_IO_FD_HEAD = layout_size("region_io_fds")
_ENTRY_SIZES = (spec.IO_FD_ENTRY_SPEC.size, spec.IO_FD_ENTRY_LVU.size)


def io_fd_stride(pkt: Packet, avail: int) -> int:
    """Entry stride: the entry bytes present / count when that divides exactly; else (argsz - 16) / count
    (the consistent formula) or the spec's (argsz - 32) / count, a known entry size (40, 48) first; else 40."""
    count = pkt.getfieldval("count") or 0
    argsz = pkt.getfieldval("argsz") or 0
    if count <= 0:
        return spec.IO_FD_ENTRY_SPEC.size
    if avail > 0 and avail % count == 0:
        return avail // count
    exact = [(total // count) for total in (argsz - _IO_FD_HEAD, argsz - 32) if total > 0 and total % count == 0]
    for stride in exact:
        if stride in _ENTRY_SIZES:
            return stride
    return exact[0] if exact else spec.IO_FD_ENTRY_SPEC.size


def _entry_class(pkt: Packet, stride: int) -> type[Packet]:
    return VfuIoFdEntryLvu if stride == spec.IO_FD_ENTRY_LVU.size else VfuIoFdEntry


class VfuRegionIoFds(VfuPacket):
    """DEVICE_GET_REGION_IO_FDS request and reply; reply entries in the 40- or 48-byte layout by stride."""

    name = "vfio-user DEVICE_GET_REGION_IO_FDS"
    layout_key = "region_io_fds"
    fields_desc = layout_fields("region_io_fds") + [
        EntryListField("entries", VfuIoFdEntry, count_from=lambda p: p.getfieldval("count") or 0,
                       stride_from=io_fd_stride, cls_from=_entry_class),
        DerivedField("stride", lambda p: io_fd_stride(p, sum(len(e) for e in p.getfieldval("entries") or [])), str),
    ]

