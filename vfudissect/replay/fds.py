"""The fds and memory a replay stands up in place of the recorded ones: memfds, eventfds, sockets, guest memory.

A recorded fd is known by what the recorder saw of it (``FdInfo``: kind,
size, inode, /proc name).  ``FdMaker`` makes one live fd per recorded file
(the same inode recorded twice, as when a client maps several ranges of one
file, is one live fd), of the recorded kind and size, named after it.
``GuestMemory`` is the replaying client's memory: the ranges it maps with
DMA_MAP, backed by the memfd it sends (so a server that mmaps it sees the
same bytes) or by private memory for a range mapped without an fd.
"""

from __future__ import annotations

import mmap
import os
import re
import socket
from dataclasses import dataclass

from ..core.events import FdInfo

_FILES = ("memfd", "regular", "blockdev")  # kinds whose inode names one file (the same inode twice: the same file)
_MEMFD_NAME = re.compile(r"^/memfd:(?P<name>.*?)(?: \(deleted\))?$")


def memfd_name(info: FdInfo) -> str:
    """The name a recorded memfd had (``/memfd:guest-ram (deleted)`` -> ``guest-ram``), else a made-up one."""
    m = _MEMFD_NAME.match(info.path or "")
    if m and m.group("name"):
        return m.group("name")
    base = os.path.basename((info.path or "").replace(" (deleted)", "")) or info.kind
    return f"vfudissect-replay:{base}"


class FdMaker:
    """Live stand-ins for recorded fds, made on first use and closed together."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, int], int] = {}
        self._owned: list[int] = []
        self._peers: list[socket.socket] = []

    def make(self, info: FdInfo, size: int = 0) -> int:
        """A live fd standing in for ``info`` (one per recorded inode; ``size``: at least this large)."""
        key = (info.kind, info.ino)
        shared = info.ino and info.kind in _FILES  # eventfds and sockets share one anonymous inode: never shared
        if shared and key in self._by_key:
            fd = self._by_key[key]
            if size and info.kind in ("memfd", "regular") and os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
            return fd
        fd = self._new(info, size)
        self._owned.append(fd)
        if shared:
            self._by_key[key] = fd
        return fd

    def _new(self, info: FdInfo, size: int) -> int:
        if info.kind == "eventfd":
            return os.eventfd(0, os.EFD_CLOEXEC)
        if info.kind == "socket":
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            self._peers.append(b)
            return a.detach()
        if info.kind in ("memfd", "regular", "blockdev", "unknown") or not info.kind:
            fd = os.memfd_create(memfd_name(info), os.MFD_CLOEXEC)
            os.ftruncate(fd, max(info.size, size))
            return fd
        return os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)  # a fifo, a chardev, ...: something of the right shape

    def memfd(self, name: str, size: int) -> int:
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.ftruncate(fd, size)
        self._owned.append(fd)
        return fd

    def close(self) -> None:
        for fd in self._owned:
            try:
                os.close(fd)
            except OSError:
                pass
        self._owned.clear()
        self._by_key.clear()
        for s in self._peers:
            s.close()
        self._peers.clear()


@dataclass
class Mapping:
    """One DMA_MAP'd range of the client's memory."""

    address: int
    size: int
    mem: mmap.mmap | bytearray
    base: int  # where the range starts in ``mem``


class GuestMemory:
    """The replaying client's memory: DMA_MAP'd ranges, readable and writable by guest address."""

    def __init__(self) -> None:
        self.maps: list[Mapping] = []
        self._mmaps: dict[int, mmap.mmap] = {}

    def map(self, address: int, size: int, fd: int | None = None, offset: int = 0) -> None:
        if size <= 0:
            return
        if fd is None:
            self.maps.append(Mapping(address, size, bytearray(size), 0))
            return
        mm = self._mmaps.get(fd)
        need = offset + size
        if mm is None or len(mm) < need:
            if os.fstat(fd).st_size < need:
                os.ftruncate(fd, need)
            mm = mmap.mmap(fd, os.fstat(fd).st_size)
            self._mmaps[fd] = mm
        self.maps.append(Mapping(address, size, mm, offset))

    def unmap(self, address: int, size: int, everything: bool = False) -> None:
        self.maps = [] if everything else [m for m in self.maps if not (m.address == address and m.size == size)]

    def _find(self, address: int, count: int) -> Mapping | None:
        for m in reversed(self.maps):
            if m.address <= address and address + count <= m.address + m.size:
                return m
        return None

    def read(self, address: int, count: int) -> bytes | None:
        """The bytes at [address, address+count), None when no mapped range holds them all."""
        m = self._find(address, count)
        if m is None:
            return None
        at = m.base + address - m.address
        return bytes(m.mem[at:at + count])

    def write(self, address: int, data: bytes) -> bool:
        m = self._find(address, len(data))
        if m is None:
            return False
        at = m.base + address - m.address
        m.mem[at:at + len(data)] = data
        return True

    def close(self) -> None:
        self.maps.clear()
        for mm in self._mmaps.values():
            try:
                mm.close()
            except (BufferError, ValueError):
                pass
        self._mmaps.clear()
