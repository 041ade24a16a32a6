"""Summary statistics over records and findings: response times, errors, fds, findings, per connection.

Constant memory whatever the capture's length: response times go into a
log-bucketed histogram (1 % relative precision) for p50/p99; min, max and mean
are exact.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from . import spec
from .core.records import ConnRecord, Finding, Item, MessageRecord
from .core import findings

_LOG_BASE = math.log(1.01)
_NS = 1e-9


class _Rtt:
    """Exact count/min/max/sum and a log histogram of response times (seconds)."""

    __slots__ = ("count", "total", "lo", "hi", "hist")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.lo = math.inf
        self.hi = 0.0
        self.hist: Counter[int] = Counter()

    def add(self, v: float) -> None:
        self.count += 1
        self.total += v
        if v < self.lo:
            self.lo = v
        if v > self.hi:
            self.hi = v
        self.hist[int(math.log(v) / _LOG_BASE) if v > _NS else -10**6] += 1

    def merge(self, o: "_Rtt") -> None:
        self.count += o.count
        self.total += o.total
        self.lo = min(self.lo, o.lo)
        self.hi = max(self.hi, o.hi)
        self.hist.update(o.hist)

    def quantile(self, q: float) -> float:
        if not self.count:
            return 0.0
        rank = q * (self.count - 1)
        seen = 0
        for b in sorted(self.hist):
            seen += self.hist[b]
            if seen > rank:
                if b == -10**6:
                    return 0.0
                return min(max(math.exp((b + 0.5) * _LOG_BASE), self.lo), self.hi)
        return self.hi

    def row(self) -> dict[str, float]:
        return {"count": self.count, "min": self.lo if self.count else 0.0,
                "mean": self.total / self.count if self.count else 0.0,
                "p50": self.quantile(0.5), "p99": self.quantile(0.99), "max": self.hi}


class _ConnStats:
    __slots__ = ("messages", "bytes", "commands", "rtt", "errors", "fds", "findings", "unanswered")

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0
        self.commands: Counter[str] = Counter()  # requests per command
        self.rtt: dict[str, _Rtt] = {}
        self.errors: Counter[str] = Counter()
        self.fds: Counter[str] = Counter()
        self.findings: Counter[str] = Counter()
        self.unanswered = 0


class Stats:
    """Accumulates items; renders a text summary or JSON."""

    def __init__(self) -> None:
        self._conns: dict[int, _ConnStats] = {}
        self.first_ts: float | None = None
        self.last_ts = 0.0
        self.severities: Counter[str] = Counter()
        self.connections = 0

    def _conn(self, conn: int) -> _ConnStats:
        cs = self._conns.get(conn)
        if cs is None:
            cs = self._conns[conn] = _ConnStats()
        return cs

    def add(self, it: Item) -> None:
        if isinstance(it, MessageRecord):
            if it.context:  # a copy from an earlier part of a rotated capture, counted there
                return
            cs = self._conns.get(it.conn) or self._conn(it.conn)
            cs.messages += 1
            cs.bytes += it.wire_len
            if it.ts:
                if self.first_ts is None:
                    self.first_ts = it.ts
                self.last_ts = it.ts
            if it.msg_type == "command":
                cs.commands[it.command_name] += 1
            elif it.rtt is not None:
                r = cs.rtt.get(it.command_name)
                if r is None:
                    r = cs.rtt[it.command_name] = _Rtt()
                r.add(it.rtt)
            if it.flags & 0x20 and it.msg_type == "reply":
                cs.errors[spec.errno_name(it.error)] += 1
            if it.fds:
                for fd in it.fds:
                    cs.fds[fd.kind] += 1
        elif isinstance(it, Finding):
            self._conn(it.conn).findings[it.code] += 1
            self.severities[it.severity] += 1
            if it.code in ("NO_REPLY", "REPLY_TIMEOUT"):
                self._conn(it.conn).unanswered += 1
        elif isinstance(it, ConnRecord) and it.kind == "open":
            self.connections += 1
            self._conn(it.conn)

    # ------------------------------------------------------------ views
    def _total(self) -> _ConnStats:
        tot = _ConnStats()
        for cs in self._conns.values():
            tot.messages += cs.messages
            tot.bytes += cs.bytes
            tot.commands.update(cs.commands)
            for name, r in cs.rtt.items():
                tot.rtt.setdefault(name, _Rtt()).merge(r)
            tot.errors.update(cs.errors)
            tot.fds.update(cs.fds)
            tot.findings.update(cs.findings)
            tot.unanswered += cs.unanswered
        return tot

    @property
    def messages(self) -> int:
        return sum(cs.messages for cs in self._conns.values())

    def to_json(self) -> dict[str, Any]:
        def one(cs: _ConnStats) -> dict[str, Any]:
            return {
                "messages": cs.messages, "bytes": cs.bytes, "requests": dict(cs.commands),
                "response_times": {k: v.row() for k, v in sorted(cs.rtt.items())},
                "errors": dict(cs.errors), "fds": dict(cs.fds), "findings": dict(cs.findings),
                "unanswered": cs.unanswered,
            }
        return {
            "connections": max(self.connections, len(self._conns)),
            "duration": (self.last_ts - self.first_ts) if self.first_ts is not None else 0.0,
            "overall": one(self._total()),
            "per_connection": {str(k): one(v) for k, v in sorted(self._conns.items())},
            "severities": dict(self.severities),
        }

    def render(self, color: bool = False, per_connection: bool = True) -> str:
        from .render import rtt_text

        def c(style: str, s: str) -> str:
            codes = {"h": "\033[1m", "error": "\033[1;31m", "warning": "\033[33m", "note": "\033[34m"}
            return f"{codes[style]}{s}\033[0m" if color else s

        def block(title: str, cs: _ConnStats) -> list[str]:
            lines = [c("h", title), f"  messages {cs.messages}, bytes {cs.bytes}"]
            if cs.rtt or cs.commands:
                lines.append(f"  {'command':<26}{'requests':>9}{'replies':>9}{'min':>10}{'mean':>10}{'p50':>10}"
                             f"{'p99':>10}{'max':>10}")
                for name in sorted(set(cs.commands) | set(cs.rtt), key=lambda n: -cs.commands.get(n, 0)):
                    r = cs.rtt.get(name)
                    if r is None or not r.count:
                        lines.append(f"  {name:<26}{cs.commands.get(name, 0):>9}{0:>9}")
                        continue
                    row = r.row()
                    lines.append(f"  {name:<26}{cs.commands.get(name, 0):>9}{r.count:>9}"
                                 + "".join(f"{rtt_text(row[k]):>10}" for k in ("min", "mean", "p50", "p99", "max")))
            if cs.errors:
                lines.append("  errors: " + ", ".join(f"{k} {v}" for k, v in cs.errors.most_common()))
            if cs.fds:
                lines.append("  fds: " + ", ".join(f"{k} {v}" for k, v in cs.fds.most_common()))
            if cs.findings:
                lines.append("  findings:")
                for code, n in sorted(cs.findings.items(), key=lambda kv: (-findings.SEVERITY_RANK[
                        findings.CATALOGUE[kv[0]].severity], kv[0])):
                    sev = findings.CATALOGUE[code].severity
                    lines.append(f"    {c(sev, f'{sev:<8}')}{code:<30}{n:>7}")
            return lines

        out: list[str] = []
        if per_connection and len(self._conns) > 1:
            for conn, cs in sorted(self._conns.items()):
                out += block(f"connection #{conn}", cs)
        tot = self._total()
        dur = (self.last_ts - self.first_ts) if self.first_ts is not None else 0.0
        out += block(f"overall: {max(self.connections, len(self._conns))} connection(s), {dur:.3f} s", tot)
        sev = ", ".join(f"{self.severities.get(s, 0)} {s}{'s' if self.severities.get(s, 0) != 1 else ''}"
                        for s in ("error", "warning", "note"))
        out.append(f"  {sev}")
        return "\n".join(out)
