"""The analysis engine: events in, MessageRecords and Findings out (sans-io, no clocks).

Rule 1: ``feed`` never raises on peer input; every anomaly is a Finding.
Rule 2: time only comes from events; REPLY_TIMEOUT fires when an event (or a
        Tick) arrives later than a pending command's deadline.
Rule 3: requests pair with replies by (conn, requester direction, msg_id),
        oldest first, as QEMU does; server-initiated DMA commands therefore
        have their own id space.
Rule 4: a message a real implementation sends is not an error; where spec and
        implementations disagree the finding is a note saying whose way it is.

The bulk path builds no scapy packets: it unpacks the header and the fixed
fields of the layout with precompiled structs.
"""

from __future__ import annotations

import struct
from bisect import bisect_right, insort
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .. import spec
from ..spec import C2S, S2C
from . import capabilities
from .events import CaptureEnd, ConnClosed, ConnOpened, Event, FindingIn, MessageIn, NoteIn, RawIn, Tick, VerdictsIn
from .records import ConnRecord, Finding, Item, make_message_record
from . import findings

_HDR = spec.HEADER.unpack_from
_IRQ_MASKABLE = next(bit for bit, name in spec.IRQ_INFO_FLAGS.items() if name == "MASKABLE")
_UNMASKABLE_IRQS = frozenset(i for i, name in spec.PCI_IRQS.items() if name in ("ERR", "REQ"))
_FLAG_PCI = next(bit for bit, name in spec.DEVICE_INFO_FLAGS.items() if name == "PCI")
_FLAG_TYPE = spec.FLAG_TYPE_MASK
_SEV = {code: kind.severity for code, kind in findings.CATALOGUE.items()}
_NAMES = {code: info.name for code, info in spec.COMMANDS.items()}
_OTHER = {C2S: S2C, S2C: C2S}
_MSG_TYPES = ("command", "reply")
_FDS_MAX = {code: (info.request_fds[1], info.reply_fds[1]) for code, info in spec.COMMANDS.items()}


class _Decoder:
    """Fixed fields of one layout: a precompiled struct and the field names."""

    __slots__ = ("size", "unpack", "names")

    def __init__(self, layout: spec.Layout) -> None:
        st = struct.Struct(layout.fmt)
        self.size = st.size
        self.unpack = st.unpack_from
        self.names = tuple(f.name for f in layout.fields)


_DECODERS = {key: _Decoder(lay) for key, lay in spec.LAYOUTS.items()}
# (command, is_reply) -> decoder
_LAYOUT_OF: dict[tuple[int, bool], _Decoder] = {}
for _code, _info in spec.COMMANDS.items():
    if _info.request_layout:
        _LAYOUT_OF[(_code, False)] = _DECODERS[_info.request_layout]
    if _info.reply_layout:
        _LAYOUT_OF[(_code, True)] = _DECODERS[_info.reply_layout]


def _device_info_oddities(flags: int, num_regions: int, num_irqs: int) -> list[str]:
    """What in a GET_INFO reply the spec does not expect of a PCI device or QEMU refuses (G4)."""
    odd = []
    if not flags & _FLAG_PCI:
        odd.append("no PCI flag")
    if num_regions < spec.PCI_MIN_REGIONS:
        odd.append(f"{num_regions} regions, below {spec.PCI_MIN_REGIONS}")
    if num_regions > spec.QEMU_MAX_REGIONS:
        odd.append(f"{num_regions} regions, above QEMU's {spec.QEMU_MAX_REGIONS}")
    if num_irqs > spec.QEMU_MAX_IRQS:
        odd.append(f"{num_irqs} IRQ types, above QEMU's {spec.QEMU_MAX_IRQS}")
    return odd


@dataclass(frozen=True, slots=True)
class AnalyzerConfig:
    timeout: float = spec.DEFAULT_REPLY_TIMEOUT  # seconds; <= 0 disables REPLY_TIMEOUT


@dataclass(slots=True)
class _Pending:
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
    timed_out: bool = False


@dataclass(slots=True)
class _DmaMap:
    address: int
    size: int
    flags: int
    frame: int
    fd: bool


@dataclass(slots=True)
class _Conn:
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
    maps: dict[int, _DmaMap] = field(default_factory=dict)
    mig_state: int | None = None
    raw_dirs: set[str] = field(default_factory=set)
    closed_dirs: set[str] = field(default_factory=set)
    outstanding: dict[str, dict[int, _Pending]] = field(default_factory=lambda: {C2S: {}, S2C: {}})


