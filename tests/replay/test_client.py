"""replay client: a recorded session played against a fresh emulated server, as recorded and with each fault kind."""

from __future__ import annotations

import os
import struct

import pytest

from vfudissect import spec
from vfudissect.capture.reader import open_capture
from vfudissect.core.events import FdInfo, FindingIn, MessageIn
from vfudissect.peers.faults import Fault, Faults
from vfudissect.peers.server import DeviceServer
from vfudissect.replay import client as rc
from vfudissect.replay.client import ClientPlayer, Live, run
from vfudissect.replay.script import MAIN, Recorded, Script, load

C = spec.Command


def _replay(capture: str, sockdir: str, faults: Faults | None = None, timeout: float = 1.0) -> rc.Outcome:
    srv = DeviceServer(os.path.join(sockdir, "live.sock"), faults=faults).start()
    try:
        return run(load(capture), srv.path, os.path.join(sockdir, "replay.pcapng"), timeout=timeout)
    finally:
        srv.stop()


def _texts(out: rc.Outcome, code: str) -> list[str]:
    return [f.text for f in out.findings if f.code == code]


def test_a_clean_session_replays_as_recorded(recorded: dict[str, str], sockdir: str) -> None:
    out = _replay(recorded["clean"], sockdir)
    assert out.findings == [] and not out.diverged and not out.stopped
    script = load(recorded["clean"])
    assert out.tally.sent == len(script.sent_by("client"))
    assert out.tally.received == out.tally.compared == len(script.sent_by("server"))
    # the replay's capture holds the replay, judged like a recording: every message, no replay finding
    evs = list(open_capture(out.capture))
    assert sum(isinstance(e, MessageIn) for e in evs) == len(script.items)
    assert not [e for e in evs if isinstance(e, FindingIn) and e.code.startswith("REPLAY_")]


def test_a_twin_socket_session_replays_as_recorded(recorded: dict[str, str], sockdir: str) -> None:
    script = load(recorded["twin"])
    assert script.twin and any(r.channel == "twin" for r in script.items)
    out = _replay(recorded["twin"], sockdir)
    assert out.findings == [] and out.tally.received == len(script.sent_by("server"))
    conns = {e.conn for e in open_capture(out.capture) if isinstance(e, MessageIn)}
    assert conns == {1, 2}  # the server's DMA commands came on the twin socket the live server gave


@pytest.mark.parametrize("fault, code, says", [
    (Fault("delay", command=C.REGION_READ, nth=3, delay=1.6), "REPLAY_NO_REPLY",
     "no reply to REGION_READ command"),
    (Fault("drop", command=C.DEVICE_GET_INFO), "REPLAY_NO_REPLY", "no reply to DEVICE_GET_INFO command"),
    (Fault("duplicate", command=C.DEVICE_GET_IRQ_INFO, nth=2), "REPLAY_EXTRA",
     "DEVICE_GET_IRQ_INFO reply (id 15) answers no request"),
    (Fault("wrong_id", command=C.DMA_MAP, nth=1), "REPLAY_EXTRA", "DMA_MAP reply (id 4097) answers no request"),
    (Fault("wrong_command", command=C.REGION_READ, nth=2), "REPLAY_DIFFERS",
     'command "REGION_READ" recorded, "DEVICE_GET_INFO" now'),
    (Fault("patch_header", command=C.DEVICE_GET_INFO, header={"flags": spec.MSG_TYPE_REPLY | spec.FLAG_ERROR, "error": 5}), "REPLAY_DIFFERS",
     'DEVICE_GET_INFO reply differs from recorded frame 11: error "none" recorded, "EIO'),
    (Fault("replace_payload", command=C.REGION_READ, nth=1, data=bytes(16) + b"\1\2\3\4"), "REPLAY_DIFFERS",
     "REGION_READ reply differs from recorded frame 48: size 0x120 recorded, 0x24 now; region 7 recorded, 0 now"),
    (Fault("close", command=C.REGION_WRITE, nth=3), "REPLAY_CLOSED", "the server closed the connection after 30 of"),
    (Fault("extra_fd", command=C.DMA_UNMAP, kind="reply"), "REPLAY_DIFFERS", "fds 0 recorded, 1 now"),
    (Fault("missing_fd", command=C.DEVICE_GET_REGION_INFO, kind="reply", nth=3), "REPLAY_DIFFERS",
     "DEVICE_GET_REGION_INFO reply differs from recorded frame 18: fds 1 recorded, 0 now"),
    (Fault("bad_version", command=C.VERSION), "REPLAY_DIFFERS", "major 0 recorded, 1 now"),
    (Fault("caps_bad_value", command=C.VERSION), "REPLAY_DIFFERS",
     "json.capabilities.max_data_xfer_size 1048576 recorded, \"lots\" now"),
])
def test_each_fault_of_the_server_is_named_with_its_message_and_field(recorded: dict[str, str], sockdir: str,
                                                                      fault: Fault, code: str, says: str) -> None:
    out = _replay(recorded["clean"], sockdir, Faults(fault))
    assert out.diverged
    texts = _texts(out, code)
    assert any(says in t for t in texts), [f"{f.code}: {f.text}" for f in out.findings]
    # every replay finding is in the replay's capture, pointing at a live frame of it
    stored = [e for e in open_capture(out.capture) if isinstance(e, FindingIn) and e.code.startswith("REPLAY_")]
    assert [(e.code, e.text) for e in stored] == [(f.code, f.text) for f in out.findings]


