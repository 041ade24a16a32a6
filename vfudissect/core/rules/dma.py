"""DMA (fact sheet 7.4 D10-D12, 7.5 M1-M11): the map table the client builds and the server's accesses through it."""

from __future__ import annotations

from ... import spec
from ..state import DmaMap
from .base import ERROR_REPLY, PAIRED, REQUEST, Code, Msg, bits_text, on, updates

C = spec.Command
_UNMAP_ALL = next(bit for bit, name in spec.DMA_UNMAP_FLAGS.items() if name == "ALL")
_MAP_WRITE = next(bit for bit, name in spec.DMA_MAP_FLAGS.items() if name == "WRITE")
_MMAP_OR_FILE_IO = 0x4 | 0x8  # libvfio-user's extension: these need the fd


def _degenerate(address: int, size: int) -> bool:
    return size == 0 or address + size > 1 << 64


@on(REQUEST, C.DMA_MAP,
    emits=(Code.DMA_MAP_BAD_ARGSZ, Code.DMA_MAP_FLAGS, Code.FDS_UNEXPECTED, Code.FDS_MISSING, Code.DMA_MAP_DEGENERATE,
           Code.DMA_MAP_MISALIGNED, Code.DMA_MAP_OVERLAP, Code.DMA_MAPS_EXCEEDED))
def dma_map(m: Msg) -> None:
    f, c, nfds = m.fields, m.c, m.nfds
    if not f:
        return
    argsz, flags, offset, address, size = f["argsz"], f["flags"], f["offset"], f["address"], f["size"]
    if argsz != 32:
        m.add(Code.DMA_MAP_BAD_ARGSZ, f"argsz {argsz}, the spec says 32")
    if flags & ~spec.DMA_MAP_FLAGS_LVU:
        m.add(Code.DMA_MAP_FLAGS, f"flag bits 0x{flags & ~spec.DMA_MAP_FLAGS_LVU:x} are not defined")
    if nfds > 1:
        m.add(Code.FDS_UNEXPECTED, f"{nfds} fds on DMA_MAP (at most 1; libvfio-user closes the rest)")
    if flags & _MMAP_OR_FILE_IO and not nfds and not c.fds_unseen:
        m.add(Code.FDS_MISSING, "MMAP/FILE_IO flag without an fd (libvfio-user: EINVAL)")
    if _degenerate(address, size):
        m.add(Code.DMA_MAP_DEGENERATE, f"range 0x{address:x}+0x{size:x} is empty or wraps")
        return
    if offset and not nfds and not c.fds_unseen:
        m.add(Code.DMA_MAP_DEGENERATE, f"offset 0x{offset:x} without an fd")
    pg = c.min_pgsize
    if address % pg or size % pg:
        m.add(Code.DMA_MAP_MISALIGNED, f"address 0x{address:x} / size 0x{size:x} not multiples of the page size "
                                       f"0x{pg:x}")
    clash = c.clash(address, size)
    if clash is not None:
        if not (clash.address == address and clash.size == size and clash.flags == flags):
            m.add(Code.DMA_MAP_OVERLAP, f"0x{address:x}+0x{size:x} overlaps the mapping 0x{clash.address:x}+"
                                        f"0x{clash.size:x} (frame {clash.frame}); the spec wants EEXIST, libvfio-user "
                                        "answers EINVAL", clash.frame)
        return
    if len(c.maps_starts) >= c.max_dma_maps:
        m.add(Code.DMA_MAPS_EXCEEDED, f"{len(c.maps_starts) + 1} live mappings, max_dma_maps is {c.max_dma_maps}")


@updates(REQUEST, C.DMA_MAP)
def _mapped(m: Msg) -> None:
    f, c = m.fields, m.c
    if f and not _degenerate(f["address"], f["size"]) and c.clash(f["address"], f["size"]) is None:
        c.add_map(DmaMap(f["address"], f["size"], f["flags"], m.ev.frame, m.nfds > 0))


@updates(ERROR_REPLY, C.DMA_MAP)
def _not_mapped(m: Msg) -> None:
    """The server refused the DMA_MAP: the mapping its request made is not there."""
    req = m.req
    if req is not None:
        dm = m.c.maps.get(req.fields.get("address", -1))
        if dm is not None and dm.frame == req.frame:
            m.c.remove_map(dm.address)


def _unmap_all(flags: int, address: int, size: int) -> bool:
    return flags == _UNMAP_ALL and address == 0 and size == 0


