"""`vfudissect record` as a child process: it starts listening or says why not, stops on SIGTERM with a whole
capture, can be starved of descriptors on cue; its live view parses back into exactly the findings it showed."""

from __future__ import annotations

import os
import resource
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vfudissect import spec
from vfudissect.capture.reader import open_capture
from vfudissect.core.events import ConnOpened, VerdictsIn
from vfudissect.core.records import ConnRecord, Finding, make_message_record
from vfudissect.demo.record_process import ProxyError, RecordProcess, live_findings
from vfudissect.render import Renderer
from vfudissect.core import findings

_CODES = sorted(findings.CATALOGUE)
_TEXT = st.text(st.characters(blacklist_characters="\n\r[]", blacklist_categories=("Cs", "Cc")), max_size=40)


@st.composite
def live_views(draw: st.DrawFn) -> tuple[str, list[tuple[str, str, tuple[int, ...]]]]:
    """A live view as LiveView writes it (message/connection lines, findings under them or standalone)."""
    r = Renderer(color=draw(st.booleans()))
    lines: list[str] = []
    want: list[tuple[str, str, tuple[int, ...]]] = []
    frame, last = 0, -1
    for _ in range(draw(st.integers(0, 12))):
        frame += draw(st.integers(1, 3))
        if draw(st.booleans()):
            rec = make_message_record(frame, 1000.0 + frame, 1, spec.C2S, draw(st.integers(0, 0xFFFF)),
                                      draw(st.sampled_from(list(spec.COMMANDS))), "X", "command", 16, 0, 0, 16, (),
                                      {}, None, None, (), False, False)
            lines.append(r.message_line(rec))
        else:
            lines.append(r.conn_line(ConnRecord(frame, 1000.0 + frame, 1, draw(st.sampled_from(["open", "close"])),
                                                draw(_TEXT))))
        last = frame
        for _ in range(draw(st.integers(0, 2))):
            code = draw(st.sampled_from(_CODES))
            own = draw(st.booleans())
            first = last if own else draw(st.integers(1, 10_000))
            frames = (first, *draw(st.lists(st.integers(1, 10_000), max_size=2)))
            f = Finding(code, findings.CATALOGUE[code].severity, 1, frames, draw(_TEXT))
            lines.append(r.finding_line(f, standalone=f.frame != last))
            want.append((f.severity, code, frames))
    return "\n".join(lines) + "\n", want


@given(live_views())
def test_live_findings_reads_back_what_the_view_showed(view: tuple[str, list]) -> None:
    import re
    text, want = view
    assert live_findings(re.sub(r"\x1b\[[0-9;]*m", "", text)) == want


def test_a_proxy_that_cannot_start_says_why(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "not-a-socket").write_text("x")
    with open(tmp_path / "live.txt", "wb") as live:
        rp = RecordProcess("p.sock", "not-a-socket", "c.pcapng", cwd=str(tmp_path), stdout=live)
        with pytest.raises(ProxyError, match="exited with status 2 before listening"):
            rp.start()
    assert "is not a socket" in (tmp_path / "live.txt").read_text()


def _wait_for_open(capture: str, timeout: float = 10.0) -> None:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if any(isinstance(ev, ConnOpened) for ev in open_capture(capture)):
                return
        except Exception:  # noqa: BLE001 - a capture still being written may end mid-record
            pass
        time.sleep(0.02)
    raise AssertionError(f"{capture} never recorded the connection")


def test_start_starve_feed_and_stop(tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(os.path.join(tmp_path, "dev.sock"))
    server.listen(1)
    try:
        with open(tmp_path / "live.txt", "wb") as live:
            with RecordProcess("p.sock", "dev.sock", "c.pcapng", cwd=str(tmp_path), stdout=live) as rp:
                before = resource.prlimit(rp.pid, resource.RLIMIT_NOFILE)
                rp.starve_fds()
                soft = resource.prlimit(rp.pid, resource.RLIMIT_NOFILE)[0]
                assert soft < before[0] and soft not in {int(n) for n in os.listdir(f"/proc/{rp.pid}/fd")}
                rp.feed_fds()
                assert resource.prlimit(rp.pid, resource.RLIMIT_NOFILE) == before
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                c.connect(rp.listen)
                c.close()
                _wait_for_open(str(tmp_path / "c.pcapng"))  # accepted and recorded before the SIGTERM
            assert rp.proc is not None and rp.proc.returncode == 0
    finally:
        server.close()
    events = list(open_capture(str(tmp_path / "c.pcapng")))
    assert isinstance(events[0], VerdictsIn) and events[0].timeout == 5.0  # a judged capture says so first
    assert isinstance(events[1], ConnOpened) and events[1].socket_path == "dev.sock"
    assert "overall: 1 connection(s)" in (tmp_path / "live.txt").read_text()
