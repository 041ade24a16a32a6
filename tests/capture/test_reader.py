"""The reader: real fixtures, pcap and pcapng, and damaged files that end in one clear error."""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import given, strategies as st

from vfudissect.capture.reader import CaptureError, iter_records, open_capture, read_events
from vfudissect.capture.writer import CaptureWriter
from vfudissect.core.events import ConnClosed, ConnOpened, MessageIn, NoteIn
from tests.conftest import LVU, QEMU


def sample() -> bytes:
    buf = io.BytesIO()
    w = CaptureWriter(buf)
    w.write(ConnOpened(1.0, 1, "/s"))
    for i in range(5):
        w.write(MessageIn(1.0 + i, 1, "c2s", struct.pack("<HHIII", i, 4, 32, 0, 0) + b"\0" * 16))
    w.write(MessageIn(9.0, 1, "s2c", b"Z" * 150000))
    w.write(ConnClosed(10.0, 1))
    return buf.getvalue()


def test_real_fixtures_decode_with_fds_on_the_right_messages():
    evs = list(open_capture(str(QEMU)))
    msgs = [e for e in evs if isinstance(e, MessageIn)]
    assert len(msgs) == 398
    maps = [m for m in msgs if m.dir == "c2s" and struct.unpack_from("<H", m.data, 2)[0] == 2]
    assert len(maps) == 18 and sum(len(m.fds) == 1 and m.fds[0].kind == "memfd" for m in maps) == 13
    irqs = [m for m in msgs if m.dir == "c2s" and struct.unpack_from("<H", m.data, 2)[0] == 8]
    assert sum(len(m.fds) == 1 and m.fds[0].kind == "eventfd" for m in irqs) == 3
    assert all(not m.fds for m in msgs if struct.unpack_from("<H", m.data, 2)[0] not in (2, 8))
    lvu = [e for e in open_capture(str(LVU)) if isinstance(e, MessageIn)]
    assert len(lvu) == 216


def test_classic_pcap_is_read_too():
    data = sample()
    recs = list(iter_records(io.BytesIO(data)))
    out = io.BytesIO()
    out.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 252))
    for r in recs:
        out.write(struct.pack("<IIII", r.ts_ns // 10**9, r.ts_ns % 10**9, len(r.data), r.origlen) + r.data)
    a = [type(e).__name__ for e in read_events(io.BytesIO(data))]
    b = [type(e).__name__ for e in read_events(io.BytesIO(out.getvalue()))]
    assert a == b == ["ConnOpened"] + ["MessageIn"] * 6 + ["ConnClosed"]


def test_truncated_file_keeps_what_was_read_and_names_the_record():
    data = sample()
    got = []
    with pytest.raises(CaptureError) as exc:
        for ev in read_events(io.BytesIO(data[:-30]), "cut.pcapng"):
            got.append(ev)
    assert len(got) == 7 and "cut.pcapng: record 10" in str(exc.value)  # 3 fragments for the big one


def test_not_a_capture_and_foreign_link_type():
    with pytest.raises(CaptureError, match="not a pcap or pcapng"):
        list(read_events(io.BytesIO(b"hello world, not a capture"), "x.txt"))
    with pytest.raises(CaptureError, match="empty"):
        list(read_events(io.BytesIO(b""), "empty"))
    eth = io.BytesIO(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + struct.pack("<IIII", 0, 0, 4, 4)
                     + b"abcd")
    with pytest.raises(CaptureError, match="link type 1"):
        list(read_events(eth, "eth.pcap"))


def test_corrupt_record_inside_a_sound_block_is_a_note_and_reading_goes_on():
    data = bytearray(sample())
    i = data.index(b"VFUC", data.index(b"VFUC") + 4)  # second record's VFUC header
    data[i:i + 4] = b"XXXX"
    evs = list(read_events(io.BytesIO(bytes(data))))
    notes = [e for e in evs if isinstance(e, NoteIn)]
    assert len(notes) == 1 and notes[0].frame == 2 and "corrupt record" in notes[0].text
    assert sum(isinstance(e, MessageIn) for e in evs) == 5


@given(st.data())
def test_fuzzed_captures_never_raise_anything_but_capture_error(data):
    blob = bytearray(sample())
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        blob[pos] ^= 1 << data.draw(st.integers(0, 7))
    cut = data.draw(st.integers(0, len(blob)))
    try:
        for _ev in read_events(io.BytesIO(bytes(blob[:cut]))):
            pass
    except CaptureError:
        pass


@given(st.binary(max_size=400))
def test_random_bytes_never_raise_anything_but_capture_error(blob):
    try:
        list(read_events(io.BytesIO(blob)))
    except CaptureError:
        pass
