"""What the engine returns: one MessageRecord per message and one Finding per anomaly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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


@dataclass(frozen=True)  # no slots: make_message_record() fills __dict__ in one step (2.5x faster)
class MessageRecord:
    """One decoded vfio-user message with its request/reply link and findings."""

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
    fields: dict[str, Any] = field(default_factory=dict)  # key decoded payload fields
    request_frame: int | None = None  # on replies
    response_frame: int | None = None  # on commands, filled in by the sequencer
    rtt: float | None = None  # on replies: seconds since the request
    findings: tuple[str, ...] = ()
    truncated: bool = False  # payload cut by the recorder's snaplen
    no_reply: bool = False
    context: bool = False  # copied from an earlier file of a rotated capture (VFUC flag CONTEXT)


_set = object.__setattr__
_new = object.__new__


def make_message_record(frame: int, ts: float, conn: int, dir: str, msg_id: int, command: int,
                        command_name: str, msg_type: str, size: int, flags: int, error: int, wire_len: int,
                        fds: tuple[FdInfo, ...], fields: dict[str, Any], request_frame: int | None,
                        rtt: float | None, findings: tuple[str, ...], truncated: bool,
                        no_reply: bool, context: bool = False) -> MessageRecord:
    """The engine's hot-path constructor: same object as MessageRecord(...), built without 20 setattr calls."""
    r = _new(MessageRecord)
    _set(r, "__dict__", {
        "frame": frame, "ts": ts, "conn": conn, "dir": dir, "msg_id": msg_id, "command": command,
        "command_name": command_name, "msg_type": msg_type, "size": size, "flags": flags, "error": error,
        "wire_len": wire_len, "fds": fds, "fields": fields, "request_frame": request_frame,
        "response_frame": None, "rtt": rtt, "findings": findings, "truncated": truncated, "no_reply": no_reply,
        "context": context})
    return r


@dataclass(frozen=True, slots=True)
class ConnRecord:
    """A connection event (open/close) or raw/unframed bytes, for the line view."""

    frame: int
    ts: float
    conn: int
    kind: str  # open | close | raw | note
    text: str
    dir: str | None = None
    findings: tuple[str, ...] = ()


Item = MessageRecord | ConnRecord | Finding
