"""Proxy test rig: short socket paths, an in-process `record` proxy, and raw peers that keep every byte and fd."""

from __future__ import annotations

import array
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

import pytest

from vfudissect.peers.server import DeviceServer
from tests.proxy_harness import Proxy

ANC = socket.CMSG_SPACE(253 * 4)


@pytest.fixture
def device(sockdir: str) -> Iterator[DeviceServer]:
    srv = DeviceServer(os.path.join(sockdir, "dev.sock")).start()
    yield srv
    srv.stop()


@pytest.fixture
def proxy(sockdir: str, device: DeviceServer) -> Iterator[Proxy]:
    p = Proxy(sockdir, device.path)
    yield p
    p.stop()


def fds_of(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    out: list[int] = []
    for level, kind, blob in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(blob[:len(blob) - len(blob) % 4])
            out.extend(a)
    return out


def send_with_fds(sock: socket.socket, data: bytes, fds: list[int] | tuple[int, ...] = ()) -> None:
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
    n = sock.sendmsg([data], anc)
    if n < len(data):
        sock.sendall(data[n:])


@dataclass
class Received:
    """Everything a raw peer got: the byte stream and (offset, fd) for every fd, in order."""

    data: bytearray = field(default_factory=bytearray)
    fds: list[tuple[int, int]] = field(default_factory=list)
    eof: bool = False

    def close_fds(self) -> None:
        for _, fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass


def drain(sock: socket.socket, into: Received, until: int | None = None, timeout: float = 10.0) -> Received:
    """Read into `into` until EOF (or `until` bytes); keeps fds with the stream offset they came at."""
    sock.settimeout(timeout)
    while until is None or len(into.data) < until:
        data, anc, _fl, _ = sock.recvmsg(1 << 20, ANC)
        for fd in fds_of(anc):
            into.fds.append((len(into.data), fd))
        if not data:
            into.eof = True
            break
        into.data += data
    return into


class RawServer:
    """Accepts connections; each gets a thread that keeps what it receives. ``conns[i]`` is the socket."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(64)
        self.conns: list[socket.socket] = []
        self.received: list[Received] = []
        self._accepted = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()
        self.read = True

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            r = Received()
            self.conns.append(c)
            self.received.append(r)
            if self.read:
                t = threading.Thread(target=self._reader, args=(c, r), daemon=True)
                self._threads.append(t)
                t.start()
            self._accepted.release()

    def _reader(self, c: socket.socket, r: Received) -> None:
        try:
            drain(c, r, timeout=30)
        except OSError:
            r.eof = True

    def accepted(self, timeout: float = 5.0) -> socket.socket:
        assert self._accepted.acquire(timeout=timeout), "no connection reached the server"
        return self.conns[-1]

    def wait_bytes(self, i: int, n: int, timeout: float = 10.0) -> Received:
        end = time.monotonic() + timeout
        while len(self.received) <= i:
            assert time.monotonic() < end, f"connection {i} never reached the server"
            time.sleep(0.005)
        while len(self.received[i].data) < n and not self.received[i].eof:
            assert time.monotonic() < end, f"server got {len(self.received[i].data)} of {n} bytes"
            time.sleep(0.005)
        return self.received[i]

    def wait_eof(self, i: int, timeout: float = 10.0) -> Received:
        self.wait_bytes(i, 0, timeout)
        end = time.monotonic() + timeout
        while not self.received[i].eof:
            assert time.monotonic() < end, "server never saw EOF"
            time.sleep(0.005)
        return self.received[i]

    def close(self) -> None:
        # Shut down, join, then close: a socket closed while a thread may be about to use it frees its fd
        # number, and that thread's accept() or recvmsg() would land on whichever socket takes the number next
        # (a later test's proxy or server; seen under load as connections that never arrived).
        shutdown_quietly(self.listener)
        self._acceptor.join(timeout=5)
        self.listener.close()
        for c in self.conns:
            shutdown_quietly(c)
        for t in self._threads:
            t.join(timeout=5)
        for c in self.conns:
            c.close()
        for r in self.received:
            r.close_fds()


def shutdown_quietly(s: socket.socket) -> None:
    """Wake whatever thread is blocked on ``s`` (accept: EINVAL; recv: end of stream)."""
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


@pytest.fixture
def rawserver(sockdir: str) -> Iterator[RawServer]:
    s = RawServer(os.path.join(sockdir, "raw.sock"))
    yield s
    s.close()


def connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
