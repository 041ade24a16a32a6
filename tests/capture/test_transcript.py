"""Transcripts (JSON Lines) -> events, with bad lines named."""

from __future__ import annotations

import pytest

from vfudissect.capture.transcript import TranscriptError, transcript_events
from vfudissect.core.events import ConnClosed, ConnOpened, MessageIn


def test_lines_become_events():
    lines = ['{"t": 1.0, "conn": 1, "open": "x.sock"}',
             '{"t": 1.1, "conn": 1, "dir": "c2s", "data": "00000100", "fds": [{"kind": "memfd", "size": 4, "ino": 9,'
             ' "link": "/memfd:a"}]}',
             '', '{"t": 1.2, "conn": 1, "dir": "s2c", "eof": true}']
    a, b, c = transcript_events(lines)
    assert isinstance(a, ConnOpened) and a.socket_path == "x.sock"
    assert isinstance(b, MessageIn) and b.data == b"\0\0\1\0" and b.fds[0].path == "/memfd:a"
    assert isinstance(c, ConnClosed) and c.dir == "s2c"


@pytest.mark.parametrize("line", ['{"t": 1}', "not json", '{"t": 1, "conn": 1, "dir": "c2s", "data": "zz"}'])
def test_bad_lines_are_named(line):
    with pytest.raises(TranscriptError, match="t.jsonl:2"):
        list(transcript_events(['{"t": 1.0, "conn": 1, "open": "x"}', line], "t.jsonl"))
