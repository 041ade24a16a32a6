"""sockdump pcaps -> events: the real transcripts, in sockdump's layout, give back their messages and findings."""

from __future__ import annotations

import dataclasses
import io
import pathlib
import struct
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import pytest
from hypothesis import given, strategies as st

from vfudissect import spec
from vfudissect.capture import sockdump
from vfudissect.capture.reader import CaptureError, read_events
from vfudissect.capture.transcript import transcript_events
from vfudissect.core import build
from vfudissect.core.analyzer import Analyzer
from vfudissect.core.events import ConnClosed, ConnOpened, Event, FindingIn, MessageIn, NoteIn
from vfudissect.core.records import Finding

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "captures"
TRANSCRIPTS = sorted(SHARED.glob("*.jsonl")) if SHARED.is_dir() else []
LVU = SHARED / "libvfio-user-sample-client-server.jsonl"
QEMU = SHARED / "qemu-10.2-gpio-pci-idio-16.jsonl"
needs_transcripts = pytest.mark.skipif(not TRANSCRIPTS, reason="../shared/captures (the transcripts) is not beside "
                                                              "this checkout")
CLIENT, SERVER = 4242, 1717
SOCK = "/run/vfio-user/gpio.sock"
FD_BLIND = {"FDS_MISSING", "DMA_MAP_DEGENERATE", "TWIN_SOCKET_BAD"}  # what absent fds alone can raise


# ------------------------------------------------------------------ a writer of sockdump's layout
@dataclass(frozen=True)
class Seg:
    """One iovec segment of one sendmsg, as sockdump's probe sees it."""

    ts: float
    pid: int  # the sender
    peer: int
    data: bytes
    length: int | None = None  # iov_len when sockdump kept no data of it (a sendmsg it could not read)


def pcap_time(t: float) -> tuple[int, int]:
    """Seconds and microseconds as sockdump takes them from time.time()."""
    return int(t), int((t % 1) * 10**6)


def sockdump_pcap(segs: Iterable[Seg], *, seg_size: int = 51200, layout: str = "path", path: bytes = SOCK.encode(),
                  order: str = "<", linktype: int = 147) -> bytes:
    """The pcap sockdump.py --format pcap writes for these segments.

    ``layout``: "path" (current: 109-byte Pascal-string socket path, peer pid, sender pid, big-endian u64),
    "pids" (2019-2026: the two pids), "first" (2018: 0, sender pid).  A segment longer than ``seg_size`` is
    cut there, with the zero bytes perf pads the sample with up to 8 bytes beyond it (orig_len keeps the
    whole length)."""
    out = [struct.pack(order + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, seg_size, linktype)]
    for s in segs:
        if layout == "path":
            prefix = struct.pack(">109pQQ", path, s.peer, s.pid)
        elif layout == "pids":
            prefix = struct.pack(">QQ", s.peer, s.pid)
        else:
            prefix = struct.pack(">QQ", 0, s.pid)
        length = len(s.data) if s.length is None else s.length
        kept = s.data[:seg_size]
        if len(s.data) > seg_size:
            kept += b"\0" * min(len(s.data) - seg_size, -seg_size % 8)
        sec, usec = pcap_time(s.ts)
        out.append(struct.pack(order + "IIII", sec, usec, len(prefix) + len(kept), len(prefix) + length)
                   + prefix + kept)
    return b"".join(out)


def sends(msgs: Sequence[MessageIn], style: Callable[[bytes], list[bytes]]) -> list[Seg]:
    """The segments the sender's sendmsg calls carry, one message per sendmsg, split by ``style``."""
    out = []
    for m in msgs:
        pid, peer = (CLIENT, SERVER) if m.dir == spec.C2S else (SERVER, CLIENT)
        out += [Seg(m.ts, pid, peer, piece) for piece in style(m.data)]
    return out


def qemu_style(data: bytes) -> list[bytes]:
    return [data]  # QEMU: one iovec per message


def lvu_style(data: bytes) -> list[bytes]:
    return [data[:16], data[16:]] if len(data) > 16 else [data]  # libvfio-user: the header, then the payload


def three_iovecs(data: bytes) -> list[bytes]:
    half = 16 + (len(data) - 16) // 2
    return [p for p in (data[:16], data[16:half], data[half:]) if p]


# ------------------------------------------------------------------ helpers
def transcript(path: pathlib.Path) -> list[Event]:
    return list(transcript_events(path.read_text().splitlines(), path.name))


def messages_of(events: Iterable[Event]) -> list[MessageIn]:
    return [e for e in events if type(e) is MessageIn]


