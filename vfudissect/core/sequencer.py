"""Orders engine output for offline views: holds each request until its reply, timeout or end is known.

The engine reports a request the moment it sees it, before anyone knows its
reply.  ``read`` wants each request line to carry its ``response_frame`` and
every finding about it (REPLY_TIMEOUT, NO_REPLY come later), so this holds
records in frame order and releases the head once it is complete.  Memory
grows with outstanding requests (and what arrived behind them), not with the
capture.
"""

from __future__ import annotations

from collections import deque

from .records import ConnRecord, Finding, Item, MessageRecord

_CLOSING = frozenset({"REPLY_TIMEOUT", "NO_REPLY"})


class _Entry:
    __slots__ = ("item", "findings", "response_frame", "open", "push")

    def __init__(self, item: MessageRecord | ConnRecord, is_open: bool, push: int) -> None:
        self.item = item
        self.findings: list[Finding] = []
        self.response_frame: int | None = None
        self.open = is_open
        self.push = push  # the push that last touched it


class Sequencer:
    """push(items) -> items ready to show: each record followed by every finding about it.

    With ``hold`` (``read --stored``: a stored finding is a record of its own, read after the one it is about),
    an entry is released one push after it was complete, so the findings recorded right after it join it.
    """

    def __init__(self, hold: bool = False) -> None:
        self._queue: deque[_Entry] = deque()
        self._by_frame: dict[tuple[int, int], _Entry] = {}  # (conn, frame) -> queued entry
        self._hold = hold
        self._pushes = 0

    def push(self, items: list[Item]) -> list[Item]:
        self._pushes += 1
        n = self._pushes
        for it in items:
            if isinstance(it, MessageRecord):
                is_open = it.msg_type == "command" and not it.no_reply
                e = _Entry(it, is_open, n)
                self._queue.append(e)
                if it.frame:
                    self._by_frame[(it.conn, it.frame)] = e
                if it.request_frame is not None:
                    req = self._by_frame.get((it.conn, it.request_frame))
                    if req is not None and req.response_frame is None:  # still queued, even if timed out
                        req.response_frame = it.frame
                        req.open = False
                        req.push = n
            elif isinstance(it, Finding):
                e = self._by_frame.get((it.conn, it.frame)) if it.frames else None
                if e is None:
                    # about a record already shown (or none): emit in place
                    self._queue.append(_Entry(ConnRecord(0, it.ts, it.conn, "finding", it.text), False, n))
                    self._queue[-1].findings.append(it)
                    continue
                e.findings.append(it)
                if it.code in _CLOSING:
                    e.open = False
                    e.push = n
            else:
                e = _Entry(it, False, n)
                self._queue.append(e)
        return self._release()

    def flush(self) -> list[Item]:
        for e in self._queue:
            e.open = False
        self._hold = False
        return self._release()

    def _release(self) -> list[Item]:
        out: list[Item] = []
        q = self._queue
        held = self._pushes if self._hold else self._pushes + 1
        while q and not q[0].open and q[0].push < held:
            e = q.popleft()
            it = e.item
            if isinstance(it, MessageRecord):
                if it.frame:
                    self._by_frame.pop((it.conn, it.frame), None)
                extra = tuple(f.code for f in e.findings if f.code not in it.findings)
                if e.response_frame is not None or extra:
                    it = it._replace(response_frame=e.response_frame, findings=it.findings + extra)
                out.append(it)
            elif not (isinstance(it, ConnRecord) and it.kind == "finding"):
                out.append(it)
            out.extend(e.findings)
        return out