def test_the_live_servers_interrupts_are_recorded_and_counted(recorded: dict[str, str], sockdir: str) -> None:
    script = load(recorded["irqs"])
    assert [(i.index, i.vector) for i in script.irqs] == [(0, 0), (1, 1)]
    assert all(script.items[i.after].command == C.REGION_WRITE for i in script.irqs)  # after the doorbell writes
    out = _replay(recorded["irqs"], sockdir)
    assert out.findings == []
    irqs = [e for e in open_capture(out.capture) if type(e).__name__ == "IrqIn"]
    assert [(e.index, e.vector) for e in irqs] == [(0, 0), (1, 1)]


def test_interrupts_that_did_not_come_are_missing() -> None:
    from vfudissect.replay.script import RecordedIrq

    s = _script(("c2s", _msg(1, C.DEVICE_RESET), 0.0), ("s2c", _msg(1, C.DEVICE_RESET, True), 0.1))
    s = Script(s.path, s.conn, None, "", s.items, s.reply_of, s.request_of,
               irqs=(RecordedIrq(9, 0.05, 1, 1, 1, 0), RecordedIrq(10, 0.06, 1, 1, 1, 0)))
    p = ClientPlayer(s)
    seen = rc._Irqs()
    seen.seen[(1, 1)] = 1
    seen.seen[(0, 0)] = 1
    got: list = []
    rc._compare_irqs(p, seen, got.append)
    assert [(d.code, d.text) for d in got] == [
        ("REPLAY_EXTRA", "the live server raised INTX vector 0 1 time(s), the recorded one 0"),
        ("REPLAY_MISSING", "the recorded server raised MSI vector 1 2 time(s), the live one 1")]


def test_a_server_that_is_not_there_is_one_line(recorded: dict[str, str], sockdir: str) -> None:
    with pytest.raises(rc.ReplayFailed, match=r"cannot connect to .*nope.sock: no such socket"):
        run(load(recorded["clean"]), os.path.join(sockdir, "nope.sock"), os.path.join(sockdir, "r.pcapng"))
    assert not os.path.exists(os.path.join(sockdir, "r.pcapng"))  # nothing written before the server is there


# ------------------------------------------------------------------ the player alone (no sockets)
def _msg(msg_id: int, cmd: int, reply: bool = False, payload: bytes = b"") -> bytes:
    return spec.HEADER.pack(msg_id, cmd, 16 + len(payload), spec.MSG_TYPE_REPLY if reply else 0, 0) + payload


def _script(*steps: tuple[str, bytes, float]) -> Script:
    items = []
    for i, (d, data, ts) in enumerate(steps):
        mid, cmd, _s, fl, err = spec.HEADER.unpack_from(data)
        items.append(Recorded(i, i + 3, ts, MAIN, d, data, (), mid, cmd, fl, err))
    reply_of, request_of = {}, {}
    for r in items:
        if r.is_reply:
            req = next(q for q in items if not q.is_reply and q.msg_id == r.msg_id and q.dir != r.dir
                       and q.index < r.index and q.index not in reply_of)
            reply_of[req.index], request_of[r.index] = r.index, req.index
    return Script("t.pcapng", 1, None, "", tuple(items), reply_of, request_of)


MAP = struct.pack("<IIQQQ", 32, 3, 0, 0, 0x1000)


