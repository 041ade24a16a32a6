"""Playbooks for the analysis engine: a short hand-made exchange in, exactly the expected findings out."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vfudissect import spec
from vfudissect.core.events import ConnOpened, FdInfo
from vfudissect.testing import (EVENTFD, irq_info, irq_info_reply, MEMFD, Playbook, device_feature, device_reset, dma_map, dma_read,
                                dma_read_reply, dma_unmap, dma_write, get_info, get_info_reply, layout, message,
                                mig_data_read, region_info, region_info_reply, region_read, region_read_reply,
                                region_write, region_write_reply, reply, set_irqs, version, version_reply)
from vfudissect.core import findings

C2S, S2C = spec.C2S, spec.S2C


def ready() -> Playbook:
    """A connection after a clean handshake and device discovery (frames 1-13), no findings but notes."""
    pb = Playbook()
    pb.handshake()
    assert pb.codes("warning") == []
    return pb


# ---------------------------------------------------------------- a clean session
def test_clean_session_has_only_the_legacy_key_notes():
    pb = ready()
    m = pb.c2s(dma_map(10, 0x0, 0x10000), [MEMFD])
    pb.s2c(reply(dma_map(10, 0, 0x10000)))
    r = pb.c2s(region_read(11, 7, 0, 4))
    rr = pb.s2c(region_read_reply(11, 7, 0, 4))
    pb.c2s(region_write(12, 0, 8, b"\1\2\3\4", no_reply=True))
    pb.c2s(dma_unmap(13, 0x0, 0x10000))
    pb.s2c(reply(dma_unmap(13, 0, 0x10000), layout("dma_unmap", argsz=24, address=0, size=0x10000)))
    pb.finish()
    assert pb.codes() == []
    assert pb.record(rr).request_frame == r
    assert pb.record(rr).rtt == pytest.approx(0.001)
    assert pb.record(m).fds == (MEMFD,)


# ---------------------------------------------------------------- pairing
def test_unmatched_reply():
    pb = ready()
    f = pb.s2c(region_read_reply(77, 7))
    assert pb.codes() == [("UNMATCHED_REPLY", (f,))]


def test_reply_command_mismatch():
    pb = ready()
    req = pb.c2s(region_read(20, 7))
    rep = pb.s2c(reply(region_read(20, 7), layout("region_access", region=7, count=4),
                       command=spec.Command.REGION_WRITE))
    assert pb.codes() == [("REPLY_COMMAND_MISMATCH", (rep, req))]


def test_duplicate_pending_id_is_a_note_and_pairs_oldest_first():
    pb = ready()
    a = pb.c2s(region_read(30, 7, 0))
    b = pb.c2s(region_read(30, 7, 4))
    ra = pb.s2c(region_read_reply(30, 7, 0))
    rb = pb.s2c(region_read_reply(30, 7, 4))
    assert pb.codes() == [("DUPLICATE_PENDING_ID", (b, a))]
    assert pb.record(ra).request_frame == a and pb.record(rb).request_frame == b
    assert findings.CATALOGUE["DUPLICATE_PENDING_ID"].severity == "note"


def test_reply_to_no_reply():
    pb = ready()
    w = pb.c2s(region_write(40, 0, 0, b"\0" * 4, no_reply=True))
    rep = pb.s2c(region_write_reply(40, 0))
    assert pb.codes() == [("REPLY_TO_NO_REPLY", (rep, w))]


def test_reply_timeout_fires_on_a_tick_while_still_waiting():
    pb = ready()
    req = pb.c2s(device_reset(50))
    pb.wait(4.9)
    assert pb.codes() == []
    pb.wait(0.2)
    assert pb.codes() == [("REPLY_TIMEOUT", (req,))]
    late = pb.s2c(reply(device_reset(50)))
    pb.finish()
    assert pb.codes() == [("REPLY_TIMEOUT", (req,))]  # the late reply still pairs; no NO_REPLY
    assert pb.record(late).request_frame == req


def test_reply_timeout_threshold_is_configurable():
    pb = Playbook(timeout=0.5)
    pb.handshake(device=False)
    req = pb.c2s(get_info(1))
    pb.s2c(reply(get_info(1), layout("device_info", argsz=16, flags=3, num_regions=9, num_irqs=5)), dt=0.6)
    assert pb.codes() == [("REPLY_TIMEOUT", (req,))]


def test_no_reply_when_the_capture_ends_first():
    pb = ready()
    req = pb.c2s(region_read(60, 7))
    pb.c2s(region_write(61, 0, no_reply=True))
    pb.finish()
    assert pb.codes() == [("NO_REPLY", (req,))]


def test_no_reply_when_the_connection_closes_first():
    pb = ready()
    req = pb.c2s(region_read(60, 7))
    pb.close(C2S)
    pb.close(S2C)
    pb.finish()
    assert pb.codes() == [("NO_REPLY", (req,))]


def test_out_of_order_reply_is_a_note():
    pb = ready()
    a = pb.c2s(region_read(70, 7, 0))
    b = pb.c2s(region_read(71, 7, 4))
    rb = pb.s2c(region_read_reply(71, 7, 4))
    pb.s2c(region_read_reply(70, 7, 0))
    assert pb.codes() == [("OUT_OF_ORDER_REPLY", (rb, b, a))]


def test_server_dma_ids_are_their_own_space():
    pb = ready()
    pb.c2s(dma_map(80, 0x100000, 0x10000), [MEMFD])
    pb.s2c(reply(dma_map(80, 0, 0)))
    creq = pb.c2s(region_read(5, 7))
    sreq = pb.s2c(dma_read(5, 0x100000, 16))          # same id 5, other direction
    srep = pb.c2s(dma_read_reply(5, 0x100000, 16))
    crep = pb.s2c(region_read_reply(5, 7))
    assert pb.record(srep).request_frame == sreq
    assert pb.record(crep).request_frame == creq
    assert pb.codes() == []


def test_wrong_direction_and_unknown_and_removed_commands():
    pb = ready()
    a = pb.c2s(dma_read(90, 0, 4))
    b = pb.s2c(get_info(91))
    c = pb.c2s(message(92, 33, b"\0" * 8))
    d = pb.c2s(message(93, 14, struct.pack("<II", 8, 1)))
    codes = pb.codes("warning")
    assert ("WRONG_DIRECTION", (a,)) in codes and ("WRONG_DIRECTION", (b,)) in codes
    assert ("UNKNOWN_COMMAND", (c,)) in codes
    assert ("REMOVED_COMMAND", (d,)) in codes


def test_dma_collision_without_twin_socket():
    pb = ready()
    pb.c2s(dma_map(1, 0x200000, 0x10000), [MEMFD])
    pb.s2c(reply(dma_map(1, 0, 0)))
    s = pb.s2c(dma_read(9, 0x200000, 8))
    c = pb.c2s(region_read(12, 7))
    assert pb.codes() == [("DMA_COLLISION", (c, s))]


# ---------------------------------------------------------------- negotiation
def test_version_not_first():
    pb = Playbook()
    f = pb.c2s(get_info(1))
    assert pb.codes() == [("VERSION_NOT_FIRST", (f,))]


def test_traffic_before_version_reply():
    pb = Playbook()
    pb.c2s(version(0))
    f = pb.c2s(get_info(1))
    assert pb.codes() == [("TRAFFIC_BEFORE_VERSION_REPLY", (f,))]


def test_version_repeated():
    pb = ready()
    f = pb.c2s(version(40))
    assert ("VERSION_REPEATED", (f,)) in pb.codes()


def test_version_major_mismatch_and_refused():
    pb = Playbook()
    req = pb.c2s(version(0))
    rep = pb.s2c(version_reply(0, major=1))
    assert pb.codes() == [("VERSION_MAJOR_MISMATCH", (rep, req))]


def test_truncated_version_reply_is_reported_not_raised():
    pb = Playbook()
    pb.c2s(version(0))
    full = version_reply(0)
    rep = pb.s2c(full[:18], msg_len=len(full), flags=spec.VF_TRUNCATED)  # recorded bytes stop inside major
    assert pb.codes() == [("CAPTURE_TRUNCATED", (rep,))]


def test_version_minor_too_high():
    pb = Playbook()
    req = pb.c2s(version(0, minor=0))
    rep = pb.s2c(version_reply(0, minor=2))
    assert pb.codes() == [("VERSION_MINOR_TOO_HIGH", (rep, req))]


def test_version_refused_by_an_error_reply():
    pb = Playbook()
    pb.c2s(version(0, major=3))
    rep = pb.s2c(reply(version(0), error=22))
    assert pb.codes() == [("ERROR_REPLY", (rep,)), ("VERSION_REFUSED", (rep,))]


@pytest.mark.parametrize("raw, code", [
    (b'{"capabilities": {}\0', "CAPS_MALFORMED"),
    (b'{"capabilities": {}}', "CAPS_NOT_NUL_TERMINATED"),
    (b'23\0', "CAPS_NOT_OBJECT"),
    (b'{"capabilities": [1]}\0', "CAPS_NOT_OBJECT"),
    (b'{"capabilities": {"max_msg_fds": 8, "frobnicate": 1}}\0', "CAPS_UNKNOWN_KEY"),
    (b'{"capabilities": {"max_msg_fds": "8"}}\0', "CAPS_BAD_VALUE"),
    (b'{"capabilities": {"max_msg_fds": 2000}}\0', "CAPS_BAD_VALUE"),
    (b'{"capabilities": {"pgsizes": 4097}}\0', "CAPS_BAD_VALUE"),
    (b'{"capabilities": {"max_data_xfer_size": 1.0}}\0', "CAPS_BAD_VALUE"),
    (b'{"capabilities": {"write_multiple": 1}}\0', "CAPS_BAD_VALUE"),
    (b'{"capabilities": {}}\0\0', "CAPS_EMBEDDED_NUL"),
    (b'\xff\xfe{}\0', "CAPS_MALFORMED"),
])
def test_bad_capabilities_in_the_request(raw, code):
    pb = Playbook()
    f = pb.c2s(version(0, raw=raw))
    assert pb.codes() == [(code, (f,))]


def test_caps_reply_not_subset_and_legacy_key_are_notes():
    pb = Playbook()
    pb.c2s(version(0, caps={"capabilities": {"max_msg_fds": 4}}))
    rep = pb.s2c(version_reply(0, caps={"capabilities": {"max_msg_fds": 8, "migration": {"pgsize": 4096}}}))
    assert pb.codes(ignore=()) == [("CAPS_LEGACY_KEY", (rep,)), ("CAPS_REPLY_NOT_SUBSET", (rep, 2))]
    assert pb.codes("warning") == []


def test_twin_socket_negotiation():
    pb = Playbook()
    pb.c2s(version(0, caps={"capabilities": {"twin_socket": {"supported": True}}}))
    good = {"capabilities": {"max_msg_fds": 8, "twin_socket": {"supported": True, "fd_index": 0}}}
    pb.s2c(version_reply(0, caps=good), [FdInfo("socket", 0, 5)])
    assert pb.codes("warning") == []
    pb2 = Playbook()
    pb2.c2s(version(0, caps={"capabilities": {"twin_socket": {"supported": True}}}))
    rep = pb2.s2c(version_reply(0, caps=good))  # no fd at fd_index 0
    assert pb2.codes("warning") == [("TWIN_SOCKET_BAD", (rep,))]
    pb3 = Playbook()
    pb3.c2s(version(0, caps={"capabilities": {"twin_socket": {"supported": True}}}))
    rep = pb3.s2c(version_reply(0, caps=good), [EVENTFD])  # fd_index 0 is an eventfd
    assert pb3.codes("warning") == [("TWIN_SOCKET_BAD", (rep,))]
    assert "fd_index 0 is not a socket (kind eventfd)" in next(f.text for f in pb3.findings() if f.severity != "note")


def test_wrong_channel_with_a_twin_socket():
    pb = Playbook()
    pb.c2s(version(0, caps={"capabilities": {"twin_socket": {"supported": True}}}))
    pb.s2c(version_reply(0, caps={"capabilities": {"twin_socket": {"supported": True, "fd_index": 0}}}),
           [FdInfo("socket", 0, 5)])
    pb.feed(ConnOpened(pb.ts, 2, "/run/dev.sock", twin_of=1))
    pb.c2s(dma_map(1, 0x100000, 0x10000), [MEMFD])
    pb.s2c(reply(dma_map(1, 0x100000, 0x10000)))
    ok = pb.s2c(dma_read(7, 0x100000, 8), conn=2)  # server commands on the twin socket: right
    pb.c2s(dma_read_reply(7, 0x100000, 8), conn=2)
    a = pb.s2c(dma_read(8, 0x100000, 8))  # on the main socket: wrong
    pb.c2s(dma_read_reply(8, 0x100000, 8))
    b = pb.c2s(get_info(2), conn=2)  # a client command on the twin socket
    c = pb.s2c(get_info_reply(2), conn=2)  # and its reply there
    assert pb.codes("warning") == [("WRONG_CHANNEL", (a,)), ("WRONG_CHANNEL", (b,)), ("WRONG_CHANNEL", (c,))]
    assert ok < a
    assert "server DMA_READ on the main socket" in pb.findings()[-3].text


def test_fds_on_version_reply_without_twin_socket():
    pb = Playbook()
    pb.c2s(version(0))
    rep = pb.s2c(version_reply(0), [FdInfo("socket", 0, 5)])
    assert pb.codes("warning") == [("FDS_UNEXPECTED", (rep,))]


# ---------------------------------------------------------------- header and framing
def test_bad_size_and_incomplete():
    pb = ready()
    short = pb.c2s(spec.HEADER.pack(1, 9, 8, 0, 0) + b"\0" * 16)
    cut = pb.c2s(spec.HEADER.pack(2, 9, 64, 0, 0) + b"\0" * 16)
    tiny = pb.c2s(b"\1\2\3")
    codes = pb.codes("error")
    assert ("BAD_SIZE", (short,)) in codes
    assert ("MESSAGE_INCOMPLETE", (cut,)) in codes
    assert ("BAD_SIZE", (tiny,)) in codes


def test_payload_too_short():
    pb = ready()
    f = pb.c2s(message(3, spec.Command.DMA_MAP, b"\0" * 8))
    assert ("PAYLOAD_TOO_SHORT", (f,)) in pb.codes()


def test_header_flag_checks():
    pb = ready()
    a = pb.c2s(message(1, 4, layout("device_info", argsz=16), flags=0x3))
    b = pb.c2s(message(2, 4, layout("device_info", argsz=16), flags=0x100))
    c = pb.c2s(message(3, 4, layout("device_info", argsz=16), flags=0x20, error=5))
    codes = pb.codes()
    assert ("BAD_TYPE", (a,)) in codes
    assert ("RESERVED_FLAGS", (b,)) in codes
    assert ("MISPLACED_FLAG", (c,)) in codes and ("ERROR_IN_COMMAND", (c,)) in codes


def test_message_too_large_warns_above_libvfio_users_limit():
    pb = ready()
    data = b"\0" * (spec.LVU_SERVER_MAX_MSG_SIZE)
    f = pb.c2s(region_write(9, 1, 0, data))
    codes = pb.codes()
    assert ("MESSAGE_TOO_LARGE", (f,)) in codes and ("DATA_BEYOND_MAX_XFER", (f,)) in codes


def test_error_replies():
    pb = ready()
    a = pb.c2s(region_read(1, 7))
    ra = pb.s2c(reply(region_read(1, 7), error=22))
    b = pb.c2s(region_read(2, 7))
    rb = pb.s2c(message(2, 9, layout("region_access", region=7, count=4), reply=True, error=14))
    c = pb.c2s(region_read(3, 7))
    rc = pb.s2c(message(3, 9, reply=True, error_flag=True))
    d = pb.c2s(region_read(4, 7))
    rd = pb.s2c(message(4, 9, reply=True, error=9999))
    assert pb.codes() == [("ERROR_REPLY", (ra,)), ("ERROR_REPLY", (rb,)), ("ERROR_REPLY_WITH_PAYLOAD", (rb,)),
                          ("ERROR_REPLY_NO_ERRNO", (rc,)), ("ERROR_REPLY", (rd,)), ("UNKNOWN_ERRNO", (rd,))]
    assert "EINVAL" in next(f for f in pb.findings() if f.code == "ERROR_REPLY").text
    assert [pb.record(r).request_frame for r in (ra, rb, rc, rd)] == [a, b, c, d]


def test_capture_flags_become_findings():
    pb = ready()
    a = pb.c2s(get_info(1), flags=spec.VF_FDS_CTRUNC)
    b = pb.c2s(get_info(2), flags=spec.VF_FDS_NOT_AT_MSG_START)
    c = pb.c2s(region_write(3, 1, 0, b"\0" * 4)[:20], msg_len=36, flags=spec.VF_TRUNCATED)
    assert pb.codes() == [("FDS_TRUNCATED", (a,)), ("FDS_NOT_AT_MSG_START", (b,)), ("CAPTURE_TRUNCATED", (c,))]


def test_framing_lost_once_per_direction():
    pb = ready()
    a = pb.raw(C2S, b"garbage", "size 3 below 16")
    pb.raw(C2S, b"more garbage")
    assert pb.codes() == [("FRAMING_LOST", (a,))]


def test_an_unframeable_header_is_framing_lost_on_its_own_frame_and_waits_for_no_reply():
    pb = ready()
    a = pb.c2s(struct.pack("<HHIII", 7, 9, 3, 0, 0), flags=spec.VF_FRAMING_ERROR)
    b = pb.s2c(struct.pack("<HHIII", 8, 9, 1 << 30, 0, 0), flags=spec.VF_FRAMING_ERROR)
    pb.raw(C2S, b"the rest, relayed raw")
    pb.raw(S2C, b"more")
    pb.close()
    assert pb.codes() == [("BAD_SIZE", (a,)), ("FRAMING_LOST", (a,)),
                          ("MESSAGE_TOO_LARGE", (b,)), ("FRAMING_LOST", (b,))]
    assert "header size 3 is below 16" in next(f for f in pb.findings() if f.code == "FRAMING_LOST").text


def test_a_server_may_answer_an_unframeable_header_as_libvfio_user_does():
    pb = ready()
    a = pb.c2s(struct.pack("<HHIII", 0xBAD1, 8, 15, 0, 0), flags=spec.VF_FRAMING_ERROR)
    r = pb.s2c(message(0xBAD1, 8, reply=True, error=22))
    pb.close()
    assert pb.codes() == [("BAD_SIZE", (a,)), ("FRAMING_LOST", (a,)), ("ERROR_REPLY", (r,))]
    assert pb.record(r).request_frame == a


# ---------------------------------------------------------------- fds
def test_fds_unexpected_and_missing():
    pb = ready()
    a = pb.c2s(get_info(1), [EVENTFD])
    b = pb.c2s(set_irqs(2, 1, 0, 2, flags=0x24), [EVENTFD])
    c = pb.c2s(set_irqs(3, 1, 0, 1, flags=0x21), [EVENTFD])
    d = pb.c2s(dma_map(4, 0x300000, 0x1000, flags=0x7))
    e = pb.c2s(dma_map(5, 0x400000, 0x1000), [MEMFD, MEMFD])
    assert pb.codes() == [("FDS_UNEXPECTED", (a,)), ("FDS_MISSING", (b,)), ("FDS_UNEXPECTED", (c,)),
                          ("FDS_MISSING", (d,)), ("FDS_UNEXPECTED", (e,))]


def test_region_info_mmap_without_fd():
    pb = ready()
    pb.c2s(region_info(9, 1))
    rep = pb.s2c(region_info_reply(9, 1, 0x10000, flags=0x7))
    assert pb.codes() == [("FDS_MISSING", (rep,))]


# ---------------------------------------------------------------- data transfer
def test_data_beyond_max_xfer_uses_the_receivers_limit():
    pb = Playbook()
    pb.handshake(reply_caps={"capabilities": {"max_msg_fds": 8, "max_data_xfer_size": 4096}})
    f = pb.c2s(region_read(20, 1, 0, 8192))
    assert pb.codes() == [("DATA_BEYOND_MAX_XFER", (f,))]


def test_region_access_out_of_range_and_bad_index():
    pb = ready()
    a = pb.c2s(region_read(21, 7, 0xFE, 4))
    b = pb.c2s(region_read(22, 12, 0, 4))
    assert pb.codes() == [("REGION_ACCESS_OUT_OF_RANGE", (a,)), ("REGION_INDEX_INVALID", (b,))]


def test_region_access_not_permitted_and_zero_count():
    pb = ready()
    pb.c2s(region_info(9, 2))
    pb.s2c(region_info_reply(9, 2, 0x100, flags=0x1))
    a = pb.c2s(region_write(23, 2, 0, b"\0\0"))
    b = pb.c2s(region_read(24, 7, 0, 0))
    assert pb.codes() == [("REGION_ACCESS_NOT_PERMITTED", (a,)), ("ZERO_COUNT", (b,))]


def test_read_reply_checks():
    pb = ready()
    a = pb.c2s(region_read(30, 7, 0, 4))
    ra = pb.s2c(region_read_reply(30, 7, 0, 8))
    b = pb.c2s(region_read(31, 7, 0, 4))
    rb = pb.s2c(region_read_reply(31, 7, 4, 4))
    c = pb.c2s(region_read(32, 7, 0, 4))
    rc = pb.s2c(region_read_reply(32, 7, 0, 4, data=b"\0\0"))
    w = pb.c2s(region_write(33, 0, 0, b"\0" * 4, count=8))
    assert pb.codes() == [("REPLY_COUNT_TOO_BIG", (ra, a)), ("REPLY_ECHO_MISMATCH", (rb, b)),
                          ("DATA_LENGTH_MISMATCH", (rc,)), ("DATA_LENGTH_MISMATCH", (w,))]
    assert pb.record(rc).request_frame == c


def test_dma_access_checks():
    pb = ready()
    m = pb.c2s(dma_map(1, 0x100000, 0x2000, flags=1), [MEMFD])
    pb.s2c(reply(dma_map(1, 0, 0)))
    a = pb.s2c(dma_read(7, 0x900000, 16))
    pb.c2s(dma_read_reply(7, 0x900000, 16))
    b = pb.s2c(dma_write(8, 0x100000, b"x" * 8))
    rb = pb.c2s(reply(dma_write(8, 0x100000, b"")))  # QEMU: header-only reply
    assert pb.codes() == [("DMA_ACCESS_UNMAPPED", (a,)), ("DMA_WRITE_READ_ONLY", (b, m)),
                          ("DMA_LAYOUT_VARIANT", (rb,))]


def test_qemu_dma_read_reply_layout_is_recognised():
    pb = ready()
    pb.c2s(dma_map(1, 0x100000, 0x2000), [MEMFD])
    pb.s2c(reply(dma_map(1, 0, 0)))
    pb.s2c(dma_read(7, 0x100000, 8))
    # QEMU's VFIOUserDMARW: u32 count at +8, data from +12, 4 trailing zero bytes
    rep = pb.c2s(message(7, 11, struct.pack("<QI", 0x100000, 8) + b"ABCDEFGH" + b"\0" * 4, reply=True))
    assert pb.codes() == [("DMA_LAYOUT_VARIANT", (rep,))]


# ---------------------------------------------------------------- DMA map table
def test_dma_map_overlap_and_exact_duplicate():
    pb = ready()
    a = pb.c2s(dma_map(1, 0x10000, 0x10000), [MEMFD])
    pb.c2s(dma_map(2, 0x10000, 0x10000), [MEMFD])  # exact duplicate: libvfio-user accepts it
    c = pb.c2s(dma_map(3, 0x18000, 0x10000), [MEMFD])
    assert pb.codes() == [("DMA_MAP_OVERLAP", (c, a))]


def test_failed_dma_map_leaves_no_mapping():
    pb = ready()
    pb.c2s(dma_map(1, 0x10000, 0x10000), [MEMFD])
    pb.s2c(reply(dma_map(1, 0, 0), error=22))
    pb.c2s(dma_map(2, 0x10000, 0x1000), [MEMFD])
    assert [c for c, _ in pb.codes()] == ["ERROR_REPLY"]


def test_dma_unmap_unknown_and_unmap_all():
    pb = ready()
    pb.c2s(dma_map(1, 0x10000, 0x10000), [MEMFD])
    a = pb.c2s(dma_unmap(2, 0x10000, 0x8000))
    b = pb.c2s(dma_unmap(3, 0, 0, flags=2))
    c = pb.c2s(dma_unmap(4, 0x10000, 0x10000))
    assert pb.codes() == [("DMA_UNMAP_UNKNOWN", (a,)), ("DMA_UNMAP_FLAGS", (b,)), ("DMA_UNMAP_UNKNOWN", (c,))]


def test_dma_map_argsz_flags_degenerate_misaligned():
    pb = ready()
    a = pb.c2s(dma_map(1, 0x10000, 0x1000, argsz=40), [MEMFD])
    b = pb.c2s(dma_map(2, 0x20000, 0x1000, flags=0x13), [MEMFD])
    c = pb.c2s(dma_map(3, 0x30000, 0), [MEMFD])
    d = pb.c2s(dma_map(4, 0x40000, 0x1000, offset=0x1000))
    e = pb.c2s(dma_map(5, 0x50001, 0x1000), [MEMFD])
    assert pb.codes() == [("DMA_MAP_BAD_ARGSZ", (a,)), ("DMA_MAP_FLAGS", (b,)), ("DMA_MAP_DEGENERATE", (c,)),
                          ("DMA_MAP_DEGENERATE", (d,)), ("DMA_MAP_MISALIGNED", (e,))]


def test_dma_maps_exceeded():
    pb = Playbook()
    pb.handshake(reply_caps={"capabilities": {"max_msg_fds": 8, "max_dma_maps": 2}}, device=False)
    pb.c2s(dma_map(1, 0x1000, 0x1000), [MEMFD])
    pb.c2s(dma_map(2, 0x2000, 0x1000), [MEMFD])
    f = pb.c2s(dma_map(3, 0x3000, 0x1000), [MEMFD])
    assert pb.codes() == [("DMA_MAPS_EXCEEDED", (f,))]


# ---------------------------------------------------------------- interrupts and queries
def test_set_irqs_checks():
    pb = ready()
    a = pb.c2s(set_irqs(1, 1, 0, 1, flags=0x25 | 0x10))
    b = pb.c2s(set_irqs(2, 1, 2, 4), [EVENTFD] * 4)
    c = pb.c2s(set_irqs(3, 9, 0, 1, flags=0x21))
    d = pb.c2s(set_irqs(4, 1, 0, 2, flags=0x22, data=b"\1"))
    e = pb.c2s(set_irqs(5, 1, 1, 0, flags=0x21))
    assert pb.codes() == [("SET_IRQS_BAD_FLAGS", (a,)), ("IRQ_OUT_OF_RANGE", (b,)), ("IRQ_OUT_OF_RANGE", (c,)),
                          ("DATA_LENGTH_MISMATCH", (d,)), ("IRQ_OUT_OF_RANGE", (e,))]


def test_queries_argsz_and_truncation():
    pb = ready()
    a = pb.c2s(message(1, 4, layout("device_info", argsz=8)))
    pb.c2s(region_info(2, 1, argsz=32))
    rep = pb.s2c(region_info_reply(2, 1, 0x3000, flags=0x7, argsz=80))
    # `a` stays unanswered, so the reply to the younger request is out of order (a note)
    assert pb.codes() == [("ARGSZ_TOO_SMALL", (a,)), ("OUT_OF_ORDER_REPLY", (rep, a + 1, a)),
                          ("REPLY_TRUNCATED", (rep, a + 1))]


def test_an_unmap_reply_echoes_the_entry():
    pb = ready()
    pb.c2s(dma_map(1, 0x100000, 0x10000), [MEMFD])
    pb.s2c(reply(dma_map(1, 0x100000, 0x10000)))
    req = pb.c2s(dma_unmap(2, 0x100000, 0x10000))
    rep = pb.s2c(reply(dma_unmap(2, 0x100000, 0x10000), layout("dma_unmap", argsz=24, address=0x200000,
                                                                 size=0x10000)))
    assert pb.codes("warning") == [("REPLY_ECHO_MISMATCH", (rep, req))]
    assert pb.findings()[-1].text == "DMA_UNMAP reply 0x200000+0x10000, request 0x100000+0x10000"


def test_set_irqs_argsz_is_the_payload_length():
    pb = ready()
    a = pb.c2s(message(1, 8, layout("irq_set", argsz=3, flags=0x21, index=1, start=0, count=1)))
    b = pb.c2s(message(2, 8, layout("irq_set", argsz=20, flags=0x22, index=1, start=0, count=1) + b"\1"))
    pb.c2s(set_irqs(3, 1, 0, 1, flags=0x22, data=b"\1"))  # argsz 21: right
    assert pb.codes("warning") == [("SET_IRQS_BAD_ARGSZ", (a,)), ("SET_IRQS_BAD_ARGSZ", (b,))]
    assert [f.text for f in pb.findings() if f.code == "SET_IRQS_BAD_ARGSZ"] == [
        "argsz 3 but the payload is 20 bytes (below the 20-byte fixed part)", "argsz 20 but the payload is 21 bytes"]


def test_masking_an_interrupt_that_cannot_be_masked():
    pb = ready()  # MSI: IRQ_INFO flags EVENTFD only
    a = pb.c2s(set_irqs(1, 1, 0, 1, flags=spec.IRQ_SET_DATA_NONE | spec.IRQ_SET_ACTION_MASK_BIT))
    pb.c2s(irq_info(2, 0))
    pb.s2c(irq_info_reply(2, 0, 1, flags=0x7))  # INTx: EVENTFD | MASKABLE | AUTOMASKED
    pb.c2s(set_irqs(3, 0, 0, 1, flags=spec.IRQ_SET_DATA_NONE | spec.IRQ_SET_ACTION_UNMASK))  # fine
    b = pb.c2s(set_irqs(4, 3, 0, 1, flags=spec.IRQ_SET_DATA_NONE | spec.IRQ_SET_ACTION_UNMASK))  # ERR
    assert pb.codes("warning") == [("IRQ_NOT_MASKABLE", (a,)), ("IRQ_NOT_MASKABLE", (b,))]
    assert [f.text for f in pb.findings() if f.code == "IRQ_NOT_MASKABLE"] == [
        "ACTION_MASK on MSI, whose IRQ_INFO flags 0x1 lack MASKABLE",
        "ACTION_UNMASK on ERR: ERR and REQ interrupts cannot be masked"]


def test_query_inputs_must_be_zero():
    pb = ready()
    a = pb.c2s(message(1, 4, layout("device_info", argsz=16, num_regions=9)))
    pb.s2c(get_info_reply(1))
    b = pb.c2s(message(2, 5, layout("region_info", argsz=32, index=7, size=0x100, offset=1 << 40)))
    pb.s2c(region_info_reply(2, 7, 0x100))
    pb.c2s(irq_info(3, 1))  # index is an input: fine
    pb.s2c(irq_info_reply(3, 1, 4))
    assert pb.codes() == [("INPUT_NOT_ZERO", (a,)), ("INPUT_NOT_ZERO", (b,))]
    assert [f.text for f in pb.findings() if f.code == "INPUT_NOT_ZERO"][1] == \
        "size=0x100, offset=0x10000000000 in the request (must be zero)"


@pytest.mark.parametrize("flags, regions, irqs, why", [
    (0x1, 9, 5, "no PCI flag"), (0x3, 8, 5, "8 regions, below 9"), (0x3, 101, 5, "101 regions, above QEMU's 100"),
    (0x3, 9, 51, "51 IRQ types, above QEMU's 50")])
def test_device_info_that_qemu_or_the_spec_would_not_expect(flags, regions, irqs, why):
    pb = Playbook()
    pb.c2s(version(0))
    pb.s2c(version_reply(0))
    pb.c2s(get_info(1))
    rep = pb.s2c(get_info_reply(1, num_regions=regions, num_irqs=irqs, flags=flags))
    assert pb.codes("warning") == [("DEVICE_INFO_UNUSUAL", (rep,))]
    assert pb.findings()[-1].text == why


def test_region_caps_chain_is_walked():
    pb = ready()
    sparse = struct.pack("<HHIII", 1, 1, 0, 1, 0) + struct.pack("<QQ", 0, 0x20000)  # area beyond the region
    pb.c2s(region_info(3, 1, argsz=80))
    rep = pb.s2c(region_info_reply(3, 1, 0x10000, flags=0xF, argsz=56, caps=sparse, cap_offset=32), [MEMFD])
    assert pb.codes() == [("REGION_CAPS_BAD", (rep,))]


# ---------------------------------------------------------------- features and migration
def test_feature_checks_and_migration_state():
    pb = ready()
    a = pb.c2s(device_feature(1, 1, spec.FEATURE_GET | spec.FEATURE_SET))
    b = pb.c2s(device_feature(2, 3, spec.FEATURE_PROBE))
    c = pb.c2s(device_feature(3, 2, spec.FEATURE_SET, struct.pack("<II", 5, 0)))
    d = pb.c2s(mig_data_read(4, 64))
    pb.c2s(device_feature(5, 2, spec.FEATURE_SET, struct.pack("<II", 4, 0)))   # RESUMING
    pb.s2c(reply(device_feature(5, 2, spec.FEATURE_SET, struct.pack("<II", 4, 0)),
                 layout("device_feature", argsz=16, flags=2 | spec.FEATURE_SET) + struct.pack("<II", 4, 0)))
    e = pb.c2s(mig_data_read(6, 64))
    assert pb.codes("warning") == [("FEATURE_BAD_OPS", (a,)), ("FEATURE_UNKNOWN", (b,)), ("MIG_STATE_INVALID", (c,)),
                          ("MIG_DATA_WRONG_STATE", (e,))]
    assert "MIG_DATA_WRONG_STATE" not in pb.record(d).findings  # state unknown before any SET


def test_every_catalogue_code_is_described():
    for code, kind in findings.CATALOGUE.items():
        assert code == code.upper() and kind.severity in findings.SEVERITIES and kind.title
    assert json.dumps(sorted(findings.CATALOGUE))  # stable, serialisable


@given(st.binary(min_size=16, max_size=80))
def test_the_generated_field_decoders_say_what_the_layouts_say(data: bytes) -> None:
    """Each layout's generated decoder: its fields by name and order, as struct gives them; a region access's
    register value, the little-endian number of 1, 2, 4 or 8 data bytes (none for other counts or short data)."""
    from vfudissect.core import analyzer as engine

    for key, dec in engine._DECODERS.items():
        if len(data) - 16 < dec.size:
            continue
        plain = dict(zip(dec.names, struct.Struct(spec.LAYOUTS[key].fmt).unpack_from(data, 16)))
        assert dec.fields(data) == plain and list(dec.fields(data)) == list(dec.names)
        want = dict(plain)
        count = plain.get("count")
        if count in (1, 2, 4, 8) and len(data) >= 16 + dec.size + count:
            want["value"] = int.from_bytes(data[16 + dec.size:16 + dec.size + count], "little")
        assert dec.valued(data) == want


def test_the_usual_messages_record_built_inline_is_the_one_emit_builds(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """_message builds the record of a message without findings itself; _emit builds every other: on every
    committed capture (each kind of message, fds, twin sockets, faults, rotation copies) the two agree."""
    from vfudissect.capture.reader import open_capture
    from vfudissect.core import analyzer as engine
    from tests.conftest import CAPTURES

    def judged(path):  # type: ignore[no-untyped-def]
        an = engine.Analyzer()
        return [it for ev in open_capture(str(path)) for it in an.feed(ev)] + an.finish()

    for path in sorted(CAPTURES.glob("*.pcapng")):
        inline = judged(path)
        monkeypatch.setattr(engine, "INLINE_EMIT", False)
        assert judged(path) == inline, path
        monkeypatch.setattr(engine, "INLINE_EMIT", True)
