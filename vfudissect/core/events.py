"""Events fed to the analysis engine: what was seen on the wire, with its timestamp.

The proxy builds these from sockets, the capture reader from pcapng records,
and tests by hand; the engine never asks where they came from.  ``frame`` is
the 1-based pcapng record number (the last fragment's, for a message split
over several records), 0 when not recorded.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FdInfo:
    """A file descriptor passed with a message (SCM_RIGHTS), as fstat and /proc saw it."""

    kind: str  # unknown | regular | memfd | eventfd | socket | fifo | chardev | blockdev | directory | anon_inode
    size: int = 0
    ino: int = 0
    status_flags: int = 0  # F_GETFL
    path: str = ""  # readlink of /proc/self/fd/N, e.g. "/memfd:guest-ram (deleted)"


@dataclass(frozen=True, slots=True)
class Cred:
    """SO_PEERCRED of a peer."""

    pid: int
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class ConnOpened:
    ts: float
    conn: int
    socket_path: str = ""
    client: Cred | None = None
    server: Cred | None = None
    twin_of: int | None = None  # main connection this twin socket belongs to
    frame: int = 0


@dataclass(frozen=True)  # no slots: make_message_in() fills __dict__ in one step for the reader's hot path
class MessageIn:
    """One whole vfio-user message (possibly truncated by the recorder's snaplen)."""

    ts: float
    conn: int
    dir: str  # "c2s" | "s2c"
    data: bytes
    fds: tuple[FdInfo, ...] = ()
    frame: int = 0
    msg_len: int = -1  # length on the wire; -1 = len(data)
    flags: int = 0  # VFUC record flags (TRUNCATED, FDS_CTRUNC, FDS_NOT_AT_MSG_START, INJECTED)

    @property
    def wire_len(self) -> int:
        return len(self.data) if self.msg_len < 0 else self.msg_len


_set = object.__setattr__
_new = object.__new__


def make_message_in(ts: float, conn: int, dir: str, data: bytes, fds: tuple[FdInfo, ...], frame: int,
                    msg_len: int, flags: int) -> MessageIn:
    """Same object as MessageIn(...), built without per-field setattr calls (hot path)."""
    m = _new(MessageIn)
    _set(m, "__dict__", {"ts": ts, "conn": conn, "dir": dir, "data": data, "fds": fds, "frame": frame,
                         "msg_len": msg_len, "flags": flags})
    return m


@dataclass(frozen=True, slots=True)
class RawIn:
    """Bytes that could not be framed as messages (relayed raw)."""

    ts: float
    conn: int
    dir: str
    data: bytes
    fds: tuple[FdInfo, ...] = ()
    frame: int = 0
    note: str = ""
    flags: int = 0


@dataclass(frozen=True, slots=True)
class NoteIn:
    """A proxy event worth recording (a stall, a relay error), in words."""

    ts: float
    conn: int
    text: str
    dir: str | None = None
    frame: int = 0
    proxy_errno: int = 0


@dataclass(frozen=True, slots=True)
class ConnClosed:
    """One direction (or, with dir None, the whole connection) closed."""

    ts: float
    conn: int
    dir: str | None = None
    frame: int = 0


@dataclass(frozen=True, slots=True)
class FindingIn:
    """A verdict stored in the capture (a FINDING record): what the engine said when the capture was written.

    The engine does not judge these (it judges the traffic afresh); ``read --stored`` shows them and
    ``read`` compares them with its own."""

    ts: float
    conn: int
    code: str
    severity: str
    frames: tuple[int, ...]
    text: str
    frame: int = 0


@dataclass(frozen=True, slots=True)
class VerdictsIn:
    """The capture carries the engine's verdicts (a VERDICTS record): who judged, with which threshold."""

    ts: float
    engine: str
    timeout: float | None  # REPLY_TIMEOUT threshold in seconds (0: off), None when not said
    frame: int = 0


@dataclass(frozen=True, slots=True)
class IrqIn:
    """An interrupt the server raised through an eventfd it got with SET_IRQS (seen by `record --watch-irqs`)."""

    ts: float
    conn: int
    index: int  # VFIO_PCI_*_IRQ_INDEX
    vector: int  # the SET_IRQS start plus the fd's place
    count: int = 1  # signals the eventfd counted
    frame: int = 0


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed with nothing else happening (lets timeouts fire live)."""

    ts: float


@dataclass(frozen=True, slots=True)
class CaptureEnd:
    """No more events will come."""

    ts: float


Event = ConnOpened | MessageIn | RawIn | NoteIn | ConnClosed | IrqIn | Tick | CaptureEnd | FindingIn | VerdictsIn
