"""Migration v2: DEVICE_FEATURE flags and each feature's data (MIGRATION, MIG_DEVICE_STATE, DMA logging
start/stop/report), MIG_DATA_READ/WRITE with size-long data (padded reads)."""

from __future__ import annotations

import struct

from hypothesis import given, strategies as st
from scapy.packet import NoPayload, Raw

import vfudissect.layers as L
from vfudissect import spec
from vfudissect.capture.reader import open_capture
from vfudissect.core.events import MessageIn

from tests.conftest import LVU
from tests.layers.strategies import fixed_kwargs, round_trip, scapy_capture

U64 = st.integers(0, 2**64 - 1)
OPS = st.sampled_from([spec.FEATURE_GET, spec.FEATURE_SET, spec.FEATURE_PROBE, spec.FEATURE_GET | spec.FEATURE_PROBE])


@given(st.integers(0, 0xFFFF), OPS)
def test_feature_flags_split_index_and_ops(index: int, ops: int) -> None:
    p = L.VfuDeviceFeature(bytes(L.VfuDeviceFeature(argsz=8, flags=index | ops)))
    assert p.flags.feature == index and p.flags.ops == ops
    assert p.feature == spec.FEATURES.get(index, f"feature{index}")
    assert int(L.VfuDeviceFeature(flags=str(p.flags)).flags) == index | ops  # text form parses back


def _feature_msg(index: int, ops: int, data: L.VfuPacket | bytes, reply: bool = False) -> L.VfioUser:
    body = L.VfuDeviceFeature(argsz=8 + len(data), flags=index | ops) / data
    return L.VfioUser(bytes(L.VfioUser(command=16, flags=int(reply)) / body))


@given(U64)
def test_migration_feature_data(flags: int) -> None:
    p = _feature_msg(spec.FEATURE_MIGRATION, spec.FEATURE_GET, L.VfuFeatureMigration(migration_flags=flags), True)
    assert type(p[L.VfuDeviceFeature].payload) is L.VfuFeatureMigration
    assert int(p.migration_flags) == flags
    round_trip(L.VfuFeatureMigration(migration_flags=flags))


@given(fixed_kwargs(L.VfuFeatureMigState))
def test_mig_device_state_data(kw: dict) -> None:
    p = _feature_msg(spec.FEATURE_MIG_DEVICE_STATE, spec.FEATURE_SET, L.VfuFeatureMigState(**kw))
    assert (p.device_state, p.data_fd) == (kw["device_state"], kw["data_fd"])
    state = spec.MIG_STATES.get(kw["device_state"], kw["device_state"])
    assert p.info_text().endswith(f"feature=MIG_DEVICE_STATE flags=SET device_state={state}")
    round_trip(L.VfuFeatureMigState(**kw))


@given(st.sampled_from([spec.FEATURE_DMA_LOGGING_START, spec.FEATURE_DMA_LOGGING_STOP]), U64,
       st.lists(st.tuples(U64, U64), max_size=4))
def test_dma_logging_start_stop_ranges(index: int, page_size: int, ranges: list) -> None:
    data = L.VfuFeatureLogging(page_size=page_size, num_ranges=len(ranges),
                               ranges=[L.VfuLoggingRange(iova=i, length=n) for i, n in ranges])
    p = _feature_msg(index, spec.FEATURE_SET, data)
    log = p[L.VfuFeatureLogging]
    assert log.page_size == page_size and [(r.iova, r.length) for r in log.ranges] == ranges
    round_trip(data)


@given(U64, U64, U64, st.binary(max_size=32))
def test_dma_logging_report_with_bitmap(iova: int, length: int, page_size: int, bitmap: bytes) -> None:
    data = L.VfuFeatureLoggingReport(iova=iova, length=length, page_size=page_size, bitmap=bitmap)
    p = _feature_msg(spec.FEATURE_DMA_LOGGING_REPORT, spec.FEATURE_GET, data, reply=True)
    rep = p[L.VfuFeatureLoggingReport]
    assert (rep.iova, rep.length, rep.page_size, rep.bitmap) == (iova, length, page_size, bitmap)
    round_trip(data)


def test_probe_and_unknown_features() -> None:
    probe = _feature_msg(spec.FEATURE_MIGRATION, spec.FEATURE_PROBE | spec.FEATURE_GET, b"")
    assert isinstance(probe[L.VfuDeviceFeature].payload, NoPayload)
    other = _feature_msg(3, spec.FEATURE_SET, b"\x01\x02")  # LOW_POWER_ENTRY: not a vfio-user feature
    assert isinstance(other[L.VfuDeviceFeature].payload, Raw) and other.feature == "LOW_POWER_ENTRY"


@given(fixed_kwargs(L.VfuMigData, skip=("size",)), st.binary(max_size=64), st.binary(max_size=16))
def test_mig_data_size_bytes_then_padding(kw: dict, data: bytes, pad: bytes) -> None:
    again = round_trip(L.VfuMigData(**kw, size=len(data), data=data))
    assert again.data == data
    padded = L.VfuMigData(bytes(L.VfuMigData(**kw, size=len(data), data=data)) + pad)
    assert padded.data == data and (bytes(padded.payload) if pad else b"") == pad


def test_feature_and_migration_data_in_the_libvfio_user_capture() -> None:
    events = [ev for ev in open_capture(LVU) if isinstance(ev, MessageIn)]
    pkts = [p[L.VfioUser] for p in scapy_capture(LVU) if L.VfioUser in p]
    states, reads = [], 0
    for ev, p in zip(events, pkts):
        if p.command == spec.Command.DEVICE_FEATURE:
            argsz, flags = struct.unpack_from("<II", ev.data, 16)
            feat = p[L.VfuDeviceFeature]
            assert (feat.argsz, int(feat.flags)) == (argsz, flags)
            if flags & spec.FEATURE_MASK == spec.FEATURE_MIG_DEVICE_STATE and not p.is_reply and len(ev.data) >= 32:
                states.append((p.device_state, struct.unpack_from("<I", ev.data, 24)[0]))
            if flags & spec.FEATURE_MASK == spec.FEATURE_DMA_LOGGING_REPORT:
                assert p[L.VfuFeatureLoggingReport].page_size == struct.unpack_from("<Q", ev.data, 40)[0]
        elif p.command == spec.Command.MIG_DATA_READ and p.is_reply:
            size = struct.unpack_from("<I", ev.data, 20)[0]
            assert p[L.VfuMigData].data == ev.data[24:24 + size]
            reads += 1
    assert states and all(a == b for a, b in states)
    assert {s for s, _ in states} <= set(spec.MIG_STATES_SETTABLE)
    assert reads
