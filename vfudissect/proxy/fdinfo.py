"""Describe a passed file descriptor before the proxy closes its copy: kind, size, inode, flags, /proc link."""

from __future__ import annotations

import fcntl
import os
import stat

from ..core.events import FdInfo

_MODE_KINDS = (
    (stat.S_ISSOCK, "socket"), (stat.S_ISFIFO, "fifo"), (stat.S_ISCHR, "chardev"), (stat.S_ISBLK, "blockdev"),
    (stat.S_ISDIR, "directory"), (stat.S_ISREG, "regular"),
)


def describe_fd(fd: int) -> FdInfo:
    """What fstat and /proc/self/fd say about fd; never raises (an unreadable fd is kind "unknown")."""
    try:
        st = os.fstat(fd)
    except OSError:
        return FdInfo("unknown")
    try:
        link = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        link = ""
    try:
        fl = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError:
        fl = 0
    kind = "unknown"
    if link.startswith("/memfd:"):
        kind = "memfd"
    elif link == "anon_inode:[eventfd]":
        kind = "eventfd"
    elif link.startswith("anon_inode:"):
        kind = "anon_inode"
    else:
        for test, name in _MODE_KINDS:
            if test(st.st_mode):
                kind = name
                break
    size = st.st_size if kind in ("regular", "memfd", "blockdev") else 0
    return FdInfo(kind, size, st.st_ino, fl, link)
