"""Fault injection for the emulated peers: a schedule of what to do to which outgoing message.

    faults = Faults(Fault("delay", command=Command.REGION_READ, delay=6.0),
                    Fault("caps_no_nul", command=Command.VERSION))
    server = DeviceServer(path, faults=faults)

Each connection gets its own ``FaultInjector`` (``faults.injector()``), which
counts matching messages so ``nth`` picks the n-th one (0 = every one).
``FaultInjector.outgoing(data, fds)`` turns one message into what to send
instead: nothing (drop), the message delayed, changed or twice, garbage, a
header that cannot be framed, or the first bytes of it followed by a stall.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Mapping

from .. import spec
from .wire import close_fds, send_message

ACTIONS: Mapping[str, str] = {
    "delay": "send after `delay` seconds",
    "wrong_id": "change msg_id (the reply matches nothing)",
    "wrong_command": "change the command code",
    "drop": "do not send it at all",
    "duplicate": "send it twice",
    "bad_version": "VERSION with major 1",
    "caps_malformed": "VERSION JSON that does not parse",
    "caps_no_nul": "VERSION JSON without its terminating NUL",
    "caps_not_object": "VERSION JSON whose top level is not an object",
    "caps_bad_value": "VERSION capabilities of the wrong type / out of range",
    "garbage": "send `data` (default: 16 bytes whose size field is 3) instead",
    "extra_fd": "attach one more fd (an eventfd) than the message carries",
    "missing_fd": "drop the last fd of the message",
    "oversized_header": "size field far beyond any maximum, then the bytes as they were",
    "truncate": "send only the first `count` bytes, then nothing more (a body that never completes)",
    "patch_header": "overwrite header fields given in `header` (msg_id, command, size, flags, error)",
    "replace_payload": "replace the payload by `data` (size follows)",
    "close": "close the connection instead of sending",
    "wrong_channel": "a server command on the main socket although a twin socket was negotiated",
}

DEFAULT_GARBAGE = struct.pack("<HHIII", 0xBEEF, 0xDEAD, 3, 0xFFFFFFFF, 0xFFFFFFFF)
OVERSIZED = 0xFFFFFF00
MALFORMED_CAPS = b'{ "capabilities": { "max_msg_fds": 8, \0'
NOT_OBJECT_CAPS = b'[ "capabilities" ]\0'
BAD_VALUE_CAPS = b'{ "capabilities": { "max_msg_fds": -1, "max_data_xfer_size": "lots" } }\0'


@dataclass(frozen=True, slots=True)
class Fault:
    """One rule: which outgoing message (command / kind / nth), and what to do to it."""

    action: str
    command: int | None = None  # only messages with this command code (None: any)
    kind: str | None = None  # "command" or "reply" (None: either)
    nth: int = 1  # the n-th matching message, 1-based; 0 = every matching message
    delay: float = 0.0  # for "delay"
    data: bytes = b""  # for "garbage" / "replace_payload"
    count: int = 20  # bytes kept by "truncate"
    header: Mapping[str, int] | None = None  # for "patch_header"

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}; known: {', '.join(ACTIONS)}")


SYNTAX = ("ACTION[,side=client|server][,command=NAME][,kind=command|reply][,nth=N][,delay=S][,count=N][,data=HEX]"
          "[,header=FIELD=VALUE[/FIELD=VALUE...]]")


def parse_fault(text: str) -> tuple[str, Fault]:
    """``delay,side=server,command=REGION_READ,delay=6`` -> ("server", Fault(...)): the vocabulary of `serve --fault`
    and `record --fault`; ValueError, one line, when it is not one.  ``side`` defaults to server."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError("empty fault")
    action, opts = parts[0], parts[1:]
    if action not in ACTIONS:
        raise ValueError(f"unknown fault action {action!r}; known: {', '.join(ACTIONS)}")
    side = "server"
    kw: dict = {}
    for o in opts:
        key, sep, value = o.partition("=")
        if not sep:
            raise ValueError(f"fault option {o!r} is not KEY=VALUE ({SYNTAX})")
        try:
            if key == "side":
                if value not in ("client", "server"):
                    raise ValueError(f"side={value!r}: client or server")
                side = value
            elif key == "command":
                kw["command"] = _command(value)
            elif key == "kind":
                if value not in ("command", "reply"):
                    raise ValueError(f"kind={value!r}: command or reply")
                kw["kind"] = value
            elif key == "nth":
                kw["nth"] = int(value, 0)
                if kw["nth"] < 0:
                    raise ValueError(f"nth={value}: 0 (every one) or more")
            elif key == "delay":
                kw["delay"] = float(value)
                if not 0 <= kw["delay"] < 3600:
                    raise ValueError(f"delay={value}: seconds, 0 to 3600")
            elif key == "count":
                kw["count"] = int(value, 0)
            elif key == "data":
                kw["data"] = bytes.fromhex(value)
            elif key == "header":
                kw["header"] = _header(value)
            else:
                raise ValueError(f"unknown fault option {key!r} ({SYNTAX})")
        except ValueError as exc:
            msg = str(exc)
            raise ValueError(msg if key in msg or "=" in msg else f"fault option {o!r}: {msg}") from None
    return side, Fault(action, **kw)


