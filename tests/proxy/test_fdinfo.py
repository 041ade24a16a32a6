"""fd descriptions: what kind of object a passed fd is, as the recorder writes it into the capture."""

from __future__ import annotations

import os
import socket

from vfudissect.proxy.fdinfo import describe_fd


def test_kinds_sizes_and_names() -> None:
    mem = os.memfd_create("guest-ram")
    os.ftruncate(mem, 3 << 20)
    efd = os.eventfd(0)
    a, b = socket.socketpair()
    r, w = os.pipe()
    reg = os.open(__file__, os.O_RDONLY)
    try:
        m = describe_fd(mem)
        assert (m.kind, m.size, m.ino) == ("memfd", 3 << 20, os.fstat(mem).st_ino)
        assert m.path.startswith("/memfd:guest-ram")
        assert describe_fd(efd).kind == "eventfd" and describe_fd(efd).path == "anon_inode:[eventfd]"
        assert describe_fd(a.fileno()).kind == "socket"
        assert describe_fd(r).kind == "fifo"
        f = describe_fd(reg)
        assert (f.kind, f.size, f.path) == ("regular", os.path.getsize(__file__), os.path.realpath(__file__))
        assert describe_fd(efd).status_flags & os.O_RDWR
    finally:
        for fd in (mem, efd, r, w, reg):
            os.close(fd)
        a.close()
        b.close()


def test_a_closed_fd_is_unknown_not_an_error() -> None:
    fd = os.eventfd(0)
    os.close(fd)
    assert describe_fd(fd).kind == "unknown"
