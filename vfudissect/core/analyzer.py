"""The analysis engine: events in, MessageRecords and Findings out (sans-io, no clocks); it only dispatches.

Rule 1: ``feed`` never raises on peer input; every anomaly is a Finding.
Rule 2: time only comes from events; REPLY_TIMEOUT fires when an event (or a
        Tick) arrives later than a pending command's deadline.
Rule 3: requests pair with replies by (conn, requester direction, msg_id),
        oldest first, as QEMU does (core/state.py).
Rule 4: a message a real implementation sends is not an error; where spec and
        implementations disagree the finding is a note saying whose way it is.

The judging lives in ``core/rules/`` (one module per family), the state in
``core/state.py``; this module decodes each message's fixed fields with
precompiled structs (no scapy), runs the stages of ``rules/base.py`` in order
with the rules registered for the message's ``spec.Command``, applies each
stage's transitions after its rules, and turns what the rules said into
records and findings.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Callable

from .. import spec
from . import capabilities
from .events import (CaptureEnd, ConnClosed, ConnOpened, Event, FindingIn, IrqIn, MessageIn, NoteIn, RawIn, Tick,
                     VerdictsIn)
from .findings import SEVERITY
from .records import ConnRecord, Finding, Item, MessageRecord
from .rules import RULES, TRANSITIONS, Msg, header, pairing
from .rules.base import (CHANNEL, COMMAND, ERROR_REPLY, FRAMED, HEADER, ORDER, PAIRED, PAIRING, REPLY, REQUEST,
                         STAGES, TRACK)
from .state import ConnState, EngineState

_HDR = spec.HEADER.unpack_from
_FLAG_TYPE = spec.FLAG_TYPE_MASK
_FLAG_ERROR, _FLAG_NO_REPLY = spec.FLAG_ERROR, spec.FLAG_NO_REPLY
_VF_WITHHELD, _VF_FRAMING_ERROR, _VF_CONTEXT = spec.VF_WITHHELD, spec.VF_FRAMING_ERROR, spec.VF_CONTEXT
_VF_INJECTED, _VF_TRUNCATED = spec.VF_INJECTED, spec.VF_TRUNCATED
_MSG_TYPES = ("command", "reply")
_VERSION, _FEATURE = int(spec.Command.VERSION), int(spec.Command.DEVICE_FEATURE)
_REGION_READ, _REGION_WRITE = int(spec.Command.REGION_READ), int(spec.Command.REGION_WRITE)
_REGISTER_SIZES = frozenset({1, 2, 4, 8})  # a register access: its data is a number (fields["value"])
_U32 = struct.Struct("<I").unpack_from
_new_record = tuple.__new__
INLINE_EMIT = True  # the usual message's record built in _message itself (tests turn it off to compare)


class _Decoder:
    """Fixed fields of one layout: a precompiled struct, the field names, and ``fields(data)``, the dict of them;
    for a layout with a ``count`` (a region access), ``valued(data)``: the same dict with the data that follows
    as the little-endian number a register holds (``value``) when the access is of 1, 2, 4 or 8 bytes.

    Both are generated from the layout (one unpack into a dict display, as dataclasses generate __init__): a
    third of the cost of dict(zip(names, unpack(data, 16))), with the same keys in the same order."""

    __slots__ = ("size", "unpack", "names", "fields", "valued")

    def __init__(self, layout: spec.Layout) -> None:
        st = struct.Struct(layout.fmt)
        self.size = st.size
        self.unpack = st.unpack_from
        self.names = tuple(f.name for f in layout.fields)
        values = "".join(f"_{i}, " for i in range(len(self.names)))
        display = ", ".join(f"{name!r}: _{i}" for i, name in enumerate(self.names))
        ns: dict[str, Any] = {"unpack": st.unpack_from, "REGISTER": _REGISTER_SIZES, "from_bytes": int.from_bytes}
        code = f"def fields(data):\n    ({values}) = unpack(data, 16)\n    return {{{display}}}\n"
        if "count" in self.names:
            n, at = f"_{self.names.index('count')}", 16 + st.size
            code += (f"def valued(data):\n    ({values}) = unpack(data, 16)\n    d = {{{display}}}\n"
                     f"    if {n} in REGISTER and len(data) >= {at} + {n}:\n"
                     f"        d['value'] = from_bytes(data[{at}:{at} + {n}], 'little')\n    return d\n")
        exec(code, ns)
        self.fields: Callable[[bytes], dict[str, Any]] = ns["fields"]
        self.valued: Callable[[bytes], dict[str, Any]] = ns.get("valued", self.fields)


_DECODERS = {key: _Decoder(lay) for key, lay in spec.LAYOUTS.items()}
_LAYOUT_OF: dict[tuple[int, bool], _Decoder] = {}  # (command, is_reply) -> decoder
for _code, _info in spec.COMMANDS.items():
    if _info.request_layout:
        _LAYOUT_OF[(_code, False)] = _DECODERS[_info.request_layout]
    if _info.reply_layout:
        _LAYOUT_OF[(_code, True)] = _DECODERS[_info.reply_layout]

Step = Callable[[Msg], Any]


def _compile(registered: list, stage: str) -> tuple[dict[int, tuple[Step, ...]], tuple[Step, ...]]:
    """Per command code: the stage's steps in priority then registration order; and those for other codes."""
    entries = [(r.priority, i, r) for i, r in enumerate(registered) if r.stage == stage]
    entries.sort(key=lambda e: (e[0], e[1]))
    by_cmd = {code: tuple(r.fn for _p, _i, r in entries if r.applies(code)) for code in spec.COMMANDS}
    return by_cmd, tuple(r.fn for _p, _i, r in entries if not r.commands)  # codes the spec does not define


