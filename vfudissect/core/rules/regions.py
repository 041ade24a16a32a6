"""Regions and device queries (fact sheet 7.4 D1-D9, 7.7 G1-G6): accesses against the regions the device reported."""

from __future__ import annotations

from typing import Any

from ... import spec
from .base import PAIRED, REQUEST, Code, Msg, on, updates

C = spec.Command
_FLAG_PCI = next(bit for bit, name in spec.DEVICE_INFO_FLAGS.items() if name == "PCI")
_QUERIES = (C.DEVICE_GET_INFO, C.DEVICE_GET_REGION_INFO, C.DEVICE_GET_REGION_IO_FDS, C.DEVICE_GET_IRQ_INFO)
_REGION_READ, _REGION_WRITE = int(C.REGION_READ), int(C.REGION_WRITE)
_FLAG_READ, _FLAG_WRITE = spec.REGION_FLAG_READ, spec.REGION_FLAG_WRITE


def region_name(index: int) -> str | int:
    return spec.PCI_REGIONS.get(index, index)


@on(REQUEST, C.REGION_READ, C.REGION_WRITE,
    emits=(Code.DATA_BEYOND_MAX_XFER, Code.DATA_LENGTH_MISMATCH, Code.ZERO_COUNT, Code.REGION_INDEX_INVALID,
           Code.REGION_ACCESS_OUT_OF_RANGE, Code.REGION_ACCESS_NOT_PERMITTED, Code.FDS_UNEXPECTED))
def region_access(m: Msg) -> None:
    if m.fields:
        _region_access(m)
    if m.nfds:
        m.add(Code.FDS_UNEXPECTED, f"{m.nfds} fds on {m.name}")


def _region_access(m: Msg) -> None:
    f, c = m.fields, m.c
    region, count, offset = f["region"], f["count"], f["offset"]
    if count > c.server_max_xfer:
        m.add(Code.DATA_BEYOND_MAX_XFER, f"count {count} exceeds the server's max_data_xfer_size {c.server_max_xfer}")
    if m.cmd == _REGION_WRITE and m.plen != 16 + count:
        m.add(Code.DATA_LENGTH_MISMATCH, f"REGION_WRITE payload {m.plen} bytes, 16 + count = {16 + count}")
    if count == 0:
        m.add(Code.ZERO_COUNT, "access of zero bytes (libvfio-user answers with an empty payload)")
    if c.num_regions is not None and region >= c.num_regions:
        m.add(Code.REGION_INDEX_INVALID, f"region {region} but the device has {c.num_regions}")
        return
    info = c.regions.get(region)
    if info is None:
        return
    rsize, rflags = info
    if offset + count > rsize:
        m.add(Code.REGION_ACCESS_OUT_OF_RANGE, f"{region_name(region)} offset 0x{offset:x} + count {count} is beyond "
                                               f"its size 0x{rsize:x}")
    read = m.cmd == _REGION_READ
    if not rflags & (_FLAG_READ if read else _FLAG_WRITE):
        m.add(Code.REGION_ACCESS_NOT_PERMITTED, f"{'read' if read else 'write'} of {region_name(region)}, whose flags "
                                                f"lack {'READ' if read else 'WRITE'}")


@on(PAIRED, C.REGION_READ, C.REGION_WRITE,
    emits=(Code.PAYLOAD_TOO_SHORT, Code.REPLY_ECHO_MISMATCH, Code.REPLY_COUNT_TOO_BIG, Code.DATA_LENGTH_MISMATCH,
           Code.FDS_UNEXPECTED))