def imported(blob: bytes) -> list[Event]:
    return list(sockdump.sockdump_events(io.BytesIO(blob), "t.pcap"))


def notes(events: Iterable[Event]) -> list[NoteIn]:
    return [e for e in events if type(e) is NoteIn]


def verdicts(events: Sequence[Event], analyzer: Analyzer) -> list[tuple[str, int]]:
    """(code, index of the message it is about; -1 for none) of every finding, in order."""
    index = {}
    for e in events:
        if type(e) is MessageIn:
            index[e.frame] = len(index)
    out = []
    last = 0.0
    for e in events:
        last = max(last, e.ts)
        out += [(str(f.code), index.get(f.frame, -1)) for f in analyzer.feed(e) if type(f) is Finding]
    out += [(str(f.code), index.get(f.frame, -1)) for f in analyzer.finish(last) if type(f) is Finding]
    return out


def numbered(events: list[Event]) -> list[Event]:
    """A transcript's events with frames 1, 2, ... as a recorder would give them."""
    return [dataclasses.replace(e, frame=i) for i, e in enumerate(events, 1)]


def same_messages(got: Sequence[MessageIn], want: Sequence[MessageIn]) -> None:
    assert [(m.dir, m.data) for m in got] == [(m.dir, m.data) for m in want]


# ------------------------------------------------------------------ the real traffic, back
@needs_transcripts
@pytest.mark.parametrize("layout", ["path", "pids"])
@pytest.mark.parametrize("style", [qemu_style, lvu_style, three_iovecs], ids=["qemu", "lvu", "three"])
@pytest.mark.parametrize("name", [p.name for p in TRANSCRIPTS])
def test_transcripts_come_back_whole(name, style, layout):
    want = messages_of(transcript(SHARED / name))
    events = imported(sockdump_pcap(sends(want, style), layout=layout))
    got = messages_of(events)
    same_messages(got, want)
    assert [round(m.ts * 1e6) for m in got] == [pcap_time(m.ts)[0] * 10**6 + pcap_time(m.ts)[1] for m in want]
    assert all(m.msg_len == -1 and m.flags == 0 and m.fds == () for m in got)
    assert [m.frame for m in got] == sorted(set(m.frame for m in got))  # unique, as the views need
    opened = [e for e in events if type(e) is ConnOpened]
    assert len(opened) == 1 and opened[0].socket_path == (SOCK if layout == "path" else "")
    assert (opened[0].client.pid, opened[0].server.pid) == (CLIENT, SERVER)
    assert isinstance(events[-1], ConnClosed) and events[-1].dir is None and events[-1].ts == got[-1].ts
    said = notes(events)
    assert len(said) == 1 and said[0].text.startswith(sockdump.FDS_UNSEEN_NOTE_PREFIX)  # once, not per message


@needs_transcripts
@pytest.mark.parametrize("name", [p.name for p in TRANSCRIPTS])
def test_same_findings_as_the_transcript_but_those_of_absent_fds(name):
    ref = verdicts(numbered(transcript(SHARED / name)), Analyzer())
    events = imported(sockdump_pcap(sends(messages_of(transcript(SHARED / name)), lvu_style)))
    assert verdicts(events, Analyzer()) == ref
    plain = verdicts(events, Analyzer())  # the engine alone: at most the verdicts of absent fds differ
    assert [v for v in plain if v[0] not in FD_BLIND] == [v for v in ref if v[0] not in FD_BLIND]
    assert {v[0] for v in plain} - {v[0] for v in ref} <= FD_BLIND
    unsaid = [e for e in events if not (type(e) is NoteIn and e.text.startswith(sockdump.FDS_UNSEEN_NOTE_PREFIX))]
    assert any(v[0] == "DMA_MAP_DEGENERATE" for v in verdicts(unsaid, Analyzer()))  # offsets whose memfd is unseen


@needs_transcripts
def test_import_writes_a_judged_capture():
    want = messages_of(transcript(LVU))
    out = io.BytesIO()
    n = sockdump.write_judged(io.BytesIO(sockdump_pcap(sends(want, lvu_style))), out, "t.pcap")
    back = list(read_events(io.BytesIO(out.getvalue())))
    assert n > len(want)
    same_messages(messages_of(back), want)
    stored = [e.code for e in back if type(e) is FindingIn]
    assert stored == [c for c, _i in verdicts(numbered(transcript(LVU)), Analyzer())]
    assert sum(1 for e in notes(back) if e.text.startswith(sockdump.FDS_UNSEEN_NOTE_PREFIX)) == 1
    # read afresh by the interim analyzer, the capture draws what the transcript draws
    assert verdicts(back, Analyzer()) == verdicts(numbered(transcript(LVU)), Analyzer())