class Analyzer:
    """Stateful engine shared by ``read``, ``stats``, the live proxy and the tests."""

    def __init__(self, config: AnalyzerConfig | None = None) -> None:
        self.config = config or AnalyzerConfig()
        self._conns: dict[int, _Conn] = {}
        self._pending: dict[tuple[int, str, int], deque[_Pending]] = {}
        self._deadlines: deque[_Pending] = deque()
        self._seq = 0
        self._last_ts = 0.0
        self._finished = False
        self._continued = False  # a rotated capture's part: its traffic goes on in the next file

    # ------------------------------------------------------------------ API
    def feed(self, ev: Event) -> list[Item]:
        if isinstance(ev, (FindingIn, VerdictsIn)):
            return []  # verdicts stored in the capture: the engine judges the traffic afresh
        out: list[Item] = []
        ts = ev.ts
        if self._deadlines and ts > self._last_ts:
            self._expire(ts, out)
        if ts > self._last_ts:
            self._last_ts = ts
        if isinstance(ev, MessageIn):
            self._message(ev, out)
        elif isinstance(ev, ConnOpened):
            c = self._conn(ev.conn)
            c.twin_of = ev.twin_of
            if ev.twin_of is not None:
                main = self._conn(ev.twin_of)
                main.twin_conn = ev.conn
                # limits negotiated on the main socket hold on its twin
                c.client_max_xfer, c.server_max_xfer = main.client_max_xfer, main.server_max_xfer
                c.maps_starts, c.maps = main.maps_starts, main.maps
                c.version_state = "negotiated"
            where = f" twin of #{ev.twin_of}" if ev.twin_of is not None else ""
            out.append(ConnRecord(ev.frame, ts, ev.conn, "open", f"{ev.socket_path}{where}"))
        elif isinstance(ev, ConnClosed):
            self._closed(ev, out)
        elif isinstance(ev, RawIn):
            self._raw(ev, out)
        elif isinstance(ev, NoteIn):
            codes: tuple[str, ...] = ()
            if ev.text.startswith(spec.NOTE_CONTINUED_PREFIX):
                self._continued = True
            if ev.text.startswith(spec.NOTE_CORRUPT_PREFIX):
                out.append(self._finding("CAPTURE_CORRUPT", ev.conn, (ev.frame,), ev.text, ts))
                codes = ("CAPTURE_CORRUPT",)
            out.append(ConnRecord(ev.frame, ts, ev.conn, "note", ev.text, ev.dir, codes))
        elif isinstance(ev, CaptureEnd):
            out.extend(self.finish(ts))
        elif isinstance(ev, Tick):
            pass
        return out

    def tick(self, ts: float) -> list[Item]:
        return self.feed(Tick(ts))

    def finish(self, ts: float | None = None) -> list[Item]:
        """The capture or session ended: commands still waiting get NO_REPLY."""
        if self._finished:
            return []
        self._finished = True
        out: list[Item] = []
        end = self._last_ts if ts is None else max(ts, self._last_ts)
        if self._deadlines:
            self._expire(end, out)
        for q in self._pending.values() if not self._continued else ():
            for p in q:
                if not p.answered and not p.no_reply and not p.timed_out:
                    out.append(self._finding(
                        "NO_REPLY", p.conn, (p.frame,),
                        f"{_NAMES.get(p.command, p.command)} id={p.msg_id} got no reply before the capture ended "
                        f"({end - p.ts:.3f} s)", end))
        return out

    # ------------------------------------------------------------ helpers
    def _conn(self, conn: int) -> _Conn:
        c = self._conns.get(conn)
        if c is None:
            c = self._conns[conn] = _Conn(conn)
        return c

    @staticmethod
    def _finding(code: str, conn: int, frames: tuple[int, ...], text: str, ts: float) -> Finding:
        return Finding(code, _SEV[code], conn, frames, text, ts)

    def _expire(self, now: float, out: list[Item]) -> None:
        timeout = self.config.timeout
        dl = self._deadlines
        while dl:
            p = dl[0]
            if p.answered:
                dl.popleft()
                continue
            if now - p.ts <= timeout:
                break
            dl.popleft()
            p.timed_out = True
            out.append(self._finding(
                "REPLY_TIMEOUT", p.conn, (p.frame,),
                f"{_NAMES.get(p.command, p.command)} id={p.msg_id} unanswered after {timeout:g} s", p.ts + timeout))

    def _closed(self, ev: ConnClosed, out: list[Item]) -> None:
        c = self._conn(ev.conn)
        if ev.dir is None:
            c.closed_dirs.update((C2S, S2C))
        else:
            c.closed_dirs.add(ev.dir)
        text = "closed" if ev.dir is None else f"{ev.dir} closed"
        out.append(ConnRecord(ev.frame, ev.ts, ev.conn, "close", text, ev.dir))
        if len(c.closed_dirs) == 2:
            for d in (C2S, S2C):
                for p in list(c.outstanding[d].values()):
                    if not p.no_reply and not p.timed_out:
                        out.append(self._finding(
                            "NO_REPLY", p.conn, (p.frame,),
                            f"{_NAMES.get(p.command, p.command)} id={p.msg_id} got no reply before the "
                            "connection closed", ev.ts))
                    p.answered = True
                    self._unpend(p)

    def _raw(self, ev: RawIn, out: list[Item]) -> None:
        c = self._conn(ev.conn)
        codes: tuple[str, ...] = ()
        if ev.dir not in c.raw_dirs:
            c.raw_dirs.add(ev.dir)
            why = f": {ev.note}" if ev.note else ""
            out.append(self._finding("FRAMING_LOST", ev.conn, (ev.frame,),
                                     f"{ev.dir} stream could not be framed{why}; relayed raw from here on", ev.ts))
            codes = ("FRAMING_LOST",)
        out.append(ConnRecord(ev.frame, ev.ts, ev.conn, "raw", f"{len(ev.data)} raw bytes", ev.dir, codes))

    @staticmethod
    def _framing_lost(c: _Conn, ev: MessageIn, size: int,
                      found: list[tuple[str, str, tuple[int, ...]]]) -> None:
        """A header the recorder could not frame: FRAMING_LOST here, and no command checks or reply wait."""
        why = "below 16" if size < 16 else "beyond what can be framed"
        if ev.dir not in c.raw_dirs:
            c.raw_dirs.add(ev.dir)
            found.append(("FRAMING_LOST", f"{ev.dir} stream could not be framed: header size {size} is {why}; "
                                          "relayed raw from here on", ()))

    def _unpend(self, p: _Pending) -> None:
        key = (p.conn, p.dir, p.msg_id)
        q = self._pending.get(key)
        if q is not None:
            try:
                q.remove(p)
            except ValueError:
                pass
            if not q:
                del self._pending[key]
        self._conns[p.conn].outstanding[p.dir].pop(p.seq, None)

    # ------------------------------------------------------------ messages
    def _message(self, ev: MessageIn, out: list[Item]) -> None:
        data = ev.data
        conn = ev.conn
        c = self._conns.get(conn)
        if c is None:
            c = self._conn(conn)
        ts = ev.ts
        d = ev.dir
        found: list[tuple[str, str, tuple[int, ...]]] = []  # (code, text, extra frames)
        n = len(data)
        if n < 16:
            found.append(("BAD_SIZE", f"message of {n} bytes is shorter than the 16-byte header", ()))
            self._emit(out, ev, c, 0, 0, 0, 0, 0, {}, None, None, found)
            return
        msg_id, cmd, size, flags, err = _HDR(data)
        wire = ev.msg_len if ev.msg_len >= 0 else n
        mtype = flags & _FLAG_TYPE
        is_reply = mtype == 1
        nfds = len(ev.fds)
        ev_flags = ev.flags
        # ---- header (7.1)
        if size != wire:
            if size < 16:
                found.append(("BAD_SIZE", f"size {size} is below the 16-byte header", ()))
            elif ev_flags & spec.VF_FRAMING_ERROR:
                pass  # the recorder did not wait for a body it could not frame: not an incomplete message
            elif size > wire:
                found.append(("MESSAGE_INCOMPLETE", f"size says {size} bytes, only {wire} arrived", ()))
            else:
                found.append(("BAD_SIZE", f"size says {size} bytes but the message is {wire}", ()))
        if size > spec.LVU_SERVER_MAX_MSG_SIZE:
            found.append(("MESSAGE_TOO_LARGE", f"size {size} exceeds libvfio-user's {spec.LVU_SERVER_MAX_MSG_SIZE}", ()))
        if flags & 0xFFFFFFCE:
            if mtype > 1:
                found.append(("BAD_TYPE", f"flags type {mtype} is neither command (0) nor reply (1)", ()))
            if flags & spec.FLAG_RESERVED_MASK:
                found.append(("RESERVED_FLAGS", f"reserved flag bits 0x{flags & spec.FLAG_RESERVED_MASK:x} set", ()))
        if ev_flags:
            if ev_flags & spec.VF_FRAMING_ERROR:
                self._framing_lost(c, ev, size, found)
                if mtype == 0:  # a server may still answer it (libvfio-user: EINVAL), but none is expected
                    self._track_request(c, ev, msg_id, cmd, flags, {}, found, expect_reply=False)
                self._emit(out, ev, c, msg_id, cmd, size, flags, err, {}, None, None, found)
                return
            if ev_flags & spec.VF_FDS_CTRUNC:
                found.append(("FDS_TRUNCATED", "the kernel truncated the passed fds (MSG_CTRUNC)", ()))
            if ev_flags & spec.VF_FDS_NOT_AT_MSG_START:
                found.append(("FDS_NOT_AT_MSG_START", "fds arrived after the first byte of the message", ()))
            if ev_flags & spec.VF_TRUNCATED:
                found.append(("CAPTURE_TRUNCATED", f"payload truncated to {n} of {wire} bytes by the recorder", ()))
        name = _NAMES.get(cmd)
        if name is None:
            found.append(("UNKNOWN_COMMAND", f"command {cmd} is not defined by the spec", ()))
        elif cmd == 14:
            found.append(("REMOVED_COMMAND", "DIRTY_PAGES (14) was removed from the spec in 2023", ()))
        plen = wire - 16
        fields: dict[str, Any] = {}
        dec = _LAYOUT_OF.get((cmd, is_reply))
        if dec is not None and not (is_reply and flags & spec.FLAG_ERROR) and n - 16 >= dec.size:
            fields = dict(zip(dec.names, dec.unpack(data, 16)))
        # ---- negotiation ordering (7.3)
        if c.version_state != "negotiated" and c.twin_of is None:
            self._version_order(c, d, cmd, is_reply, found)
        # ---- twin socket channels (7.9 T1)
        if c.twin_negotiated and mtype == 0 and d == S2C:
            found.append(("WRONG_CHANNEL", f"server {name or f'command {cmd}'} on the main socket: with a twin "
                          "socket negotiated, server commands go on the twin socket", ()))
        elif c.twin_of is not None and (mtype == 0 and d == C2S or is_reply and d == S2C):
            what = f"client {name or f'command {cmd}'} command" if mtype == 0 else "server reply"
            found.append(("WRONG_CHANNEL", f"{what} on the twin socket, which carries server commands and "
                          "their replies only", ()))
        request_frame: int | None = None
        rtt: float | None = None
        if mtype == 0:
            if flags & spec.FLAG_ERROR:
                found.append(("MISPLACED_FLAG", "Error flag set on a command", ()))
            if err:
                found.append(("ERROR_IN_COMMAND", f"error field {err} in a command (reserved, should be 0)", ()))
            info = spec.COMMANDS.get(cmd)
            if info is not None:
                if info.requester != d:
                    found.append(("WRONG_DIRECTION", f"{name} is sent by the "
                                  f"{'client' if info.requester == C2S else 'server'}, not the "
                                  f"{'client' if d == C2S else 'server'}", ()))
                if plen < info.request_min:
                    found.append(("PAYLOAD_TOO_SHORT", f"{name} request payload is {plen} bytes, "
                                  f"needs at least {info.request_min}", ()))
                elif cmd != 13 and plen == 0:
                    found.append(("PAYLOAD_TOO_SHORT", f"{name} request has no payload", ()))
                self._check_request(c, ev, cmd, fields, plen, nfds, found)
            elif nfds:
                found.append(("FDS_UNEXPECTED", f"{nfds} fds on an unknown command", ()))
            self._track_request(c, ev, msg_id, cmd, flags, fields, found)
        elif is_reply:
            if flags & spec.FLAG_NO_REPLY:
                found.append(("MISPLACED_FLAG", "No_reply flag set on a reply", ()))
            req = self._match_reply(c, ev, msg_id, cmd, found)
            if req is not None:
                request_frame = req.frame
                rtt = ts - req.ts
            if flags & spec.FLAG_ERROR:
                self._check_error_reply(c, cmd, err, plen, req, found)
            else:
                info = spec.COMMANDS.get(cmd)
                if info is not None and req is not None and req.command == cmd:
                    self._check_reply(c, ev, cmd, fields, plen, nfds, req, found)
                elif info is not None and plen < info.reply_min:
                    found.append(("PAYLOAD_TOO_SHORT", f"{name} reply payload is {plen} bytes, "
                                  f"needs at least {info.reply_min}", ()))
        self._emit(out, ev, c, msg_id, cmd, size, flags, err, fields, request_frame, rtt, found)

    def _emit(self, out: list[Item], ev: MessageIn, c: _Conn, msg_id: int, cmd: int, size: int, flags: int,
              err: int, fields: dict[str, Any], request_frame: int | None, rtt: float | None,
              found: list[tuple[str, str, tuple[int, ...]]]) -> None:
        mtype = flags & _FLAG_TYPE
        context = bool(ev.flags & spec.VF_CONTEXT)
        if context:  # judged in the file where it was traffic; here it only restores state
            found = []
        codes = tuple([code for code, _t, _x in found]) if found else ()
        wire = ev.msg_len if ev.msg_len >= 0 else len(ev.data)
        out.append(make_message_record(
            ev.frame, ev.ts, ev.conn, ev.dir, msg_id, cmd, _NAMES.get(cmd) or f"CMD_{cmd}",
            _MSG_TYPES[mtype] if mtype < 2 else f"type{mtype}",
            size, flags, err, wire, ev.fds, fields, request_frame, rtt, codes,
            bool(ev.flags & spec.VF_TRUNCATED), bool(flags & spec.FLAG_NO_REPLY), context))
        for code, text, extra in found:
            out.append(Finding(code, _SEV[code], ev.conn, (ev.frame,) + extra, text, ev.ts))

    # ------------------------------------------------------------ pairing (7.2)
    def _track_request(self, c: _Conn, ev: MessageIn, msg_id: int, cmd: int, flags: int,
                       fields: dict[str, Any], found: list[tuple[str, str, tuple[int, ...]]],
                       expect_reply: bool = True) -> None:
        key = (ev.conn, ev.dir, msg_id)
        q = self._pending.get(key)
        if q:
            older = q[-1]
            if not older.answered:
                found.append(("DUPLICATE_PENDING_ID", f"msg_id {msg_id} is still outstanding "
                              f"({_NAMES.get(older.command, older.command)} in frame {older.frame})",
                              (older.frame,)))
        elif q is None:
            q = self._pending[key] = deque()
        # T2: without a twin socket, a client command while a server DMA command waits
        if ev.dir == C2S and c.twin_conn is None and c.outstanding[S2C]:
            dma = next(iter(c.outstanding[S2C].values()))
            if not dma.no_reply:
                found.append(("DMA_COLLISION", f"client sent a command while server {_NAMES.get(dma.command)} "
                              f"id={dma.msg_id} (frame {dma.frame}) is unanswered: libvfio-user reads it as the "
                              "awaited reply", (dma.frame,)))
        self._seq += 1
        no_reply = bool(flags & spec.FLAG_NO_REPLY)
        p = _Pending(ev.frame, ev.ts, ev.conn, ev.dir, msg_id, cmd, no_reply, fields, self._seq)
        q.append(p)
        if not no_reply:
            c.outstanding[ev.dir][self._seq] = p
            if not expect_reply:
                p.timed_out = True  # pairs with a reply if one comes; no REPLY_TIMEOUT or NO_REPLY if none
            elif self.config.timeout > 0 and not ev.flags & spec.VF_CONTEXT:  # a copy's time ran in its own file
                self._deadlines.append(p)
        elif len(q) > 64:  # no_reply commands are kept only to spot replies to them
            q.popleft()

    def _match_reply(self, c: _Conn, ev: MessageIn, msg_id: int, cmd: int,
                     found: list[tuple[str, str, tuple[int, ...]]]) -> _Pending | None:
        key = (ev.conn, _OTHER[ev.dir], msg_id)
        q = self._pending.get(key)
        if not q:
            found.append(("UNMATCHED_REPLY", f"reply id={msg_id} matches no outstanding "
                          f"{'client' if ev.dir == S2C else 'server'} command", ()))
            return None
        req = None
        for p in q:
            if not p.no_reply:
                req = p
                break
        if req is None:
            nr = q[0]
            q.popleft()
            if not q:
                del self._pending[key]
            found.append(("REPLY_TO_NO_REPLY", f"reply to {_NAMES.get(nr.command, nr.command)} id={msg_id} "
                          f"(frame {nr.frame}) which was sent with No_reply", (nr.frame,)))
            return nr
        q.remove(req)
        if not q:
            del self._pending[key]
        req.answered = True
        outst = c.outstanding[req.dir]
        first_seq = next(iter(outst))
        outst.pop(req.seq, None)
        if first_seq != req.seq and c.twin_of is None:
            older = next(iter(outst.values()), None)
            if older is not None and older.seq < req.seq:
                found.append(("OUT_OF_ORDER_REPLY", f"answers frame {req.frame} before the older "
                              f"{_NAMES.get(older.command, older.command)} id={older.msg_id} (frame {older.frame})",
                              (req.frame, older.frame)))
        if req.command != cmd:
            found.append(("REPLY_COMMAND_MISMATCH", f"reply says {_NAMES.get(cmd, cmd)}, its request "
                          f"(frame {req.frame}) was {_NAMES.get(req.command, req.command)}", (req.frame,)))
        return req

    # ------------------------------------------------------------ negotiation (7.3)
    def _version_order(self, c: _Conn, d: str, cmd: int, is_reply: bool,
                       found: list[tuple[str, str, tuple[int, ...]]]) -> None:
        if d == C2S and not c.seen_c2s:
            c.seen_c2s = True
            if cmd != 1 or is_reply:
                found.append(("VERSION_NOT_FIRST", f"first client message is {_NAMES.get(cmd, cmd)}, not VERSION", ()))
                c.version_state = "failed"
                return
        if c.version_state == "failed":
            return
        if cmd != 1:
            found.append(("TRAFFIC_BEFORE_VERSION_REPLY",
                          f"{_NAMES.get(cmd, cmd)} before the VERSION reply", ()))

    def _check_version(self, c: _Conn, ev: MessageIn, is_reply: bool, fields: dict[str, Any],
                       found: list[tuple[str, str, tuple[int, ...]]]) -> dict[str, Any] | None:
        vd, problems = capabilities.parse_version_data(ev.data[20:])
        found.extend((code, text, ()) for code, text in problems)
        caps = vd.capabilities
        if caps is not None and not is_reply and isinstance(caps.get("twin_socket"), dict) \
                and "fd_index" in caps["twin_socket"]:
            found.append(("TWIN_SOCKET_BAD", "twin_socket.fd_index in a request (only valid in the reply)", ()))
        fields["capabilities"] = caps
        if vd.text is not None and vd.document is None:
            fields["version_data"] = vd.text
        return caps

    # ------------------------------------------------------------ request checks
    def _check_request(self, c: _Conn, ev: MessageIn, cmd: int, f: dict[str, Any], plen: int, nfds: int,
                       found: list[tuple[str, str, tuple[int, ...]]]) -> None:
        if cmd == 9 or cmd == 10:  # REGION_READ / REGION_WRITE
            if f:
                self._region_access(c, cmd, f, plen, found)
            if nfds:
                found.append(("FDS_UNEXPECTED", f"{nfds} fds on {_NAMES[cmd]}", ()))
            return
        fmax = _FDS_MAX[cmd][0]
        if fmax == 0 and nfds:
            found.append(("FDS_UNEXPECTED", f"{nfds} fds on a {_NAMES[cmd]} request, which carries none", ()))
        if cmd == 1:
            if c.version_state == "negotiated" and c.twin_of is None:
                found.append(("VERSION_REPEATED", "VERSION after the negotiation completed", ()))
            caps = self._check_version(c, ev, False, f, found)
            if c.version_state == "none":
                c.version_state = "requested"
                c.version_req = {"major": f.get("major"), "minor": f.get("minor"), "caps": caps,
                                 "frame": ev.frame}
                c.client_max_xfer = capabilities.cap(caps, "max_data_xfer_size", spec.DEFAULT_MAX_DATA_XFER_SIZE)
                c.client_max_fds = capabilities.cap(caps, "max_msg_fds", spec.DEFAULT_MAX_MSG_FDS)
        elif cmd == 2 and f:
            self._dma_map(c, ev, f, nfds, found)
        elif cmd == 3 and f:
            self._dma_unmap(c, f, found)
        elif cmd in (4, 5, 6, 7) and f:
            need = 32 if cmd == 5 else 16
            if f["argsz"] < need:
                found.append(("ARGSZ_TOO_SMALL", f"argsz {f['argsz']} is below the {need}-byte reply", ()))
            nonzero = [f"{k}=0x{v:x}" for k, v in f.items() if v and k not in ("argsz", "index")]
            if nonzero:
                found.append(("INPUT_NOT_ZERO", f"{', '.join(nonzero)} in the request (must be zero)", ()))
            if cmd in (5, 6) and c.num_regions is not None and f["index"] >= c.num_regions:
                found.append(("REGION_INDEX_INVALID", f"region {f['index']} but the device has {c.num_regions}", ()))
            if cmd == 7 and c.num_irqs is not None and f["index"] >= c.num_irqs:
                found.append(("IRQ_OUT_OF_RANGE", f"IRQ index {f['index']} but the device has {c.num_irqs}", ()))
        elif cmd == 8 and f:
            self._set_irqs(c, ev, f, plen, nfds, found)
        elif cmd == 11 or cmd == 12:
            if f:
                self._dma_access(c, cmd, f, plen, found)
        elif cmd == 16 and f:
            self._feature(c, ev, f, found)
        elif cmd == 17 or cmd == 18:
            if f:
                if f["size"] > c.client_max_xfer:
                    found.append(("DATA_BEYOND_MAX_XFER", f"size {f['size']} exceeds max_data_xfer_size "
                                  f"{c.client_max_xfer}", ()))
                if cmd == 18 and plen != 8 + f["size"]:
                    found.append(("DATA_LENGTH_MISMATCH", f"payload {plen} bytes, 8 + size would be {8 + f['size']}", ()))
                st = c.mig_state
                if st is not None:
                    ok = (st in (spec.MIG_STATE_PRE_COPY, spec.MIG_STATE_STOP_COPY)) if cmd == 17 \
                        else st == spec.MIG_STATE_RESUMING
                    if not ok:
                        found.append(("MIG_DATA_WRONG_STATE", f"{_NAMES[cmd]} in device state "
                                      f"{spec.MIG_STATES.get(st, st)}", ()))
        elif cmd == 15 and f:
            if plen != 8 + 24 * f["wr_cnt"]:
                found.append(("DATA_LENGTH_MISMATCH", f"payload {plen} bytes for wr_cnt {f['wr_cnt']} "
                              f"(8 + 24 x wr_cnt = {8 + 24 * f['wr_cnt']})", ()))

    def _region_access(self, c: _Conn, cmd: int, f: dict[str, Any], plen: int,
                       found: list[tuple[str, str, tuple[int, ...]]]) -> None:
        region = f["region"]
        count = f["count"]
        offset = f["offset"]
        if count > c.server_max_xfer:
            found.append(("DATA_BEYOND_MAX_XFER", f"count {count} exceeds the server's max_data_xfer_size "
                          f"{c.server_max_xfer}", ()))
        if cmd == 10 and plen != 16 + count:
            found.append(("DATA_LENGTH_MISMATCH", f"REGION_WRITE payload {plen} bytes, 16 + count = {16 + count}", ()))
        if count == 0:
            found.append(("ZERO_COUNT", "access of zero bytes (libvfio-user answers with an empty payload)", ()))
        if c.num_regions is not None and region >= c.num_regions:
            found.append(("REGION_INDEX_INVALID", f"region {region} but the device has {c.num_regions}", ()))
            return
        info = c.regions.get(region)
        if info is not None:
            rsize, rflags = info
            if offset + count > rsize:
                found.append(("REGION_ACCESS_OUT_OF_RANGE", f"{spec.PCI_REGIONS.get(region, region)} offset "
                              f"0x{offset:x} + count {count} is beyond its size 0x{rsize:x}", ()))
            need = spec.REGION_FLAG_READ if cmd == 9 else spec.REGION_FLAG_WRITE
            if not rflags & need:
                found.append(("REGION_ACCESS_NOT_PERMITTED", f"{'read' if cmd == 9 else 'write'} of "
                              f"{spec.PCI_REGIONS.get(region, region)}, whose flags lack "
                              f"{'READ' if cmd == 9 else 'WRITE'}", ()))

    def _dma_map(self, c: _Conn, ev: MessageIn, f: dict[str, Any], nfds: int,
                 found: list[tuple[str, str, tuple[int, ...]]]) -> None:
        argsz, flags, offset, address, size = f["argsz"], f["flags"], f["offset"], f["address"], f["size"]
        if argsz != 32:
            found.append(("DMA_MAP_BAD_ARGSZ", f"argsz {argsz}, the spec says 32", ()))
        if flags & ~spec.DMA_MAP_FLAGS_LVU:
            found.append(("DMA_MAP_FLAGS", f"flag bits 0x{flags & ~spec.DMA_MAP_FLAGS_LVU:x} are not defined", ()))
        if nfds > 1:
            found.append(("FDS_UNEXPECTED", f"{nfds} fds on DMA_MAP (at most 1; libvfio-user closes the rest)", ()))
        if flags & 0xC and not nfds:
            found.append(("FDS_MISSING", "MMAP/FILE_IO flag without an fd (libvfio-user: EINVAL)", ()))
        if size == 0 or address + size > 1 << 64:
            found.append(("DMA_MAP_DEGENERATE", f"range 0x{address:x}+0x{size:x} is empty or wraps", ()))
            return
        if offset and not nfds:
            found.append(("DMA_MAP_DEGENERATE", f"offset 0x{offset:x} without an fd", ()))
        pg = c.min_pgsize
        if address % pg or size % pg:
            found.append(("DMA_MAP_MISALIGNED", f"address 0x{address:x} / size 0x{size:x} not multiples of "
                          f"the page size 0x{pg:x}", ()))
        starts = c.maps_starts
        i = bisect_right(starts, address)
        clash = None
        if i and starts[i - 1] + c.maps[starts[i - 1]].size > address:
            clash = c.maps[starts[i - 1]]
        elif i < len(starts) and starts[i] < address + size:
            clash = c.maps[starts[i]]
        if clash is not None:
            same = clash.address == address and clash.size == size and clash.flags == flags
            if not same:
                found.append(("DMA_MAP_OVERLAP", f"0x{address:x}+0x{size:x} overlaps the mapping "
                              f"0x{clash.address:x}+0x{clash.size:x} (frame {clash.frame}); the spec wants EEXIST, "
                              "libvfio-user answers EINVAL", (clash.frame,)))
            return
        if len(starts) >= c.max_dma_maps:
            found.append(("DMA_MAPS_EXCEEDED", f"{len(starts) + 1} live mappings, max_dma_maps is {c.max_dma_maps}", ()))
        insort(starts, address)
        c.maps[address] = _DmaMap(address, size, flags, ev.frame, nfds > 0)

    def _dma_unmap(self, c: _Conn, f: dict[str, Any], found: list[tuple[str, str, tuple[int, ...]]]) -> None:
        flags, address, size = f["flags"], f["address"], f["size"]
        if flags:
            if flags == 2 and address == 0 and size == 0:
                found.append(("DMA_UNMAP_FLAGS", "unmap all (flag ALL, follows QEMU/libvfio-user; "
                              "the final spec leaves flags unused)", ()))
                c.maps_starts.clear()
                c.maps.clear()
                return
            found.append(("DMA_UNMAP_FLAGS", f"flags 0x{flags:x} ({_bits(flags, spec.DMA_UNMAP_FLAGS)}); "
                          "the final spec leaves them unused", ()))
        m = c.maps.get(address)
        if m is None or m.size != size:
            found.append(("DMA_UNMAP_UNKNOWN", f"0x{address:x}+0x{size:x} is not a live mapping", ()))
            return
        del c.maps[address]
        c.maps_starts.pop(bisect_right(c.maps_starts, address) - 1)

    def _dma_access(self, c: _Conn, cmd: int, f: dict[str, Any], plen: int,
                    found: list[tuple[str, str, tuple[int, ...]]]) -> None:
        address, count = f["address"], f["count"]
        if count > c.client_max_xfer:
            found.append(("DATA_BEYOND_MAX_XFER", f"count {count} exceeds the client's max_data_xfer_size "
                          f"{c.client_max_xfer}", ()))
        if cmd == 12 and plen != 16 + count:
            found.append(("DATA_LENGTH_MISMATCH", f"DMA_WRITE payload {plen} bytes, 16 + count = {16 + count}", ()))
        if count == 0:
            found.append(("ZERO_COUNT", "DMA access of zero bytes", ()))
            return
        starts = c.maps_starts
        i = bisect_right(starts, address)
        m = c.maps[starts[i - 1]] if i else None
        if m is None or address + count > m.address + m.size:
            found.append(("DMA_ACCESS_UNMAPPED", f"0x{address:x}+0x{count:x} is not inside one live DMA mapping", ()))
        elif cmd == 12 and not m.flags & 0x2:
            found.append(("DMA_WRITE_READ_ONLY", f"DMA_WRITE into the read-only mapping 0x{m.address:x} "
                          f"(frame {m.frame})", (m.frame,)))

    def _set_irqs(self, c: _Conn, ev: MessageIn, f: dict[str, Any], plen: int, nfds: int,
                  found: list[tuple[str, str, tuple[int, ...]]]) -> None:
        flags, index, start, count = f["flags"], f["index"], f["start"], f["count"]
        if f["argsz"] != plen:
            found.append(("SET_IRQS_BAD_ARGSZ", f"argsz {f['argsz']} but the payload is {plen} bytes"
                          + (" (below the 20-byte fixed part)" if f["argsz"] < 20 else ""), ()))
        data_bits = flags & spec.IRQ_SET_DATA_MASK
        act_bits = flags & spec.IRQ_SET_ACTION_MASK
        if bin(data_bits).count("1") != 1 or bin(act_bits).count("1") != 1 or flags & ~0x3F:
            found.append(("SET_IRQS_BAD_FLAGS", f"flags 0x{flags:x} ({_bits(flags, spec.IRQ_SET_FLAGS)}) need exactly "
                          "one DATA and one ACTION bit", ()))
        if data_bits == spec.IRQ_SET_DATA_EVENTFD:
            if nfds and nfds != count:
                code = "FDS_MISSING" if nfds < count else "FDS_UNEXPECTED"
                found.append((code, f"{nfds} eventfds for count {count} (0 de-assigns, else one per interrupt)", ()))
            if nfds > c.server_max_fds:
                found.append(("FDS_UNEXPECTED", f"{nfds} fds exceed the server's max_msg_fds {c.server_max_fds}", ()))
        elif nfds:
            found.append(("FDS_UNEXPECTED", f"{nfds} fds with {_bits(data_bits, spec.IRQ_SET_FLAGS)}", ()))
        if data_bits == spec.IRQ_SET_DATA_BOOL and plen != 20 + count:
            found.append(("DATA_LENGTH_MISMATCH", f"DATA_BOOL payload {plen} bytes, 20 + count = {20 + count}", ()))
        if act_bits in (spec.IRQ_SET_ACTION_MASK_BIT, spec.IRQ_SET_ACTION_UNMASK):
            what = f"{spec.IRQ_SET_FLAGS[act_bits]} on {spec.PCI_IRQS.get(index, index)}"
            info = c.irqs.get(index)
            if index in _UNMASKABLE_IRQS:
                found.append(("IRQ_NOT_MASKABLE", f"{what}: ERR and REQ interrupts cannot be masked", ()))
            elif info is not None and not info[1] & _IRQ_MASKABLE:
                found.append(("IRQ_NOT_MASKABLE", f"{what}, whose IRQ_INFO flags 0x{info[1]:x} lack MASKABLE", ()))
        if c.num_irqs is not None and index >= c.num_irqs:
            found.append(("IRQ_OUT_OF_RANGE", f"IRQ index {index} but the device has {c.num_irqs}", ()))
            return
        if count == 0:
            if start != 0 or flags != (spec.IRQ_SET_DATA_NONE | spec.IRQ_SET_ACTION_TRIGGER):
                found.append(("IRQ_OUT_OF_RANGE", "count 0 is only valid with start 0 and DATA_NONE|ACTION_TRIGGER", ()))
            return
        info = c.irqs.get(index)
        if info is not None and start + count > info[0]:
            found.append(("IRQ_OUT_OF_RANGE", f"{spec.PCI_IRQS.get(index, index)} start {start} + count {count} "
                          f"beyond its {info[0]} interrupts", ()))

    def _feature(self, c: _Conn, ev: MessageIn, f: dict[str, Any],
                 found: list[tuple[str, str, tuple[int, ...]]]) -> None:
        flags = f["flags"]
        feature = flags & spec.FEATURE_MASK
        ops = flags & (spec.FEATURE_GET | spec.FEATURE_SET | spec.FEATURE_PROBE)
        if not ops or (ops & spec.FEATURE_GET and ops & spec.FEATURE_SET and not ops & spec.FEATURE_PROBE) \
                or flags & ~(spec.FEATURE_MASK | 0x70000):
            found.append(("FEATURE_BAD_OPS", f"flags 0x{flags:x}: GET, SET and PROBE bits are inconsistent", ()))
        if feature not in spec.VFIO_USER_FEATURES:
            found.append(("FEATURE_UNKNOWN", f"feature {spec.FEATURES.get(feature, feature)} is not used by vfio-user", ()))
        if feature == spec.FEATURE_MIG_DEVICE_STATE and ops == spec.FEATURE_SET and len(ev.data) >= 28:
            state = struct.unpack_from("<I", ev.data, 24)[0]
            if state not in spec.MIG_STATES_SETTABLE:
                found.append(("MIG_STATE_INVALID", f"device state {spec.MIG_STATES.get(state, state)} cannot be "
                              "requested", ()))
            elif c.mig_state == spec.MIG_STATE_STOP_COPY and state == spec.MIG_STATE_PRE_COPY:
                found.append(("MIG_STATE_INVALID", "STOP_COPY -> PRE_COPY is forbidden", ()))
            f["device_state"] = state

    # ------------------------------------------------------------ replies
    def _check_error_reply(self, c: _Conn, cmd: int, err: int, plen: int, req: _Pending | None,
                           found: list[tuple[str, str, tuple[int, ...]]]) -> None:
        if err == 0:
            found.append(("ERROR_REPLY_NO_ERRNO", "error reply with errno 0", ()))
        else:
            found.append(("ERROR_REPLY", f"{_NAMES.get(cmd, cmd)} failed: {spec.errno_name(err)} ({err})", ()))
            if err > spec.MAX_ERRNO or err not in spec.ERRNO_NAMES:
                found.append(("UNKNOWN_ERRNO", f"errno {err} is unknown or above {spec.MAX_ERRNO}", ()))
        if plen > 0:
            found.append(("ERROR_REPLY_WITH_PAYLOAD", f"error reply with {plen} payload bytes "
                          "(libvfio-user's way for region accesses; the spec says header only)", ()))
        if req is None:
            return
        if cmd == 1 and c.twin_of is None:
            c.version_state = "failed"
            found.append(("VERSION_REFUSED", f"server refused VERSION: {spec.errno_name(err)}", ()))
        elif cmd == 2:  # the mapping was not made
            m = c.maps.get(req.fields.get("address", -1))
            if m is not None and m.frame == req.frame:
                del c.maps[m.address]
                c.maps_starts.pop(bisect_right(c.maps_starts, m.address) - 1)

    def _check_reply(self, c: _Conn, ev: MessageIn, cmd: int, f: dict[str, Any], plen: int, nfds: int,
                     req: _Pending, found: list[tuple[str, str, tuple[int, ...]]]) -> None:
        info = spec.COMMANDS[cmd]
        rq = req.fields
        if cmd == 9 or cmd == 10:
            if plen == 0 and rq.get("count") == 0:
                return  # libvfio-user answers count 0 with an empty payload
            if plen < 16 or not f:
                found.append(("PAYLOAD_TOO_SHORT", f"{_NAMES[cmd]} reply payload is {plen} bytes, needs 16", ()))
                return
            if rq and (f["offset"] != rq["offset"] or f["region"] != rq["region"]):
                found.append(("REPLY_ECHO_MISMATCH", f"reply region {f['region']} offset 0x{f['offset']:x}, request "
                              f"region {rq['region']} offset 0x{rq['offset']:x}", (req.frame,)))
            if cmd == 9:
                if rq and f["count"] > rq["count"]:
                    found.append(("REPLY_COUNT_TOO_BIG", f"reply count {f['count']} above the requested {rq['count']}",
                                  (req.frame,)))
                if plen != 16 + f["count"]:
                    found.append(("DATA_LENGTH_MISMATCH", f"REGION_READ reply payload {plen} bytes, 16 + count = "
                                  f"{16 + f['count']}", ()))
            elif rq and f["count"] != rq["count"]:
                found.append(("REPLY_ECHO_MISMATCH", f"reply count {f['count']}, request count {rq['count']}",
                              (req.frame,)))
            if nfds:
                found.append(("FDS_UNEXPECTED", f"{nfds} fds on a {_NAMES[cmd]} reply", ()))
            return
        fmax = info.reply_fds[1]
        if fmax == 0 and nfds:
            found.append(("FDS_UNEXPECTED", f"{nfds} fds on a {_NAMES[cmd]} reply, which carries none", ()))
        if plen < info.reply_min and not (cmd == 3 and plen == 0) and not (cmd == 12):
            found.append(("PAYLOAD_TOO_SHORT", f"{_NAMES[cmd]} reply payload is {plen} bytes, "
                          f"needs at least {info.reply_min}", ()))
            return
        if cmd == 1:
            self._version_reply(c, ev, f, nfds, req, found)
        elif cmd == 4 and f:
            c.num_regions, c.num_irqs = f["num_regions"], f["num_irqs"]
            odd = _device_info_oddities(f["flags"], f["num_regions"], f["num_irqs"])
            if odd:
                found.append(("DEVICE_INFO_UNUSUAL", "; ".join(odd), ()))
        elif cmd == 3 and f and rq:  # M11: the reply echoes the unmapped entry
            if f["address"] != rq.get("address") or f["size"] != rq.get("size"):
                found.append(("REPLY_ECHO_MISMATCH", f"DMA_UNMAP reply 0x{f['address']:x}+0x{f['size']:x}, request "
                              f"0x{rq['address']:x}+0x{rq['size']:x}", (req.frame,)))
        elif cmd == 5 and f:
            self._region_info_reply(c, ev, f, plen, nfds, rq, req, found)
        elif cmd == 6 and f:
            if rq and f["argsz"] > rq.get("argsz", 0):
                found.append(("REPLY_TRUNCATED", f"reply needs argsz {f['argsz']}, the request allowed "
                              f"{rq.get('argsz')}", (req.frame,)))
            elif f["count"] and not nfds:
                found.append(("FDS_MISSING", f"{f['count']} sub-regions but no fds", ()))
        elif cmd == 7 and f:
            c.irqs[f["index"]] = (f["count"], f["flags"])
        elif cmd == 11 and f:
            if rq and f["count"] != rq.get("count") and f["count"] & 0xFFFFFFFF == rq.get("count"):
                found.append(("DMA_LAYOUT_VARIANT", "DMA_READ reply in QEMU's layout (u32 count, data at +12)", ()))
            elif plen != 16 + f["count"]:
                found.append(("DATA_LENGTH_MISMATCH", f"DMA_READ reply payload {plen} bytes, 16 + count = "
                              f"{16 + f['count']}", ()))
            elif rq and (f["address"] != rq.get("address") or f["count"] != rq.get("count")):
                found.append(("REPLY_ECHO_MISMATCH", "DMA_READ reply does not echo address and count", (req.frame,)))
        elif cmd == 12:
            if plen == 16:
                found.append(("DMA_LAYOUT_VARIANT", "DMA_WRITE reply of 16 bytes (libvfio-user's layout; "
                              "the spec table says 12)", ()))
            elif plen == 0:
                found.append(("DMA_LAYOUT_VARIANT", "header-only DMA_WRITE reply (QEMU's layout)", ()))
            elif plen != 12:
                found.append(("DATA_LENGTH_MISMATCH", f"DMA_WRITE reply payload {plen} bytes", ()))
        elif cmd == 16 and f:
            if rq.get("device_state") is not None:
                c.mig_state = rq["device_state"]
        elif cmd == 17 and f:
            want = rq.get("size", 0)
            if f["size"] > want:
                found.append(("REPLY_COUNT_TOO_BIG", f"MIG_DATA_READ reply size {f['size']} above the requested "
                              f"{want}", (req.frame,)))

    def _version_reply(self, c: _Conn, ev: MessageIn, f: dict[str, Any], nfds: int, req: _Pending,
                       found: list[tuple[str, str, tuple[int, ...]]]) -> None:
        if c.twin_of is not None:
            return
        caps = self._check_version(c, ev, True, f, found)
        vr = c.version_req or {}
        ok = True
        if f.get("major") is not None and vr.get("major") is not None:  # absent in a truncated reply
            if f["major"] != vr["major"]:
                found.append(("VERSION_MAJOR_MISMATCH", f"server answered major {f['major']}, client proposed "
                              f"{vr['major']}", (req.frame,)))
                ok = False
            if f["minor"] > vr["minor"]:
                found.append(("VERSION_MINOR_TOO_HIGH", f"server answered minor {f['minor']}, above the proposed "
                              f"{vr['minor']}", (req.frame,)))
                ok = False
        req_caps = vr.get("caps")
        if caps is not None:
            extra = sorted(k for k in caps if not isinstance(req_caps, dict) or k not in req_caps)
            if extra:
                found.append(("CAPS_REPLY_NOT_SUBSET", f"reply has {', '.join(extra)} which the request lacked "
                              "(libvfio-user always sends its limits)", (req.frame,)))
        twin = caps.get("twin_socket") if isinstance(caps, dict) else None
        if isinstance(twin, dict) and twin.get("supported") is True:
            asked = isinstance(req_caps, dict) and isinstance(req_caps.get("twin_socket"), dict) \
                and req_caps["twin_socket"].get("supported") is True
            idx = twin.get("fd_index")
            if not asked:
                found.append(("TWIN_SOCKET_BAD", "twin_socket.supported in the reply but the client did not ask", ()))
            elif not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < nfds:
                found.append(("TWIN_SOCKET_BAD", f"twin_socket.fd_index {idx!r} but the reply carries {nfds} fds", ()))
            elif ev.fds[idx].kind not in ("socket", "unknown"):
                found.append(("TWIN_SOCKET_BAD",
                              f"twin_socket.fd_index {idx} is not a socket (kind {ev.fds[idx].kind})", ()))
            else:
                c.twin_negotiated = True
        elif nfds:
            found.append(("FDS_UNEXPECTED", f"{nfds} fds on a VERSION reply without twin_socket", ()))
        c.version_state = "negotiated" if ok else "failed"
        c.server_max_xfer = capabilities.cap(caps, "max_data_xfer_size", spec.DEFAULT_MAX_DATA_XFER_SIZE)
        c.server_max_fds = capabilities.cap(caps, "max_msg_fds", spec.QEMU_DEFAULT_MAX_MSG_FDS)
        c.max_dma_maps = capabilities.cap(caps, "max_dma_maps", spec.DEFAULT_MAX_DMA_MAPS)
        pgs = capabilities.cap(caps, "pgsizes", spec.DEFAULT_PGSIZES)
        c.min_pgsize = pgs & -pgs if pgs else 4096

    def _region_info_reply(self, c: _Conn, ev: MessageIn, f: dict[str, Any], plen: int, nfds: int,
                           rq: dict[str, Any], req: _Pending, found: list[tuple[str, str, tuple[int, ...]]]) -> None:
        index, flags, argsz, size = f["index"], f["flags"], f["argsz"], f["size"]
        if rq and index != rq.get("index"):
            found.append(("REPLY_ECHO_MISMATCH", f"reply for region {index}, request asked for {rq.get('index')}",
                          (req.frame,)))
        c.regions[index] = (size, flags)
        truncated = bool(rq) and argsz > rq.get("argsz", 0)
        if truncated:
            found.append(("REPLY_TRUNCATED", f"reply needs argsz {argsz}, the request allowed {rq.get('argsz')}; "
                          "the client retries with more", (req.frame,)))
        if nfds > 1:
            found.append(("FDS_UNEXPECTED", f"{nfds} fds on a region info reply (at most 1)", ()))
        if flags & spec.REGION_FLAG_MMAP and not nfds and not truncated:
            found.append(("FDS_MISSING", f"{spec.PCI_REGIONS.get(index, index)} is MMAP but the reply has no fd", ()))
        if flags & spec.REGION_FLAG_CAPS and not truncated:
            problem = _check_caps_chain(ev.data, 16, plen, f["cap_offset"], size)
            if problem:
                found.append(("REGION_CAPS_BAD", problem, ()))


