"""Scripted peers: bad steps are refused with a reason, the model numbers frames like the capture writer, and
play() names the step whose bytes the proxy did not forward."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from vfudissect import spec
from vfudissect.core.events import ConnClosed, FindingIn, MessageIn, NoteIn, RawIn, VerdictsIn
from vfudissect.demo.scripted import Scenario, ScriptError, Step, c2s, model, play, s2c, step_frames
from vfudissect.testing import region_read, region_write, region_write_reply, version, version_reply

C2S, S2C = spec.C2S, spec.S2C
GARBAGE = spec.HEADER.pack(1, 9, 3, 0, 0)  # size 3: cannot be framed
HELLO = [c2s(version(0)), s2c(version_reply(0))]


@pytest.mark.parametrize("kw, why", [
    ({"dir": "up", "data": version(0)}, "dir must be"),
    ({"dir": C2S, "data": version(0), "how": "twice"}, "how must be one of"),
    ({"dir": C2S, "data": version(0), "fds": ("pipe",)}, "fd kinds"),
    ({"dir": C2S, "data": b"short"}, "16-byte header"),
    ({"dir": C2S, "data": b"x", "how": "close"}, "no bytes"),
    ({"dir": C2S, "data": spec.HEADER.pack(1, 13, 16, 0, 0), "how": "split"}, "body after the header"),
    ({"dir": C2S, "data": version(0)[:20], "how": "cut", "fds": ("memfd",)}, "no fds"),
    ({"dir": C2S, "data": version(0), "starve_fds": True}, "needs fds"),
])
def test_bad_steps_are_refused_with_a_reason(kw: dict, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        Step(**kw)


def test_a_scenario_flagging_an_unknown_code_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown finding code 'NOT_A_CODE'"):
        Scenario("bad", (c2s(version(0), flag="NOT_A_CODE"),))


def traffic(scn: Scenario) -> list:
    """The model's records without the verdicts (the VERDICTS record and the FINDING records)."""
    return [r for r in model(scn) if not isinstance(r.event, (VerdictsIn, FindingIn))]


def test_frames_follow_the_capture_writer_fragments_and_verdicts_included() -> None:
    big = region_write(9, 1, 0, bytes(200_000))  # over 64 KiB: several records, the last one is its frame
    scn = Scenario("big", tuple(HELLO + [c2s(big), s2c(region_write_reply(9, 1, 0, 200_000))]))
    frames = step_frames(scn)
    recs = model(scn)
    assert isinstance(recs[0].event, VerdictsIn) and recs[0].event.frame == 1
    # QEMU's capabilities carry the legacy 'migration' key: its CAPS_LEGACY_KEY note is frame 4
    assert frames[0] == (3,) and isinstance(recs[3].event, FindingIn) and recs[3].event.frame == 4
    assert frames[1] == (5,)
    assert frames[2][0] >= 5 + 200_000 // spec.VFUC_MAX_RECORD + 1
    assert frames[3] == (frames[2][0] + 1,)
    closes = [r.event.frame for r in recs if isinstance(r.event, ConnClosed)]
    assert closes == [frames[3][0] + 1, frames[3][0] + 2]


def test_an_unframeable_header_is_recorded_alone_then_the_direction_goes_raw() -> None:
    scn = Scenario("raw", tuple(HELLO + [c2s(GARBAGE + b"tail"), c2s(region_read(2, 7)), s2c(version_reply(5))]))
    recs = traffic(scn)
    kinds = [(type(r.event).__name__, getattr(r.event, "dir", None), r.step) for r in recs]
    assert kinds[3:] == [("MessageIn", C2S, 2), ("NoteIn", C2S, 2), ("RawIn", C2S, 2), ("RawIn", C2S, 3),
                         ("MessageIn", S2C, 4), ("ConnClosed", C2S, None), ("ConnClosed", S2C, None)]
    assert recs[3].event.flags & spec.VF_FRAMING_ERROR and recs[3].event.data == GARBAGE  # type: ignore[union-attr]


def test_a_cut_message_closes_its_direction_and_nothing_may_follow_in_it() -> None:
    cut = Step(C2S, region_write(9, 1, 0, b"x" * 64)[:40], how="cut")
    recs = traffic(Scenario("cut", tuple(HELLO + [cut, s2c(version_reply(7))])))
    tail = [r.event for r in recs[3:]]
    assert isinstance(tail[0], MessageIn) and len(tail[0].data) == 40
    assert isinstance(tail[1], NoteIn) and isinstance(tail[2], ConnClosed) and tail[2].dir == C2S
    assert isinstance(tail[3], MessageIn) and tail[3].dir == S2C
    assert [type(e) for e in tail[4:]] == [ConnClosed] and tail[4].dir == S2C  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="already closed"):
        model(Scenario("after", tuple(HELLO + [cut, c2s(region_read(3, 7))])))
    short = traffic(Scenario("hdr", (Step(C2S, b"\1\2\3", how="cut"),)))
    assert isinstance(short[1].event, RawIn)


def test_snaplen_and_starved_fds_are_recorded_as_the_proxy_records_them() -> None:
    w = c2s(region_write(9, 1, 0, bytes(1000)), "eventfd", starve_fds=True)
    ev = traffic(Scenario("snap", tuple(HELLO + [w]), snaplen=100))[3].event
    assert isinstance(ev, MessageIn)
    assert ev.flags & spec.VF_TRUNCATED and ev.flags & spec.VF_FDS_CTRUNC and ev.fds == ()
    assert ev.wire_len == 1032 and len(ev.data) == 16 + 16 + 100


def test_a_size_that_disagrees_with_the_bytes_needs_a_cut_step() -> None:
    with pytest.raises(ValueError, match="use how='cut'"):
        model(Scenario("bad", (c2s(region_write(9, 1, 0, b"abcd")[:-1] + b""),)))


class _Blackhole:
    """A 'proxy' that connects each client to the server and forwards nothing."""

    def __init__(self, path: str, server: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(1)
        self.server = server
        self.held: list[socket.socket] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        c, _ = self.sock.accept()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.server)
        self.held += [c, s]

    def close(self) -> None:
        for s in [self.sock, *self.held]:
            try:
                s.shutdown(socket.SHUT_RDWR)  # a thread still in accept() wakes, before its fd is freed
            except OSError:
                pass
            s.close()


def test_play_names_the_step_whose_bytes_never_arrived(tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = tmp_path
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(os.path.join(d, "dev.sock"))
    listener.listen(1)
    hole = _Blackhole(os.path.join(d, "px.sock"), os.path.join(d, "dev.sock"))
    try:
        with pytest.raises(ScriptError, match=r"blackhole step 0 \(c2s whole\): got 0 of \d+ bytes"):
            play(Scenario("blackhole", tuple(HELLO)), os.path.join(d, "px.sock"), listener, timeout=0.3)
    finally:
        hole.close()
        listener.close()
    with pytest.raises(ValueError, match="proxy process"):
        play(Scenario("starve", (c2s(version(0), "memfd", starve_fds=True),)), "/nonexistent", listener)