@on(REQUEST, C.DMA_UNMAP, emits=(Code.DMA_UNMAP_FLAGS, Code.DMA_UNMAP_UNKNOWN))
def dma_unmap(m: Msg) -> None:
    f, c = m.fields, m.c
    if not f:
        return
    flags, address, size = f["flags"], f["address"], f["size"]
    if flags:
        if _unmap_all(flags, address, size):
            m.add(Code.DMA_UNMAP_FLAGS, "unmap all (flag ALL, follows QEMU/libvfio-user; the final spec leaves "
                                        "flags unused)")
            return
        m.add(Code.DMA_UNMAP_FLAGS, f"flags 0x{flags:x} ({bits_text(flags, spec.DMA_UNMAP_FLAGS)}); the final spec "
                                    "leaves them unused")
    dm = c.maps.get(address)
    if dm is None or dm.size != size:
        m.add(Code.DMA_UNMAP_UNKNOWN, f"0x{address:x}+0x{size:x} is not a live mapping")


@updates(REQUEST, C.DMA_UNMAP)
def _unmapped(m: Msg) -> None:
    f, c = m.fields, m.c
    if not f:
        return
    if _unmap_all(f["flags"], f["address"], f["size"]):
        c.clear_maps()
        return
    dm = c.maps.get(f["address"])
    if dm is not None and dm.size == f["size"]:
        c.remove_map(f["address"])


@on(PAIRED, C.DMA_UNMAP, emits=(Code.REPLY_ECHO_MISMATCH,))
def dma_unmap_reply(m: Msg) -> None:
    """M11: the reply echoes the unmapped entry."""
    f, req = m.fields, m.req
    assert req is not None
    rq = req.fields
    if f and rq and (f["address"] != rq.get("address") or f["size"] != rq.get("size")):
        m.add(Code.REPLY_ECHO_MISMATCH, f"DMA_UNMAP reply 0x{f['address']:x}+0x{f['size']:x}, request "
                                        f"0x{rq['address']:x}+0x{rq['size']:x}", req.frame)


@on(REQUEST, C.DMA_READ, C.DMA_WRITE,
    emits=(Code.DATA_BEYOND_MAX_XFER, Code.DATA_LENGTH_MISMATCH, Code.ZERO_COUNT, Code.DMA_ACCESS_UNMAPPED,
           Code.DMA_WRITE_READ_ONLY))
def dma_access(m: Msg) -> None:
    f, c = m.fields, m.c
    if not f:
        return
    address, count = f["address"], f["count"]
    if count > c.client_max_xfer:
        m.add(Code.DATA_BEYOND_MAX_XFER, f"count {count} exceeds the client's max_data_xfer_size {c.client_max_xfer}")
    if m.cmd == C.DMA_WRITE and m.plen != 16 + count:
        m.add(Code.DATA_LENGTH_MISMATCH, f"DMA_WRITE payload {m.plen} bytes, 16 + count = {16 + count}")
    if count == 0:
        m.add(Code.ZERO_COUNT, "DMA access of zero bytes")
        return
    dm = c.mapping_below(address)
    if dm is None or address + count > dm.address + dm.size:
        m.add(Code.DMA_ACCESS_UNMAPPED, f"0x{address:x}+0x{count:x} is not inside one live DMA mapping")
    elif m.cmd == C.DMA_WRITE and not dm.flags & _MAP_WRITE:
        m.add(Code.DMA_WRITE_READ_ONLY, f"DMA_WRITE into the read-only mapping 0x{dm.address:x} (frame {dm.frame})",
              dm.frame)


@on(PAIRED, C.DMA_READ, emits=(Code.DMA_LAYOUT_VARIANT, Code.DATA_LENGTH_MISMATCH, Code.REPLY_ECHO_MISMATCH))
def dma_read_reply(m: Msg) -> None:
    f, req = m.fields, m.req
    if not f:
        return
    assert req is not None
    rq = req.fields
    if rq and f["count"] != rq.get("count") and f["count"] & 0xFFFFFFFF == rq.get("count"):
        m.add(Code.DMA_LAYOUT_VARIANT, "DMA_READ reply in QEMU's layout (u32 count, data at +12)")
    elif m.plen != 16 + f["count"]:
        m.add(Code.DATA_LENGTH_MISMATCH, f"DMA_READ reply payload {m.plen} bytes, 16 + count = {16 + f['count']}")
    elif rq and (f["address"] != rq.get("address") or f["count"] != rq.get("count")):
        m.add(Code.REPLY_ECHO_MISMATCH, "DMA_READ reply does not echo address and count", req.frame)


@on(PAIRED, C.DMA_WRITE, emits=(Code.DMA_LAYOUT_VARIANT, Code.DATA_LENGTH_MISMATCH))
def dma_write_reply(m: Msg) -> None:
    if m.plen == 16:
        m.add(Code.DMA_LAYOUT_VARIANT, "DMA_WRITE reply of 16 bytes (libvfio-user's layout; the spec table says 12)")
    elif m.plen == 0:
        m.add(Code.DMA_LAYOUT_VARIANT, "header-only DMA_WRITE reply (QEMU's layout)")
    elif m.plen != 12:
        m.add(Code.DATA_LENGTH_MISMATCH, f"DMA_WRITE reply payload {m.plen} bytes")