def _command(value: str) -> int:
    v = value.upper().removeprefix("VFIO_USER_")
    if v.isdigit():
        return int(v)
    for code, info in spec.COMMANDS.items():
        if info.name == v:
            return code
    raise ValueError(f"command={value!r} is not a vfio-user command")


def _header(value: str) -> dict[str, int]:
    out = {}
    for item in value.split("/"):
        k, sep, v = item.partition("=")
        if not sep or k not in ("msg_id", "command", "size", "flags", "error"):
            raise ValueError(f"header={value!r}: FIELD=VALUE[/...] with FIELD one of msg_id, command, size, flags, "
                             "error")
        out[k] = int(v, 0)
    return out


@dataclass(frozen=True, slots=True)
class Send:
    """One thing to put on the wire: bytes, fds, a wait before, fds to close after, and whether to stop."""

    data: bytes
    fds: tuple[int, ...] = ()
    delay: float = 0.0
    close_after: tuple[int, ...] = ()
    close_connection: bool = False
    stall: bool = False  # nothing more may follow on this socket (truncated message)
    main_socket: bool = False  # send on the main socket even where the twin socket belongs


@dataclass(frozen=True, slots=True)
class Faults:
    """An immutable fault schedule; ``injector()`` gives each connection its own counters."""

    rules: tuple[Fault, ...] = ()

    def __init__(self, *rules: Fault) -> None:
        object.__setattr__(self, "rules", tuple(rules))

    def __bool__(self) -> bool:
        return bool(self.rules)

    def injector(self) -> "FaultInjector":
        return FaultInjector(self.rules)


@dataclass(slots=True)
class FaultInjector:
    rules: tuple[Fault, ...]
    seen: list[int] = field(default_factory=list)
    fired: list[Fault] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.seen = [0] * len(self.rules)

    def outgoing(self, data: bytes, fds: tuple[int, ...] | list[int] = ()) -> list[Send]:
        """What to send instead of ``data`` with ``fds`` (the caller still owns and closes ``fds``)."""
        if not self.rules or len(data) < spec.HEADER_SIZE:
            return [Send(data, tuple(fds))]
        _mid, cmd, _size, flags, _err = spec.HEADER.unpack_from(data)
        kind = spec.MSG_TYPE_NAMES.get(flags & spec.FLAG_TYPE_MASK)
        sends = [Send(data, tuple(fds))]
        for i, rule in enumerate(self.rules):
            if rule.command is not None and rule.command != cmd:
                continue
            if rule.kind is not None and rule.kind != kind:
                continue
            self.seen[i] += 1
            if rule.nth and self.seen[i] != rule.nth:
                continue
            self.fired.append(rule)
            sends = [s2 for s in sends for s2 in _apply(rule, s)]
        return sends


def _patch(data: bytes, **fields: int) -> bytes:
    vals = dict(zip(("msg_id", "command", "size", "flags", "error"), spec.HEADER.unpack_from(data)))
    for k, v in fields.items():
        if k not in vals:
            raise ValueError(f"no header field {k!r}")
        vals[k] = v & (0xFFFF if k in ("msg_id", "command") else 0xFFFFFFFF)
    return spec.HEADER.pack(*vals.values()) + data[spec.HEADER_SIZE:]


