"""Summary statistics over records and findings: response times, errors, fds, findings, per connection.

Constant memory whatever the capture's length: response times go into a
log-bucketed histogram (1 % relative precision) for p50/p99; count, min, max
and mean are exact.  No per-message state: a reply is counted under the
command of the request it answers, which the engine says in the reply's
record (``request_command``), even when the reply claims another one.

Percentiles follow the nearest-rank method: the q-quantile of n samples is
the ceil(q·n)-th smallest sample (the smallest for q = 0).  So p50 of two
samples is the smaller one, and p99 of fewer than 100 samples is the
largest.  The histogram gives that sample to within 1 %; the smallest and
largest ranks are the exact min and max.

Every listing comes out in a fixed order, so two runs over the same traffic
print the same text and JSON: commands, errnos and fd kinds by count
descending, then by name; findings by severity, then by code.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from . import spec
from .core import findings
from .core.records import ConnRecord, Finding, Item, MessageRecord

_LOG_BASE = math.log(1.01)  # bucket b holds [1.01**b, 1.01**(b+1))
_TINY = 1e-9  # response times at or below 1 ns (or negative: clock steps) share one bucket
_TINY_BUCKET = -10**6
_SEVERITY_ORDER = ("error", "warning", "note")


def nearest_rank(q: float, n: int) -> int:
    """The 1-based rank of the q-quantile of n samples by the nearest-rank method: ceil(q·n), at least 1.

    q is taken as the decimal it is written as (0.99 is 99/100, not the binary float just below it).
    """
    return min(n, max(1, math.ceil(Fraction(repr(q)) * n)))


_floor, _log = math.floor, math.log


def _bucket(v: float) -> int:
    return math.floor(math.log(v) / _LOG_BASE) if v > _TINY else _TINY_BUCKET


def _by_count(counts: Counter[str]) -> list[tuple[str, int]]:
    """Count descending, then key: the same order whatever the arrival order."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _by_severity(counts: Counter[str]) -> list[tuple[str, int]]:
    """Findings: most severe first, then by code."""
    return sorted(counts.items(), key=lambda kv: (-findings.SEVERITY_RANK[findings.CATALOGUE[kv[0]].severity],
                                                  kv[0]))


@dataclass(frozen=True, slots=True)
class RttFigures:
    """The response-time figures of one command's replies (seconds), as the table and the JSON show them."""

    count: int
    min: float
    mean: float
    p50: float
    p99: float
    max: float

    def as_dict(self) -> dict[str, float]:
        return {"count": self.count, "min": self.min, "mean": self.mean, "p50": self.p50, "p99": self.p99,
                "max": self.max}


@dataclass(frozen=True, slots=True)
class CommandRow:
    """One line of the command table: requests sent, and the figures of the replies (None when none came)."""

    name: str
    requests: int
    replies: RttFigures | None


class _Rtt:
    """Owns one command's response times: exact count/min/max/sum and a log histogram (1 %) for percentiles."""

    __slots__ = ("count", "total", "lo", "hi", "hist")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.lo = math.inf
        self.hi = -math.inf
        self.hist: dict[int, int] = {}  # bucket -> samples (a plain dict: a Counter's item access is slower)

    def add(self, v: float) -> None:
        self.count += 1
        self.total += v
        if v < self.lo:
            self.lo = v
        if v > self.hi:
            self.hi = v
        b = _floor(_log(v) / _LOG_BASE) if v > _TINY else _TINY_BUCKET  # _bucket(v), inline: once per reply
        hist = self.hist
        hist[b] = hist.get(b, 0) + 1

    def merge(self, o: "_Rtt") -> None:
        self.count += o.count
        self.total += o.total
        self.lo = min(self.lo, o.lo)
        self.hi = max(self.hi, o.hi)
        hist = self.hist
        for b, n in o.hist.items():
            hist[b] = hist.get(b, 0) + n

    def quantile(self, q: float) -> float:
        """The nearest-rank q-quantile: exact at the first and last rank, else within 1 % (bucket middle)."""
        if not self.count:
            return 0.0
        k = nearest_rank(q, self.count)
        if k == 1:
            return self.lo
        if k == self.count:
            return self.hi
        seen = 0
        for b in sorted(self.hist):
            seen += self.hist[b]
            if seen >= k:
                return self._value(b)
        return self.hi

    def _value(self, b: int) -> float:
        """What bucket b stands for: its geometric middle (±0.5 %), kept within the samples' range."""
        if b == _TINY_BUCKET:
            return self.lo
        return min(max(math.exp((b + 0.5) * _LOG_BASE), self.lo), self.hi)

    def figures(self) -> RttFigures:
        if not self.count:
            return RttFigures(0, 0.0, 0.0, 0.0, 0.0, 0.0)
        return RttFigures(self.count, self.lo, self.total / self.count, self.quantile(0.5), self.quantile(0.99),
                          self.hi)


