"""One socket of a live replay: whole messages out with their fds (in order, never blocking), messages in by the deframer.

The replay never waits on a send: what the kernel does not take stays
queued and goes when the socket is writable again, so a peer that sends
while it is sent to (a server's DMA_WRITE while the client writes a big
REGION_WRITE) never deadlocks the replay.  Incoming bytes are framed by
core/framing's deframer, exactly as the proxy frames them; every fd that
comes in is owned by the caller.
"""

from __future__ import annotations

import array
import errno
import os
import socket
import time
from collections import deque
from dataclasses import dataclass

from .. import spec
from ..core.framing import ABSOLUTE_LIMIT, MESSAGE, Deframer, Out

_ANC = socket.CMSG_SPACE(253 * 4)
_RECV_FLAGS = getattr(socket, "MSG_CMSG_CLOEXEC", 0)


@dataclass(frozen=True, slots=True)
class Arrived:
    """What framing put out on a channel (a message, raw bytes, a note) with the fds that came with it."""

    channel: str
    out: Out
    fds: tuple[int, ...]

    @property
    def is_message(self) -> bool:
        return self.out.kind == MESSAGE and not self.out.flags & (spec.VF_FRAMING_ERROR | spec.VF_BEYOND_LIMIT)


class Channel:
    """A connected stream socket, non-blocking, with an outgoing queue and an incoming deframer."""

    def __init__(self, sock: socket.socket, name: str, incoming: str) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.name = name
        self.deframer = Deframer(incoming, limit=ABSOLUTE_LIMIT, stall_timeout=3600.0)
        self._out: deque[tuple[memoryview, tuple[int, ...]]] = deque()
        self.eof = False  # the peer closed its side
        self.broken = ""  # why sending failed (EPIPE, ...)

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def sending(self) -> bool:
        return bool(self._out)

    def send(self, data: bytes, fds: tuple[int, ...] = ()) -> None:
        """Queue one whole message (fds go with its first byte) and send what the kernel takes now."""
        self._out.append((memoryview(data), fds))
        self.flush()

    def flush(self) -> None:
        while self._out and not self.broken:
            view, fds = self._out[0]
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
            try:
                n = self.sock.sendmsg([view], anc)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.broken = os.strerror(exc.errno or errno.EPIPE)
                self._out.clear()
                return
            if n < len(view):
                self._out[0] = (view[n:], ())
            else:
                self._out.popleft()

    def receive(self) -> list[Arrived]:
        """Everything readable now, framed; at end of stream ``eof`` is set and what was in hand comes out."""
        out: list[Arrived] = []
        d = self.deframer
        while not self.eof:
            want = d.want()
            if not want:
                break
            try:
                n, anc, fl, _addr = self.sock.recvmsg_into([d.buffer()], _ANC, _RECV_FLAGS)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.broken = os.strerror(exc.errno or errno.ECONNRESET)
                n, anc, fl = 0, [], 0
            fds: list[int] = []
            for level, kind, blob in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    a = array.array("i")
                    a.frombytes(blob[:len(blob) - len(blob) % a.itemsize])
                    fds.extend(a)
            now = time.time()
            if n == 0:
                self.eof = True
                outs = d.received(0, fds, bool(fl & socket.MSG_CTRUNC), now) + d.close(now, "peer closed")
            else:
                outs = d.received(n, fds, bool(fl & socket.MSG_CTRUNC), now)
            for o in outs:
                out.append(Arrived(self.name, o, tuple(o.fds)))
        return out

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
