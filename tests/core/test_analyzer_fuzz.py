"""Fuzzing the engine: arbitrary messages, fds and orderings never raise and always give one record each."""

from __future__ import annotations

import struct

from hypothesis import given, strategies as st

from vfudissect import spec
from vfudissect.core.analyzer import Analyzer, AnalyzerConfig
from vfudissect.core.events import ConnClosed, ConnOpened, FdInfo, MessageIn, RawIn, Tick
from vfudissect.core.records import Finding, MessageRecord
from vfudissect.core import findings

header = st.builds(lambda mid, cmd, size, flags, err: struct.pack("<HHIII", mid, cmd, size, flags, err),
                   st.integers(0, 5), st.one_of(st.integers(0, 20), st.integers(0, 65535)),
                   st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 0x10, 0x21, 0x20, 0x2, 0xFFFFFFFF]),
                   st.integers(0, 2**32 - 1))
payload = st.one_of(st.binary(max_size=80),
                    st.builds(lambda p: struct.pack("<HH", 0, 0) + p + b"\0",
                              st.sampled_from([b"{}", b'{"capabilities": {"max_msg_fds": 1}}', b"[", b"null",
                                               b'{"capabilities": {"twin_socket": {"supported": true}}}'])))
fd = st.builds(FdInfo, st.sampled_from(["memfd", "eventfd", "socket", "regular"]), st.integers(0, 1 << 30))
message = st.tuples(st.sampled_from([spec.C2S, spec.S2C]), header, payload, st.lists(fd, max_size=3),
                    st.floats(0, 7), st.integers(0, 0x3F), st.booleans())


def fix_size(data: bytes, keep: bool) -> bytes:
    """Mostly well-framed messages (size = length), sometimes the header's own size."""
    return data if keep else data[:4] + struct.pack("<I", len(data)) + data[8:]


@given(st.lists(message, max_size=40), st.floats(0, 10))
def test_any_exchange_gives_one_record_per_message_and_known_codes(msgs, timeout):
    an = Analyzer(AnalyzerConfig(timeout=timeout))
    items = an.feed(ConnOpened(0.0, 1, "/s", frame=1))
    ts = 0.0
    frame = 1
    for d, hdr, body, fds, dt, vflags, keep in msgs:
        ts += dt
        frame += 1
        items += an.feed(MessageIn(ts, 1, d, fix_size(hdr + body, keep), tuple(fds), frame, -1,
                                   vflags & ~spec.VF_MORE_FRAGMENTS))
        items += an.feed(Tick(ts))
    items += an.feed(RawIn(ts, 1, spec.C2S, b"zz", (), frame + 1))
    items += an.feed(ConnClosed(ts, 1, None, frame + 2))
    items += an.finish(ts + 100)
    recs = [i for i in items if isinstance(i, MessageRecord)]
    assert [r.frame for r in recs] == list(range(2, 2 + len(msgs)))
    for f in (i for i in items if isinstance(i, Finding)):
        assert f.code in findings.CATALOGUE and f.severity == findings.CATALOGUE[f.code].severity and f.frames


@given(st.binary(max_size=200), st.sampled_from([spec.C2S, spec.S2C]))
def test_raw_bytes_as_a_message_never_raise(blob, d):
    an = Analyzer()
    out = an.feed(MessageIn(1.0, 3, d, blob, (), 7))
    assert sum(isinstance(i, MessageRecord) for i in out) == 1
