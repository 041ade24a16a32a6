"""The sans-io deframer: a stream in, messages out, the same whatever the reads; no sockets anywhere."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings, strategies as st

from vfudissect import spec
from vfudissect.core import framing
from vfudissect.core.framing import MESSAGE, NOTE, RAW, ConnectionFraming, Deframer, limit_for
from vfudissect.core.build import region_read, region_write, version, version_reply

HDR = spec.HEADER


def msg(msg_id: int, body: bytes, cmd: int = 9) -> bytes:
    return HDR.pack(msg_id, cmd, 16 + len(body), 0, 0) + body


def messages(outs: list) -> list[tuple[bytes, tuple, int]]:
    return [(bytes(o.data), o.fds, o.flags) for o in outs if o.kind == MESSAGE]


def play(stream: bytes, marks: dict[int, tuple], cuts: list[int], d: Deframer | None = None) -> list:
    """Feed ``stream`` in pieces split at ``cuts`` (and at every fd position); fds go with the piece they start."""
    d = d or Deframer()
    points = sorted({0, len(stream), *cuts, *marks})
    out = []
    for a, b in zip(points, points[1:]):
        out += d.feed(stream[a:b], marks.get(a, ()), ts=1.0)
    return out


# ------------------------------------------------------------ transcripts
def test_two_messages_in_one_read_come_out_as_two():
    a, b = region_read(1, 7), region_write(2, 7, 0, b"abcd")
    assert messages(Deframer().feed(a + b)) == [(a, (), 0), (b, (), 0)]


def test_a_message_split_anywhere_comes_out_whole_once():
    a = region_write(3, 1, 0, bytes(range(64)))
    d = Deframer()
    got = []
    for i in range(len(a)):
        got += d.feed(a[i:i + 1], ts=1.0)
    assert messages(got) == [(a, (), 0)]


def test_fds_go_with_the_message_whose_bytes_brought_them_and_late_ones_are_flagged():
    a, b = region_read(1, 7), region_write(2, 7, 0, b"abcd")
    d = Deframer()
    out = d.feed(a, ("fd-a",)) + d.feed(b[:16]) + d.feed(b[16:], ("fd-b",))
    assert messages(out) == [(a, ("fd-a",), 0), (b, ("fd-b",), spec.VF_FDS_NOT_AT_MSG_START)]


def test_a_header_below_16_is_put_out_alone_and_the_rest_goes_raw():
    bad = HDR.pack(1, 9, 3, 0, 0)
    out = Deframer().feed(bad + b"tail bytes")
    assert [o.kind for o in out] == [MESSAGE, NOTE, RAW]
    assert out[0].flags & spec.VF_FRAMING_ERROR and out[0].data == bad
    assert out[2].data == b"tail bytes" and "below 16" in out[1].note


def test_a_message_beyond_the_receivers_limit_is_never_held_whole_and_framing_resumes():
    d = Deframer(limit=4096 + framing.FIXED_MAX + spec.FRAMING_SLACK)
    big = region_write(5, 1, 0, bytes(100_000))
    after = region_read(6, 7)
    out = d.feed(big + after, ts=2.0)
    head = out[0]
    assert head.kind == MESSAGE and head.msg_len == len(big) and head.data == big[:16]
    assert head.flags == spec.VF_BEYOND_LIMIT
    body = [o for o in out if o.kind == RAW]
    assert b"".join(o.data for o in body) == big[16:]
    assert all(len(o.data) <= framing.RAW_CHUNK and o.flags & spec.VF_BEYOND_LIMIT for o in body)
    assert messages(out)[-1] == (after, (), 0)  # framed again right after the body


def test_no_progress_for_the_stall_timeout_puts_out_what_came_and_goes_raw():
    d = Deframer(stall_timeout=0.5)
    w = region_write(1, 1, 0, b"x" * 64)
    d.feed(w[:40], ts=10.0)
    assert d.tick(10.4) == []
    out = d.tick(10.6)
    assert out[0].kind == MESSAGE and out[0].data == w[:40] and "cut short" in out[1].note
    assert d.raw and d.feed(w[40:])[0].kind == RAW


def test_the_end_of_the_stream_puts_out_a_partial_header_as_raw():
    d = Deframer()
    d.feed(b"\1\2\3")
    out = d.close(1.0)
    assert out[0].kind == RAW and out[0].data == b"\1\2\3" and "partial header" in out[1].note
    assert d.want() == 0


def test_version_sets_the_limit_of_the_direction_its_sender_receives():
    f = ConnectionFraming()
    f.saw(spec.C2S, version(0, caps={"capabilities": {"max_data_xfer_size": 8 << 20}}))
    f.saw(spec.S2C, version_reply(0, caps={"capabilities": {"max_data_xfer_size": 4 << 20}}))
    assert f.s2c.limit == limit_for(8 << 20) > limit_for(4 << 20)  # the client receives s2c messages
    assert f.c2s.limit == limit_for(4 << 20)  # the server receives c2s messages


def test_a_small_data_size_keeps_the_default_limit_for_what_is_not_data():
    # libvfio-user's own tests negotiate max_data_xfer_size 4: its 125-byte VERSION reply is still held whole
    f = ConnectionFraming()
    f.saw(spec.C2S, version(0, caps={"capabilities": {"max_data_xfer_size": 4}}))
    assert f.s2c.limit == limit_for(spec.DEFAULT_MAX_DATA_XFER_SIZE)
    reply = version_reply(0, caps={"capabilities": {"max_msg_fds": 8, "max_data_xfer_size": 1048576,
                                                    "migration": {"pgsize": 4096}}})
    out = f.s2c.feed(reply)
    assert [o.kind for o in out] == [MESSAGE] and not out[0].flags & spec.VF_BEYOND_LIMIT


def test_a_proposal_beyond_any_sane_size_is_capped():
    f = ConnectionFraming()
    f.saw(spec.C2S, version(0, caps={"capabilities": {"max_data_xfer_size": 2 << 30}}))  # 2 GiB proposed
    assert f.s2c.limit <= framing.ABSOLUTE_LIMIT


# ------------------------------------------------------------ any split, same messages
@st.composite
def streams(draw):  # type: ignore[no-untyped-def]
    """A stream of well-framed messages, fds on some (at the message's start, or a few bytes into it)."""
    stream = b""
    marks: dict[int, tuple] = {}
    expect = []
    for i in range(draw(st.integers(1, 12))):
        body = draw(st.binary(max_size=300))
        m = msg(i, body)
        flags = 0
        if draw(st.booleans()):
            off = min(draw(st.sampled_from([0, 0, 1, 15, 16, len(m) - 1])), len(m) - 1)
            fds = (f"fd{i}",)
            marks[len(stream) + off] = fds
            flags = spec.VF_FDS_NOT_AT_MSG_START if off else 0
        else:
            fds = ()
        expect.append((m, fds, flags))
        stream += m
    return stream, marks, expect


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.lists(st.integers(0, 4000), max_size=30))
def test_any_split_of_the_same_stream_gives_the_same_messages(s, cuts):  # type: ignore[no-untyped-def]
    stream, marks, expect = s
    assert messages(play(stream, marks, [c % (len(stream) + 1) for c in cuts])) == expect


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=20))
def test_any_bytes_in_any_pieces_come_out_exactly_once(data, cuts):  # type: ignore[no-untyped-def]
    d = Deframer(limit=256 + framing.FIXED_MAX + spec.FRAMING_SLACK)
    out = play(data, {}, [c % (len(data) + 1) for c in cuts], d) + d.close(9.0)
    forwarded = b"".join(bytes(o.data) for o in out if o.kind in (MESSAGE, RAW))
    assert forwarded == data  # every byte out once, in order, whatever it is


def test_reads_sized_by_want_never_span_two_messages():
    a, b = region_read(1, 7), region_write(2, 7, 0, b"abcd")
    d = Deframer()
    stream, pos, wants = a + b, 0, []
    while pos < len(stream):
        n = d.want()
        wants.append(n)
        buf = d.buffer()
        chunk = stream[pos:pos + n]
        buf[:len(chunk)] = chunk
        d.received(len(chunk), ts=1.0)
        pos += len(chunk)
    assert wants == [16, len(a) - 16, 16, len(b) - 16]


def test_a_header_only_message_needs_no_second_read():
    reset = struct.pack("<HHIII", 9, 13, 16, 0, 0)
    assert messages(Deframer().feed(reset)) == [(reset, (), 0)]