_RULES = {stage: _compile(RULES, stage) for stage in STAGES}
_TRANSITIONS = {stage: _compile(TRANSITIONS, stage) for stage in STAGES}


def _steps(code: int | None, *stages: str) -> tuple[Step, ...]:
    """The rules then the transitions of each stage, in order, for one command code (None: undefined codes)."""
    out: list[Step] = []
    for stage in stages:
        for by_cmd, other in (_RULES[stage], _TRANSITIONS[stage]):
            out.extend(other if code is None else by_cmd[code])
    return tuple(out)


class _Plan:
    """Everything the dispatcher needs for one (command code, message type), looked up once per message."""

    __slots__ = ("front", "decoder", "decode", "steps", "pairing", "paired", "paired_steps", "error", "error_steps",
                 "known", "extra", "version_reply_min")

    def __init__(self, code: int | None, mtype: int) -> None:
        known = code is not None
        self.known = known
        self.front = _steps(code, HEADER, FRAMED)
        self.decoder = dec = _LAYOUT_OF.get((code, mtype == 1)) if known else None
        # a register's value, with the fixed fields: the data of a write, and of a read's reply
        valued = (code == _REGION_WRITE and mtype == 0) or (code == _REGION_READ and mtype == 1)
        self.decode = None if dec is None else dec.valued if valued else dec.fields
        # needs more than its fixed fields decoded: VERSION's capabilities, a SET's device state
        self.extra = code in (_VERSION, _FEATURE) and mtype == 0
        self.steps: tuple[Step, ...] = ()
        if mtype == 0:
            self.steps = _steps(code, COMMAND, REQUEST, TRACK) if known else _steps(None, COMMAND, TRACK)
        elif mtype == 1:
            self.steps = _steps(code, REPLY)
        self.pairing = _steps(code, PAIRING)
        # stages a rule may stop: their rules and transitions apart
        self.paired = _RULES[PAIRED][0][code] if known else ()
        self.paired_steps = _TRANSITIONS[PAIRED][0][code] if known else ()
        self.error = _RULES[ERROR_REPLY][0][code] if known else _RULES[ERROR_REPLY][1]
        self.error_steps = _TRANSITIONS[ERROR_REPLY][0][code] if known else _TRANSITIONS[ERROR_REPLY][1]
        self.version_reply_min = spec.COMMANDS[_VERSION].reply_min if code == _VERSION and mtype == 1 else -1


_PLANS = {(code << 2) | mtype: _Plan(code, mtype) for code in spec.COMMANDS for mtype in (0, 1, 2)}
_UNDEFINED = {mtype: _Plan(None, mtype) for mtype in (0, 1, 2)}


def _run(stage: str, m: Msg) -> None:
    """A stage outside the plan (rare: before negotiation, on twin sockets, unframeable headers)."""
    by_cmd, other = _RULES[stage]
    tby_cmd, tother = _TRANSITIONS[stage]
    _stage(by_cmd.get(m.cmd, other), tby_cmd.get(m.cmd, tother), m)