def test_the_engine_keeps_what_unseen_fds_do_not_explain():
    ev = [ConnOpened(1.0, 1, "x"), NoteIn(1.0, 1, sockdump.FDS_UNSEEN_NOTE_PREFIX + "sockdump")]
    msgs = [build.dma_map(1, 0x10000, 0, offset=0x1000),  # empty: degenerate whatever the fds
            build.dma_map(2, 0x20000, 0x1000, offset=0x1000),  # offset without its (unseen) fd
            build.dma_map(3, 0x30000, 0x1000, flags=0x7)]  # MMAP without its (unseen) fd
    ev += [MessageIn(2.0 + i, 1, spec.C2S, m, frame=10 + i) for i, m in enumerate(msgs)]
    got = verdicts(ev, Analyzer())
    assert ("DMA_MAP_DEGENERATE", 0) in got
    assert not [v for v in got if v[1] in (1, 2) and v[0] in FD_BLIND]
    other = [ConnOpened(1.0, 2, "y")] + [MessageIn(2.0 + i, 2, spec.C2S, m, frame=10 + i) for i, m in enumerate(msgs)]
    seen = verdicts(other, Analyzer())  # no note: the same messages draw their fd findings
    assert [v for v in seen if v[1] in (1, 2) and v[0] in FD_BLIND]


# ------------------------------------------------------------------ segments cut at --seg-size
@needs_transcripts
@pytest.mark.parametrize("seg_size", [4096, 1001])  # 1001: perf pads the cut sample with zeros past it
@pytest.mark.parametrize("style", [qemu_style, lvu_style, three_iovecs], ids=["qemu", "lvu", "three"])
def test_cut_segments_give_truncated_messages_and_framing_holds(style, seg_size):
    want = messages_of(transcript(LVU))
    events = imported(sockdump_pcap(sends(want, style), seg_size=seg_size))
    got = messages_of(events)
    assert len(got) == len(want)
    lost = {spec.C2S: 0, spec.S2C: 0}
    cut = set()
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dir == w.dir
        pieces = style(w.data)
        keep, off = len(w.data), 0
        for p in pieces:  # the message stops at its first piece cut short
            lost[w.dir] += max(0, len(p) - seg_size)
            if len(p) > seg_size and keep == len(w.data):
                keep = off + seg_size
            off += len(p)
        if keep < len(w.data):
            cut.add(i)
            assert g.data == w.data[:keep] and g.msg_len == len(w.data) and g.flags == spec.VF_TRUNCATED
        else:
            assert g.data == w.data and g.flags == 0
    assert cut
    per_dir = [n for n in notes(events) if n.dir is not None]
    assert sorted(n.dir for n in per_dir) == sorted(d for d in lost if lost[d])  # once per direction
    for n in per_dir:
        assert f"{lost[n.dir]} bytes not captured" in n.text and f"--seg-size of {seg_size} bytes" in n.text
    ref = verdicts(numbered(transcript(LVU)), Analyzer())
    judged = verdicts(events, Analyzer())
    assert sorted(i for c, i in judged if c == "CAPTURE_TRUNCATED") == sorted(cut)
    assert [v for v in judged if v[0] != "CAPTURE_TRUNCATED" and v[1] not in cut] == \
        [v for v in ref if v[1] not in cut]


def _big(msgs: list[MessageIn]) -> int:
    return next(i for i, m in enumerate(msgs) if len(m.data) > 8192)


@needs_transcripts
def test_a_cut_over_the_next_header_resyncs_at_the_next_sendmsg():
    """One sendmsg of two messages, cut in the first: the first is truncated, the second is lost, framing resumes
    at the sender's next segment (it begins with a header)."""
    want = messages_of(transcript(LVU))
    i = _big(want)
    j = next(k for k in range(i + 1, len(want)) if want[k].dir == want[i].dir)
    segs = []
    for k, m in enumerate(want):
        if k == j:
            continue
        s = sends([m], qemu_style)[0]
        segs.append(Seg(s.ts, s.pid, s.peer, m.data + want[j].data) if k == i else s)
    events = imported(sockdump_pcap(segs, seg_size=4096))
    got = messages_of(events)
    rest = want[:j] + want[j + 1:]
    ref = messages_of(imported(sockdump_pcap(sends(rest, qemu_style), seg_size=4096)))  # the same, one per sendmsg
    assert [(m.dir, m.data, m.flags, m.msg_len) for m in got] == [(m.dir, m.data, m.flags, m.msg_len) for m in ref]
    assert got[i].data == want[i].data[:4096] and got[i].flags == spec.VF_TRUNCATED
    (n,) = [e for e in notes(events) if e.dir == want[i].dir]
    assert "framing lost its place 1 times" in n.text


