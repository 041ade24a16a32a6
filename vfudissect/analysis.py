"""One capture through the engine for `read` and `stats`: events in, what the views show out, and a part's result.

A *part* is one capture file (a rotated capture's parts are read one by one,
each on its own by design: every part opens with the state it needs).  These
functions read one part, judge it with the engine, show it through the
line/JSON views (``read``) or count it (``stats``), and return a picklable
``PartResult``: the local sequential run and the Dask workers run the same
function (``batch.py``), and the results merge exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

from . import spec
from .capture.reader import CaptureError
from .capture.sockdump import open_event_batches
from .capture.sockdump import open_events as open_capture  # a vfudissect capture, or a sockdump pcap
from .core import findings
from .core.analyzer import Analyzer, AnalyzerConfig
from .core.events import Event, FindingIn, MessageIn, VerdictsIn
from .core.records import ConnRecord, Finding, Item, MessageRecord
from .core.sequencer import Sequencer
from .core.verdicts import VerdictDiff, stored_finding
from .render import Renderer, conn_json, finding_json, json_line, message_json
from .stats import Stats
from .tree import decode_tree

Write = Callable[[str], None]


def analyze_batches(events: Iterator[Event], config: AnalyzerConfig) -> Iterator[list[Item]]:
    """Drive the engine over events: one list of records and findings per event, then the end-of-capture ones."""
    an = Analyzer(config)
    feed = an.feed
    last = 0.0
    for ev in events:
        if ev.ts:
            last = ev.ts
        yield feed(ev)
    yield an.finish(last)


def analyze(events: Iterator[Event], config: AnalyzerConfig) -> Iterator[Item]:
    """Every record and finding of the events, flattened."""
    for batch in analyze_batches(events, config):
        yield from batch


@dataclass(frozen=True)
class ViewOptions:
    """What `read` shows and how (picklable: a Dask worker gets it as it is)."""

    json: bool = False
    verbose: bool = False
    color: bool = False
    timeout: float = spec.DEFAULT_REPLY_TIMEOUT
    stored: bool = False
    commands: frozenset[int] | None = None
    conns: frozenset[int] | None = None
    dir: str | None = None
    codes: frozenset[str] | None = None
    min_severity: int | None = None
    stream: bool = False  # flush after every event (a pipe: show each record as it arrives)

    @property
    def filtering(self) -> bool:
        return any(x is not None for x in (self.commands, self.conns, self.dir, self.codes, self.min_severity))

    def finding_ok(self, f: Finding) -> bool:
        if self.conns is not None and f.conn not in self.conns:
            return False
        if self.codes is not None and f.code not in self.codes:
            return False
        return self.min_severity is None or findings.SEVERITY_RANK[f.severity] >= self.min_severity

    def record_ok(self, r: MessageRecord) -> bool:
        if self.commands is not None and r.command not in self.commands:
            return False
        if self.conns is not None and r.conn not in self.conns:
            return False
        if self.dir is not None and r.dir != self.dir:
            return False
        if self.codes is not None and not self.codes.intersection(r.findings):
            return False
        if self.min_severity is not None and not any(
                findings.SEVERITY_RANK[findings.CATALOGUE[c].severity] >= self.min_severity for c in r.findings):
            return False
        return True


@dataclass
class PartResult:
    """What reading one part gave: its statistics, the worst severity shown, what went wrong, what it said."""

    path: str
    stats: Stats = field(default_factory=Stats)
    worst: int = -1  # rank of the worst finding shown (-1: none)
    shown: int = 0  # messages shown (after the filters)
    events: int = 0
    conns: set[int] = field(default_factory=set)
    error: str = ""  # one line: where reading stopped
    unusable: bool = False  # nothing could be read at all (not a capture, cannot be opened)
    notes: list[str] = field(default_factory=list)  # one-line notes for stderr (stored verdicts differ, ...)
    output: list[str] = field(default_factory=list)  # the view's text, when it was not written as it came


class _Counting:
    """Counts the events that go through (and the connections they are on)."""

    def __init__(self, events: Iterator[Event], res: PartResult) -> None:
        self.events, self.res = events, res

    def __iter__(self) -> Iterator[Event]:
        res = self.res
        conns = res.conns
        for ev in self.events:
            res.events += 1
            c = getattr(ev, "conn", 0)
            if c:
                conns.add(c)
            yield ev


def _guarded(events: Iterator[Event], res: PartResult, path: str) -> Iterator[Event]:
    """Stop cleanly at a damaged capture, keeping everything read before it."""
    try:
        yield from events
    except CaptureError as e:
        res.error = str(e)
        res.unusable = res.events == 0


def _tap_verdicts(events: Iterator[Event], diff: VerdictDiff, stored: list[Finding] | None) -> Iterator[Event]:
    """Pass every event on; the stored verdicts go to ``diff`` (and, with --stored, to ``stored``)."""
    for ev in events:
        t = type(ev)
        if t is FindingIn:
            diff.add_stored(ev)  # type: ignore[arg-type]
            if stored is not None:
                stored.append(stored_finding(ev))  # type: ignore[arg-type]
        elif t is VerdictsIn:
            diff.add_header(ev)  # type: ignore[arg-type]
        yield ev


def read_part(path: str, opts: ViewOptions, write: Write | None = None, label: str | None = None,
              progress: Callable[[int], None] | None = None, flush: Callable[[], None] | None = None) -> PartResult:
    """`read` of one part: its lines (or JSON objects) through ``write`` as they come, or kept in the result's
    ``output`` without one; ``label`` names the file in the JSON objects (None: not named)."""
    res = PartResult(path)
    out: list[str] = res.output
    emit_line: Write = write if write is not None else out.append
    r = Renderer(opts.color)
    seq = Sequencer(hold=opts.stored)
    raw: dict[tuple[int, int], bytes] = {}  # (conn, frame) -> message bytes, for -V, until printed
    shown_frames: dict[int, bool] = {}
    last_line = [-1]  # frame of the last record line printed: a finding about another frame says which
    diff = VerdictDiff()
    stored: list[Finding] = []
    counted = _Counting(open_capture(path, progress), res)
    events: Iterator[Event] = iter(counted)
    if opts.verbose:
        events = _stash_messages(events, raw)
    events = _tap_verdicts(_guarded(events, res, path), diff, stored if opts.stored else None)
    extra = {"file": label} if label is not None else None

    def as_json(obj: dict) -> str:
        if extra:
            obj = {**extra, **obj}
        return json_line(obj)

    def emit(items: list[Item]) -> None:
        for it in items:
            if isinstance(it, MessageRecord):
                ok = opts.record_ok(it)
                shown_frames[it.frame] = ok
                if not ok:
                    continue
                res.shown += 1
                last_line[0] = it.frame
                if opts.json:
                    emit_line(as_json(message_json(it)) + "\n")
                else:
                    emit_line(r.message_line(it) + "\n")
                    if opts.verbose:
                        emit_line(decode_tree(raw.pop((it.conn, it.frame), b""), it) + "\n")
            elif isinstance(it, Finding):
                # shown when it passes the finding filters and the message it is about was shown
                if not opts.finding_ok(it) or not shown_frames.get(it.frame, True):
                    continue
                res.worst = max(res.worst, findings.SEVERITY_RANK[it.severity])
                if opts.json:
                    emit_line(as_json(finding_json(it)) + "\n")
                else:
                    emit_line(r.finding_line(it, standalone=it.frame != last_line[0]) + "\n")
            elif isinstance(it, ConnRecord) and not opts.filtering:
                last_line[0] = it.frame
                emit_line((as_json(conn_json(it)) if opts.json else r.conn_line(it)) + "\n")

    stats = res.stats
    for batch in analyze_batches(events, AnalyzerConfig(timeout=opts.timeout)):
        if opts.stored:  # the verdicts the capture carries instead of the engine's
            batch = [it._replace(findings=()) if type(it) is MessageRecord and it.findings else it
                     for it in batch if type(it) is not Finding] + stored
            stored.clear()
        else:
            for it in batch:
                if type(it) is Finding:
                    diff.add_fresh(it)
        for it in batch:
            stats.add(it)
            if r.base_ts is None and it.ts:
                r.base_ts = it.ts  # times are relative to the capture's first record, filtered or not
        emit(seq.push(batch))
        if opts.stream and flush is not None:
            flush()
        if len(shown_frames) > 100000:
            shown_frames.clear()
    if res.unusable:
        out.clear()
        return res
    emit(seq.flush())
    if opts.stored and not diff.judged and not res.error:
        res.notes.append(f"{path}: the capture carries no stored findings (written before vfudissect 0.2 or by "
                         "another tool); `vfudissect annotate` adds them")
    elif not opts.stored and diff.judged and diff.differs() and not res.error:
        res.notes.append(diff.sentence(path, opts.timeout))
    return res


def stats_part(path: str, timeout: float, progress: Callable[[int], None] | None = None,
               tap: Callable[[list[Item]], None] | None = None) -> PartResult:
    """`stats` of one part: every record and finding counted (and each batch of them handed to ``tap``)."""
    res = PartResult(path)
    # analyze_batches and _guarded in one loop: the per-event layers cost a tenth of this path
    an = Analyzer(AnalyzerConfig(timeout=timeout))
    feed, add = an.feed, res.stats.add_items
    last = 0.0
    n = 0
    try:
        for events in open_event_batches(path, progress):  # a loop over a batch: no generator step per event
            for ev in events:
                n += 1
                if ev.ts:
                    last = ev.ts
                batch = feed(ev)
                if batch:
                    add(batch)
                    if tap is not None:
                        tap(batch)
    except CaptureError as e:
        res.error = str(e)
        res.unusable = n == 0
    res.events = n
    batch = an.finish(last)
    add(batch)
    if tap is not None:
        tap(batch)
    if not res.unusable:
        res.worst = max((findings.SEVERITY_RANK[s] for s, n in res.stats.severities.items() if n), default=-1)
    return res


def _stash_messages(events: Iterator[Event], raw: dict[tuple[int, int], bytes]) -> Iterator[Event]:
    for ev in events:
        if isinstance(ev, MessageIn):
            raw[(ev.conn, ev.frame)] = ev.data
        yield ev


