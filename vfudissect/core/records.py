"""What the engine returns: one MessageRecord per message and one Finding per anomaly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from .events import FdInfo


@dataclass(frozen=True, slots=True)
class Finding:
    """An anomaly: stable code (findings.CATALOGUE), severity, where, and a sentence."""

    code: str
    severity: str  # note | warning | error
    conn: int
    frames: tuple[int, ...]  # frames involved, the one it is about first
    text: str
    ts: float = 0.0

    @property
    def frame(self) -> int:
        return self.frames[0] if self.frames else 0


class MessageRecord(NamedTuple):
    """One decoded vfio-user message with its request/reply link and findings.

    A NamedTuple, not a dataclass: the engine builds one per message, and a tuple is built in one C call (about
    5x faster than a frozen dataclass), is just as immutable, and reads its fields as fast (``_replace`` for
    a changed copy)."""

    frame: int
    ts: float
    conn: int
    dir: str  # c2s | s2c
    msg_id: int
    command: int
    command_name: str
    msg_type: str  # command | reply | type<N>
    size: int  # header size field
    flags: int
    error: int
    wire_len: int  # bytes on the wire (may differ from size in malformed messages)
    fds: tuple[FdInfo, ...] = ()
    fields: dict[str, Any] = {}  # key decoded payload fields (never mutate a record's: build a new record)
    request_frame: int | None = None  # on replies
    response_frame: int | None = None  # on commands, filled in by the sequencer
    rtt: float | None = None  # on replies: seconds since the request
    findings: tuple[str, ...] = ()
    truncated: bool = False  # payload cut by the recorder's snaplen
    no_reply: bool = False
    context: bool = False  # copied from an earlier file of a rotated capture (VFUC flag CONTEXT)
    request_command: int | None = None  # on replies: the command of the request it answers (may differ from its own)
    fault: str = ""  # "injected": the proxy forwarded it for a fault (record --fault); "withheld": a peer sent it,
    # the proxy did not forward it as it was (not judged, not counted)


_tuple_new = tuple.__new__


def make_message_record(frame: int, ts: float, conn: int, dir: str, msg_id: int, command: int,
                        command_name: str, msg_type: str, size: int, flags: int, error: int, wire_len: int,
                        fds: tuple[FdInfo, ...], fields: dict[str, Any], request_frame: int | None,
                        rtt: float | None, findings: tuple[str, ...], truncated: bool,
                        no_reply: bool, context: bool = False, request_command: int | None = None,
                        fault: str = "") -> MessageRecord:
    """The same record as MessageRecord(...), built in one step (the engine builds its records the same way,
    without this call; response_frame is the sequencer's to fill in)."""
    return _tuple_new(MessageRecord, (frame, ts, conn, dir, msg_id, command, command_name, msg_type, size, flags,
                                      error, wire_len, fds, fields, request_frame, None, rtt, findings, truncated,
                                      no_reply, context, request_command, fault))


@dataclass(frozen=True, slots=True)
class ConnRecord:
    """A connection event (open/close) or raw/unframed bytes, for the line view."""

    frame: int
    ts: float
    conn: int
    kind: str  # open | close | raw | note | irq
    text: str
    dir: str | None = None
    findings: tuple[str, ...] = ()


Item = MessageRecord | ConnRecord | Finding
