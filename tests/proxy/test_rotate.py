"""`record --rotate-size` through the real relay: a full device session split over files that each read alone."""

from __future__ import annotations

import os
import re
from collections import Counter

from vfudissect import spec
from vfudissect.capture.reader import read_events
from vfudissect.capture.rotate import part_path
from vfudissect.render import Renderer
from vfudissect.analysis import analyze
from vfudissect.core.analyzer import AnalyzerConfig
from vfudissect.core.events import ConnOpened, MessageIn, NoteIn, VerdictsIn
from vfudissect.core.records import Finding, MessageRecord
from vfudissect.peers.client import Client, run_session
from vfudissect.peers.server import DeviceServer

from tests.proxy.conftest import Proxy


def parts_of(capture: str) -> list[str]:
    out, n = [], 1
    while os.path.exists(part_path(capture, n)):
        out.append(part_path(capture, n))
        n += 1
    return out


def test_a_rotated_session_reads_part_by_part_as_it_did_live(sockdir: str, device: DeviceServer) -> None:
    px = Proxy(sockdir, device.path, rotate_size=8192)
    with Client(px.path) as c:
        rep = run_session(c, migration=True)
        for i in range(150):  # config-space reads to fill a few more files
            c.region_read(7, (i * 4) % 256, 4)
    assert rep.ok, rep
    px.stop()
    live = Counter(f.code for f in px.session.recorder.findings)  # type: ignore[union-attr]
    parts = parts_of(px.capture)
    assert len(parts) >= 4
    offline: Counter[str] = Counter()
    own_messages = 0
    for n, path in enumerate(parts, 1):
        with open(path, "rb") as f:
            events = list(read_events(f))
        with open(path, "rb") as f:
            items = list(analyze(read_events(f), AnalyzerConfig(timeout=5.0)))
        offline.update(f.code for f in items if isinstance(f, Finding))
        own_messages += sum(1 for r in items if isinstance(r, MessageRecord) and not r.context)
        if n > 1:  # opens with the connection and its state, as context
            assert isinstance(events[0], VerdictsIn) and isinstance(events[1], ConnOpened)
            ctx = [e for e in events if isinstance(e, MessageIn) and e.flags & spec.VF_CONTEXT]
            assert spec.HEADER.unpack_from(ctx[0].data)[1] == spec.Command.VERSION
            assert any(m.fds and m.fds[0].kind == "memfd" for m in ctx)  # the DMA mapping, its fd described
        if n < len(parts):
            assert isinstance(events[-1], NoteIn) and events[-1].text.endswith(os.path.basename(parts[n]))
    assert own_messages == px.relay.messages  # every relayed message in exactly one part
    assert offline == live  # each finding once, in the part where its traffic is
    with open(px.live_path, encoding="utf-8") as f:
        text = f.read()
    assert f"the capture continues in {parts[1]}" in text
    # the live view numbers frames as the part it is writing does: what it showed after the switch to part 2 is
    # what `read` of part 2 shows, frame for frame (links to context copies included)
    section = text.split(f"the capture continues in {parts[1]}", 1)[1].split("the capture continues in", 1)[0]
    line = re.compile(r"^\s*(\d+)\s+-?[\d.]+\s+(#\d+ .*)$")
    live_lines = {m.groups() for m in map(line.match, section.splitlines()) if m}
    r = Renderer()
    with open(parts[1], "rb") as f:
        read_lines = {m.groups() for it in analyze(read_events(f), AnalyzerConfig(timeout=5.0))
                      if isinstance(it, MessageRecord) and not it.context
                      for m in [line.match(r.message_line(it))] if m}
    assert len(live_lines) > 10 and live_lines <= read_lines, sorted(live_lines - read_lines)[:3]


def test_rotate_size_needs_a_file(sockdir: str) -> None:
    import subprocess
    import sys

    x, y = os.path.join(sockdir, "x.sock"), os.path.join(sockdir, "y.sock")
    r = subprocess.run([sys.executable, "-m", "vfudissect", "record", "--listen", x, "--connect",
                        y, "-w", "-", "--rotate-size", "1M"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "rotate-size" in r.stderr
    r = subprocess.run([sys.executable, "-m", "vfudissect", "record", "--listen", x, "--connect",
                        y, "-w", os.path.join(sockdir, "x.pcapng"), "--rotate-size", "12"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and "too small" in r.stderr