def _stage(rules: tuple[Step, ...], steps: tuple[Step, ...], m: Msg) -> None:
    """A stage whose rules may stop it: the rules until one says stop, then (if none did) the transitions."""
    for rule in rules:
        if rule(m):
            return
    for step in steps:
        step(m)


@dataclass(frozen=True, slots=True)
class AnalyzerConfig:
    timeout: float = spec.DEFAULT_REPLY_TIMEOUT  # seconds; <= 0 disables REPLY_TIMEOUT


class Analyzer:
    """Stateful engine shared by ``read``, ``stats``, the live proxy and the tests."""

    def __init__(self, config: AnalyzerConfig | None = None) -> None:
        self.config = config or AnalyzerConfig()
        self.state = EngineState(self.config.timeout)

    # ------------------------------------------------------------------ API
    def feed(self, ev: Event) -> list[Item]:
        t = type(ev)
        if t is FindingIn or t is VerdictsIn:
            return []  # verdicts stored in the capture: the engine judges the traffic afresh
        st = self.state
        out: list[Item] = []
        ts = ev.ts
        if ts > st.last_ts:
            dl = st.deadlines
            while dl and dl[0].answered:  # answered: no deadline any more (expire() would drop them first)
                dl.popleft()
            if dl and ts - dl[0].ts > st.timeout:  # one is due: REPLY_TIMEOUT
                self._expire(ts, out)
            st.last_ts = ts
        if t is MessageIn:
            self._message(ev, out)  # type: ignore[arg-type]
        elif t is ConnOpened:
            st.opened(ev.conn, ev.twin_of)  # type: ignore[union-attr]
            where = f" twin of #{ev.twin_of}" if ev.twin_of is not None else ""  # type: ignore[union-attr]
            out.append(ConnRecord(ev.frame, ts, ev.conn, "open", f"{ev.socket_path}{where}"))  # type: ignore[union-attr]
        elif t is ConnClosed:
            self._closed(ev, out)  # type: ignore[arg-type]
        elif t is RawIn:
            self._raw(ev, out)  # type: ignore[arg-type]
        elif t is NoteIn:
            self._note(ev, out)  # type: ignore[arg-type]
        elif t is IrqIn:
            out.append(ConnRecord(ev.frame, ts, ev.conn, "irq", irq_text(ev), spec.S2C))  # type: ignore[arg-type]
        elif t is CaptureEnd:
            out.extend(self.finish(ts))
        return out

    def tick(self, ts: float) -> list[Item]:
        return self.feed(Tick(ts))

    def finish(self, ts: float | None = None) -> list[Item]:
        """The capture or session ended: commands still waiting get NO_REPLY."""
        st = self.state
        if st.finished:
            return []
        st.finished = True
        out: list[Item] = []
        end = st.last_ts if ts is None else max(ts, st.last_ts)
        if st.deadlines:
            self._expire(end, out)
        for p in st.unanswered():
            code, text = pairing.ended_unanswered(p, end)
            out.append(Finding(code, SEVERITY[code], p.conn, (p.frame,), text, end))
        return out

    # ------------------------------------------------------------ other events
    def _expire(self, now: float, out: list[Item]) -> None:
        timeout = self.config.timeout
        for p in self.state.expire(now):
            code, text = pairing.reply_timeout(p, timeout)
            out.append(Finding(code, SEVERITY[code], p.conn, (p.frame,), text, p.ts + timeout))

    def _closed(self, ev: ConnClosed, out: list[Item]) -> None:
        text = "closed" if ev.dir is None else f"{ev.dir} closed"
        left = self.state.closed(ev.conn, ev.dir)
        out.append(ConnRecord(ev.frame, ev.ts, ev.conn, "close", text, ev.dir))
        for p in left:
            said = pairing.closed_unanswered(p)
            if said is not None:
                out.append(Finding(said[0], SEVERITY[said[0]], p.conn, (p.frame,), said[1], ev.ts))

    def _raw(self, ev: RawIn, out: list[Item]) -> None:
        c = self.state.conn(ev.conn)
        said = header.raw_bytes(c, ev.dir, ev.note, ev.flags)
        codes: tuple[str, ...] = ()
        if said is not None:
            c.raw_dirs.add(ev.dir)
            out.append(Finding(said[0], SEVERITY[said[0]], ev.conn, (ev.frame,), said[1], ev.ts))
            codes = (said[0],)
        out.append(ConnRecord(ev.frame, ev.ts, ev.conn, "raw", f"{len(ev.data)} raw bytes", ev.dir, codes))

    def _note(self, ev: NoteIn, out: list[Item]) -> None:
        codes: tuple[str, ...] = ()
        if ev.text.startswith(spec.NOTE_CONTINUED_PREFIX):
            self.state.continued = True
        elif ev.text.startswith(spec.NOTE_FDS_UNSEEN_PREFIX):
            self.state.conn(ev.conn).fds_unseen = True
        said = header.corrupt_record(ev.text)
        if said is not None:
            out.append(Finding(said[0], SEVERITY[said[0]], ev.conn, (ev.frame,), said[1], ev.ts))
            codes = (said[0],)
        out.append(ConnRecord(ev.frame, ev.ts, ev.conn, "note", ev.text, ev.dir, codes))

    # ------------------------------------------------------------ messages
    def _message(self, ev: MessageIn, out: list[Item]) -> None:
        st = self.state
        data = ev.data
        c = st.conns.get(ev.conn) or st.conn(ev.conn)
        n = len(data)
        if n < 16:
            code, text = header.shorter_than_a_header(n)
            m = Msg(ev, c, st, 0, 0, 0, 0, 0)
            m.add(code, text)  # type: ignore[arg-type]
            self._emit(out, m, None, None)
            return
        msg_id, cmd, size, flags, err = _HDR(data)
        m = Msg(ev, c, st, msg_id, cmd, size, flags, err)
        mtype = m.mtype
        plan = _PLANS.get((cmd << 2) | (mtype if mtype < 2 else 2)) or _UNDEFINED[mtype if mtype < 2 else 2]
        fl = ev.flags
        if fl:
            if fl & _VF_WITHHELD:
                self._withheld(m, plan, out)
                return
            if fl & _VF_FRAMING_ERROR:
                _run(HEADER, m)
                self._unframeable(m, out)
                return
        for step in plan.front:
            step(m)
        dec = plan.decoder
        if dec is not None and not (mtype == 1 and flags & _FLAG_ERROR) and n - 16 >= dec.size:
            m.fields = plan.decode(data)
        if c.version_state != "negotiated" and c.twin_of is None:
            _run(ORDER, m)
        if c.twin_negotiated or c.twin_of is not None:
            _run(CHANNEL, m)
        request_frame: int | None = None
        rtt: float | None = None
        answers: int | None = None
        if mtype == 0:
            if plan.extra:
                self._decode_request(m)
            for step in plan.steps:
                step(m)
            st.track(c, ev, msg_id, cmd, flags, m.fields)
        elif mtype == 1:
            for step in plan.steps:
                step(m)
            m.match = match = st.match(c, ev, msg_id)
            req = m.req = match.req
            for step in plan.pairing:
                step(m)
            if req is not None:
                request_frame = req.frame
                rtt = ev.ts - req.ts
                answers = req.command
            if flags & _FLAG_ERROR:
                _stage(plan.error, plan.error_steps, m)
            elif plan.known and req is not None and req.command == cmd:
                if plan.version_reply_min >= 0 and c.twin_of is None and m.plen >= plan.version_reply_min:
                    self._decode_version(m)
                for rule in plan.paired:  # _stage(plan.paired, plan.paired_steps, m), inline: every paired reply
                    if rule(m):
                        break
                else:
                    for step in plan.paired_steps:
                        step(m)
            else:
                header.unpaired_reply_fixed_part(m)
        if fl & (_VF_CONTEXT | _VF_INJECTED) or m.found or not INLINE_EMIT:
            self._emit(out, m, request_frame, rtt, answers)
            return
        # what _emit() makes of a message with no finding, not a copy, not injected (nearly every one), without the
        # call (the tests compare the two on every capture, INLINE_EMIT off and on)
        out.append(_new_record(MessageRecord, (
            ev.frame, ev.ts, ev.conn, ev.dir, msg_id, cmd, m.name or f"CMD_{cmd}",
            _MSG_TYPES[mtype] if mtype < 2 else f"type{mtype}",
            size, flags, err, m.wire, ev.fds, m.fields or {}, request_frame, None, rtt, (),
            fl & _VF_TRUNCATED != 0, flags & _FLAG_NO_REPLY != 0, False, answers, "")))

    def _withheld(self, m: Msg, plan: Any, out: list[Item]) -> None:
        """A message the proxy did not forward as it was (record --fault): shown decoded, not judged, changing no
        state, except that the command a withheld reply answers is told its reply was withheld."""
        dec = plan.decoder
        if dec is not None and not (m.mtype == 1 and m.flags & spec.FLAG_ERROR) and len(m.ev.data) - 16 >= dec.size:
            m.fields = plan.decode(m.ev.data)  # a register's value too: shown as the forwarded one would be
        if m.mtype == 1:
            self.state.withhold(m.ev, m.msg_id)
        m.found = ()
        self._emit(out, m, None, None, fault="withheld")

    def _unframeable(self, m: Msg, out: list[Item]) -> None:
        """A header the recorder could not frame: FRAMING_LOST here, and no command checks or reply wait."""
        c, ev = m.c, m.ev
        said = header.unframeable_header(c, ev.dir, m.size)
        if said is not None:
            c.raw_dirs.add(ev.dir)
            m.add(said[0], said[1])  # type: ignore[arg-type]
        if m.mtype == 0:  # a server may still answer it (libvfio-user: EINVAL), but none is expected
            pairing.ids_in_flight(m)
            self.state.track(c, ev, m.msg_id, m.cmd, m.flags, {}, expect_reply=False)
        self._emit(out, m, None, None)

    @staticmethod
    def _decode_request(m: Msg) -> None:
        """What the rules need beyond the fixed fields: VERSION's capabilities, the device state a SET asks for."""
        cmd = m.cmd
        if cmd == _VERSION:
            Analyzer._decode_version(m)
        elif cmd == _FEATURE and m.fields:
            flags = m.fields["flags"]
            if (flags & spec.FEATURE_MASK == spec.FEATURE_MIG_DEVICE_STATE
                    and flags & (spec.FEATURE_GET | spec.FEATURE_SET | spec.FEATURE_PROBE) == spec.FEATURE_SET
                    and len(m.ev.data) >= 28):
                m.fields["device_state"] = _U32(m.ev.data, 24)[0]

    @staticmethod
    def _decode_version(m: Msg) -> None:
        vd, problems = capabilities.parse_version_data(m.ev.data[20:])
        m.caps, m.vdata = vd.capabilities, problems
        if not m.fields:
            m.fields = {}  # not the shared empty default
        m.fields["capabilities"] = vd.capabilities
        if vd.text is not None and vd.document is None:
            m.fields["version_data"] = vd.text

    @staticmethod
    def _emit(out: list[Item], m: Msg, request_frame: int | None, rtt: float | None,
              answers: int | None = None, fault: str = "") -> None:
        ev = m.ev
        evfl = ev.flags
        context = evfl & _VF_CONTEXT != 0
        found = () if context else m.found  # a copy is judged in the file where it was traffic
        if evfl & _VF_INJECTED:
            fault = "injected"
            found = [(code, text if code == "FAULT_INJECTED" else f"{text} (on a message the proxy injected)", extra)
                     for code, text, extra in found]
        codes = tuple([code for code, _t, _x in found]) if found else ()
        mtype, cmd = m.mtype, m.cmd
        out.append(_new_record(MessageRecord, (  # make_message_record()'s one step, without its call: every message
            ev.frame, ev.ts, ev.conn, ev.dir, m.msg_id, cmd, m.name or f"CMD_{cmd}",
            _MSG_TYPES[mtype] if mtype < 2 else f"type{mtype}",
            m.size, m.flags, m.err, m.wire, ev.fds, m.fields or {}, request_frame, None, rtt, codes,
            evfl & _VF_TRUNCATED != 0, m.flags & _FLAG_NO_REPLY != 0, context, answers, fault)))
        for code, text, extra in found:
            out.append(Finding(code, SEVERITY[code], ev.conn, (ev.frame,) + extra, text, ev.ts))


def irq_text(ev: IrqIn) -> str:
    """An interrupt as the views say it: ``MSI vector 1`` (``×3`` when the eventfd counted more than one)."""
    name = spec.PCI_IRQS.get(ev.index, f"IRQ index {ev.index}")
    return f"{name} vector {ev.vector}" + (f" ×{ev.count}" if ev.count != 1 else "")


__all__ = ["Analyzer", "AnalyzerConfig", "ConnState", "irq_text"]
