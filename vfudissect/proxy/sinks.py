"""Output sinks for the recorder: capture bytes and live-view text, written without stalling the relay loop.

A regular file is written directly (unbuffered: every record reaches the
kernel as it is written, page-cache writes do not block).  Anything else (a
pipe into Wireshark, a terminal) is written by a background thread from a
bounded buffer: the capture sink waits when the buffer is full (a slow
reader slows the writer, nothing is lost), the live-view sink drops lines
instead and says how many.
"""

from __future__ import annotations

import os
import stat
import threading
from typing import Protocol


class Sink(Protocol):
    broken: bool

    def write(self, data: bytes) -> int: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class FileSink:
    """Unbuffered writes to a regular file descriptor."""

    def __init__(self, fd: int, close_fd: bool = True) -> None:
        self.fd = fd
        self._close_fd = close_fd
        self.broken = False
        self.error = ""  # why it broke (strerror)

    def write(self, data: bytes) -> int:
        if self.broken:
            return len(data)
        view = memoryview(data)
        try:
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
        except OSError as exc:
            self.broken = True
            self.error = exc.strerror or str(exc)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._close_fd:
            try:
                os.close(self.fd)
            except OSError:
                pass


class ThreadSink:
    """Writes from a background thread; ``drop`` decides what happens when ``limit`` bytes are waiting."""

    def __init__(self, fd: int, *, limit: int = 64 << 20, drop: bool = False, close_fd: bool = False,
                 name: str = "sink") -> None:
        self.fd = fd
        self.limit = limit
        self.drop = drop
        self.dropped = 0
        self.broken = False
        self.error = ""  # why it broke (strerror)
        self._close_fd = close_fd
        self._chunks: list[bytes] = []
        self._pending = 0
        self._closing = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=f"vfudissect-{name}", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> int:
        if self.broken:
            return len(data)
        with self._cond:
            if self._pending + len(data) > self.limit:
                if self.drop:
                    self.dropped += 1
                    return len(data)
                while self._pending + len(data) > self.limit and not self.broken and self._pending:
                    self._cond.wait(0.5)
            self._chunks.append(bytes(data))
            self._pending += len(data)
            self._cond.notify_all()
        return len(data)

    def flush(self) -> None:
        pass

    def drain(self, timeout: float = 5.0) -> None:
        """Wait until everything written so far reached the fd (or the fd broke)."""
        with self._cond:
            self._cond.wait_for(lambda: not self._pending or self.broken, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._chunks or self._closing)
                if not self._chunks and self._closing:
                    return
                chunks, self._chunks = self._chunks, []
            data = memoryview(b"".join(chunks))
            try:
                while data:
                    n = os.write(self.fd, data)
                    data = data[n:]
            except OSError as exc:
                self.error = exc.strerror or str(exc)
                self.broken = True
            with self._cond:
                self._pending -= sum(len(c) for c in chunks)
                if self.broken:
                    self._chunks.clear()
                    self._pending = 0
                self._cond.notify_all()
            if self.broken:
                return

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=10)
        if self._close_fd:
            try:
                os.close(self.fd)
            except OSError:
                pass


class BufferedSink:
    """Collects writes and hands them to ``inner`` in one write on ``commit()`` (or past ``limit`` bytes).

    The capture is written this way: the relay commits when a burst of traffic has been recorded and on
    its timer, so records reach the kernel within ~0.1 s of being recorded at the latest, one write()
    per burst instead of one per record.  (Events wait in the relay's in-memory queue before being
    recorded anyway: flushing each record separately would not make the capture any safer.)
    """

    def __init__(self, inner: Sink, limit: int = 1 << 20) -> None:
        self.inner = inner
        self.limit = limit
        self.written = 0  # bytes accepted so far (committed or not)
        self._chunks: list[bytes] = []
        self._size = 0

    @property
    def broken(self) -> bool:
        return self.inner.broken

    @property
    def error(self) -> str:
        return getattr(self.inner, "error", "")

    def write(self, data: bytes) -> int:
        self.written += len(data)
        if len(data) >= 1 << 15:  # big records go through as they are: joining would only copy them again
            self.commit()
            return self.inner.write(data)
        self._chunks.append(data)
        self._size += len(data)
        if self._size >= self.limit:
            self.commit()
        return len(data)

    def commit(self) -> None:
        if self._chunks:
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._size = 0
            self.inner.write(data)

    def flush(self) -> None:
        self.commit()

    def close(self) -> None:
        self.commit()
        self.inner.close()


def open_sink(fd: int, *, drop: bool = False, close_fd: bool = True, name: str = "sink") -> FileSink | ThreadSink:
    """A direct sink for regular files, a threaded one for pipes, terminals and sockets."""
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        regular = False
    if regular:
        return FileSink(fd, close_fd)
    return ThreadSink(fd, drop=drop, close_fd=close_fd, name=name, limit=(1 << 20) if drop else (64 << 20))