class _ConnStats:
    """Owns one connection's counters (or the sum of all of them, see Stats._total)."""

    __slots__ = ("messages", "bytes", "commands", "rtt", "mismatched", "errors", "fds", "findings", "unanswered")

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0
        self.commands: Counter[str] = Counter()  # requests per command
        self.rtt: dict[str, _Rtt] = {}  # replies per command of their request
        self.mismatched = 0  # replies whose command differs from their request's
        self.errors: Counter[str] = Counter()
        self.fds: Counter[str] = Counter()
        self.findings: Counter[str] = Counter()
        self.unanswered = 0

    def add(self, o: "_ConnStats") -> None:
        self.messages += o.messages
        self.bytes += o.bytes
        self.commands.update(o.commands)
        for name, r in o.rtt.items():
            self.rtt.setdefault(name, _Rtt()).merge(r)
        self.mismatched += o.mismatched
        self.errors.update(o.errors)
        self.fds.update(o.fds)
        self.findings.update(o.findings)
        self.unanswered += o.unanswered

    def rows(self) -> list[CommandRow]:
        """The command table: requests descending, then name."""
        names = sorted(set(self.commands) | set(self.rtt), key=lambda n: (-self.commands.get(n, 0), n))
        out = []
        for name in names:
            r = self.rtt.get(name)
            out.append(CommandRow(name, self.commands.get(name, 0), r.figures() if r and r.count else None))
        return out


