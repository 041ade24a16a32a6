"""replay server: the recorded device served to the live emulated client, and the matching of requests."""

from __future__ import annotations

import os
import struct
import threading

import pytest

from vfudissect import spec
from vfudissect.capture.reader import open_capture
from vfudissect.core.events import MessageIn
from vfudissect.peers.client import TWIN_VERSION_JSON, Client, run_session
from vfudissect.replay import server as rs
from vfudissect.replay.client import Live
from vfudissect.replay.script import MAIN, load

C = spec.Command


def _serve(capture: str, sockdir: str, client, timeout: float = 1.0):  # type: ignore[no-untyped-def]
    """The replay server in a thread, ``client(path)`` against it; (the server's outcome, what the client gave)."""
    path = os.path.join(sockdir, "replay.sock")
    ready = threading.Event()
    box: dict = {}

    def serve() -> None:
        try:
            box["out"] = rs.run(load(capture, side="server"), path, os.path.join(sockdir, "srv.pcapng"),
                                timeout=timeout, accept_timeout=10.0, ready=ready.set)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            box["error"] = exc
            ready.set()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert ready.wait(10)
    got = client(path)
    t.join(20)
    assert not t.is_alive() and "error" not in box, box.get("error")
    return box["out"], got


def _session(path: str, twin: bool = False, irq_wait: float = 0.05):  # type: ignore[no-untyped-def]
    with Client(path, timeout=3.0) as c:
        return run_session(c, irq_wait=irq_wait, **({"json_text": TWIN_VERSION_JSON} if twin else {}))


@pytest.mark.parametrize("which", ["clean", "twin"])
def test_the_emulated_client_runs_its_session_against_the_recorded_device(recorded: dict[str, str], sockdir: str,
                                                                         which: str) -> None:
    out, rep = _serve(recorded[which], sockdir, lambda p: _session(p, twin=which == "twin"))
    # what the client checks of what travels on the socket all holds: config space, DMA both ways by messages
    # (the recorded server's DMA_READ/DMA_WRITE sent at their recorded place), BAR1 through the region fd
    assert rep.config_ok and rep.dma_to_device_ok and rep.dma_from_device_ok and rep.dma_rom_ok and rep.bar1_mmap_ok
    # interrupts (eventfd writes) and the device's direct writes into mmapped guest memory are not on the wire
    assert rep.interrupts_seen == 0 and not rep.dma_direct_ok
    t = out.tally
    assert (t.requests, t.exact, t.inexact, t.unmatched) == (rep.messages, rep.messages, 0, 0)
    assert t.used == t.recorded_requests and out.findings == [] and not out.diverged
    conns = {e.conn for e in open_capture(out.capture) if isinstance(e, MessageIn)}
    assert conns == ({1, 2} if which == "twin" else {1})


def test_interrupts_recorded_with_watch_irqs_are_raised_where_they_came(recorded: dict[str, str], sockdir: str) -> None:
    out, rep = _serve(recorded["irqs"], sockdir, lambda p: _session(p, irq_wait=5.0))  # they do come: no cost
    # every check the client makes of what the device did now holds, its interrupts included
    assert rep.interrupts_seen == 2 and rep.config_ok and rep.dma_to_device_ok and rep.bar1_mmap_ok
    assert (out.tally.interrupts, out.tally.recorded_interrupts) == (2, 2) and not out.diverged
    irqs = [e for e in open_capture(out.capture) if type(e).__name__ == "IrqIn"]
    assert [(e.index, e.vector) for e in irqs] == [(0, 0), (1, 1)]  # INTX 0, then MSI vector 1, as recorded


def test_a_client_that_asks_differently_is_told_how(recorded: dict[str, str], sockdir: str) -> None:
    def client(path: str):  # type: ignore[no-untyped-def]
        with Client(path, timeout=3.0) as c:
            c.version()
            info = c.get_info()
            c.region_read(7, 0x20, 4)  # config space at an offset the recorded client never read
            try:
                c.request(C.MIG_DATA_WRITE, b"\0" * 8)  # a command it never sent at all
            except Exception as exc:  # noqa: BLE001
                return info, exc
            return info, None

    out, (info, exc) = _serve(recorded["clean"], sockdir, client)
    assert info["num_regions"] == 9 and "EINVAL" in str(exc)
    t = out.tally
    assert (t.requests, t.exact, t.inexact, t.unmatched) == (4, 2, 1, 1)
    by = {f.code: f.text for f in out.findings}
    assert "REGION_READ command (id 2) matched recorded frame 47 by command alone" in by["REPLAY_INEXACT"]
    assert "offset 0 recorded, 0x20 now" in by["REPLAY_INEXACT"]
    assert "MIG_DATA_WRITE command (id 3): the recorded client never sent that command" in by["REPLAY_UNMATCHED"]
    assert "60 of 63 recorded requests never asked, the first DMA_MAP command (frame 6" in by["REPLAY_MISSING"]
    assert out.diverged