@needs_transcripts
def test_a_sendmsg_sockdump_could_not_read_is_a_hole_too():
    """A sendmsg whose iterator sockdump does not walk is recorded with no data and its whole length."""
    want = messages_of(transcript(QEMU))[:40]
    segs = sends(want, qemu_style)
    segs[5] = Seg(segs[5].ts, segs[5].pid, segs[5].peer, b"", len(want[5].data))
    events = imported(sockdump_pcap(segs))
    same_messages(messages_of(events), want[:5] + want[6:])
    (n,) = [e for e in notes(events) if e.dir == want[5].dir]
    assert "1 segments were cut short" in n.text and f"{len(want[5].data)} bytes not captured" in n.text


# ------------------------------------------------------------------ who is who
@needs_transcripts
def test_capture_begun_mid_connection_still_tells_client_from_server():
    want = messages_of(transcript(QEMU))
    k = next(i for i, m in enumerate(want) if i > 2 and m.dir == spec.S2C)  # begin with a server reply
    events = imported(sockdump_pcap(sends(want[k:], lvu_style)))
    same_messages(messages_of(events), want[k:])
    (opened,) = [e for e in events if type(e) is ConnOpened]
    assert (opened.client.pid, opened.server.pid) == (CLIENT, SERVER)
    assert any("began after this connection's VERSION" in n.text and f"pid {SERVER} is taken as the server" in n.text
               for n in notes(events))


@needs_transcripts
def test_a_peer_that_never_sent_is_said_once():
    want = [m for m in messages_of(transcript(QEMU)) if m.dir == spec.C2S][:30]
    events = imported(sockdump_pcap(sends(want, qemu_style)))
    same_messages(messages_of(events), want)
    (opened,) = [e for e in events if type(e) is ConnOpened]
    assert opened.server.pid == SERVER  # known from the client's records: their peer
    silent = [n for n in notes(events) if "sent nothing" in n.text]
    assert len(silent) == 1 and f"the server (pid {SERVER})" in silent[0].text


@needs_transcripts
def test_sockdumps_first_format_with_no_peer_pid():
    want = messages_of(transcript(QEMU))[:50]
    events = imported(sockdump_pcap(sends(want, qemu_style), layout="first"))
    same_messages(messages_of(events), want)
    (opened,) = [e for e in events if type(e) is ConnOpened]
    assert opened.client.pid == CLIENT and opened.server is None  # the server had not spoken yet


@needs_transcripts
def test_two_connections_on_one_path_and_a_big_endian_host():
    a = messages_of(transcript(QEMU))[:30]
    segs = sends(a, qemu_style)
    other = [Seg(s.ts + 0.0000005, s.pid + 1, s.peer + 1, s.data) for s in segs]  # another client/server pair
    mixed = [s for pair in zip(segs, other) for s in pair]
    events = imported(sockdump_pcap(mixed, order=">"))
    opened = [e for e in events if type(e) is ConnOpened]
    assert [(o.conn, o.client.pid, o.server.pid) for o in opened] == [(1, CLIENT, SERVER), (2, CLIENT + 1, SERVER + 1)]
    for conn in (1, 2):
        same_messages([m for m in messages_of(events) if m.conn == conn], a)


def test_abstract_socket_path_is_shown_with_an_at():
    msg = build.version(0)
    events = imported(sockdump_pcap([Seg(1.0, CLIENT, SERVER, msg)], path=b"\0vfu-abstract"))
    assert [e.socket_path for e in events if type(e) is ConnOpened] == ["@vfu-abstract"]


# ------------------------------------------------------------------ foreign and damaged files
def _one_error(blob: bytes) -> CaptureError:
    with pytest.raises(CaptureError) as exc:
        imported(blob)
    return exc.value


