"""The judging writer: each event written to the capture, fed to the engine as recorded, the engine's verdicts after it.

Every writer of vfudissect captures (``record``, ``import``, the demo,
``annotate``, replay) goes through this, so a capture carries the findings
the engine made of it: a FINDING record per finding, written the moment the
engine raises it (a REPLY_TIMEOUT while its request still waits, a NO_REPLY
at the close), numbered like every other record, so ``read``, the live view
and Wireshark count frames alike.
"""

from __future__ import annotations

from typing import Protocol

from ..core.analyzer import Analyzer, AnalyzerConfig
from ..core.events import Event, FindingIn, Tick
from ..core.records import Finding, Item
from .writer import Recordable


class VerdictWriter(Protocol):
    """What the judging writer needs of a capture writer (CaptureWriter, RotatingCaptureWriter)."""

    def write(self, ev: Recordable) -> Recordable: ...

    def write_finding(self, f: Finding) -> int: ...  # the frame number of the FINDING record


class JudgingWriter:
    """``write(event) -> items``: the event recorded, judged, and its findings recorded after it."""

    def __init__(self, writer: VerdictWriter, analyzer: Analyzer | None = None, timeout: float | None = None) -> None:
        self.writer = writer
        self.analyzer = analyzer or Analyzer(AnalyzerConfig() if timeout is None else AnalyzerConfig(timeout))

    def write(self, ev: Event) -> list[Item]:
        if not isinstance(ev, Tick):
            ev = self.writer.write(ev)  # type: ignore[arg-type]
        return self.judge(ev)

    def judge(self, ev: Event) -> list[Item]:
        """Feed an event already recorded (or a Tick) to the engine; record its findings."""
        items = self.analyzer.feed(ev)
        if len(items) > 1 or items and type(items[0]) is Finding:  # one record alone (the usual) has none
            self.record_findings(items)
        return items

    def finish(self, ts: float | None = None) -> list[Item]:
        items = self.analyzer.finish(ts)
        self.record_findings(items)
        return items

    def record_findings(self, items: list[Item]) -> list[FindingIn]:
        """Write every Finding among ``items``; returns them as recorded (their own frame numbers)."""
        write = self.writer.write_finding
        out: list[FindingIn] = []
        for it in items:
            if type(it) is Finding:
                frame = write(it)
                out.append(FindingIn(it.ts, it.conn, it.code, it.severity, it.frames, it.text, frame))
        return out
