"""Peer message I/O: what goes in one sendmsg comes out whole, fds included; bad framing is named."""

from __future__ import annotations

import json
import os
import socket
import struct
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfudissect import spec
from vfudissect.capture.reader import open_capture
from vfudissect.core.events import MessageIn
from vfudissect.peers.wire import (
    PeerClosed, ProtocolError, caps_json, pack, recv_message, send_message, unpack,
)

from tests.conftest import LVU


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 30), st.integers(0, 0xFFFFFFFF),
                          st.binary(max_size=3000), st.integers(0, 3)), min_size=1, max_size=8))
def test_messages_round_trip_with_their_fds(msgs: list[tuple[int, int, int, bytes, int]]) -> None:
    a, b = socket.socketpair()
    sent: list[tuple[bytes, list[int]]] = []
    try:
        def writer() -> None:
            for mid, cmd, flags, body, nfds in msgs:
                data = spec.HEADER.pack(mid, cmd, 16 + len(body), flags, 0) + body
                fds = [os.eventfd(0) for _ in range(nfds)]
                sent.append((data, [os.fstat(fd).st_ino for fd in fds]))
                send_message(a, data, fds)
                for fd in fds:
                    os.close(fd)

        t = threading.Thread(target=writer)
        t.start()
        got = [recv_message(b) for _ in msgs]
        t.join()
        for m, (data, inos) in zip(got, sent):
            assert m.data == data and m.size == len(data) and m.payload == data[16:]
            assert [os.fstat(fd).st_ino for fd in m.fds] == inos
            m.close_fds()
    finally:
        a.close()
        b.close()


def test_bad_sizes_and_cuts_are_named() -> None:
    a, b = socket.socketpair()
    a.sendall(spec.HEADER.pack(7, 9, 3, 0, 0))
    with pytest.raises(ProtocolError, match="size 3 out of range.*msg_id 7 command 9"):
        recv_message(b)
    a.sendall(spec.HEADER.pack(1, 9, 100, 0, 0) + b"x" * 10)
    a.close()
    with pytest.raises(ProtocolError, match="middle of a message"):
        recv_message(b)
    b.close()
    a, b = socket.socketpair()
    a.close()
    with pytest.raises(PeerClosed):
        recv_message(b)
    b.close()


@given(st.sampled_from(sorted(spec.LAYOUTS)), st.data())
def test_pack_unpack_every_layout(key: str, data: st.DataObject) -> None:
    lay = spec.LAYOUTS[key]
    values = {f.name: data.draw(st.integers(0, 2 ** (8 * f.size) - 1)) for f in lay.fields}
    raw = pack(key, **values)
    assert len(raw) == lay.size and unpack(key, raw + b"tail") == values
    with pytest.raises(ProtocolError):
        unpack(key, raw[:-1])


def test_caps_json_is_libvfio_user_shaped() -> None:
    """Our server's JSON text is written the way json-c writes it: same bytes as the real server's reply."""
    reply = next(e for e in open_capture(str(LVU)) if isinstance(e, MessageIn) and e.dir == "s2c")
    text = reply.data[20:]
    obj = json.loads(text[:-1])
    assert caps_json(obj) == text
    assert caps_json({"a": {}, "b": [1, 2] if False else True}) == b'{ "a": { }, "b": true }\0'
    assert struct.unpack_from("<HH", reply.data, 16) == (0, 2)