class Stats:
    """Accumulates items (add), then renders a text summary (render) or JSON (to_json)."""

    def __init__(self) -> None:
        self._conns: dict[int, _ConnStats] = {}
        self.first_ts: float | None = None
        self.last_ts = 0.0
        self.severities: Counter[str] = Counter()
        self.connections = 0
        self._labels: dict[str, int] = {}  # captures merged in, in the order they came

    def _conn(self, conn: int) -> _ConnStats:
        cs = self._conns.get(conn)
        if cs is None:
            cs = self._conns[conn] = _ConnStats()
        return cs

    def add(self, it: Item) -> None:
        self.add_items((it,))

    def add_items(self, items: Iterable[Item]) -> None:
        """Count what the engine said of one event (its records and findings)."""
        for it in items:
            t = type(it)
            if t is MessageRecord:
                self._message(it)  # type: ignore[arg-type]
            elif t is Finding:
                self._finding(it)  # type: ignore[arg-type]
            elif t is ConnRecord:
                self._conn_record(it)  # type: ignore[arg-type]

    def _message(self, it: MessageRecord) -> None:
        if it.context or it.fault:  # a copy counted in its own part; a message the peer never got (withheld)
            if it.context or it.fault == "withheld":
                return
        cs = self._conns.get(it.conn) or self._conn(it.conn)
        cs.messages += 1
        cs.bytes += it.wire_len
        ts = it.ts
        if ts:
            if ts > self.last_ts:
                self.last_ts = ts
            first = self.first_ts
            if first is None or ts < first:
                self.first_ts = ts
        msg_type = it.msg_type
        if msg_type == "command":
            commands = cs.commands
            name = it.command_name
            commands[name] = commands.get(name, 0) + 1
        else:
            rtt = it.rtt
            if rtt is not None:
                self._reply(cs, it, rtt)
            if it.flags & 0x20 and msg_type == "reply":
                cs.errors[spec.errno_name(it.error)] += 1
        if it.fds:
            for fd in it.fds:
                cs.fds[fd.kind] += 1

    def _reply(self, cs: _ConnStats, it: MessageRecord, rtt: float) -> None:
        """A matched reply counts under its request's command; one claiming another command is also counted apart."""
        answers = it.request_command
        if answers is None or answers == it.command:
            name = it.command_name
        else:
            name = spec.command_name(answers)
            cs.mismatched += 1
        r = cs.rtt.get(name)
        if r is None:
            r = cs.rtt[name] = _Rtt()
        r.add(rtt)

    def _finding(self, it: Finding) -> None:
        cs = self._conn(it.conn)
        cs.findings[it.code] += 1
        self.severities[it.severity] += 1
        if it.code in ("NO_REPLY", "REPLY_TIMEOUT"):
            cs.unanswered += 1

    def _conn_record(self, it: ConnRecord) -> None:
        if it.kind == "open":
            self.connections += 1
            self._conn(it.conn)

    def merge(self, other: "Stats", label: str | None = None) -> None:
        """Add another part's figures, exactly (counts add, histograms add bucket by bucket, min/max/sums hold).
        With ``label`` (the capture the part belongs to) its connections are that capture's: connection 1 of two
        captures are two connections, connection 1 of two parts of one rotated capture is one."""
        for conn, cs in other._conns.items():
            key = conn if label is None or isinstance(conn, tuple) else (label, conn)
            if isinstance(key, tuple):
                self._labels.setdefault(key[0], len(self._labels))
            mine = self._conns.get(key)
            if mine is None:
                mine = self._conns[key] = _ConnStats()
            mine.add(cs)
        if other.first_ts is not None and (self.first_ts is None or other.first_ts < self.first_ts):
            self.first_ts = other.first_ts
        self.last_ts = max(self.last_ts, other.last_ts)
        self.severities.update(other.severities)
        self.connections = len(self._conns)  # a rotated capture's parts each open its connections again

    # ------------------------------------------------------------ views
    def _total(self) -> _ConnStats:
        tot = _ConnStats()
        for _conn, cs in self._sorted():
            tot.add(cs)
        return tot

    def _sorted(self) -> list[tuple[Any, _ConnStats]]:
        """Connections in order: by capture (in the order they were merged), then number."""
        order = self._labels
        return sorted(self._conns.items(),
                      key=lambda kv: (order.get(kv[0][0], 0), kv[0][1]) if isinstance(kv[0], tuple) else (0, kv[0]))

    @property
    def messages(self) -> int:
        return sum(cs.messages for cs in self._conns.values())

    def _duration(self) -> float:
        return (self.last_ts - self.first_ts) if self.first_ts is not None else 0.0

    def _severities(self) -> list[tuple[str, int]]:
        return [(s, self.severities[s]) for s in _SEVERITY_ORDER if s in self.severities]

    def to_json(self) -> dict[str, Any]:
        return {
            "connections": max(self.connections, len(self._conns)),
            "duration": self._duration(),
            "overall": _conn_json(self._total()),
            "per_connection": {_conn_name(k): _conn_json(v) for k, v in self._sorted()},
            "severities": dict(self._severities()),
        }

    def render(self, color: bool = False, per_connection: bool = True) -> str:
        paint = _painter(color)
        out: list[str] = []
        if per_connection and len(self._conns) > 1:
            for conn, cs in self._sorted():
                out += _conn_lines(f"connection {_conn_title(conn)}", cs, paint)
        out += _conn_lines(f"overall: {max(self.connections, len(self._conns))} connection(s), "
                           f"{self._duration():.3f} s", self._total(), paint)
        out.append("  " + ", ".join(f"{self.severities.get(s, 0)} {s}{'s' if self.severities.get(s, 0) != 1 else ''}"
                                    for s in _SEVERITY_ORDER))
        return "\n".join(out)


