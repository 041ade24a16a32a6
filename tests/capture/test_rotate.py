"""Rotated captures: what each new file replays as CONTEXT, and that every part reads on its own."""

from __future__ import annotations

import io

from hypothesis import given
from hypothesis import strategies as st

from vfudissect import spec
from vfudissect.capture.reader import read_events
from vfudissect.capture.rotate import ContextTracker, RotatingCaptureWriter, part_path
from vfudissect.analysis import analyze
from vfudissect.core.analyzer import AnalyzerConfig
from vfudissect.core.events import ConnClosed, ConnOpened, Cred, MessageIn, NoteIn
from vfudissect.core.records import Finding, MessageRecord
from vfudissect.proxy.sinks import BufferedSink
from vfudissect.testing import (MEMFD, dma_map, dma_unmap, get_info, get_info_reply, irq_info, irq_info_reply,
                                region_info, region_info_reply, region_read, region_read_reply, reply, version,
                                version_reply)

C2S, S2C = spec.C2S, spec.S2C


class MemSink:
    """A BufferedSink over memory, kept after close so the test can read every part."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.closed = False

    def write(self, data: bytes) -> int:
        self.buf.write(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    @property
    def broken(self) -> bool:
        return False


def exchange(ts: float = 100.0) -> list:
    """A session: VERSION, device/region/IRQ info, two DMA maps (one unmapped later), then reads."""
    evs: list = [ConnOpened(ts, 1, "/run/dev.sock", Cred(10, 0, 0), Cred(20, 0, 0))]
    steps = [(C2S, version(0), ()), (S2C, version_reply(0), ()),
             (C2S, get_info(1), ()), (S2C, get_info_reply(1), ()),
             (C2S, region_info(2, 7), ()), (S2C, region_info_reply(2, 7, 256), ()),
             (C2S, irq_info(3, 4), ()), (S2C, irq_info_reply(3, 4, 4), ()),
             (C2S, dma_map(4, 0x100000, 0x10000), (MEMFD,)), (S2C, reply(dma_map(4, 0x100000, 0x10000)), ()),
             (C2S, dma_map(5, 0x200000, 0x10000), (MEMFD,)), (S2C, reply(dma_map(5, 0x200000, 0x10000)), ()),
             (C2S, dma_unmap(6, 0x200000, 0x10000), ()), (S2C, reply(dma_unmap(6, 0x200000, 0x10000)), ())]
    for i, (d, data, fds) in enumerate(steps):
        evs.append(MessageIn(ts + 0.001 * (i + 1), 1, d, data, fds))
    return evs


def context_of(evs: list) -> list:
    t = ContextTracker()
    for ev in evs:
        t.observe(ev)
    return [ev for _orig, ev in t.context()]


def test_a_new_file_replays_the_open_connection_and_the_state_it_set() -> None:
    evs = exchange()
    pending = MessageIn(200.0, 1, C2S, region_read(9, 7, 0, 4))  # its reply lands in the next file
    ctx = context_of(evs + [pending])
    assert ctx[0] == evs[0]
    msgs = ctx[1:]
    assert all(m.flags & spec.VF_CONTEXT for m in msgs)
    # VERSION, GET_INFO, REGION_INFO, IRQ_INFO pairs, the DMA map still in place, the waiting request;
    # not the mapping that was unmapped, nor the unmap itself
    assert [m.data for m in msgs] == [e.data for e in evs[1:11]] + [pending.data]
    assert [m.ts for m in msgs] == [e.ts for e in evs[1:11]] + [200.0]
    assert msgs[8].fds == (MEMFD,)


def test_closed_connections_answered_requests_and_error_replies_leave_nothing() -> None:
    evs = exchange()
    evs += [MessageIn(201.0, 1, C2S, region_read(9, 7)), MessageIn(201.1, 1, S2C, region_read_reply(9, 7))]
    assert len(context_of(evs)) == 11  # CONN_OPEN and 5 pairs: nothing for the answered read
    failed = [MessageIn(202.0, 1, C2S, get_info(10)),
              MessageIn(202.1, 1, S2C, reply(get_info(10), error=22))]
    assert context_of(evs + failed)[3].data == evs[3].data  # the earlier good GET_INFO stays
    assert context_of(evs + [ConnClosed(203.0, 1, C2S)])[0] == evs[0]  # half-closed: still open
    assert context_of(evs + [ConnClosed(203.0, 1)]) == []


def test_a_peer_that_never_answers_does_not_grow_the_context_without_bound() -> None:
    evs = exchange() + [MessageIn(200.0 + i * 1e-3, 1, C2S, region_read(i, 7)) for i in range(5000)]
    ctx = context_of(evs)
    assert len(ctx) == 11 + 1024  # the handshake's state and the newest 1,024 waiting requests
    assert spec.HEADER.unpack_from(ctx[-1].data)[0] == 4999


def test_unmap_all_forgets_every_mapping() -> None:
    evs = exchange()[:11]
    evs += [MessageIn(300.0, 1, C2S, dma_unmap(7, 0, 0, flags=2)),
            MessageIn(300.1, 1, S2C, reply(dma_unmap(7, 0, 0, flags=2)))]
    cmds = [spec.HEADER.unpack_from(m.data)[1] for m in context_of(evs)[1:]]
    assert spec.Command.DMA_MAP not in cmds


def rotate(evs: list, limit: int) -> tuple[list[bytes], list]:
    sinks: dict[str, MemSink] = {}

    def open_part(path: str) -> BufferedSink:
        sinks[path] = MemSink()
        return BufferedSink(sinks[path])  # type: ignore[arg-type]

    w = RotatingCaptureWriter("cap.pcapng", limit, open_part)
    recorded = [w.write(ev) for ev in evs]
    w.close()
    assert list(sinks) == w.paths == [part_path("cap.pcapng", n) for n in range(1, len(sinks) + 1)]
    return [s.buf.getvalue() for s in sinks.values()], recorded


def judged(blob: bytes) -> list:
    return list(analyze(read_events(io.BytesIO(blob)), AnalyzerConfig(timeout=5.0)))


def test_every_part_reads_on_its_own_without_false_findings() -> None:
    evs = exchange()
    for i in range(200):
        evs += [MessageIn(101.0 + i * 0.01, 1, C2S, region_read(100 + i, 7, 0, 4)),
                MessageIn(101.0 + i * 0.01 + 0.001, 1, S2C, region_read_reply(100 + i, 7, 0, 4))]
    evs.append(MessageIn(104.0, 1, C2S, region_read(999, 7, 0, 4)))  # rotation comes between these two
    evs.append(MessageIn(104.001, 1, S2C, region_read_reply(999, 7, 0, 4)))
    evs.append(ConnClosed(105.0, 1))
    parts, _ = rotate(evs, 8192)
    assert len(parts) >= 3
    seen = 0
    for n, blob in enumerate(parts, 1):
        items = judged(blob)
        assert [f for f in items if isinstance(f, Finding) and f.severity != "note"] == [], f"part {n}"
        own = [r for r in items if isinstance(r, MessageRecord) and not r.context]
        seen += len(own)
        if n > 1:
            assert isinstance(next(iter(read_events(io.BytesIO(blob)))), ConnOpened)
            assert any(r.context for r in items if isinstance(r, MessageRecord))
        if n < len(parts):
            last = list(read_events(io.BytesIO(blob)))[-1]
            assert isinstance(last, NoteIn) and last.text == f"capture continues in cap-{n + 1}.pcapng"
    assert seen == sum(isinstance(e, MessageIn) for e in evs)  # every message in exactly one part


def test_a_request_left_waiting_at_the_end_of_the_last_part_is_still_no_reply() -> None:
    evs = exchange() + [MessageIn(150.0 + i, 1, C2S, region_read(50 + i, 7), ()) for i in range(3)]
    parts, _ = rotate(evs, 4096)
    codes = [(f.code, f.frames) for f in judged(parts[-1]) if isinstance(f, Finding) and f.severity != "note"]
    assert [c for c, _ in codes].count("NO_REPLY") + [c for c, _ in codes].count("REPLY_TIMEOUT") == 3


def test_a_finding_is_reported_in_the_part_where_its_traffic_is_only() -> None:
    evs = exchange()
    evs += [MessageIn(101.0 + i * 0.01, 1, C2S, region_read(100 + i, 7, 0, 4)) for i in range(30)]
    evs += [MessageIn(101.5 + i * 0.01, 1, S2C, region_read_reply(100 + i, 7, 0, 4)) for i in range(30)]
    evs.append(MessageIn(103.0, 1, C2S, get_info(1)))  # id 1 was answered long ago: a fine request, left waiting
    evs.append(MessageIn(103.1, 1, S2C, get_info_reply(77)))  # UNMATCHED_REPLY
    parts, _ = rotate(evs, 6000)
    assert len(parts) >= 2
    per_part = [[f.code for f in judged(b) if isinstance(f, Finding) and f.severity != "note"] for b in parts]
    assert sum(p.count("UNMATCHED_REPLY") for p in per_part) == 1
    assert per_part[-1].count("UNMATCHED_REPLY") == 1
    assert sum(len(p) for p in per_part) == 2  # and the GET_INFO left waiting at the end


@given(st.lists(st.tuples(st.sampled_from([C2S, S2C]), st.integers(0, 20), st.sampled_from(list(range(1, 19))),
                          st.integers(0, 3), st.binary(max_size=40)), max_size=60),
       st.integers(4096, 9000))
def test_any_message_sequence_rotates_into_parts_that_read_back_whole(msgs, limit) -> None:
    evs: list = [ConnOpened(1.0, 1, "/s")]
    for i, (d, msg_id, cmd, flags, payload) in enumerate(msgs):
        data = spec.HEADER.pack(msg_id, cmd, 16 + len(payload), flags, 0) + payload
        evs.append(MessageIn(2.0 + i, 1, d, data * 40))  # big enough to rotate often
    parts, _ = rotate(evs, limit)
    back = [e for blob in parts for e in read_events(io.BytesIO(blob))
            if isinstance(e, MessageIn) and not e.flags & spec.VF_CONTEXT]
    assert [e.data for e in back] == [e.data for e in evs[1:]]
    for blob in parts:
        judged(blob)  # never raises