# ------------------------------------------------------------------ matching alone
def _req(msg_id: int, cmd: int, payload: bytes = b"", no_reply: bool = False) -> bytes:
    return spec.HEADER.pack(msg_id, cmd, 16 + len(payload), spec.FLAG_NO_REPLY if no_reply else 0, 0) + payload


def test_matching_prefers_equal_then_same_command_then_reuse(recorded: dict[str, str]) -> None:
    p = rs.ServerPlayer(load(recorded["clean"], side="server"))
    read = lambda off, n: _req(99, C.REGION_READ, struct.pack("<QII", off, 7, n))  # noqa: E731
    first, how = p.match(read(0x41, 1))
    assert how == "exact" and first is not None and first.frame == 49
    p._used.add(first.index)
    again, how = p.match(read(0x41, 1))
    assert how == "inexact" and again is not None and again.index != first.index
    for r in p._requests:
        if r.command == C.REGION_READ:
            p._used.add(r.index)
    reused, how = p.match(read(0x41, 1))
    assert how == "reused" and reused is first
    assert p.match(_req(1, C.MIG_DATA_WRITE, bytes(8))) == (None, "none")


def test_a_request_that_comes_while_another_is_answered_waits_its_turn(recorded: dict[str, str]) -> None:
    s = load(recorded["clean"], side="server")
    p = rs.ServerPlayer(s)
    door = next(r for r in s.items if r.command == C.REGION_WRITE and s.items[r.index + 1].command == C.DMA_READ)
    sends, divs = p.received(Live(MAIN, door.data, (), 5, 0.0), 0.0)
    assert divs == [] and [spec.command_name(x.recorded.command) for x in sends] == ["DMA_READ"]  # type: ignore
    p.sent(sends[0], 6)
    nxt = s.items[s.reply_of[door.index] + 1]
    assert p.received(Live(MAIN, nxt.data, (), 7, 0.0), 0.0) == ([], [])  # held: the DMA_READ is unanswered
    dma_reply = s.items[s.reply_of[sends[0].recorded.index]]  # type: ignore[union-attr]
    sends, divs = p.received(Live(MAIN, dma_reply.data, (), 8, 0.0), 0.0)
    # the doorbell's reply, then the request that waited
    assert divs == [] and [spec.command_name(x.recorded.command) for x in sends] == ["REGION_WRITE", "REGION_READ"]


def test_a_client_that_never_answers_a_server_command_is_given_up_on(recorded: dict[str, str]) -> None:
    s = load(recorded["clean"], side="server")
    p = rs.ServerPlayer(s, timeout=1.0)
    door = next(r for r in s.items if r.command == C.REGION_WRITE and s.items[r.index + 1].command == C.DMA_READ)
    sends, _ = p.received(Live(MAIN, door.data, (), 5, 0.0), 0.0)
    p.sent(sends[0], 6)
    assert p.tick(0.5) == ([], [])
    sends, divs = p.tick(1.5)
    assert [d.code for d in divs] == ["REPLAY_NO_REPLY"] and divs[0].live_frame == 6
    assert [spec.command_name(x.recorded.command) for x in sends] == ["REGION_WRITE"]  # type: ignore[union-attr]


def test_listening_refuses_what_is_not_a_leftover_socket(sockdir: str) -> None:
    path = os.path.join(sockdir, "f")
    open(path, "w").close()
    with pytest.raises(rs.ReplayFailed, match="exists and is not a socket"):
        rs.listen(path)
    live = rs.listen(os.path.join(sockdir, "s"))
    try:
        with pytest.raises(rs.ReplayFailed, match="a server is listening there already"):
            rs.listen(os.path.join(sockdir, "s"))
    finally:
        live.close()
    left = rs.listen(os.path.join(sockdir, "s"))  # nobody listens on the old one now: replaced
    left.close()
