"""replay.script: what a capture gives to play, and the one line when it gives nothing playable."""

from __future__ import annotations

import pytest

from vfudissect import spec
from vfudissect.capture.writer import CaptureWriter
from vfudissect.core.events import ConnOpened, MessageIn
from vfudissect.replay.script import CLIENT, SERVER, ScriptError, load
from tests.conftest import LVU, QEMU


def test_the_real_captures_give_their_connection_in_order_with_its_pairs() -> None:
    for path in (QEMU, LVU):
        s = load(str(path))
        assert s.conn == 1 and s.items and [r.frame for r in s.items] == sorted(r.frame for r in s.items)
        replies = [r for r in s.items if r.is_reply]
        assert len(s.request_of) == len(replies)  # every reply knows its request
        assert all(s.items[s.request_of[r.index]].msg_id == r.msg_id for r in replies)


def test_the_recorded_twin_socket_is_part_of_the_script(recorded: dict[str, str]) -> None:
    s = load(recorded["twin"])
    assert s.twin_conn == 2 and {r.channel for r in s.items} == {"main", "twin"}
    with pytest.raises(ScriptError, match=r"connection #2 is the twin socket of #1 \(its connections: #1\)"):
        load(recorded["twin"], conn=2)


def test_what_cannot_be_played_is_one_line(tmp_path, recorded: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ScriptError, match=r"cannot read .*nothing.pcapng: no such file"):
        load(str(tmp_path / "nothing.pcapng"))
    with pytest.raises(ScriptError, match=r"no connection #7 \(its connections: #1\)"):
        load(recorded["clean"], conn=7)
    cut = tmp_path / "cut.pcapng"
    data = open(recorded["clean"], "rb").read()
    cut.write_bytes(data[:len(data) // 2 + 3])
    with pytest.raises(ScriptError, match=r"cannot replay .*cut.pcapng: it is damaged \(.*record \d+"):
        load(str(cut))
    not_cap = tmp_path / "notes.txt"
    not_cap.write_text("hello\n")
    with pytest.raises(ScriptError, match="it is damaged"):
        load(str(not_cap))


def _capture(path: str, msgs: list[tuple[str, bytes]], snaplen: int | None = None) -> None:
    with open(path, "wb") as f:
        w = CaptureWriter(f, snaplen=snaplen)
        w.write(ConnOpened(1.0, 1, "s.sock"))
        for i, (d, data) in enumerate(msgs):
            w.write(MessageIn(1.0 + i, 1, d, data))
        w.close()


def test_a_side_with_nothing_to_play_and_a_cut_message_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    only_server = str(tmp_path / "s.pcapng")
    _capture(only_server, [("s2c", spec.HEADER.pack(1, spec.Command.DMA_READ, 32, 0, 0) + bytes(16))])
    with pytest.raises(ScriptError, match="no connection has client messages to play"):
        load(only_server, side=CLIENT)
    assert load(only_server, side=SERVER).items
    with pytest.raises(ScriptError, match="connection #1 has no client messages to play"):
        load(only_server, conn=1, side=CLIENT)
    snapped = str(tmp_path / "snap.pcapng")
    big = spec.HEADER.pack(1, spec.Command.REGION_WRITE, 16 + 16 + 4096, 0, 0) + bytes(16 + 4096)
    _capture(snapped, [("c2s", big)], snaplen=128)
    with pytest.raises(ScriptError, match=r"frame 2 of connection #1 was cut by the recorder's snaplen"):
        load(snapped)
