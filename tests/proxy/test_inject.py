"""record --fault: each fault lands on the chosen message, is flagged INJECTED with the original kept (withheld), and the
engine's findings are the consequence one expects, none blaming a peer for what the proxy did."""

from __future__ import annotations

import os

import pytest

from tests.proxy_harness import Proxy
from vfudissect import spec
from vfudissect.capture.reader import open_capture
from vfudissect.core.analyzer import Analyzer, AnalyzerConfig
from vfudissect.core.events import MessageIn, NoteIn
from vfudissect.core.records import Finding, MessageRecord
from vfudissect.peers.client import Client, ReplyTimeout, VfuError
from vfudissect.peers.server import DeviceServer
from vfudissect.proxy.inject import Injector, parse

C = spec.Command


def _exchange(path: str) -> list[str]:
    """VERSION, DEVICE_GET_INFO, REGION_READ of config space, REGION_WRITE of BAR0's scratch register, DEVICE_RESET:
    what the client saw go wrong, in order."""
    seen = []
    with Client(path, timeout=2.0) as c:
        for step in (c.version, c.get_info, lambda: c.region_read(7, 0, 4), lambda: c.write32(0, 4, 7), c.reset):
            try:
                step()
            except (ReplyTimeout, VfuError, OSError, Exception) as exc:  # noqa: BLE001 - what the client saw
                seen.append(type(exc).__name__)
    return seen


def _run(sockdir: str, *faults: str, timeout: float = 0.4):  # type: ignore[no-untyped-def]
    srv = DeviceServer(os.path.join(sockdir, "dev.sock")).start()
    try:
        p = Proxy(sockdir, srv.path, timeout=timeout, faults=tuple(parse(f) for f in faults))
        try:
            seen = _exchange(p.path)
        finally:
            p.stop()
    finally:
        srv.stop()
    evs = list(open_capture(p.capture))
    an = Analyzer(AnalyzerConfig(timeout=timeout))
    items = [it for ev in evs for it in an.feed(ev)] + an.finish()
    recs = [it for it in items if isinstance(it, MessageRecord)]
    found = [it for it in items if isinstance(it, Finding)]
    return seen, evs, recs, found, p.relay.injected


def _one(recs: list[MessageRecord], fault: str) -> MessageRecord:
    got = [r for r in recs if r.fault == fault]
    assert len(got) == 1, [(r.frame, r.command_name, r.fault) for r in recs if r.fault]
    return got[0]


def test_a_delayed_reply_is_withheld_then_forwarded_late_and_its_request_times_out(sockdir: str) -> None:
    seen, evs, recs, found, fired = _run(sockdir, "delay,command=REGION_READ,nth=1,delay=0.6")
    assert seen == [] and fired == 1  # the client waited 1 s: it got it
    orig, late = _one(recs, "withheld"), _one(recs, "injected")
    assert orig.command == late.command == C.REGION_READ and orig.msg_type == late.msg_type == "reply"
    assert late.ts - orig.ts >= 0.55 and late.frame > orig.frame
    req = next(r for r in recs if r.command == C.REGION_READ and r.msg_type == "command")
    assert late.request_frame == req.frame  # the injected copy is what answered it
    assert [(f.code, f.frame) for f in found if f.code == "REPLY_TIMEOUT"] == [("REPLY_TIMEOUT", req.frame)]
    assert "withheld by the proxy" in next(f.text for f in found if f.code == "REPLY_TIMEOUT")
    notes = [e.text for e in evs if isinstance(e, NoteIn)]
    assert any(n.startswith("fault delay,command=REGION_READ,nth=1,delay=0.6 (server): REGION_READ reply id=")
               and n.endswith("withheld; 1 injected message forwarded instead") for n in notes), notes


def test_a_dropped_reply_leaves_its_request_waiting_and_says_why(sockdir: str) -> None:
    seen, evs, recs, found, fired = _run(sockdir, "drop,command=DEVICE_GET_INFO")
    assert seen[:1] == ["ReplyTimeout"] and fired == 1
    orig = _one(recs, "withheld")
    assert orig.command == C.DEVICE_GET_INFO and not any(r.fault == "injected" for r in recs)
    timeout = next(f for f in found if f.code == "REPLY_TIMEOUT")
    assert f"(the peer's reply, frame {orig.frame}, was withheld by the proxy: record --fault)" in timeout.text
    assert not any(f.frame == orig.frame for f in found)  # the withheld original is not judged


