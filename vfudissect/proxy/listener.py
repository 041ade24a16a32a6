"""Socket paths for the proxy: a fresh listening socket (--listen) or a server's socket taken over (--intercept).

Nothing here replaces a path that is not a socket, or a socket a live server
is still listening on (that is what --intercept is for).  Intercepting is
atomic: the proxy binds under a temporary name, hard-links the server's
socket aside (connecting through the link reaches the same server), then
renames its own socket over the original name; restoring renames the
server's socket back, so there is no moment without a socket at the path.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from dataclasses import dataclass

MOVED_SUFFIX = ".vfudissect-orig"
TMP_SUFFIX = ".vfudissect-new"


class PathError(Exception):
    """A socket path the proxy cannot or must not use; the message is one line for the user."""


def _strerror(exc: OSError) -> str:
    return exc.strerror or str(exc)


def is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def is_live(path: str) -> bool:
    """True if a server accepts connections at path (a throw-away connect)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_server(path: str) -> None:
    """The --connect target must exist and be a socket (it is not probed: a probe would be a client)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise PathError(f"cannot use server socket {path}: {_strerror(exc)}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise PathError(f"server path {path} is not a socket")


def bind_listener(path: str, mode: int, backlog: int = 128) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~mode)
    try:
        s.bind(path)
        os.chmod(path, mode)
        s.listen(backlog)
    except OSError as exc:
        s.close()
        raise PathError(f"cannot listen on {path}: {_strerror(exc)}") from None
    finally:
        os.umask(old)
    return s


def listen_at(path: str, mode: int = 0o600) -> socket.socket:
    """A listening socket at path; a stale socket there is replaced, anything else refused."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise PathError(f"cannot use {path}: {_strerror(exc)}") from None
    if st is not None:
        if not stat.S_ISSOCK(st.st_mode):
            raise PathError(f"refusing to replace {path}: it exists and is not a socket")
        if is_live(path):
            raise PathError(f"a server is listening at {path}; use --intercept {path} to take it over")
        try:
            os.unlink(path)
        except OSError as exc:
            raise PathError(f"cannot remove the stale socket {path}: {_strerror(exc)}") from None
    return bind_listener(path, mode)


@dataclass
class Intercept:
    """The server's socket moved aside and the proxy's in its place, until restore()."""

    path: str
    moved: str
    listener: socket.socket
    restored: bool = False

    def restore(self) -> None:
        """Put the server's socket back at its path (atomic rename over the proxy's)."""
        if self.restored:
            return
        self.restored = True
        try:
            self.listener.close()
        except OSError:
            pass
        try:
            os.rename(self.moved, self.path)
        except FileNotFoundError:
            pass


def intercept(path: str, mode: int | None = None) -> Intercept:
    """Take over the listening server socket at path."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise PathError(f"cannot intercept {path}: {_strerror(exc)}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise PathError(f"refusing to intercept {path}: it is not a socket")
    moved, tmp = path + MOVED_SUFFIX, path + TMP_SUFFIX
    if os.path.lexists(moved):
        raise PathError(f"{moved} exists (left by an earlier run?): move it back to {path} or remove it first")
    if os.path.lexists(tmp):
        if not is_socket(tmp):
            raise PathError(f"refusing to replace {tmp}: it exists and is not a socket")
        os.unlink(tmp)
    listener = bind_listener(tmp, stat.S_IMODE(st.st_mode) if mode is None else mode)
    try:
        try:
            os.chown(tmp, st.st_uid, st.st_gid)
        except OSError:
            pass  # not ours to give away: keep our own ownership
        try:
            os.link(path, moved)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP):
                raise
            os.rename(path, moved)  # no hard links here: a short moment without a socket at path
        os.rename(tmp, path)
    except OSError as exc:
        listener.close()
        for leftover in (tmp,):
            try:
                os.unlink(leftover)
            except OSError:
                pass
        if os.path.lexists(moved) and not os.path.lexists(path):
            os.rename(moved, path)
        elif os.path.lexists(moved) and same_file(moved, path):
            os.unlink(moved)
        raise PathError(f"cannot intercept {path}: {_strerror(exc)}") from None
    return Intercept(path, moved, listener)