def _conn_name(k: Any) -> str:
    """A connection's key in --json: its number, or CAPTURE#N when several captures are counted."""
    return f"{k[0]}#{k[1]}" if isinstance(k, tuple) else str(k)


def _conn_title(k: Any) -> str:
    return f"#{k[1]} of {k[0]}" if isinstance(k, tuple) else f"#{k}"


def _conn_json(cs: _ConnStats) -> dict[str, Any]:
    """One connection's figures (or the overall ones) for --json, every dict in the text view's order."""
    rows = cs.rows()
    return {
        "messages": cs.messages, "bytes": cs.bytes,
        "requests": {r.name: r.requests for r in rows if r.requests},
        "response_times": {r.name: r.replies.as_dict() for r in rows if r.replies},
        "mismatched_replies": cs.mismatched,
        "errors": dict(_by_count(cs.errors)), "fds": dict(_by_count(cs.fds)),
        "findings": dict(_by_severity(cs.findings)),
        "unanswered": cs.unanswered,
    }


Paint = Callable[[str, str], str]


def _painter(color: bool) -> Paint:
    """Styles for the text view: bold headings, severities in colour; plain text without colour."""
    codes = {"h": "\033[1m", "error": "\033[1;31m", "warning": "\033[33m", "note": "\033[34m"}

    def paint(style: str, s: str) -> str:
        return f"{codes[style]}{s}\033[0m" if color else s
    return paint


def _table_lines(rows: Iterable[CommandRow]) -> list[str]:
    """The command table: header, then one line per row (no times when no reply came)."""
    from .render import rtt_text
    lines = [f"  {'command':<26}{'requests':>9}{'replies':>9}{'min':>10}{'mean':>10}{'p50':>10}{'p99':>10}{'max':>10}"]
    for r in rows:
        line = f"  {r.name:<26}{r.requests:>9}{r.replies.count if r.replies else 0:>9}"
        if r.replies:
            f = r.replies
            line += "".join(f"{rtt_text(v):>10}" for v in (f.min, f.mean, f.p50, f.p99, f.max))
        lines.append(line)
    return lines


def _conn_lines(title: str, cs: _ConnStats, paint: Paint) -> list[str]:
    """One connection's block (or the overall one): message counts, command table, errors, fds, findings."""
    lines = [paint("h", title), f"  messages {cs.messages}, bytes {cs.bytes}"]
    rows = cs.rows()
    if rows:
        lines += _table_lines(rows)
    if cs.mismatched:
        lines.append(f"  replies whose command differs from their request's: {cs.mismatched} "
                     "(counted under the request's command)")
    if cs.errors:
        lines.append("  errors: " + ", ".join(f"{k} {v}" for k, v in _by_count(cs.errors)))
    if cs.fds:
        lines.append("  fds: " + ", ".join(f"{k} {v}" for k, v in _by_count(cs.fds)))
    if cs.findings:
        lines.append("  findings:")
        for code, n in _by_severity(cs.findings):
            sev = findings.CATALOGUE[code].severity
            lines.append(f"    {paint(sev, f'{sev:<8}')}{code:<30}{n:>7}")
    return lines


# ------------------------------------------------------------ stats --by: one row per capture, connection or command
BY_CHOICES = ("file", "connection", "command")


@dataclass(frozen=True, slots=True)
class ByRow:
    """One row of `stats --by file|connection`: a capture's (or a connection's) figures in one line."""

    name: str
    connections: int
    messages: int
    bytes: int
    requests: int
    replies: int
    error_replies: int
    rtt: RttFigures | None  # every reply's response time, whatever its command
    findings: tuple[tuple[str, int], ...]  # (severity, count), most severe first
    unanswered: int
    duration: float | None  # None for a connection (its capture's first and last record are not known per connection)

    def as_dict(self, key: str) -> dict[str, Any]:
        d: dict[str, Any] = {key: self.name} if key else {}
        d.update({"connections": self.connections, "messages": self.messages, "bytes": self.bytes,
                  "requests": self.requests, "replies": self.replies, "error_replies": self.error_replies,
                  "response_time": self.rtt.as_dict() if self.rtt else None, "findings": dict(self.findings),
                  "unanswered": self.unanswered})
        if self.duration is not None:
            d["duration"] = self.duration
        return d


