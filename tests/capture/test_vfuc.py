"""VFUC v1 codec: every event kind round-trips, fragments split and carry fds on the first one."""

from __future__ import annotations

import dataclasses

from hypothesis import given, strategies as st

from vfudissect import spec
from vfudissect.capture import vfuc
from vfudissect.core.events import ConnClosed, ConnOpened, Cred, FdInfo, MessageIn, NoteIn, RawIn

fd_st = st.builds(FdInfo, st.sampled_from(sorted(spec.FD_KIND_CODES)), st.integers(0, 2**64 - 1),
                  st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), st.text(max_size=40))


def decode_all(recs: list[bytes]) -> list[vfuc.VfucRecord]:
    out = []
    for r in recs:
        assert len(r) <= spec.VFUC_MAX_RECORD
        name, _p2p, off = vfuc.strip_exported_pdu(r)
        assert name == "vfucap"
        out.append(vfuc.decode(r, off))
    return out


@given(data=st.binary(max_size=300), fds=st.lists(fd_st, max_size=4), conn=st.integers(1, 2**32 - 1),
       d=st.sampled_from(spec.DIRECTIONS), flags=st.integers(0, 0x3D))
def test_message_round_trip(data, fds, conn, d, flags):
    ev = MessageIn(1.5, conn, d, data, tuple(fds), 0, -1, flags & ~spec.VF_MORE_FRAGMENTS)
    (rec,) = decode_all(vfuc.encode(ev, 7))
    assert (rec.rec_type, rec.conn, rec.dir, rec.payload, rec.fds, rec.msg_seq) == (0, conn, d, data, tuple(fds), 7)
    assert rec.flags == ev.flags and rec.msg_len == len(data)


@given(size=st.integers(65000, 300000), nfds=st.integers(0, 3))
def test_big_messages_fragment_with_fds_on_the_first(size, nfds):
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    fds = tuple(FdInfo("memfd", 4096, i) for i in range(nfds))
    recs = decode_all(vfuc.encode(MessageIn(1.0, 1, "c2s", data, fds), 3))
    assert b"".join(r.payload for r in recs) == data
    assert [r.frag_off for r in recs] == sorted(r.frag_off for r in recs)
    assert all(r.flags & spec.VF_MORE_FRAGMENTS for r in recs[:-1]) and not recs[-1].flags & spec.VF_MORE_FRAGMENTS
    assert recs[0].fds == fds and all(not r.fds for r in recs[1:])
    assert all(r.msg_len == size and r.msg_seq == 3 for r in recs)


def test_connection_events_round_trip():
    o = ConnOpened(2.0, 4, "/run/dev.sock", Cred(10, 0, 0), Cred(20, 1000, 1000), twin_of=3)
    (rec,) = decode_all(vfuc.encode(o))
    assert rec.rec_type == spec.RecType.CONN_OPEN and rec.tlv_text(spec.Tlv.SOCKET_PATH) == "/run/dev.sock"
    assert vfuc.cred_from(rec.tlv(spec.Tlv.SERVER_CRED)) == Cred(20, 1000, 1000)
    (rec,) = decode_all(vfuc.encode(ConnClosed(3.0, 4, "s2c")))
    assert (rec.rec_type, rec.dir) == (spec.RecType.CONN_CLOSE, "s2c")
    (rec,) = decode_all(vfuc.encode(NoteIn(3.0, 4, "stalled", "c2s", proxy_errno=110)))
    assert rec.tlv_text(spec.Tlv.NOTE) == "stalled"
    (rec,) = decode_all(vfuc.encode(RawIn(3.0, 4, "c2s", b"\1\2", (), 0, "size 2")))
    assert rec.rec_type == spec.RecType.RAW and rec.payload == b"\1\2"


def test_newer_versions_unknown_tlvs_and_longer_fd_entries_are_skipped_by_length():
    (r,) = vfuc.encode(MessageIn(1.0, 1, "c2s", b"P" * 20, (FdInfo("memfd", 4096, 7),)))
    _n, _p, off = vfuc.strip_exported_pdu(r)
    fixed = bytearray(r[off:off + 32])
    fd_entry = r[off + 32:off + 56] + b"\xee" * 8       # a future field appended to each fd entry
    unknown = spec.VFUC_TLV.pack(99, 3) + b"abc\0"       # a TLV this reader does not know
    fixed[4] = 2                                        # a newer compatible version
    fixed[6:8] = (32 + len(fd_entry) + len(unknown)).to_bytes(2, "little")
    fixed[28:30] = (32).to_bytes(2, "little")           # fd_ent_len
    rec = vfuc.decode(r[:off] + bytes(fixed) + fd_entry + unknown + b"P" * 20, off)
    assert rec.payload == b"P" * 20 and rec.version == 2
    assert rec.fds == (FdInfo("memfd", 4096, 7),) and rec.tlv(99) == b"abc"


@given(st.binary(max_size=200))
def test_decode_of_garbage_raises_only_vfuc_error(blob):
    try:
        vfuc.decode(blob)
    except vfuc.VfucError:
        pass
    try:
        vfuc.strip_exported_pdu(blob)
    except vfuc.VfucError:
        pass


def test_truncate_message_keeps_fixed_fields():
    from vfudissect.testing import region_write
    m = region_write(1, 1, 0, b"D" * 1000)
    cut = vfuc.truncate_message(m, 8)
    assert cut == m[:16 + 16 + 8]
    assert dataclasses.replace(MessageIn(1.0, 1, "c2s", cut), msg_len=len(m)).wire_len == len(m)


def test_truncate_message_keeps_control_payloads_whole():
    from vfudissect.testing import region_info_reply, version
    v = version(0)
    assert vfuc.truncate_message(v, 0) == v  # VERSION's JSON is not bulk data
    ri = region_info_reply(1, 1, 0x1000, caps=b"\0" * 64)
    assert vfuc.truncate_message(ri, 0) == ri