def _with_payload(data: bytes, payload: bytes) -> bytes:
    return _patch(data[:spec.HEADER_SIZE], size=spec.HEADER_SIZE + len(payload)) + payload


def _version_json(data: bytes, text: bytes) -> bytes:
    vpre = data[spec.HEADER_SIZE:spec.HEADER_SIZE + 4]
    return _with_payload(data, vpre + text)


def _apply(rule: Fault, s: Send) -> list[Send]:
    a = rule.action
    d = s.data
    if a == "delay":
        return [Send(d, s.fds, s.delay + rule.delay, s.close_after)]
    if a == "drop":
        return []
    if a == "duplicate":
        return [s, Send(d, (), 0.0)]  # fds go once: they were passed with the first copy
    if a == "wrong_id":
        mid = spec.HEADER.unpack_from(d)[0]
        return [Send(_patch(d, msg_id=(mid + 0x1000) & 0xFFFF), s.fds, s.delay, s.close_after)]
    if a == "wrong_command":
        cmd = spec.HEADER.unpack_from(d)[1]
        other = spec.Command.DEVICE_GET_INFO if cmd != spec.Command.DEVICE_GET_INFO else spec.Command.DEVICE_GET_IRQ_INFO
        return [Send(_patch(d, command=other), s.fds, s.delay, s.close_after)]
    if a == "bad_version":
        minor = struct.unpack_from("<H", d, spec.HEADER_SIZE + 2)[0] if len(d) >= 20 else 0
        return [Send(d[:spec.HEADER_SIZE] + struct.pack("<HH", 1, minor) + d[20:], s.fds, s.delay, s.close_after)]
    if a == "caps_malformed":
        return [Send(_version_json(d, MALFORMED_CAPS), s.fds, s.delay, s.close_after)]
    if a == "caps_no_nul":
        text = d[20:].rstrip(b"\0") or json.dumps({"capabilities": {}}).encode()
        return [Send(_version_json(d, text), s.fds, s.delay, s.close_after)]
    if a == "caps_not_object":
        return [Send(_version_json(d, NOT_OBJECT_CAPS), s.fds, s.delay, s.close_after)]
    if a == "caps_bad_value":
        return [Send(_version_json(d, BAD_VALUE_CAPS), s.fds, s.delay, s.close_after)]
    if a == "garbage":
        return [Send(rule.data or DEFAULT_GARBAGE, (), s.delay)]
    if a == "extra_fd":
        efd = os.eventfd(0, os.EFD_CLOEXEC)
        return [Send(d, s.fds + (efd,), s.delay, s.close_after + (efd,))]
    if a == "missing_fd":
        return [Send(d, s.fds[:-1], s.delay, s.close_after)]
    if a == "oversized_header":
        return [Send(_patch(d, size=OVERSIZED), s.fds, s.delay, s.close_after)]
    if a == "truncate":
        return [Send(d[:max(rule.count, 1)], s.fds, s.delay, s.close_after, stall=True)]
    if a == "patch_header":
        return [Send(_patch(d, **dict(rule.header or {})), s.fds, s.delay, s.close_after)]
    if a == "replace_payload":
        return [Send(_with_payload(d, rule.data), s.fds, s.delay, s.close_after)]
    if a == "close":
        return [Send(b"", (), s.delay, s.close_after, close_connection=True)]
    if a == "wrong_channel":
        return [Send(d, s.fds, s.delay, s.close_after, main_socket=True)]
    raise AssertionError(a)


def deliver(sock: socket.socket, sends: list[Send]) -> bool:
    """Put each Send on the wire; False once the connection must not be used any more (closed or stalled)."""
    for s in sends:
        if s.delay:
            time.sleep(s.delay)
        if s.close_connection:
            try:
                sock.shutdown(2)
            except OSError:
                pass
            return False
        try:
            send_message(sock, s.data, s.fds)
        finally:
            close_fds(s.close_after)
        if s.stall:
            return False
    return True