def test_pipelined_requests_go_together_and_the_next_waits_for_what_preceded_it() -> None:
    s = _script(("c2s", _msg(1, C.DMA_MAP, payload=MAP), 0.0), ("c2s", _msg(2, C.DMA_MAP, payload=MAP), 0.0),
                ("s2c", _msg(1, C.DMA_MAP, True), 0.1), ("s2c", _msg(2, C.DMA_MAP, True), 0.1),
                ("c2s", _msg(3, C.DEVICE_GET_INFO), 0.2), ("s2c", _msg(3, C.DEVICE_GET_INFO, True), 0.3))
    p = ClientPlayer(s, timeout=1.0)
    first = p.ready(10.0)
    assert [x.recorded.msg_id for x in first] == [1, 2]  # type: ignore[union-attr]
    for i, x in enumerate(first):
        p.sent(x, 10 + i, 10.0)
    assert p.ready(10.0) == []  # GET_INFO waits for both DMA_MAP replies
    assert p.received(Live(MAIN, _msg(1, C.DMA_MAP, True), (), 12, 10.1), 10.1) == ([], [])
    assert p.ready(10.1) == []
    p.received(Live(MAIN, _msg(2, C.DMA_MAP, True), (), 13, 10.1), 10.1)
    assert [x.recorded.msg_id for x in p.ready(10.1)] == [3]  # type: ignore[union-attr]


def test_recorded_pace_keeps_the_recorded_gaps() -> None:
    s = _script(("c2s", _msg(1, C.DEVICE_RESET), 100.0), ("s2c", _msg(1, C.DEVICE_RESET, True), 100.1),
                ("c2s", _msg(2, C.DEVICE_RESET), 102.0))
    p = ClientPlayer(s, timeout=9.0, pace=True)
    p.sent(p.ready(0.0)[0], 3, 0.0)
    p.received(Live(MAIN, _msg(1, C.DEVICE_RESET, True), (), 4, 0.1), 0.1)
    assert p.ready(1.9) == [] and p.wake(1.0) == pytest.approx(2.0)
    assert len(p.ready(2.0)) == 1


def test_what_never_comes_is_given_up_after_the_timeout_together() -> None:
    s = _script(("c2s", _msg(1, C.DEVICE_RESET), 0.0), ("s2c", _msg(1, C.DEVICE_RESET, True), 0.1),
                ("s2c", _msg(7, C.DMA_READ, payload=bytes(16)), 0.2), ("c2s", _msg(2, C.DEVICE_GET_INFO), 0.3))
    p = ClientPlayer(s, timeout=1.0)
    p.sent(p.ready(0.0)[0], 3, 0.0)
    assert p.tick(0.5) == []
    divs = p.tick(1.5)
    assert [d.code for d in divs] == ["REPLAY_NO_REPLY", "REPLAY_MISSING"]
    assert divs[0].live_frame == 3 and "recorded reply: frame 4" in divs[0].text
    assert "DMA_READ command (frame 5, id 7)" in divs[1].text
    assert [x.recorded.msg_id for x in p.ready(1.5)] == [2]  # type: ignore[union-attr]


def test_a_server_command_is_answered_from_the_replays_memory() -> None:
    cmd = _msg(9, C.DMA_READ, payload=struct.pack("<QQ", 0x1008, 4))
    rep = _msg(9, C.DMA_READ, True, struct.pack("<QQ", 0x1008, 4) + b"WXYZ")
    s = _script(("c2s", _msg(1, C.DEVICE_RESET), 0.0), ("s2c", cmd, 0.1), ("c2s", rep, 0.2),
                ("s2c", _msg(1, C.DEVICE_RESET, True), 0.3))
    mem = rc.GuestMemory()
    mem.map(0x1000, 0x100)
    mem.write(0x1008, b"live")
    p = ClientPlayer(s, timeout=1.0, memory=mem)
    p.sent(p.ready(0.0)[0], 3, 0.0)
    live = _msg(40, C.DMA_READ, payload=struct.pack("<QQ", 0x1008, 4))
    answers, divs = p.received(Live(MAIN, live, (), 4, 0.1), 0.1)
    assert divs == []  # a server's own ids are its counter: compared from its first command on
    assert answers[0].data == _msg(40, C.DMA_READ, True, struct.pack("<QQ", 0x1008, 4) + b"live")
    assert rc.dma_prefill(s) == [(0x1008, b"WXYZ")]  # what a fresh memory starts with


def test_fds_are_compared_by_kind_and_size_not_inode() -> None:
    from vfudissect.replay.match import differences

    a = (FdInfo("memfd", 4096, 11, 2, "/memfd:x (deleted)"),)
    b = (FdInfo("memfd", 4096, 99, 0, "/memfd:y (deleted)"),)
    m = _msg(1, C.DEVICE_GET_REGION_INFO, True, struct.pack("<IIIIQQ", 32, 7, 1, 0, 4096, 0))
    assert differences(m, a, m, b) == []
    c = (FdInfo("eventfd"),)
    assert [d.text() for d in differences(m, a, m, c)] == ['fd[0] kind "memfd" recorded, "eventfd" now']