def _by_row(name: str, cs: _ConnStats, connections: int, duration: float | None) -> ByRow:
    every = _Rtt()
    for r in cs.rtt.values():
        every.merge(r)
    sev: Counter[str] = Counter()
    for code, n in cs.findings.items():
        sev[findings.CATALOGUE[code].severity] += n
    return ByRow(name, connections, cs.messages, cs.bytes, sum(cs.commands.values()), every.count,
                 sum(cs.errors.values()), every.figures() if every.count else None,
                 tuple((s, sev[s]) for s in _SEVERITY_ORDER), cs.unanswered, duration)


class Breakdown:
    """`stats --by`: rows per capture, per connection or per command over many captures, and a totals row.

    ``captures`` are (name, statistics of that capture alone) in the order given; ``total`` is the merged
    statistics of all of them (its totals row is the overall figures of `stats`)."""

    def __init__(self, by: str, captures: list[tuple[str, "Stats"]], total: "Stats") -> None:
        if by not in BY_CHOICES:
            raise ValueError(f"--by {by!r}: one of {', '.join(BY_CHOICES)}")
        self.by = by
        conns = max(total.connections, len(total._conns))
        tot = total._total()
        self.total = _by_row("total", tot, conns, total._duration())
        self.rows: list[ByRow] = []
        self.commands: list[CommandRow] = []
        if by == "file":
            self.rows = [_by_row(name, st._total(), max(st.connections, len(st._conns)), st._duration())
                         for name, st in captures]
        elif by == "connection":
            self.rows = [_by_row(f"{name}#{conn}", cs, 1, None) for name, st in captures for conn, cs in st._sorted()]
        else:
            self.commands = tot.rows()
            every = _Rtt()
            for r in tot.rtt.values():
                every.merge(r)
            self.command_total = CommandRow("total", sum(tot.commands.values()),
                                            every.figures() if every.count else None)

    def to_json(self) -> dict[str, Any]:
        if self.by == "command":
            def cmd(r: CommandRow, key: bool = True) -> dict[str, Any]:
                d: dict[str, Any] = {"command": r.name} if key else {}
                d.update({"requests": r.requests, "replies": r.replies.count if r.replies else 0,
                          "response_time": r.replies.as_dict() if r.replies else None})
                return d
            return {"by": "command", "rows": [cmd(r) for r in self.commands],
                    "total": cmd(self.command_total, key=False)}
        return {"by": self.by, "rows": [r.as_dict(self.by) for r in self.rows], "total": self.total.as_dict("")}

    def render(self, color: bool = False) -> str:
        paint = _painter(color)
        if self.by == "command":
            lines = _table_lines(self.commands + [self.command_total])
            lines[0] = paint("h", lines[0])
            return "\n".join(lines)
        from .render import rtt_text

        width = max([len(self.by), len("total")] + [len(r.name) for r in self.rows])
        head = (f"  {self.by:<{width}}{'conns':>7}{'messages':>10}{'bytes':>13}{'requests':>10}{'replies':>10}"
                f"{'errno':>7}{'p50':>10}{'p99':>10}{'max':>10}{'errors':>8}{'warnings':>10}{'notes':>7}")
        lines = [paint("h", head)]
        for r in self.rows + [self.total]:
            times = ("".join(f"{rtt_text(v):>10}" for v in (r.rtt.p50, r.rtt.p99, r.rtt.max)) if r.rtt
                     else f"{'—':>10}" * 3)
            sev = dict(r.findings)
            counts = "".join(f"{paint(s, f'{sev[s]:>{w}}') if sev[s] else f'{0:>{w}}'}"
                             for s, w in (("error", 8), ("warning", 10), ("note", 7)))
            line = (f"  {r.name:<{width}}{r.connections:>7}{r.messages:>10}{r.bytes:>13}{r.requests:>10}"
                    f"{r.replies:>10}{r.error_replies:>7}{times}{counts}")
            lines.append(line)
        return "\n".join(lines)