def region_access_reply(m: Msg) -> None:
    f, req = m.fields, m.req
    assert req is not None
    rq = req.fields
    if m.plen == 0 and rq.get("count") == 0:
        return  # libvfio-user answers count 0 with an empty payload
    if m.plen < 16 or not f:
        m.add(Code.PAYLOAD_TOO_SHORT, f"{m.name} reply payload is {m.plen} bytes, needs 16")
        return
    if rq and (f["offset"] != rq["offset"] or f["region"] != rq["region"]):
        m.add(Code.REPLY_ECHO_MISMATCH, f"reply region {f['region']} offset 0x{f['offset']:x}, request region "
                                        f"{rq['region']} offset 0x{rq['offset']:x}", req.frame)
    if m.cmd == _REGION_READ:
        if rq and f["count"] > rq["count"]:
            m.add(Code.REPLY_COUNT_TOO_BIG, f"reply count {f['count']} above the requested {rq['count']}", req.frame)
        if m.plen != 16 + f["count"]:
            m.add(Code.DATA_LENGTH_MISMATCH, f"REGION_READ reply payload {m.plen} bytes, 16 + count = "
                                             f"{16 + f['count']}")
    elif rq and f["count"] != rq["count"]:
        m.add(Code.REPLY_ECHO_MISMATCH, f"reply count {f['count']}, request count {rq['count']}", req.frame)
    if m.nfds:
        m.add(Code.FDS_UNEXPECTED, f"{m.nfds} fds on a {m.name} reply")


@on(REQUEST, *_QUERIES, emits=(Code.ARGSZ_TOO_SMALL, Code.INPUT_NOT_ZERO, Code.REGION_INDEX_INVALID))
def query(m: Msg) -> None:
    f, c = m.fields, m.c
    if not f:
        return
    need = 32 if m.cmd == C.DEVICE_GET_REGION_INFO else 16
    if f["argsz"] < need:
        m.add(Code.ARGSZ_TOO_SMALL, f"argsz {f['argsz']} is below the {need}-byte reply")
    nonzero = [f"{k}=0x{v:x}" for k, v in f.items() if v and k not in ("argsz", "index")]
    if nonzero:
        m.add(Code.INPUT_NOT_ZERO, f"{', '.join(nonzero)} in the request (must be zero)")
    if m.cmd in (C.DEVICE_GET_REGION_INFO, C.DEVICE_GET_REGION_IO_FDS) and c.num_regions is not None \
            and f["index"] >= c.num_regions:
        m.add(Code.REGION_INDEX_INVALID, f"region {f['index']} but the device has {c.num_regions}")


def device_info_oddities(flags: int, num_regions: int, num_irqs: int) -> list[str]:
    """What in a GET_INFO reply the spec does not expect of a PCI device or QEMU refuses (G4)."""
    odd = []
    if not flags & _FLAG_PCI:
        odd.append("no PCI flag")
    if num_regions < spec.PCI_MIN_REGIONS:
        odd.append(f"{num_regions} regions, below {spec.PCI_MIN_REGIONS}")
    if num_regions > spec.QEMU_MAX_REGIONS:
        odd.append(f"{num_regions} regions, above QEMU's {spec.QEMU_MAX_REGIONS}")
    if num_irqs > spec.QEMU_MAX_IRQS:
        odd.append(f"{num_irqs} IRQ types, above QEMU's {spec.QEMU_MAX_IRQS}")
    return odd


@on(PAIRED, C.DEVICE_GET_INFO, emits=(Code.DEVICE_INFO_UNUSUAL,))
def device_info(m: Msg) -> None:
    f = m.fields
    if f:
        odd = device_info_oddities(f["flags"], f["num_regions"], f["num_irqs"])
        if odd:
            m.add(Code.DEVICE_INFO_UNUSUAL, "; ".join(odd))


@updates(PAIRED, C.DEVICE_GET_INFO)
def _device_layout(m: Msg) -> None:
    f = m.fields
    if f:
        m.c.num_regions, m.c.num_irqs = f["num_regions"], f["num_irqs"]


def _truncated(f: dict[str, Any], rq: dict[str, Any]) -> bool:
    return bool(rq) and f["argsz"] > rq.get("argsz", 0)


