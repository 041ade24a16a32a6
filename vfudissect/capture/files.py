"""Creating capture files: owner-only by default, because of what a capture holds.

A capture holds the guest's memory as it crossed the socket (DMA_READ and
DMA_WRITE data, region reads and writes), the device's data, and the peers'
credentials (pid, uid, gid of QEMU and of the server).  Every capture this
tool writes (`record`, its rotated parts, `import`, `annotate`) is therefore
created **0600**, or **0640** when the user asks for group read
(`-g/--group-read`): Wireshark's dumpcap does the same (its output file and
ring-buffer files are opened with ``group_read_access ? 0640 : 0600``, and
``-g`` is its "enable group read access on the output file(s)").  The mode
goes through open(2), so the umask applies as usual (umask 077 with ``-g``
still gives 0600).

A file that already exists is truncated and written, and its mode is never
widened.  Here this tool goes one step beyond dumpcap, whose open(2) leaves
an existing file's mode as it was (``dumpcap -w old.pcapng`` over a 0644
file writes the capture world-readable): when an existing *regular* file
allows more than was asked, the group and other bits beyond the asked mode
are cleared (0644 -> 0600, or 0640 with group read; 0664 with group read ->
0640), before anything is written.  Nothing else changes: bits narrower than
asked stay narrow (a 0600 file stays 0600 with ``-g``, a 0400 file stays 0400),
the owner's bits are the owner's, and a file that is not a regular file (a
FIFO read by Wireshark, /dev/null, a terminal) or that belongs to someone
else (EPERM) is left exactly as it is.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import tempfile
from typing import BinaryIO

CAPTURE_MODE = 0o600
GROUP_READ_MODE = 0o640

GROUP_READ_HELP = ("create captures 0640 (group may read) instead of 0600: captures hold guest memory (DMA data), "
                   "device data and the peers' credentials, so they are owner-only by default (umask applies; "
                   "an existing file is never made more readable, only narrowed to this)")


def capture_mode(group_read: bool = False) -> int:
    """The permission bits a new capture file asks for."""
    return GROUP_READ_MODE if group_read else CAPTURE_MODE


def narrowed(mode: int, asked: int) -> int:
    """``mode`` with the group and other bits that ``asked`` does not allow cleared (never adds a bit)."""
    return mode & ~(0o077 & ~asked)


def restrict_fd(fd: int, asked: int) -> None:
    """Narrow an open regular file to ``asked`` (group/other bits only); anything else is left alone."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        return  # a FIFO, a device, a terminal: not ours to chmod
    cur = stat.S_IMODE(st.st_mode)
    want = narrowed(cur, asked)
    if want == cur:
        return
    try:
        os.fchmod(fd, want)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EACCES, errno.EROFS):
            raise
        # someone else's file (or a read-only mount's): its owner chose the mode and let us write it


def current_umask() -> int:
    """The process's umask, read without changing it where Linux says it (/proc/self/status, 4.7+); else set and
    put back (tightest meanwhile), which a thread creating a file at that moment would notice."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def target_mode(path: str, group_read: bool = False) -> int:
    """The mode a capture written to ``path`` ends with, by the rule above, for a writer that writes a temporary file
    and renames it over ``path`` (fchmod the temporary file to this before writing into it): an existing regular
    file's mode narrowed to what was asked, else the asked mode less the umask.  (Rename only over a regular file
    or nothing: a FIFO, a device or a symlink such as /dev/stdout at ``path`` is written through, with
    :func:`open_capture_fd`.)"""
    asked = capture_mode(group_read)
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is not None and stat.S_ISREG(st.st_mode):
        return narrowed(stat.S_IMODE(st.st_mode), asked)
    return asked & ~current_umask()


def open_capture_fd(path: str, group_read: bool = False) -> int:
    """A capture file's fd (O_WRONLY, close-on-exec): created 0600 (0640 with ``group_read``), or truncated
    and narrowed to that if it exists (see the module doc). Raises OSError like os.open."""
    asked = capture_mode(group_read)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, asked)
    try:
        restrict_fd(fd, asked)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_capture_output(path: str, group_read: bool = False) -> BinaryIO:
    """:func:`open_capture_fd` as a buffered binary file, for writers that want one."""
    return os.fdopen(open_capture_fd(path, group_read), "wb")


class StagedOutput:
    """A capture written under a temporary name beside ``path`` and renamed over it by ``commit()``; ``discard()``
    (or a close without commit) removes it, so a failed write leaves no partial file and an existing file of that
    name as it was.  ``-`` is stdout, and a FIFO, a device or a symlink (/dev/stdout) at ``path`` is written
    through: those cannot be staged, and what was written stays written.  The mode is the rule above's."""

    def __init__(self, path: str, group_read: bool = False) -> None:
        self.path, self.group_read, self.tmp = path, group_read, ""
        self.out: BinaryIO | None = None

    def open(self) -> BinaryIO:
        """The stream to write (OSError when it cannot be made)."""
        if self.path == "-":
            self.out = sys.stdout.buffer
        elif os.path.lexists(self.path) and (os.path.islink(self.path) or not os.path.isfile(self.path)):
            self.out = open_capture_output(self.path, self.group_read)
        else:
            fd, self.tmp = tempfile.mkstemp(prefix=".vfudissect-", suffix=".part",
                                            dir=os.path.dirname(self.path) or ".")
            try:
                os.fchmod(fd, target_mode(self.path, self.group_read))
            except BaseException:
                os.close(fd)
                os.unlink(self.tmp)
                raise
            self.out = os.fdopen(fd, "wb")
        return self.out

    def commit(self) -> None:
        """The capture is what it should be: in its place (OSError when the rename fails; nothing is left)."""
        self._close()
        if self.tmp:
            tmp, self.tmp = self.tmp, ""
            try:
                os.replace(tmp, self.path)
            except OSError:
                os.unlink(tmp)
                raise

    def discard(self) -> None:
        """Nothing of it should stay (a staged file is removed; one written through stays as written)."""
        self._close()
        if self.tmp:
            tmp, self.tmp = self.tmp, ""
            try:
                os.unlink(tmp)
            except OSError:
                pass

    def _close(self) -> None:
        out, self.out = self.out, None
        if out is None:
            return
        if self.path == "-":
            out.flush()
        else:
            out.close()

    def __enter__(self) -> "StagedOutput":
        return self

    def __exit__(self, kind, exc, tb) -> None:  # type: ignore[no-untyped-def]
        self.discard()  # not committed by then: an error left it unfinished


__all__ = ["CAPTURE_MODE", "StagedOutput", "GROUP_READ_HELP", "GROUP_READ_MODE", "capture_mode", "current_umask", "narrowed",
           "open_capture_fd", "open_capture_output", "restrict_fd", "target_mode"]