@pytest.mark.parametrize("fault, code", [
    ("duplicate,command=DEVICE_GET_INFO", "UNMATCHED_REPLY"),
    ("wrong_id,command=DEVICE_GET_INFO", "UNMATCHED_REPLY"),
    ("wrong_command,command=REGION_READ,kind=reply", "REPLY_COMMAND_MISMATCH"),
    ("patch_header,command=DEVICE_GET_INFO,header=flags=0x21/error=5", "ERROR_REPLY"),
    ("replace_payload,command=REGION_READ,kind=reply,data=0102", "PAYLOAD_TOO_SHORT"),
    ("bad_version,command=VERSION", "VERSION_MAJOR_MISMATCH"),
])
def test_a_changed_or_invented_message_is_judged_and_the_finding_says_the_proxy_made_it(sockdir: str, fault: str,
                                                                                        code: str) -> None:
    _seen, _evs, recs, found, fired = _run(sockdir, fault)
    assert fired == 1
    inj = _one(recs, "injected")
    on_it = {f.code: f.text for f in found if f.frame == inj.frame}
    assert "FAULT_INJECTED" in on_it and code in on_it, on_it
    assert on_it[code].endswith("(on a message the proxy injected)")
    if not fault.startswith("duplicate"):
        orig = _one(recs, "withheld")
        assert orig.frame < inj.frame and orig.command == (C.VERSION if "VERSION" in fault else orig.command)


def test_a_client_side_fault_changes_what_the_client_sends(sockdir: str) -> None:
    seen, _evs, recs, found, fired = _run(sockdir, "wrong_id,side=client,command=DEVICE_GET_INFO")
    assert fired == 1 and seen[:1] == ["ReplyTimeout"]  # the server answered the id it was given
    orig, inj = _one(recs, "withheld"), _one(recs, "injected")
    assert orig.dir == inj.dir == "c2s" and inj.msg_id == (orig.msg_id + 0x1000) & 0xFFFF
    reply = next(r for r in recs if r.request_frame == inj.frame)
    assert reply.msg_id == inj.msg_id and reply.fault == ""


def test_close_tears_the_connection_down_after_the_chosen_message(sockdir: str) -> None:
    seen, evs, recs, found, fired = _run(sockdir, "close,command=REGION_READ,kind=reply")
    assert fired == 1 and seen and seen[0] in ("ReplyTimeout", "PeerClosed", "ProtocolError", "ConnectionResetError")
    orig = _one(recs, "withheld")
    assert orig.command == C.REGION_READ
    notes = [e.text for e in evs if isinstance(e, NoteIn)]
    assert any("the proxy closed connection #1 (record --fault close)" in n for n in notes), notes
    assert not [r for r in recs if r.frame > orig.frame and r.fault != "withheld"]  # nothing relayed after it
    assert any(f.code == "NO_REPLY" and "withheld by the proxy" in f.text for f in found)


def test_nth_counts_per_connection_and_a_fault_that_never_matches_changes_nothing(sockdir: str) -> None:
    _seen, evs, recs, found, fired = _run(sockdir, "drop,command=DMA_UNMAP")
    assert fired == 0 and not any(r.fault for r in recs)
    assert not any(isinstance(e, MessageIn) and e.flags & (spec.VF_INJECTED | spec.VF_WITHHELD) for e in evs)


# ------------------------------------------------------------------ the plan alone
def _m(msg_id: int, cmd: int, reply: bool = True) -> bytes:
    return spec.HEADER.pack(msg_id, cmd, 16, spec.MSG_TYPE_REPLY if reply else 0, 0)


def test_the_plan_of_each_kind() -> None:
    inj = Injector("server", [parse("duplicate,command=DEVICE_RESET,nth=2")])
    assert inj.plan(_m(1, C.DEVICE_RESET), []) is None  # the first one goes as it is
    plan = inj.plan(_m(2, C.DEVICE_RESET), [])
    assert plan is not None and plan.original and [f.data for f in plan.forwards] == [_m(2, C.DEVICE_RESET)]
    assert inj.plan(_m(3, C.DEVICE_RESET), []) is None
    drop = Injector("server", [parse("drop")]).plan(_m(4, C.DEVICE_RESET), [7, 8])
    assert drop is not None and not drop.original and drop.forwards == () and drop.unused == (7, 8)
    assert drop.note == "fault drop (server): DEVICE_RESET reply id=4 not forwarded"
    delay = Injector("server", [parse("delay,delay=2.5")]).plan(_m(5, C.DEVICE_RESET), [9])
    assert delay is not None and delay.forwards[0].delay == 2.5 and delay.forwards[0].fds == (9,) and not delay.unused
    close = Injector("server", [parse("close")]).plan(_m(6, C.DEVICE_RESET), [])
    assert close is not None and close.close and close.forwards == ()


@pytest.mark.parametrize("text, says", [
    ("explode", "unknown fault action 'explode'"),
    ("drop,side=guest", "side='guest': client or server"),
    ("drop,command=NOPE", "command='NOPE' is not a vfio-user command"),
    ("delay,delay=-1", "delay=-1: seconds, 0 to 3600"),
    ("drop,nth", "fault option 'nth' is not KEY=VALUE"),
    ("patch_header,header=bogus=1", "header='bogus=1': FIELD=VALUE"),
])
def test_a_bad_fault_is_one_sentence(text: str, says: str) -> None:
    with pytest.raises(ValueError) as e:
        parse(text)
    assert says in str(e.value)
