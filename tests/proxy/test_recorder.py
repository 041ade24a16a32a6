"""The recorder: the capture gets every event, the engine sees events as recorded, the live view keeps up."""

from __future__ import annotations

import io
import os

from vfudissect.capture.reader import read_events
from vfudissect.capture.writer import CaptureWriter
from vfudissect.core.events import ConnOpened, FindingIn, MessageIn, Tick, VerdictsIn
from vfudissect.proxy.recorder import LiveView, Recorder
from vfudissect.proxy.sinks import FileSink
from vfudissect.testing import region_read, region_read_reply, version, version_reply


class Text:
    broken = False

    def __init__(self) -> None:
        self.buf = io.BytesIO()

    def write(self, b: bytes) -> int:
        return self.buf.write(b)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    @property
    def text(self) -> str:
        return self.buf.getvalue().decode()


def session(rec: Recorder, n: int = 3) -> None:
    rec.record(ConnOpened(1.0, 1, "/run/dev.sock"))
    rec.record(MessageIn(1.001, 1, "c2s", version(0)))
    rec.record(MessageIn(1.002, 1, "s2c", version_reply(0)))
    for i in range(n):
        rec.record(MessageIn(1.01 + i / 100, 1, "c2s", region_read(10 + i, 7)))
        rec.record(MessageIn(1.015 + i / 100, 1, "s2c", region_read_reply(10 + i, 7)))


def test_frames_in_the_live_view_are_the_capture_frames(sockdir: str) -> None:
    path = os.path.join(sockdir, "c.pcapng")
    live = Text()
    rec = Recorder(CaptureWriter(FileSink(os.open(path, os.O_WRONLY | os.O_CREAT)), judged=1.0), LiveView(live),
                   timeout=1.0)
    session(rec)
    rec.record(MessageIn(1.1, 1, "c2s", region_read(99, 7)))
    rec.record(Tick(3.0))  # time passes: the unanswered read times out while the session still runs
    rec.finish()
    rec.writer.close()
    with open(path, "rb") as f:
        events = list(read_events(f))
    # the verdicts record, 10 traffic records and the engine's two findings, each a frame of its own
    assert [type(e).__name__ for e in events].count("FindingIn") == 2 and isinstance(events[0], VerdictsIn)
    assert len(events) == 13 and [e.frame for e in events] == list(range(1, 14))
    request = next(e for e in events if isinstance(e, MessageIn) and e.data == region_read(99, 7))
    timeout = events[-1]
    assert isinstance(timeout, FindingIn) and timeout.code == "REPLY_TIMEOUT" and timeout.frames == (request.frame,)
    lines = live.text.splitlines()
    assert lines[0].split()[0] == "2" and "open /run/dev.sock" in lines[0]
    # the finding came two seconds later, under the line of the request it is about
    assert lines[-2].split()[0] == str(request.frame)
    assert lines[-1].strip().startswith("! warning REPLY_TIMEOUT: REGION_READ id=99")
    assert [f.code for f in rec.findings] == ["CAPS_LEGACY_KEY", "REPLY_TIMEOUT"]
    assert rec.stats.messages == 9


def test_behind_skips_message_lines_but_not_findings() -> None:
    live = Text()
    rec = Recorder(CaptureWriter(io.BytesIO()), LiveView(live))
    rec.record(ConnOpened(1.0, 1, "/s"))
    rec.live.behind = True  # type: ignore[union-attr]
    session(rec, n=5)
    rec.record(MessageIn(2.0, 1, "s2c", region_read_reply(500, 7)))  # answers nothing: a finding
    rec.idle()  # caught up
    lines = [ln.strip() for ln in live.text.splitlines()]
    assert "open /s" in lines[0]
    assert [ln.split(":")[0] for ln in lines[1:3]] == ["· note CAPS_LEGACY_KEY", "✗ error UNMATCHED_REPLY"]
    assert lines[3:] == ["… 13 message(s) not shown live (the view fell behind the traffic; all of them are in the "
                         "capture)"]


def test_quiet_shows_findings_only() -> None:
    live = Text()
    rec = Recorder(CaptureWriter(io.BytesIO()), LiveView(live, quiet=True))
    session(rec)
    rec.record(MessageIn(2.0, 1, "s2c", region_read_reply(500, 7)))
    rec.finish()
    lines = [ln.strip() for ln in live.text.splitlines()]
    assert len(lines) == 2 and lines[0].startswith("· note CAPS_LEGACY_KEY") and "UNMATCHED_REPLY" in lines[1]