@on(PAIRED, C.DEVICE_GET_REGION_INFO,
    emits=(Code.REPLY_ECHO_MISMATCH, Code.REPLY_TRUNCATED, Code.FDS_UNEXPECTED, Code.FDS_MISSING,
           Code.REGION_CAPS_BAD))
def region_info(m: Msg) -> None:
    f, req = m.fields, m.req
    if not f:
        return
    assert req is not None
    rq = req.fields
    index, flags, size = f["index"], f["flags"], f["size"]
    if rq and index != rq.get("index"):
        m.add(Code.REPLY_ECHO_MISMATCH, f"reply for region {index}, request asked for {rq.get('index')}", req.frame)
    truncated = _truncated(f, rq)
    if truncated:
        m.add(Code.REPLY_TRUNCATED, f"reply needs argsz {f['argsz']}, the request allowed {rq.get('argsz')}; "
                                    "the client retries with more", req.frame)
    if m.nfds > 1:
        m.add(Code.FDS_UNEXPECTED, f"{m.nfds} fds on a region info reply (at most 1)")
    if flags & spec.REGION_FLAG_MMAP and not m.nfds and not truncated and not m.c.fds_unseen:
        m.add(Code.FDS_MISSING, f"{region_name(index)} is MMAP but the reply has no fd")
    if flags & spec.REGION_FLAG_CAPS and not truncated:
        problem = caps_chain_problem(m.ev.data, 16, m.plen, f["cap_offset"], size)
        if problem:
            m.add(Code.REGION_CAPS_BAD, problem)


@updates(PAIRED, C.DEVICE_GET_REGION_INFO)
def _region(m: Msg) -> None:
    f = m.fields
    if f:
        m.c.regions[f["index"]] = (f["size"], f["flags"])


@on(PAIRED, C.DEVICE_GET_REGION_IO_FDS, emits=(Code.REPLY_TRUNCATED, Code.FDS_MISSING))
def region_io_fds(m: Msg) -> None:
    f, req = m.fields, m.req
    if not f:
        return
    assert req is not None
    rq = req.fields
    if rq and f["argsz"] > rq.get("argsz", 0):
        m.add(Code.REPLY_TRUNCATED, f"reply needs argsz {f['argsz']}, the request allowed {rq.get('argsz')}",
              req.frame)
    elif f["count"] and not m.nfds and not m.c.fds_unseen:
        m.add(Code.FDS_MISSING, f"{f['count']} sub-regions but no fds")


def caps_chain_problem(data: bytes, base: int, plen: int, first: int, region_size: int) -> str | None:
    """Walk a region-info capability chain; a sentence on the first problem, else None."""
    off = first
    seen = 0
    prev = 0
    while off:
        if off < 32 or off + 8 > plen:
            return f"capability at offset {off} is outside the reply payload ({plen} bytes)"
        if off <= prev:
            return f"capability chain does not move forward (next {off} after {prev})"
        seen += 1
        if seen > 64:
            return "capability chain longer than 64 entries"
        if base + off + 8 > len(data):
            return None  # truncated capture: stop quietly
        cap_id, _ver, nxt = spec.REGION_CAP_HEADER.unpack_from(data, base + off)
        if cap_id not in spec.REGION_CAP_IDS:
            return f"unknown capability id {cap_id} at offset {off}"
        if cap_id == spec.REGION_CAP_SPARSE_MMAP and base + off + 16 <= len(data):
            nr = spec.SPARSE_MMAP_HEAD.unpack_from(data, base + off + 8)[0]
            if off + 16 + 16 * nr > plen:
                return f"sparse mmap cap with {nr} areas runs past the payload"
            for i in range(nr):
                p = base + off + 16 + 16 * i
                if p + 16 > len(data):
                    break
                a_off, a_size = spec.SPARSE_AREA.unpack_from(data, p)
                if a_off + a_size > region_size:
                    return f"sparse area {i} (0x{a_off:x}+0x{a_size:x}) lies outside the region (0x{region_size:x})"
        prev = off
        off = nxt
    return None
