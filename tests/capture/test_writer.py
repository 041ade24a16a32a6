"""The streaming writer: valid pcapng a reader (ours and tshark's) accepts, flushed per record."""

from __future__ import annotations

import io
import os
import shutil
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vfudissect import spec
from vfudissect.capture.reader import iter_records, read_events
from vfudissect.capture.writer import CaptureWriter
from vfudissect.core.events import ConnClosed, ConnOpened, MessageIn
from vfudissect.testing import region_write


def test_records_are_numbered_and_timestamps_never_go_back():
    buf = io.BytesIO()
    w = CaptureWriter(buf)
    a = w.write(ConnOpened(5.0, 1, "/s"))
    b = w.write(MessageIn(4.0, 1, "c2s", region_write(1, 1, 0, b"x" * 4)))
    c = w.write(MessageIn(6.000000001, 1, "s2c", b"\0" * 16))
    assert (a.frame, b.frame, c.frame) == (1, 2, 3)
    recs = list(iter_records(io.BytesIO(buf.getvalue())))
    assert [r.ts_ns for r in recs] == [5_000_000_000, 5_000_000_000, 6_000_000_001]
    assert all(r.linktype == spec.LINKTYPE_WIRESHARK_UPPER_PDU for r in recs)


def test_snaplen_truncates_data_and_the_returned_event_says_so():
    buf = io.BytesIO()
    w = CaptureWriter(buf, snaplen=4)
    m = region_write(1, 1, 0, b"D" * 5000)
    ev = w.write(MessageIn(1.0, 1, "c2s", m))
    assert ev.flags & spec.VF_TRUNCATED and len(ev.data) == 36 and ev.wire_len == len(m)
    (back,) = list(read_events(io.BytesIO(buf.getvalue())))
    assert back.data == ev.data and back.wire_len == len(m) and back.flags & spec.VF_TRUNCATED
    (r,) = list(iter_records(io.BytesIO(buf.getvalue())))
    assert r.origlen == len(r.data) + 5000 - 4


def test_each_record_is_flushed_through_a_pipe():
    rfd, wfd = os.pipe()
    with os.fdopen(wfd, "wb") as out, os.fdopen(rfd, "rb") as inp:
        w = CaptureWriter(out)
        os.set_blocking(rfd, False)
        head = inp.read()
        w.write(MessageIn(1.0, 1, "c2s", b"\0" * 16))
        rec = inp.read()
        assert head and rec and len(rec) > 40


@pytest.mark.tshark
def test_tshark_reads_the_written_file(tmp_path):
    assert shutil.which("tshark"), "tshark is required (make test installs it)"
    path = tmp_path / "w.pcapng"
    with open(path, "wb") as f:
        w = CaptureWriter(f, comment="test")
        w.write(ConnOpened(1.0, 1, "/s"))
        w.write(MessageIn(1.1, 1, "c2s", region_write(1, 1, 0, b"y" * 200000)))
        w.write(ConnClosed(1.2, 1))
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.number", "-e",
                          "exported_pdu.prot_name", "-e", "frame.p2p_dir"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    assert len(rows) == 2 + 4  # open, 4 fragments of the 200 kB message, close
    assert all(r[1] == "vfucap" for r in rows)
    assert rows[1][2] == "0"  # client -> server is "sent"


@given(data=st.binary(max_size=300), conn=st.integers(0, 2**32 - 1), d=st.sampled_from(["c2s", "s2c"]),
       flags=st.integers(0, 255), extra=st.integers(-1, 5000), ts=st.floats(0, 2e9, allow_nan=False),
       max_record=st.integers(60, 400))
def test_the_fast_message_path_writes_the_same_bytes_as_the_general_one(data, conn, d, flags, extra, ts,
                                                                         max_record):
    outs = []
    for snaplen in (None, 1 << 40):  # any snaplen takes the general path; this one cuts nothing
        buf = io.BytesIO()
        w = CaptureWriter(buf, snaplen=snaplen, max_record=max_record)
        evs = [w.write(MessageIn(ts + i, conn, d, data, (), 0, -1 if extra < 0 else len(data) + extra, flags))
               for i in range(2)]
        outs.append((buf.getvalue(), evs))
    assert outs[0] == outs[1]


def test_an_interrupt_and_a_withheld_original_come_back_as_written(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from vfudissect.core.events import IrqIn

    msg = spec.HEADER.pack(3, spec.Command.DEVICE_GET_INFO, 32, spec.MSG_TYPE_REPLY, 0) + bytes(16)
    path = tmp_path / "x.pcapng"
    with open(path, "wb") as f:
        w = CaptureWriter(f)
        w.write(ConnOpened(1.0, 1, "s.sock"))
        w.write(IrqIn(1.5, 1, 1, 3, 2))
        w.write(MessageIn(2.0, 1, "s2c", msg, (), 0, -1, spec.VF_WITHHELD))
        w.write(MessageIn(2.5, 1, "s2c", msg, (), 0, -1, spec.VF_INJECTED))
        w.close()
    with open(path, "rb") as f:
        evs = list(read_events(f))
    assert evs[1] == IrqIn(1.5, 1, 1, 3, 2, 2)
    assert [(e.flags, e.data) for e in evs[2:]] == [(spec.VF_WITHHELD, msg), (spec.VF_INJECTED, msg)]
