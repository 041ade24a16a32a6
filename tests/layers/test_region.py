"""Region access: REGION_READ/WRITE with count-long data, REGION_WRITE_MULTI and its reply, and what an
access to the legacy migration-v1 region touches."""

from __future__ import annotations

import struct

from hypothesis import given, strategies as st
from scapy.packet import NoPayload, Raw

import vfudissect.layers as L
from vfudissect import spec
from vfudissect.capture.reader import open_capture
from vfudissect.core.events import MessageIn

from tests.conftest import LVU, QEMU
from tests.layers.strategies import fixed_kwargs, round_trip, scapy_capture


@given(fixed_kwargs(L.VfuRegionAccess, skip=("count",)), st.binary(max_size=64), st.binary(max_size=8))
def test_region_access_data_is_count_bytes(kw: dict, data: bytes, extra: bytes) -> None:
    again = round_trip(L.VfuRegionAccess(**kw, count=len(data), data=data))
    assert again.data == data and isinstance(again.payload, NoPayload)
    longer = L.VfuRegionAccess(bytes(L.VfuRegionAccess(**kw, count=len(data), data=data)) + extra)
    assert longer.data == data
    assert (bytes(longer.payload) if extra else b"") == extra  # bytes beyond count stay undecoded


def test_read_request_has_count_but_no_data() -> None:
    p = L.VfioUser(bytes(L.VfioUser(command=9) / L.VfuRegionAccess(offset=0x30, region=7, count=4)))
    assert p.size == 32 and p[L.VfuRegionAccess].count == 4 and p[L.VfuRegionAccess].data == b""


write_entry = st.builds(lambda o, r, c, d: L.VfuWriteMultiEntry(offset=o, region=r, count=c, data=d),
                        st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.integers(0, 8),
                        st.binary(min_size=8, max_size=8))


@given(st.lists(write_entry, max_size=6))
def test_write_multi_round_trip(writes: list) -> None:
    msg = L.VfioUser(flags=0x10) / L.VfuWriteMulti(wr_cnt=len(writes), writes=writes)
    again = L.VfioUser(bytes(msg))
    assert again.command == spec.Command.REGION_WRITE_MULTI and again.size == 16 + 8 + 24 * len(writes)
    assert [(w.offset, w.region, w.count, w.data) for w in again[L.VfuWriteMulti].writes] == \
        [(w.offset, w.region, w.count, w.data) for w in writes]
    round_trip(L.VfuWriteMulti(wr_cnt=len(writes), writes=writes))
    reply = L.VfioUser(bytes(L.VfioUser(command=15, flags=1) / L.VfuWriteMultiReply(wr_cnt=len(writes))))
    assert type(reply.payload) is L.VfuWriteMultiReply and reply.payload.wr_cnt == len(writes)


@given(fixed_kwargs(L.VfuMigrationInfoV1))
def test_migration_v1_header_round_trip(kw: dict) -> None:
    round_trip(L.VfuMigrationInfoV1(**kw))
    assert len(L.VfuMigrationInfoV1(**kw)) == spec.MIG_V1_INFO.size


def test_access_to_the_legacy_migration_region_names_what_it_touches() -> None:
    state = L.VfuRegionAccess(offset=0, region=9, count=4, data=struct.pack("<I", 0x3))
    assert L.VfuRegionAccess(bytes(state)).migration_v1 == {"device_state": "RUNNING|SAVING"}
    pending = L.VfuRegionAccess(offset=8, region=9, count=8)  # a read request: no data yet
    assert L.VfuRegionAccess(bytes(pending)).migration_v1 == {"pending_bytes": None}
    whole = L.VfuRegionAccess(region=9, count=32, data=bytes(L.VfuMigrationInfoV1(pending_bytes=5, data_size=7)))
    assert L.VfuRegionAccess(bytes(whole)).migration_v1 == {
        "device_state": "STOP", "reserved": 0, "pending_bytes": 5, "data_offset": 0, "data_size": 7}
    assert L.VfuRegionAccess(region=7, count=4, data=bytes(4)).migration_v1 is None
    assert L.VfuRegionAccess(region=9, offset=0x1000, count=4).migration_v1 is None


def _pairs(path, command: int) -> list[tuple[MessageIn, L.VfioUser]]:
    events = [ev for ev in open_capture(path) if isinstance(ev, MessageIn)]
    pkts = [p[L.VfioUser] for p in scapy_capture(path) if L.VfioUser in p]
    assert len(events) == len(pkts)
    return [(ev, p) for ev, p in zip(events, pkts) if p.command == command]


def test_region_reads_and_writes_in_the_real_captures() -> None:
    for path in (QEMU, LVU):
        for code in (spec.Command.REGION_READ, spec.Command.REGION_WRITE):
            pairs = _pairs(path, code)
            assert pairs
            for ev, p in pairs:
                if len(ev.data) == 16:
                    assert p.is_error and isinstance(p.payload, NoPayload)
                    continue
                acc = p[L.VfuRegionAccess]
                offset, region, count = struct.unpack_from("<QII", ev.data, 16)
                assert (acc.offset, acc.region, acc.count) == (offset, region, count)
                carries = p.is_reply == (code == spec.Command.REGION_READ)
                assert acc.data == (ev.data[32:32 + count] if carries else b"")
                assert not isinstance(acc.payload, Raw)
    config = [p for _, p in _pairs(QEMU, spec.Command.REGION_READ) if p.is_reply and p.count == 256]
    assert config and config[0].region == 7  # QEMU reads the whole config space first
