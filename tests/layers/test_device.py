"""Device queries and interrupts: DEVICE_GET_INFO, GET_REGION_INFO with its capability chain,
GET_REGION_IO_FDS entries (40- and 48-byte layouts by stride), GET_IRQ_INFO, SET_IRQS with bool data."""

from __future__ import annotations

import struct

from hypothesis import given, strategies as st
from scapy.packet import Packet, Raw

import vfudissect.layers as L
from vfudissect import spec
from vfudissect.capture.reader import open_capture
from vfudissect.core.events import MessageIn

from tests.conftest import LVU
from tests.layers.strategies import fixed_kwargs, round_trip, scapy_capture

U32, U64 = st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)


@given(fixed_kwargs(L.VfuDeviceInfo))
def test_device_info_round_trip(kw: dict) -> None:
    round_trip(L.VfuDeviceInfo(**kw))


@given(fixed_kwargs(L.VfuIrqInfo))
def test_irq_info_round_trip(kw: dict) -> None:
    round_trip(L.VfuIrqInfo(**kw))


@given(fixed_kwargs(L.VfuIrqSet, skip=("count",)), st.lists(st.integers(0, 255), max_size=24))
def test_set_irqs_round_trip_with_bool_data(kw: dict, bools: list[int]) -> None:
    if kw["flags"] & spec.IRQ_SET_DATA_BOOL:
        again = round_trip(L.VfuIrqSet(**kw, count=len(bools), bools=bools))
        assert again.bools == bools
    else:
        again = round_trip(L.VfuIrqSet(**kw, count=len(bools)))
        assert "bools" not in again.fields


def test_set_irqs_data_and_action_names() -> None:
    p = L.VfuIrqSet(flags=spec.IRQ_SET_DATA_BOOL | spec.IRQ_SET_ACTION_TRIGGER, count=3, bools=[1, 0, 1])
    again = L.VfuIrqSet(bytes(p))
    assert (again.data_type, again.action) == ("BOOL", "TRIGGER")
    assert again.argsz == 0 and again.bools == [1, 0, 1] and len(bytes(again)) == 23
    assert "bools     = [true, false, true]" in again.show(dump=True)
    assert L.VfuIrqSet(flags=0x3F).data_type == "NONE|BOOL|EVENTFD"


# ---------------------------------------------------------------- region info capabilities
area = st.builds(lambda o, s: (o, s), U64, U64)
cap_spec = st.one_of(
    st.tuples(st.just(1), st.lists(area, max_size=4)),
    st.tuples(st.just(2), st.tuples(U32, U32)),
    st.tuples(st.integers(3, 65535), st.binary(max_size=24)),
)


def _cap(kind: int, body: object, nxt: int) -> Packet:
    if kind == spec.REGION_CAP_SPARSE_MMAP:
        areas = [L.VfuSparseArea(offset=o, size=s) for o, s in body]  # type: ignore[attr-defined]
        return L.VfuCapSparseMmap(id=1, version=1, next=nxt, nr_areas=len(areas), areas=areas)
    if kind == spec.REGION_CAP_TYPE:
        typ, sub = body  # type: ignore[misc]
        return L.VfuCapType(id=2, version=1, next=nxt, type=typ, subtype=sub)
    return L.VfuRegionCap(id=kind, version=1, next=nxt, cap_data=body)


def _chained(specs: list[tuple[int, object]], start: int) -> list[Packet]:
    sizes = [len(_cap(k, b, 0)) for k, b in specs]
    offs = [start + sum(sizes[:i]) for i in range(len(specs))]
    return [_cap(k, b, offs[i + 1] if i + 1 < len(specs) else 0) for i, (k, b) in enumerate(specs)]


@given(fixed_kwargs(L.VfuRegionInfo, skip=("flags", "cap_offset")), st.lists(cap_spec, min_size=1, max_size=4),
       st.binary(max_size=12))
def test_region_info_caps_round_trip_and_chain(kw: dict, specs: list, gap: bytes) -> None:
    start = 32 + len(gap)
    caps = _chained(specs, start)
    gap_entry = [Raw(gap)] if gap else []  # bytes between the fixed part and cap_offset
    p = L.VfuRegionInfo(**kw, flags=spec.REGION_FLAG_CAPS | spec.REGION_FLAG_MMAP, cap_offset=start,
                        caps=gap_entry + caps)
    again = round_trip(p)
    chain = again.cap_chain()
    assert [type(c) for _, c in chain] == [type(c) for c in caps]
    assert [off for off, _ in chain] == [start + sum(len(c) for c in caps[:i]) for i in range(len(caps))]
    for (kind, body), (_, cap) in zip(specs, chain):
        if kind == spec.REGION_CAP_SPARSE_MMAP:
            assert [(a.offset, a.size) for a in cap.areas] == list(body)
        elif kind == spec.REGION_CAP_TYPE:
            assert (cap.type, cap.subtype) == body


