"""Socket paths for the proxy: a fresh listening socket (--listen) or a server's socket taken over (--intercept).

Nothing here replaces a path that is not a socket, or a socket a live server
is still listening on (that is what --intercept is for).  Intercepting is
atomic: the proxy binds under a temporary name, hard-links the server's
socket aside (connecting through the link reaches the same server), then
renames its own socket over the original name; restoring renames the
server's socket back, so there is no moment without a socket at the path.

Whether a server listens is found out without being its client (see
:func:`server_status`): a throw-away connect would be one, and a
single-client server takes it for its client.
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
    """True if a socket (a server's) is bound at path; asked without connecting to it (see probe_bound)."""
    return probe_bound(path) in (0, errno.EPROTOTYPE)


def same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


# ----------------------------------------------------------------- is the server there?
#
# A connect() to the server's socket cannot be the test.  For AF_UNIX stream sockets a connect succeeds as soon as
# it is queued in the listener's backlog, before any accept(); the server then accepts it like any client.
# libvfio-user (lib/tran_sock.c) listens with a backlog of 0 (Linux queues exactly one pending connection then) and
# vfu_attach_ctx() accept()s ONE connection and negotiates VERSION on it, failing when that connection closes
# without one; its samples/server.c attaches once and exits ("failed to attach device") when that fails.  A probe
# that connects and closes would kill that server, or take its only connection.
#
# What is asked instead: connect() from a SOCK_DGRAM socket.  Linux resolves the path to the socket bound at its
# inode and compares the types before anything is queued (net/unix/af_unix.c, unix_find_bsd / unix_find_other):
# ENOENT (no file), ECONNREFUSED (a file that is not a socket, or a socket file no socket is bound to any more:
# the server is gone), EACCES (no write permission: a real connect would fail the same way), EPROTOTYPE (a stream
# or seqpacket socket is bound there: a server).  The server sees nothing, not even an atime change.  The same
# lookup works across network namespaces, for relative bind paths and through hard links (--intercept's).
#
# EPROTOTYPE does not tell listening from merely bound (between a server's bind() and listen()), nor stream from
# seqpacket: /proc/net/unix does, per socket (Flags 00010000 = __SO_ACCEPTCON, set on listening sockets; Type 0001
# stream, 0005 seqpacket), but it names sockets by the path they were bound with (relative if bound so) and lists
# only this network namespace.  So it can only refine: when it lists sockets bound at this very path and none of
# them is a listening stream socket, that is the answer; when it lists none (or cannot be read), the bound socket
# is taken for a server (at worst a client then meets a server that does not accept, which the relay reports).

PROC_NET_UNIX = "/proc/net/unix"
SO_ACCEPTCON = 0x00010000
_STREAM = 1  # /proc/net/unix Type of SOCK_STREAM (0005: SOCK_SEQPACKET, the only other kind that listens)


@dataclass(frozen=True)
class ServerStatus:
    """What the server socket at a path is: usable, or why not (one line) and whether waiting can help."""

    ok: bool
    why: str = ""
    waitable: bool = False  # missing, or nobody listening yet: a server starting later fixes it
    short: str = ""  # a few words for the waiting line


def probe_bound(path: str) -> int:
    """errno of a SOCK_DGRAM connect() to path (0 when it connects: a datagram socket is bound there).

    Never a connection a stream server sees (see the comment above)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        s.connect(path)
        return 0
    except OSError as exc:
        return exc.errno or errno.EIO
    finally:
        s.close()


def listening_at(path: str, table: str = PROC_NET_UNIX) -> tuple[int, ...] | None:
    """Types of the listening sockets /proc/net/unix lists as bound at path (its absolute or resolved form: a relative
    name there could be any directory's); ``()`` when it lists sockets there but none listens; None when it lists
    none there or cannot be read."""
    names = {os.path.abspath(path), os.path.realpath(path)}
    found, listening = False, []
    try:
        with open(table, encoding="utf-8", errors="surrogateescape") as f:
            next(f, None)  # Num RefCount Protocol Flags Type St Inode Path
            for line in f:
                parts = line.split(None, 7)
                if len(parts) < 8 or parts[7].rstrip("\n") not in names:
                    continue
                found = True
                try:
                    flags, kind = int(parts[3], 16), int(parts[4], 16)
                except ValueError:
                    return None
                if flags & SO_ACCEPTCON:
                    listening.append(kind)
    except OSError:
        return None
    return tuple(listening) if found else None


def server_status(path: str) -> ServerStatus:
    """Is a stream server listening at path?  Found out without connecting to it (a single-client server such as
    libvfio-user's would take a probe connection for its client)."""
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        return ServerStatus(False, f"cannot use server socket {path}: {_strerror(exc)}", True, "it does not exist yet")
    except OSError as exc:
        return ServerStatus(False, f"cannot use server socket {path}: {_strerror(exc)}")
    if not stat.S_ISSOCK(st.st_mode):
        return ServerStatus(False, f"server path {path} is not a socket")
    err = probe_bound(path)
    if err == 0:
        return ServerStatus(False, f"server socket {path} is a datagram socket; vfio-user needs a stream socket")
    if err == errno.ECONNREFUSED:
        return ServerStatus(False, f"nobody listens at server socket {path} (connection refused: its server is "
                                   "gone, the socket file stayed)", True, "nobody listens on it yet")
    if err == errno.ENOENT:  # removed since the stat
        return ServerStatus(False, f"cannot use server socket {path}: {os.strerror(err)}", True,
                            "it does not exist yet")
    if err in (errno.EACCES, errno.EPERM):
        return ServerStatus(False, f"cannot use server socket {path}: {os.strerror(err)}")
    if err != errno.EPROTOTYPE:
        return ServerStatus(True)  # the probe could not tell: the socket file exists, take it
    kinds = listening_at(path)
    if kinds is None or _STREAM in kinds:
        return ServerStatus(True)
    if kinds:
        return ServerStatus(False, f"server socket {path} is a SOCK_SEQPACKET socket; vfio-user needs a stream "
                                   "socket")
    return ServerStatus(False, f"server socket {path} is bound but nobody listens on it (not yet?)", True,
                        "bound, not listening yet")


def check_server(path: str) -> None:
    """The --connect target must be a stream socket a server listens on (PathError, one line, otherwise).
    Not probed with a connection: see server_status."""
    st = server_status(path)
    if not st.ok:
        raise PathError(st.why)


def check_listen_path(path: str) -> None:
    """What listen_at would refuse, refused now without binding (to say it before waiting for a server)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise PathError(f"cannot use {path}: {_strerror(exc)}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise PathError(f"refusing to replace {path}: it exists and is not a socket")
    if is_live(path):
        raise PathError(f"a server is listening at {path}; use --intercept {path} to take it over")


def bind_listener(path: str, mode: int, backlog: int = 128, says: str | None = None) -> socket.socket:
    """A socket listening at ``path``; an error names ``says`` (the path the user gave, when this is a temporary
    name beside it)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o777 & ~mode)
    try:
        s.bind(path)
        os.chmod(path, mode)
        s.listen(backlog)
    except OSError as exc:
        s.close()
        raise PathError(f"cannot listen on {says or path}: {_strerror(exc)}") from None
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
        check_listen_path(path)
        try:
            os.unlink(path)
        except OSError as exc:
            raise PathError(f"cannot remove the stale socket {path}: {_strerror(exc)}") from None
    return _publish(path, mode)


def _publish(path: str, mode: int) -> socket.socket:
    """Bind and listen under a temporary name, then link it to path: the path appears already listening (a client
    or a script that waits for it never meets the moment between bind() and listen(): connection refused), and
    whatever appeared at path meanwhile is not replaced (EEXIST).  A path too long for the temporary name is bound
    directly."""
    tmp = path + TMP_SUFFIX
    if len(os.fsencode(tmp)) >= 108:  # sun_path
        return bind_listener(path, mode)
    if os.path.lexists(tmp):
        if not is_socket(tmp) or is_live(tmp):
            raise PathError(f"refusing to replace {tmp}: it exists and is not a stale socket")
        os.unlink(tmp)
    s = bind_listener(tmp, mode, says=path)
    try:
        try:
            os.link(tmp, path)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP):
                raise
            os.rename(tmp, path)  # no hard links here: the rename may replace what appeared meanwhile
        else:
            os.unlink(tmp)
    except OSError as exc:
        s.close()
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise PathError(f"cannot listen on {path}: {_strerror(exc)}") from None
    return s


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
