"""Capture record layers: records written by the project's VFUC codec come out of ExportedPdu / VfuCap with
the same fields, layer-built records read back through the codec, fragments stay Raw, scapy's stock
readers give the layers, and damaged records never raise."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, strategies as st
from scapy.config import conf
from scapy.packet import NoPayload, Raw
from scapy.utils import PcapNgReader, rdpcap

import vfudissect.layers as L
from vfudissect import spec
from vfudissect.capture import vfuc
from vfudissect.capture.reader import open_capture
from vfudissect.core.events import ConnClosed, ConnOpened, Cred, FdInfo, MessageIn, NoteIn, RawIn

from tests.conftest import LVU, QEMU
from tests.layers.strategies import scapy_capture

U32, U64 = st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)
text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
fd_info = st.builds(FdInfo, st.sampled_from(sorted(spec.FD_KIND_CODES)), U64, U64, U32, text)
cred = st.builds(Cred, U32, U32, U32)
direction = st.sampled_from(spec.DIRECTIONS)
message = st.builds(lambda mid, cmd, fl, body: bytes(L.VfioUser(msg_id=mid, command=cmd, flags=fl) / Raw(body)),
                    st.integers(0, 65535), st.sampled_from(sorted(spec.COMMANDS)), st.sampled_from([0, 1, 0x10, 0x21]),
                    st.binary(max_size=200))
events = st.one_of(
    st.builds(MessageIn, st.just(0.0), U32, direction, message, st.lists(fd_info, max_size=3).map(tuple),
              flags=st.sampled_from([0, spec.VF_FDS_CTRUNC, spec.VF_INJECTED])),
    st.builds(RawIn, st.just(0.0), U32, direction, st.binary(max_size=80), note=text),
    st.builds(ConnOpened, st.just(0.0), U32, text, st.none() | cred, st.none() | cred, st.none() | U32),
    st.builds(NoteIn, st.just(0.0), U32, text, st.none() | direction, proxy_errno=st.integers(0, 200)),
    st.builds(ConnClosed, st.just(0.0), U32),
)


@pytest.fixture(autouse=True)
def _strict_dissector():
    old, conf.debug_dissector = conf.debug_dissector, True
    yield
    conf.debug_dissector = old


def _check_record(rec: bytes) -> L.ExportedPdu:
    name, p2p, start = vfuc.strip_exported_pdu(rec)
    want = vfuc.decode(rec, start)
    p = L.ExportedPdu(rec)
    assert bytes(p) == rec
    assert (p.dissector_name, p.p2p_dir) == (name, p2p)
    cap = p[L.VfuCap]
    assert (cap.rec_type, cap.conn_id, int(cap.flags), cap.msg_len, cap.frag_off, cap.msg_seq) == \
        (want.rec_type, want.conn, want.flags, want.msg_len, want.frag_off, want.msg_seq)
    assert cap.dir == (spec.VFUC_DIR_NONE if want.dir is None else spec.DIR_CODES[want.dir])
    assert [(spec.FD_KINDS[fd.kind], fd.size, fd.ino, fd.status_flags, fd.path or "") for fd in cap.fds] == \
        [(f.kind, f.size, f.ino, f.status_flags, f.path) for f in want.fds]
    assert [(t.type, bytes(t)[4:4 + t.len]) for t in cap.tlvs] == list(want.tlvs)
    assert bytes(cap.payload) == want.payload
    return p


@given(events, st.integers(0, 2**32 - 1), st.sampled_from([spec.VFUC_MAX_RECORD, 200, 120]))
def test_codec_records_dissect_to_the_same_fields(ev, seq: int, max_record: int) -> None:
    try:
        recs = vfuc.encode(ev, seq, max_record=max_record)
    except vfuc.VfucError:  # too many fds for a tiny record: nothing to dissect
        return
    for rec in recs:
        p = _check_record(rec)
        cap = p[L.VfuCap]
        if isinstance(ev, MessageIn):
            if len(recs) == 1:
                assert isinstance(cap.payload, L.VfioUser) and bytes(cap.payload) == ev.data
            else:  # fragments are not decoded one by one
                assert isinstance(cap.payload, Raw) and cap.is_fragment
        elif isinstance(ev, ConnOpened):
            assert cap.socket_path() == ev.socket_path
            creds = {t.type: (t.pid, t.uid, t.gid) for t in cap.tlvs if isinstance(t, L.VfuCapTlvCred)}
            for tag, c in ((spec.Tlv.CLIENT_CRED, ev.client), (spec.Tlv.SERVER_CRED, ev.server)):
                assert creds.get(tag) == (None if c is None else (c.pid, c.uid, c.gid))
            twins = [t.twin_of for t in cap.tlvs if isinstance(t, L.VfuCapTlvTwinOf)]
            assert twins == ([] if ev.twin_of is None else [ev.twin_of])
        elif isinstance(ev, NoteIn):
            assert cap.note() == ev.text
            errs = [t.proxy_errno for t in cap.tlvs if isinstance(t, L.VfuCapTlvErrno)]
            assert errs == ([ev.proxy_errno] if ev.proxy_errno else [])
        elif isinstance(ev, RawIn):
            assert isinstance(cap.payload, Raw if ev.data else NoPayload)
        assert p.summary()


@given(U32, direction, st.lists(fd_info, max_size=3), message, st.integers(0, 2**32 - 1))
def test_layer_built_records_read_back_through_the_codec(conn: int, d: str, fds: list, msg: bytes,
                                                         seq: int) -> None:
    tlvs = [L.VfuCapTlvFdPath(fd_index=i, path=f.path.encode()) for i, f in enumerate(fds) if f.path]
    cap = L.VfuCap(conn_id=conn, dir=spec.DIR_CODES[d], msg_seq=seq, tlvs=tlvs,
                   fds=[L.VfuCapFd(kind=spec.FD_KIND_CODES[f.kind], status_flags=f.status_flags, size=f.size,
                                   ino=f.ino) for f in fds])
    rec = bytes(L.ExportedPdu.for_vfucap(d) / cap / L.VfioUser(msg))
    assert rec.startswith(vfuc.EXP_PREFIX_DIR[d])  # the same TLVs the recorder writes
    name, p2p, start = vfuc.strip_exported_pdu(rec)
    got = vfuc.decode(rec, start)
    assert (name, p2p) == (spec.EXPORTED_PDU_DISSECTOR_NAME, spec.DIR_CODES[d])
    assert (got.rec_type, got.conn, got.dir, got.msg_len, got.msg_seq, got.payload) == \
        (spec.RecType.MSG, conn, d, len(msg), seq, msg)
    assert got.fds == tuple(fds)
    _check_record(rec)


def test_stock_readers_give_the_layers() -> None:
    for path in (QEMU, LVU):
        n_msgs = sum(isinstance(ev, MessageIn) for ev in open_capture(path))
        by_rdpcap = rdpcap(str(path))
        with PcapNgReader(str(path)) as reader:
            by_reader = list(reader)
        assert len(by_rdpcap) == len(by_reader)
        assert [bytes(a) for a in by_rdpcap] == [bytes(b) for b in by_reader]
        msgs = [p for p in by_reader if L.VfioUser in p]
        assert len(msgs) == n_msgs
        for p in msgs:
            assert [type(x) for x in (p, p.payload, p.payload.payload)] == [L.ExportedPdu, L.VfuCap, L.VfioUser]
        assert L.ExportedPdu in by_rdpcap[0] and by_rdpcap[0][L.VfuCap].rec_type == spec.RecType.VERDICTS
        assert by_rdpcap[1][L.VfuCap].rec_type == spec.RecType.CONN_OPEN


def test_the_second_dma_map_shows_every_layer() -> None:
    pkts = scapy_capture(QEMU)
    text = next(t for t in (p.show(dump=True) for p in pkts) if "address   = 0xfffc0000" in t)
    for title in ("Exported PDU", "VFUC capture record", "vfio-user", "vfio-user DMA_MAP"):
        assert f"###[ {title} ]###" in text
    assert "address   = 0xfffc0000" in text


def _mutate(rng: random.Random, b: bytes) -> bytes:
    out = bytearray(b)
    kind = rng.randrange(3)
    if kind == 0:
        del out[rng.randrange(len(out) + 1):]
    elif kind == 1 and out:
        for _ in range(rng.randrange(1, 8)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    else:
        out += rng.randbytes(rng.randrange(1, 40))
    return bytes(out)


@given(st.randoms(use_true_random=False), st.sampled_from([QEMU, LVU]))
def test_damaged_real_records_never_raise(rng: random.Random, path) -> None:
    pkts = scapy_capture(path)
    rec = bytes(pkts[rng.randrange(len(pkts))])
    for _ in range(4):
        rec = _mutate(rng, rec)
        for cls in (L.ExportedPdu, L.VfuCap):
            p = cls(rec)
            p.summary()
            if rec:
                assert bytes(p) == rec
    p.show(dump=True)


@given(st.binary(max_size=150))
def test_random_bytes_to_the_capture_layers(blob: bytes) -> None:
    for cls in (L.ExportedPdu, L.VfuCap, L.VfuCapFd, L.VfuCapTlv):
        p = cls(blob)
        p.show(dump=True)
        p.summary()
        if blob:
            assert bytes(p) == blob