def test_chain_follows_next_not_byte_order_and_stops_at_a_loop() -> None:
    a = L.VfuCapType(id=2, version=1, next=0, type=3, subtype=1)  # at 32
    b = L.VfuCapType(id=2, version=1, next=32, type=1, subtype=0)  # at 48, points back
    p = L.VfuRegionInfo(bytes(L.VfuRegionInfo(flags=8, cap_offset=48, caps=[a, b])))
    assert [(off, c.type) for off, c in p.cap_chain()] == [(48, 1), (32, 3)]
    assert "TYPE@48 -> TYPE@32" in p.show(dump=True)
    loop = L.VfuRegionInfo(bytes(L.VfuRegionInfo(flags=8, cap_offset=32, caps=[
        L.VfuCapType(id=2, next=48), L.VfuCapType(id=2, next=32)])))
    assert [off for off, _ in loop.cap_chain()] == [32, 48]
    assert L.VfuRegionInfo(bytes(L.VfuRegionInfo(flags=0, cap_offset=32, caps=[a]))).cap_chain() == []


def test_legacy_migration_region_type_cap() -> None:
    """Migration v1: a TYPE cap (type 3 MIGRATION, subtype 1) chained before the sparse-mmap cap."""
    caps = _chained([(2, (3, 1)), (1, [(0, 0x1000)])], 32)
    p = L.VfioUser(bytes(L.VfioUser(command=5, flags=1) / L.VfuRegionInfo(flags=0xF, index=9, cap_offset=32,
                                                                           caps=caps)))
    info = p[L.VfuRegionInfo]
    (_, typ), (_, sparse) = info.cap_chain()
    assert typ.type == 3 and spec.REGION_TYPES[typ.type] == "MIGRATION" and typ.subtype == 1
    assert sparse.nr_areas == 1 and sparse.areas[0].size == 0x1000
    assert "MIGRATION" in p.show(dump=True)


@given(st.binary(max_size=120))
def test_any_bytes_after_the_fixed_part_round_trip(tail: bytes) -> None:
    wire = bytes(L.VfuRegionInfo(flags=8, cap_offset=32)) + tail
    p = L.VfuRegionInfo(wire)
    assert bytes(p) == wire
    p.show(dump=True)


def test_sparse_mmap_reply_in_the_libvfio_user_capture() -> None:
    events = [ev for ev in open_capture(LVU) if isinstance(ev, MessageIn)]
    pkts = [p[L.VfioUser] for p in scapy_capture(LVU) if L.VfioUser in p]
    assert len(pkts) == len(events)
    found = 0
    for ev, p in zip(events, pkts):
        if p.command != spec.Command.DEVICE_GET_REGION_INFO or not p.is_reply or len(ev.data) <= 48:
            continue
        info = p[L.VfuRegionInfo]
        cap_offset = struct.unpack_from("<I", ev.data, 16 + 12)[0]
        cid, _ver, _nxt, nr = struct.unpack_from("<HHII", ev.data, 16 + cap_offset)
        want = [struct.unpack_from("<QQ", ev.data, 16 + cap_offset + 16 + 16 * i) for i in range(nr)]
        (off, cap), = info.cap_chain()
        assert off == cap_offset and cid == cap.id == spec.REGION_CAP_SPARSE_MMAP
        assert [(a.offset, a.size) for a in cap.areas] == want and nr >= 1
        assert int(info.flags) & spec.REGION_FLAG_MMAP and len(p.underlayer.fds) == 1  # the region's fd
        found += 1
    assert found


# ---------------------------------------------------------------- region I/O fds
@given(fixed_kwargs(L.VfuRegionIoFds, skip=("argsz", "count")), st.sampled_from([L.VfuIoFdEntry, L.VfuIoFdEntryLvu]),
       st.data())
def test_region_io_fds_entries_by_stride(kw: dict, cls: type[Packet], data: st.DataObject) -> None:
    entries = [cls(**data.draw(fixed_kwargs(cls))) for _ in range(data.draw(st.integers(1, 4)))]
    stride = len(entries[0])
    p = L.VfuRegionIoFds(**kw, argsz=16 + stride * len(entries), count=len(entries), entries=entries)
    again = round_trip(p)
    assert again.stride == str(stride) or again.stride == stride
    assert all(type(e) is cls for e in again.entries)


def test_region_io_fds_truncated_reply_has_no_entries() -> None:
    # libvfio-user: reply argsz = 16 + 48 n and count = n, but entries only if the request's argsz allowed them
    p = L.VfioUser(bytes(L.VfioUser(command=6, flags=1) / L.VfuRegionIoFds(argsz=16 + 48 * 3, count=3)))
    assert p[L.VfuRegionIoFds].entries == [] and p[L.VfuRegionIoFds].count == 3
    spec40 = L.VfuRegionIoFds(bytes(L.VfuRegionIoFds(argsz=32 + 40 * 2, count=2,
                                                     entries=[L.VfuIoFdEntry(datamatch=7), L.VfuIoFdEntry()])))
    assert [type(e) for e in spec40.entries] == [L.VfuIoFdEntry] * 2 and spec40.entries[0].datamatch == 7
    odd = L.VfuRegionIoFds(bytes(L.VfuRegionIoFds(argsz=16 + 56, count=1)) + bytes(56))
    assert len(odd.entries) == 1 and isinstance(odd.entries[0].payload, Raw)  # unknown 56-byte stride kept
