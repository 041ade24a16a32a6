"""What the engine knows of each connection and of the requests in flight, and how messages change it (no judging).

The rules (``core/rules/``) read this state and judge; the analyzer calls the
transitions here after the rules of a message have run, so every rule sees
the state as it was before the message.  Rule 3 of the engine lives here:
requests pair with replies by (connection, requester direction, msg_id),
oldest first, as QEMU does, so server-initiated DMA commands have their own
id space.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .. import spec
from ..spec import C2S, S2C
from . import capabilities
from .events import MessageIn

OTHER = {C2S: S2C, S2C: C2S}
_FLAG_NO_REPLY, _VF_CONTEXT = spec.FLAG_NO_REPLY, spec.VF_CONTEXT
_NO_REPLY_KEPT = spec.NO_REPLY_KEPT  # no_reply commands are kept only to spot replies to them


@dataclass(slots=True)
class Pending:
    """A command waiting for its reply."""

    frame: int
    ts: float
    conn: int
    dir: str
    msg_id: int
    command: int
    no_reply: bool
    fields: dict[str, Any]
    seq: int
    answered: bool = False
    timed_out: bool = False  # its REPLY_TIMEOUT was raised (or none is expected): no NO_REPLY later
    withheld: int = 0  # frame of its reply that the proxy withheld (record --fault): the peer did answer


@dataclass(slots=True)
class DmaMap:
    """One live DMA mapping (DMA_MAP'd, not yet unmapped)."""

    address: int
    size: int
    flags: int
    frame: int
    fd: bool


@dataclass(slots=True)
class ConnState:
    """One connection (or twin socket): negotiation, device layout, DMA table, migration state, in-flight ids."""

    conn: int
    twin_of: int | None = None
    twin_conn: int | None = None  # a twin socket of this main connection exists
    version_state: str = "none"  # none | requested | negotiated | failed
    version_req: dict[str, Any] | None = None
    seen_c2s: bool = False
    client_max_xfer: int = spec.DEFAULT_MAX_DATA_XFER_SIZE
    server_max_xfer: int = spec.DEFAULT_MAX_DATA_XFER_SIZE
    client_max_fds: int = spec.QEMU_DEFAULT_MAX_MSG_FDS
    server_max_fds: int = spec.QEMU_DEFAULT_MAX_MSG_FDS
    max_dma_maps: int = spec.DEFAULT_MAX_DMA_MAPS
    min_pgsize: int = 4096
    twin_negotiated: bool = False
    num_regions: int | None = None
    num_irqs: int | None = None
    regions: dict[int, tuple[int, int]] = field(default_factory=dict)  # index -> (size, flags)
    irqs: dict[int, tuple[int, int]] = field(default_factory=dict)  # index -> (count, flags)
    maps_starts: list[int] = field(default_factory=list)  # sorted addresses
    maps: dict[int, DmaMap] = field(default_factory=dict)
    mig_state: int | None = None
    raw_dirs: set[str] = field(default_factory=set)
    fds_unseen: bool = False  # the capture cannot see fds on this connection (NOTE_FDS_UNSEEN_PREFIX)
    closed_dirs: set[str] = field(default_factory=set)
    outstanding: dict[str, dict[int, Pending]] = field(default_factory=lambda: {C2S: {}, S2C: {}})

    # ------------------------------------------------------------ the DMA map table
    def clash(self, address: int, size: int) -> DmaMap | None:
        """The live mapping that [address, address + size) overlaps, if any."""
        starts = self.maps_starts
        i = bisect_right(starts, address)
        if i and starts[i - 1] + self.maps[starts[i - 1]].size > address:
            return self.maps[starts[i - 1]]
        if i < len(starts) and starts[i] < address + size:
            return self.maps[starts[i]]
        return None

    def mapping_below(self, address: int) -> DmaMap | None:
        """The live mapping starting at or below ``address`` nearest to it (the one an access there hits)."""
        i = bisect_right(self.maps_starts, address)
        return self.maps[self.maps_starts[i - 1]] if i else None

    def add_map(self, m: DmaMap) -> None:
        insort(self.maps_starts, m.address)
        self.maps[m.address] = m

    def remove_map(self, address: int) -> None:
        del self.maps[address]
        self.maps_starts.pop(bisect_right(self.maps_starts, address) - 1)

    def clear_maps(self) -> None:
        self.maps_starts.clear()
        self.maps.clear()


class Match:
    """What pairing a reply found: its request (or None), whether that was sent with No_reply, and the older
    outstanding command it overtook (OUT_OF_ORDER)."""

    __slots__ = ("req", "to_no_reply", "overtook")

    def __init__(self, req: Pending | None, to_no_reply: bool = False, overtook: Pending | None = None) -> None:
        self.req, self.to_no_reply, self.overtook = req, to_no_reply, overtook


_UNMATCHED = Match(None)


class EngineState:
    """Every connection and every request in flight, across connections; time as the events tell it."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.conns: dict[int, ConnState] = {}
        self.pending: dict[tuple[int, str, int], deque[Pending]] = {}
        self.deadlines: deque[Pending] = deque()
        self.seq = 0
        self.last_ts = 0.0
        self.finished = False
        self.continued = False  # a rotated capture's part: its traffic goes on in the next file

    def conn(self, cid: int) -> ConnState:
        c = self.conns.get(cid)
        if c is None:
            c = self.conns[cid] = ConnState(cid)
        return c

    # ------------------------------------------------------------ connections
    def opened(self, cid: int, twin_of: int | None) -> ConnState:
        c = self.conn(cid)
        c.twin_of = twin_of
        if twin_of is not None:
            main = self.conn(twin_of)
            main.twin_conn = cid
            # limits negotiated on the main socket hold on its twin
            c.client_max_xfer, c.server_max_xfer = main.client_max_xfer, main.server_max_xfer
            c.maps_starts, c.maps = main.maps_starts, main.maps
            c.version_state = "negotiated"
        return c

    def closed(self, cid: int, d: str | None) -> list[Pending]:
        """A direction (or, with None, both) closed; once both are, the requests left unanswered (no longer
        pending), those that still expect a reply first in each direction's order."""
        c = self.conn(cid)
        c.closed_dirs.update((C2S, S2C) if d is None else (d,))
        if len(c.closed_dirs) < 2:
            return []
        left: list[Pending] = []
        for dd in (C2S, S2C):
            for p in list(c.outstanding[dd].values()):
                left.append(p)
                p.answered = True
                self.unpend(p)
        return left

    # ------------------------------------------------------------ pairing
    def older_pending(self, conn: int, d: str, msg_id: int) -> Pending | None:
        """The newest command still unanswered with this id (a reuse of it is DUPLICATE_PENDING_ID)."""
        q = self.pending.get((conn, d, msg_id))
        if q:
            older = q[-1]
            if not older.answered:
                return older
        return None

    def track(self, c: ConnState, ev: MessageIn, msg_id: int, cmd: int, flags: int, fields: dict[str, Any],
              expect_reply: bool = True) -> Pending:
        """A command goes out: it waits for its reply (with a deadline), unless sent with No_reply."""
        conn, d = ev.conn, ev.dir
        key = (conn, d, msg_id)
        pending = self.pending
        q = pending.get(key)
        if q is None:
            q = pending[key] = deque()
        self.seq = seq = self.seq + 1
        no_reply = flags & _FLAG_NO_REPLY != 0
        p = Pending(ev.frame, ev.ts, conn, d, msg_id, cmd, no_reply, fields, seq)
        q.append(p)
        if not no_reply:
            c.outstanding[d][seq] = p
            if not expect_reply:
                p.timed_out = True  # pairs with a reply if one comes; no REPLY_TIMEOUT or NO_REPLY if none
            elif self.timeout > 0 and not ev.flags & _VF_CONTEXT:  # a copy's time ran in its own file
                self.deadlines.append(p)
        elif len(q) > _NO_REPLY_KEPT:
            q.popleft()
        return p

    def match(self, c: ConnState, ev: MessageIn, msg_id: int) -> Match:
        """A reply comes in: the oldest outstanding command with its id in the other direction answers it."""
        key = (ev.conn, OTHER[ev.dir], msg_id)
        pending = self.pending
        q = pending.get(key)
        if not q:
            return _UNMATCHED
        req = q[0]
        if req.no_reply:
            req = next((p for p in q if not p.no_reply), None)
            if req is None:
                nr = q.popleft()
                if not q:
                    del pending[key]
                return Match(nr, to_no_reply=True)
            q.remove(req)
        else:
            q.popleft()
        if not q:
            del pending[key]
        req.answered = True
        outst = c.outstanding[req.dir]
        seq = req.seq
        first_seq = next(iter(outst))
        outst.pop(seq, None)
        if first_seq != seq and c.twin_of is None:
            older = next(iter(outst.values()), None)
            if older is not None and older.seq < req.seq:
                return Match(req, False, older)
        return Match(req)

    def withhold(self, ev: MessageIn, msg_id: int) -> Pending | None:
        """A reply the proxy withheld (record --fault): the command it answers, told so, still waits."""
        q = self.pending.get((ev.conn, OTHER[ev.dir], msg_id))
        req = next((p for p in q if not p.no_reply and not p.withheld), None) if q else None
        if req is not None:
            req.withheld = ev.frame
        return req

    def unpend(self, p: Pending) -> None:
        key = (p.conn, p.dir, p.msg_id)
        q = self.pending.get(key)
        if q is not None:
            try:
                q.remove(p)
            except ValueError:
                pass
            if not q:
                del self.pending[key]
        self.conns[p.conn].outstanding[p.dir].pop(p.seq, None)

    # ------------------------------------------------------------ time
    def expire(self, now: float) -> list[Pending]:
        """Commands whose deadline ``now`` has passed (each once), oldest first."""
        out: list[Pending] = []
        timeout = self.timeout
        dl = self.deadlines
        while dl:
            p = dl[0]
            if p.answered:
                dl.popleft()
                continue
            if now - p.ts <= timeout:
                break
            dl.popleft()
            p.timed_out = True
            out.append(p)
        return out

    def unanswered(self) -> list[Pending]:
        """At the end: every command still waiting that expects a reply (none in a part that continues)."""
        if self.continued:
            return []
        return [p for q in self.pending.values() for p in q
                if not p.answered and not p.no_reply and not p.timed_out]


# ---------------------------------------------------------------- transitions of one message
def version_order(c: ConnState, d: str, cmd: int, is_reply: bool) -> None:
    """Before negotiation: the client's first message decides whether VERSION came first."""
    if d == C2S and not c.seen_c2s:
        c.seen_c2s = True
        if cmd != spec.Command.VERSION or is_reply:
            c.version_state = "failed"


def version_requested(c: ConnState, fields: dict[str, Any], frame: int) -> None:
    if c.version_state == "none":
        caps = fields.get("capabilities")
        c.version_state = "requested"
        c.version_req = {"major": fields.get("major"), "minor": fields.get("minor"), "caps": caps, "frame": frame}
        c.client_max_xfer = capabilities.cap(caps, "max_data_xfer_size", spec.DEFAULT_MAX_DATA_XFER_SIZE)
        c.client_max_fds = capabilities.cap(caps, "max_msg_fds", spec.DEFAULT_MAX_MSG_FDS)


def version_answered(c: ConnState, fields: dict[str, Any], ok: bool, twin: bool) -> None:
    """The VERSION reply: negotiated (or failed), the server's limits, the twin socket."""
    caps = fields.get("capabilities")
    if twin:
        c.twin_negotiated = True
    c.version_state = "negotiated" if ok else "failed"
    c.server_max_xfer = capabilities.cap(caps, "max_data_xfer_size", spec.DEFAULT_MAX_DATA_XFER_SIZE)
    c.server_max_fds = capabilities.cap(caps, "max_msg_fds", spec.QEMU_DEFAULT_MAX_MSG_FDS)
    c.max_dma_maps = capabilities.cap(caps, "max_dma_maps", spec.DEFAULT_MAX_DMA_MAPS)
    pgs = capabilities.cap(caps, "pgsizes", spec.DEFAULT_PGSIZES)
    c.min_pgsize = pgs & -pgs if pgs else 4096