def test_foreign_and_damaged_files_give_one_clear_error():
    good = sockdump_pcap([Seg(1.0, CLIENT, SERVER, build.version(0)), Seg(1.1, SERVER, CLIENT, build.version_reply(0))])
    assert "empty file" in str(_one_error(b""))
    assert "not a pcap capture" in str(_one_error(b'{"t": 1.0, "conn": 1, "open": "x.sock"}\n'))
    assert "link type 1 is not 147" in str(_one_error(sockdump_pcap([Seg(1.0, 1, 2, b"x" * 20)], linktype=1)))
    e = _one_error(good[:-5])
    assert e.record == 2 and "truncated record" in str(e)
    e = _one_error(good[:24] + struct.pack("<IIII", 1, 0, 40, 40) + b"\x07" * 40)
    assert e.record == 1 and "not a sockdump capture" in str(e)
    mixed = sockdump_pcap([Seg(1.0, CLIENT, SERVER, build.version(0))]) + \
        sockdump_pcap([Seg(1.1, SERVER, CLIENT, build.version_reply(0))], layout="pids")[24:]
    e = _one_error(mixed)
    assert e.record == 2 and "as the records before it do" in str(e)
    e = _one_error(good[:24] + struct.pack("<IIII", 1, 0, 125 + 16, 125 + 8) + good[40:40 + 141])
    assert e.record == 1 and "exceeds the original" in str(e)
    if (ROOT / "captures" / "demo.pcapng").exists():
        assert "link type 252 is not 147" in str(_one_error((ROOT / "captures" / "demo.pcapng").read_bytes()))


def test_events_before_the_damage_are_yielded():
    good = sockdump_pcap([Seg(1.0, CLIENT, SERVER, build.version(0)), Seg(1.1, SERVER, CLIENT, build.version_reply(0))])
    got: list[Event] = []
    with pytest.raises(CaptureError):
        for ev in sockdump.sockdump_events(io.BytesIO(good[:-5]), "t.pcap"):
            got.append(ev)
    assert [type(e) for e in got][:3] == [ConnOpened, NoteIn, MessageIn]


def test_is_sockdump_and_open_events(tmp_path):
    p = tmp_path / "s.pcap"
    p.write_bytes(sockdump_pcap([Seg(1.0, CLIENT, SERVER, build.version(0))]))
    assert sockdump.is_sockdump(str(p))
    assert not sockdump.is_sockdump(str(tmp_path / "missing.pcap"))
    assert [type(e) for e in sockdump.open_events(str(p))] == [ConnOpened, NoteIn, MessageIn, NoteIn, ConnClosed]
    demo = ROOT / "captures" / "demo.pcapng"
    if demo.exists():
        assert not sockdump.is_sockdump(str(demo))
        with open(demo, "rb") as fh:
            assert list(sockdump.open_events(str(demo))) == list(read_events(fh, str(demo)))


# ------------------------------------------------------------------ any segmentation
_QEMU_HEAD = messages_of(transcript(QEMU))[:80] if TRANSCRIPTS else []


def _sendmsgs(draw: Callable, msgs: Sequence[MessageIn]) -> list[list[MessageIn]]:
    """Runs of consecutive messages of one direction sent by one sendmsg each."""
    groups: list[list[MessageIn]] = []
    for m in msgs:
        if groups and groups[-1][-1].dir == m.dir and draw(st.booleans()):
            groups[-1].append(m)
        else:
            groups.append([m])
    return groups


def _iovecs(draw: Callable, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=4, unique=True)))
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)]) if a < b]


@needs_transcripts
@given(st.data())
def test_any_segmentation_gives_the_same_messages(data):
    segs = []
    for g in _sendmsgs(data.draw, _QEMU_HEAD):
        m = g[-1]
        pid, peer = (CLIENT, SERVER) if m.dir == spec.C2S else (SERVER, CLIENT)
        segs += [Seg(m.ts, pid, peer, p) for p in _iovecs(data.draw, b"".join(x.data for x in g))]
    events = imported(sockdump_pcap(segs, layout=data.draw(st.sampled_from(["path", "pids"]))))
    same_messages(messages_of(events), _QEMU_HEAD)
    assert len(notes(events)) == 1


@needs_transcripts
@given(st.data())
def test_cuts_never_misframe(data):
    """Whatever sockdump cuts, every message recorded is one that was sent (whole, or its first bytes flagged
    truncated), in the order sent."""
    seg_size = data.draw(st.integers(8, 300))
    segs = []
    for g in _sendmsgs(data.draw, _QEMU_HEAD):
        m = g[-1]
        pid, peer = (CLIENT, SERVER) if m.dir == spec.C2S else (SERVER, CLIENT)
        segs += [Seg(m.ts, pid, peer, p) for p in _iovecs(data.draw, b"".join(x.data for x in g))]
    got = messages_of(imported(sockdump_pcap(segs, seg_size=seg_size)))
    for d in spec.DIRECTIONS:
        sent = iter([m.data for m in _QEMU_HEAD if m.dir == d])
        for m in (g for g in got if g.dir == d):
            if m.flags & spec.VF_TRUNCATED:
                assert any(len(w) == m.msg_len and w.startswith(m.data) for w in sent), m.data.hex()
            else:
                assert m.data in sent, m.data.hex()  # consumes ``sent`` up to it: order kept
