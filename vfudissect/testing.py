"""A playbook for tests and users: hand-made exchanges in, records and findings out (builders from core/build.py).

    pb = Playbook()
    pb.handshake()                                   # frames 1-2: VERSION and its reply
    pb.c2s(region_read(msg_id=5, region=7, count=4))  # frame 3
    pb.s2c(reply(region_read(msg_id=6, region=7, count=4)))
    assert pb.codes() == [("UNMATCHED_REPLY", (4,))]
"""

from __future__ import annotations

from typing import Any, Iterable

from . import spec
from .core.analyzer import Analyzer, AnalyzerConfig
from .core.events import ConnClosed, ConnOpened, Event, FdInfo, MessageIn, RawIn, Tick
from .core.records import ConnRecord, Finding, Item, MessageRecord
from .core import findings
from .core.build import (  # noqa: F401  (the builders live in core/build.py; re-exported for tests and users)
    EVENTFD, LVU_CAPS, MEMFD, QEMU_CAPS, device_feature, device_reset, dma_map, dma_read, dma_read_reply, dma_unmap,
    dma_write, get_info, get_info_reply, handshake_steps, irq_info, irq_info_reply, layout, message, mig_data_read,
    mig_data_write, region_info, region_info_reply, region_read, region_read_reply, region_write, region_write_reply,
    reply, set_irqs, version, version_reply)


class Playbook:
    """Feeds hand-made events to an Analyzer, numbering frames like a capture would."""

    def __init__(self, timeout: float = 5.0, conn: int = 1, open_conn: bool = True) -> None:
        self.analyzer = Analyzer(AnalyzerConfig(timeout=timeout))
        self.conn = conn
        self.frame = 0
        self.ts = 1000.0
        self.items: list[Item] = []
        if open_conn:
            self.feed(ConnOpened(self.ts, conn, "/tmp/test.sock", frame=self._next()))

    def _next(self) -> int:
        self.frame += 1
        return self.frame

    def feed(self, ev: Event) -> list[Item]:
        out = self.analyzer.feed(ev)
        self.items.extend(out)
        return out

    def send(self, dir: str, data: bytes, fds: Iterable[FdInfo] = (), dt: float = 0.001, conn: int | None = None,
             msg_len: int = -1, flags: int = 0) -> int:
        """One message; returns its frame number."""
        self.ts += dt
        frame = self._next()
        self.feed(MessageIn(self.ts, self.conn if conn is None else conn, dir, data, tuple(fds), frame,
                            msg_len, flags))
        return frame

    def c2s(self, data: bytes, fds: Iterable[FdInfo] = (), dt: float = 0.001, **kw: Any) -> int:
        return self.send(spec.C2S, data, fds, dt, **kw)

    def s2c(self, data: bytes, fds: Iterable[FdInfo] = (), dt: float = 0.001, **kw: Any) -> int:
        return self.send(spec.S2C, data, fds, dt, **kw)

    def raw(self, dir: str, data: bytes, note: str = "") -> int:
        self.ts += 0.001
        frame = self._next()
        self.feed(RawIn(self.ts, self.conn, dir, data, (), frame, note))
        return frame

    def close(self, dir: str | None = None) -> int:
        self.ts += 0.001
        frame = self._next()
        self.feed(ConnClosed(self.ts, self.conn, dir, frame))
        return frame

    def wait(self, seconds: float) -> None:
        self.ts += seconds
        self.feed(Tick(self.ts))

    def finish(self) -> None:
        self.items.extend(self.analyzer.finish(self.ts))

    def handshake(self, caps: Any = QEMU_CAPS, reply_caps: Any = LVU_CAPS, device: bool = True) -> None:
        """The steps of :func:`handshake_steps`, fed in order."""
        for d, data in handshake_steps(caps, reply_caps, device):
            self.send(d, data)

    # ------------------------------------------------------------ views
    def findings(self) -> list[Finding]:
        return [it for it in self.items if isinstance(it, Finding)]

    def codes(self, min_severity: str = "note", ignore: Iterable[str] = ("CAPS_LEGACY_KEY",)) -> list[tuple[str, tuple[int, ...]]]:
        """(code, frames) of every finding at or above ``min_severity``, in order."""
        rank = findings.SEVERITY_RANK[min_severity]
        skip = set(ignore)
        return [(f.code, f.frames) for f in self.findings()
                if findings.SEVERITY_RANK[f.severity] >= rank and f.code not in skip]

    def records(self) -> list[MessageRecord]:
        return [it for it in self.items if isinstance(it, MessageRecord)]

    def record(self, frame: int) -> MessageRecord:
        for r in self.records():
            if r.frame == frame:
                return r
        raise KeyError(frame)

    def conn_records(self) -> list[ConnRecord]:
        return [it for it in self.items if isinstance(it, ConnRecord)]
