"""Output sinks: files written directly, pipes from a thread; the capture waits, the live view drops."""

from __future__ import annotations

import os
import threading
import time

from vfudissect.proxy.sinks import FileSink, ThreadSink, open_sink


def test_regular_files_are_written_directly(sockdir: str) -> None:
    path = os.path.join(sockdir, "out")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    s = open_sink(fd)
    assert isinstance(s, FileSink)
    s.write(b"record 1\n")
    with open(path, "rb") as f:
        assert f.read() == b"record 1\n"  # on disk before close: flushed as written
    s.close()


def test_a_pipe_gets_everything_in_order_and_a_full_one_makes_the_writer_wait() -> None:
    r, w = os.pipe()
    s = open_sink(w, close_fd=True, name="t")
    assert isinstance(s, ThreadSink)
    s.limit = 1 << 16
    chunks = [bytes([i]) * 10000 for i in range(40)]  # 400 kB: more than the pipe and the limit hold
    done = threading.Event()

    def produce() -> None:
        for c in chunks:
            s.write(c)
        done.set()

    t = threading.Thread(target=produce)
    t.start()
    time.sleep(0.2)
    assert not done.is_set()  # nobody reads: the writer is held back, nothing is dropped
    got = bytearray()
    while len(got) < 400000:
        got += os.read(r, 1 << 16)
    t.join()
    s.close()
    assert bytes(got) == b"".join(chunks) and s.dropped == 0
    os.close(r)


def test_the_live_view_sink_drops_instead_of_waiting_and_a_closed_pipe_breaks_it() -> None:
    r, w = os.pipe()
    s = ThreadSink(w, limit=1000, drop=True, close_fd=True)
    for _ in range(200):
        s.write(b"x" * 100)
    assert s.dropped > 0  # returned at once; the overflow is counted
    os.close(r)
    s.write(b"after the reader left")
    s.drain(2)
    assert s.broken
    s.close()
