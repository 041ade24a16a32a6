"""Stored verdicts against fresh ones: which findings a capture carries that the engine no longer raises, and back.

A capture written by vfudissect carries the findings its writer's engine
made (FINDING records).  ``read`` judges afresh; this tells, in one line,
when the two disagree: an older engine, another ``--timeout``, a capture
re-written by hand.  Findings are compared by what they say (code, severity,
connection, frames), not by their wording.  Memory stays small: stored and
fresh findings of the same traffic arrive close together and cancel out.
"""

from __future__ import annotations

from collections import Counter

from .events import FindingIn, VerdictsIn
from .records import Finding

Key = tuple[str, str, int, tuple[int, ...]]


class VerdictDiff:
    """Feed it the stored (FindingIn) and the fresh (Finding) findings of one capture, in any order."""

    def __init__(self) -> None:
        self.header: VerdictsIn | None = None
        self.stored = 0
        self.fresh = 0
        self._balance: Counter[Key] = Counter()

    def add_header(self, v: VerdictsIn) -> None:
        if self.header is None:
            self.header = v

    def add_stored(self, f: FindingIn) -> None:
        self.stored += 1
        self._move((f.code, f.severity, f.conn, tuple(f.frames)), 1)

    def add_fresh(self, f: Finding) -> None:
        self.fresh += 1
        self._move((f.code, f.severity, f.conn, tuple(f.frames)), -1)

    def _move(self, key: Key, d: int) -> None:
        b = self._balance
        v = b[key] + d
        if v:
            b[key] = v
        else:
            del b[key]

    @property
    def judged(self) -> bool:
        """The capture says it carries verdicts (a VERDICTS record)."""
        return self.header is not None

    def differs(self) -> bool:
        return bool(self._balance)

    def counts(self) -> tuple[int, int]:
        """(stored findings the engine does not raise now, fresh findings the capture does not carry)."""
        only_stored = sum(v for v in self._balance.values() if v > 0)
        only_fresh = -sum(v for v in self._balance.values() if v < 0)
        return only_stored, only_fresh

    def sentence(self, path: str, timeout: float) -> str:
        """One line saying how they differ (call when differs())."""
        h = self.header
        who = h.engine if h is not None and h.engine else "an unknown engine"
        then = f", --timeout {h.timeout:g}" if h is not None and h.timeout is not None else ""
        only_stored, only_fresh = self.counts()
        parts = []
        if only_stored:
            parts.append(f"{only_stored} stored finding(s) not raised now")
        if only_fresh:
            parts.append(f"{only_fresh} new")
        return (f"{path}: the findings stored in the capture ({who}{then}) differ from this analysis "
                f"(--timeout {timeout:g}): {', '.join(parts)}; `read --stored` shows the stored ones, "
                "`vfudissect annotate` rewrites them")


def stored_finding(f: FindingIn) -> Finding:
    """A stored verdict as the Finding the views show."""
    return Finding(f.code, f.severity, f.conn, tuple(f.frames), f.text, f.ts)
