"""The recording side of the proxy: capture writer, analysis engine, statistics and the live one-line view.

``Recorder.record(event)`` writes the event to the capture, feeds the event
*as recorded* (with its frame number, snaplen applied) to the Analyzer, and
shows what the engine says, so the live findings are those ``vfudissect
read`` will print for the same file.  The relay loop calls it only when no
socket is ready, one event at a time.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

from ..capture.judge import JudgingWriter
from ..capture.writer import CaptureWriter
from ..core.analyzer import Analyzer, AnalyzerConfig
from ..core.events import Event, Tick
from ..core.records import Finding, Item, MessageRecord
from ..render import Renderer
from ..stats import Stats
from .sinks import Sink


class LiveView:
    """One line per message, findings as they happen, coloured on a terminal; ``quiet`` keeps only findings.

    Lines are buffered and written by ``flush()`` (the relay calls it when a burst of traffic has been
    recorded).  While ``behind`` is set (the recorder lags the traffic), message and connection lines
    are counted instead of rendered; findings are always shown.
    """

    def __init__(self, sink: Sink, color: bool = False, quiet: bool = False,
                 findings: Callable[[Finding], bool] | None = None) -> None:
        self.sink = sink
        self.wanted = findings  # which findings to show (None: all)
        self.renderer = Renderer(color)
        self.quiet = quiet
        self.behind = False
        self.skipped = 0
        self._last_frame = -1
        self._lines: list[str] = []
        self._size = 0

    def show(self, items: list[Item]) -> None:
        lines = self._lines
        r = self.renderer
        for it in items:
            if r.base_ts is None and it.ts:
                r.base_ts = it.ts
            if isinstance(it, MessageRecord):
                self._last_frame = it.frame
                if self.quiet:
                    continue
                if self.behind:
                    self.skipped += 1
                    continue
                lines.append(r.message_line(it))
            elif isinstance(it, Finding):
                if self.wanted is not None and not self.wanted(it):
                    continue
                lines.append(r.finding_line(it, standalone=self.quiet or self.behind or it.frame != self._last_frame))
            elif not self.quiet:
                self._last_frame = it.frame
                if self.behind:
                    continue
                lines.append(r.conn_line(it))
        if len(lines) > 256:
            self.flush()

    def flush(self) -> None:
        if self.skipped and not self.behind:
            self._lines.append(f"        … {self.skipped} message(s) not shown live (the view fell behind the "
                               "traffic; all of them are in the capture)")
            self.skipped = 0
        if self._lines:
            text = "\n".join(self._lines) + "\n"
            self._lines.clear()
            self.sink.write(text.encode("utf-8", "replace"))

    def text(self, text: str) -> None:
        self.flush()
        self.sink.write(text.encode("utf-8", "replace"))


class Recorder:
    """Writer + Analyzer + Stats + LiveView, driven one event at a time."""

    def __init__(self, writer: CaptureWriter | None, live: LiveView | None = None, timeout: float = 5.0,
                 commit: Callable[[], None] | None = None, capture_error: Callable[[], str] | None = None) -> None:
        self.writer = writer
        self._commit = commit
        self._capture_error = capture_error  # why the capture output broke, "" while it works
        self.capture_failed = ""
        self.live = live
        self.analyzer = Analyzer(AnalyzerConfig(timeout=timeout))
        self.judge = JudgingWriter(writer, self.analyzer) if writer is not None else None  # findings into the capture
        self.stats = Stats()
        self.finding_codes: Counter[str] = Counter()
        self.findings: list[Finding] = []  # the first 10,000, for tests and the summary
        self.events = 0
        self.engine_errors = 0
        self._last_ts = 0.0

    def record(self, ev: Event) -> Event:
        """Write ev to the capture, feed the event as recorded to the engine, record and show what it says; returns
        the event as recorded (with its frame number)."""
        if not isinstance(ev, Tick):
            if self.writer is not None:
                ev = self.writer.write(ev)  # type: ignore[arg-type]
            self.events += 1
            if ev.ts > self._last_ts:
                self._last_ts = ev.ts
        try:
            items = self.judge.judge(ev) if self.judge is not None else self.analyzer.feed(ev)
        except Exception as exc:  # noqa: BLE001 - a bug in the engine must not stop the relay or the capture
            self._engine_failed(ev, exc)
            return ev
        if items:
            self._items(items)
        return ev

    def _engine_failed(self, ev: Event, exc: Exception) -> None:
        self.engine_errors += 1
        if self.engine_errors <= 3 and self.live is not None:
            frame = getattr(ev, "frame", 0)
            self.live.text(f"vfudissect: internal error analysing frame {frame} ({type(exc).__name__}: {exc}); "
                           "relaying and recording go on, `vfudissect read` on the capture may say more\n")

    def idle(self) -> None:
        """Everything queued has been recorded: let the view catch up, hand the capture to the kernel."""
        if self.live is not None:
            self.live.behind = False
        self.commit()

    def commit(self) -> None:
        """Write out what is buffered (capture records, live-view lines)."""
        if self._commit is not None:
            self._commit()
        if self._capture_error is not None and not self.capture_failed:
            self.capture_failed = self._capture_error()
            if self.capture_failed and self.live is not None:
                self.live.text(f"vfudissect: error: writing the capture failed ({self.capture_failed}); it ends "
                               "here, relaying and the live view go on\n")
        if self.live is not None:
            self.live.flush()

    def finish(self, ts: float | None = None) -> None:
        end = self._last_ts if ts is None else ts
        items = self.judge.finish(end) if self.judge is not None else self.analyzer.finish(end)
        self._items(items)
        self.idle()

    def add(self, items: list[Item]) -> None:
        """Records and findings made outside the engine (a replay's comparison): counted and shown like its own."""
        self._items(items)

    def _items(self, items: list[Item]) -> None:
        if not items:
            return
        add = self.stats.add
        for it in items:
            add(it)
            if isinstance(it, Finding):
                self.finding_codes[it.code] += 1
                if len(self.findings) < 10000:
                    self.findings.append(it)
        if self.live is not None:
            self.live.show(items)

    def summary(self, color: bool = False) -> str:
        return self.stats.render(color)