def _bits(value: int, names: Any) -> str:
    parts = [n for bit, n in names.items() if value & bit]
    return "|".join(parts) if parts else "0"


def _check_caps_chain(data: bytes, base: int, plen: int, first: int, region_size: int) -> str | None:
    """Walk a region-info capability chain; a sentence on the first problem, else None."""
    off = first
    seen = 0
    prev = 0
    while off:
        if off < 32 or off + 8 > plen:
            return f"capability at offset {off} is outside the reply payload ({plen} bytes)"
        if off <= prev:
            return f"capability chain does not move forward (next {off} after {prev})"
        seen += 1
        if seen > 64:
            return "capability chain longer than 64 entries"
        if base + off + 8 > len(data):
            return None  # truncated capture: stop quietly
        cap_id, _ver, nxt = spec.REGION_CAP_HEADER.unpack_from(data, base + off)
        if cap_id not in spec.REGION_CAP_IDS:
            return f"unknown capability id {cap_id} at offset {off}"
        if cap_id == spec.REGION_CAP_SPARSE_MMAP and base + off + 16 <= len(data):
            nr = spec.SPARSE_MMAP_HEAD.unpack_from(data, base + off + 8)[0]
            if off + 16 + 16 * nr > plen:
                return f"sparse mmap cap with {nr} areas runs past the payload"
            for i in range(nr):
                p = base + off + 16 + 16 * i
                if p + 16 > len(data):
                    break
                a_off, a_size = spec.SPARSE_AREA.unpack_from(data, p)
                if a_off + a_size > region_size:
                    return f"sparse area {i} (0x{a_off:x}+0x{a_size:x}) lies outside the region (0x{region_size:x})"
        prev = off
        off = nxt
    return None
