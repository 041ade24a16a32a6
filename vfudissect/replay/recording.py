"""The replay's own capture: every message it sends and receives, through the recorder and the engine, and its verdicts.

A replay is a peer, so it records what it saw from its side of the socket,
as the proxy would have recorded it: the same writer (VERDICTS, FINDING
records), the same engine judging every message, the same live view.  The
replay's comparison findings (REPLAY_*) are written beside the engine's,
naming the live frames, so ``read``, ``stats`` and Wireshark show both.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from typing import TextIO

from ..capture.files import open_capture_fd
from ..capture.writer import CaptureWriter
from ..core.events import ConnClosed, ConnOpened, Cred, FdInfo, IrqIn, MessageIn, NoteIn, RawIn
from ..core.records import Finding
from ..proxy.fdinfo import describe_fd
from ..proxy.recorder import LiveView, Recorder
from ..proxy.sinks import FileSink


class RecordingError(Exception):
    """The replay's capture cannot be written (one line)."""


def peer_cred(sock: socket.socket) -> Cred | None:
    try:
        pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    except OSError:
        return None
    return Cred(pid, uid, gid)


def own_cred() -> Cred:
    return Cred(os.getpid(), os.getuid(), os.getgid())


class ReplayRecording:
    """Writer + Recorder for one replay; ``message()`` returns the frame number the message got."""

    def __init__(self, path: str, timeout: float, comment: str, view: TextIO | None = None, quiet: bool = False,
                 color: bool = False, group_read: bool = False) -> None:
        try:
            fd = open_capture_fd(path, group_read)
        except OSError as exc:
            raise RecordingError(f"cannot write the replay's capture {path}: {exc.strerror or exc}") from None
        self.path = path
        self._file = os.fdopen(fd, "wb", buffering=1 << 16)
        self.writer = CaptureWriter(self._file, comment=comment, judged=timeout, flush=False)
        if view is not None:
            view.flush()
        # -q: the replay's own findings only (the engine's on the live traffic are in the capture, and mostly the
        # recording's own again)
        wanted = (lambda f: f.code.startswith("REPLAY_")) if quiet else None
        live = LiveView(FileSink(view.fileno(), close_fd=False), color=color, quiet=quiet,
                        findings=wanted) if view is not None else None
        self.recorder = Recorder(self.writer, live, timeout, commit=self._file.flush)
        self.findings: list[Finding] = []

    def opened(self, conn: int, socket_path: str, client: Cred | None, server: Cred | None,
               twin_of: int | None = None) -> None:
        self.recorder.record(ConnOpened(time.time(), conn, socket_path, client, server, twin_of))

    def message(self, conn: int, d: str, data: bytes, fds: tuple[FdInfo, ...] = (), flags: int = 0,
                ts: float | None = None) -> int:
        ev = self.recorder.record(MessageIn(ts or time.time(), conn, d, bytes(data), fds, 0, -1, flags))
        return ev.frame if ev is not None else 0

    def raw(self, conn: int, d: str, data: bytes, note: str, flags: int = 0) -> int:
        ev = self.recorder.record(RawIn(time.time(), conn, d, bytes(data), (), 0, note, flags))
        return ev.frame if ev is not None else 0

    def note(self, conn: int, text: str, d: str | None = None) -> None:
        self.recorder.record(NoteIn(time.time(), conn, text, d))

    def irq(self, conn: int, index: int, vector: int, count: int) -> None:
        self.recorder.record(IrqIn(time.time(), conn, index, vector, count))

    def closed(self, conn: int, d: str | None) -> None:
        self.recorder.record(ConnClosed(time.time(), conn, d))

    def finding(self, f: Finding) -> None:
        """One of the replay's own findings: into the capture (a FINDING record) and the live view."""
        self.writer.write_finding(f)
        self.findings.append(f)
        self.recorder.add([f])

    def tick(self) -> None:
        from ..core.events import Tick

        self.recorder.record(Tick(time.time()))

    def flush(self) -> None:
        self.recorder.idle()

    def close(self) -> None:
        self.recorder.finish(time.time())
        self.writer.close()


def describe(fds: tuple[int, ...]) -> tuple[FdInfo, ...]:
    return tuple(describe_fd(fd) for fd in fds)
