"""Fault injection on live traffic (`record --fault`): which message of which side, and what the proxy forwards instead.

The vocabulary is `serve --fault`'s (peers/faults.py: delay, drop,
duplicate, wrong_id, wrong_command, patch_header, replace_payload, close,
...) plus the side whose messages it applies to: ``side=server`` (the
default: what the server sends) or ``side=client``.  ``Injector.plan``
turns one message a peer sent into a ``Plan``: whether the message goes on
as it was, what the proxy forwards besides or instead (each flagged
INJECTED in the capture, the original kept as WITHHELD), and whether the
proxy then closes the connection.  Counting (``nth``) is per connection,
its twin socket included.  No I/O here: the relay carries the plan out.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import spec
from ..peers.faults import ACTIONS, Fault, FaultInjector

CLIENT, SERVER = "client", "server"
SIDE_DIR = {CLIENT: spec.C2S, SERVER: spec.S2C}
SYNTAX = ("ACTION[,side=client|server][,command=NAME][,kind=command|reply][,nth=N][,delay=S][,count=N][,data=HEX]"
          "[,header=FIELD=VALUE[/FIELD=VALUE...]]")


@dataclass(frozen=True, slots=True)
class LiveFault:
    """One `record --fault`: the side whose messages it changes, and the fault."""

    side: str
    fault: Fault
    text: str  # as the user wrote it


def parse(text: str) -> LiveFault:
    """``delay,side=server,command=REGION_READ,delay=6`` -> LiveFault; ValueError (one line) when it is not one."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError("empty fault")
    action, opts = parts[0], parts[1:]
    if action not in ACTIONS:
        raise ValueError(f"unknown fault action {action!r}; known: {', '.join(ACTIONS)}")
    side = SERVER
    kw: dict = {}
    for o in opts:
        key, sep, value = o.partition("=")
        if not sep:
            raise ValueError(f"fault option {o!r} is not KEY=VALUE ({SYNTAX})")
        try:
            if key == "side":
                if value not in (CLIENT, SERVER):
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
    return LiveFault(side, Fault(action, **kw), text)


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
class Forward:
    """One message (or bytes) the proxy forwards for a fault: its fds (the original's, or made for the fault)."""

    data: bytes
    fds: tuple[int, ...] = ()
    delay: float = 0.0  # seconds from when the original came
    main_socket: bool = False  # on the main socket although it came on the twin socket (wrong_channel)
    stall: bool = False  # nothing more goes in this direction after it (truncate)


@dataclass(frozen=True, slots=True)
class Plan:
    """What the proxy does with one message a fault fired on."""

    original: bool  # the message goes on as it was, first (``forwards`` are extras after it)
    forwards: tuple[Forward, ...]
    close: bool  # the proxy closes the connection after the forwards
    unused: tuple[int, ...]  # fds of the original that nothing forwards (the relay closes them)
    note: str  # for the capture: which fault, on which message


class Injector:
    """The faults of one side of one connection (and its twin socket), with their own counters."""

    def __init__(self, side: str, faults: list[LiveFault]) -> None:
        self.side = side
        self.faults = faults
        self._inj = FaultInjector(tuple(f.fault for f in faults))

    def plan(self, data: bytes, fds: list[int]) -> Plan | None:
        """The plan for one message this side sent, None when no fault fires on it."""
        before = len(self._inj.fired)
        sends = self._inj.outgoing(data, tuple(fds))
        fired = self._inj.fired[before:]
        if not fired:
            return None
        close = any(s.close_connection for s in sends)
        sends = [s for s in sends if not s.close_connection]
        original = bool(sends) and sends[0].data == data and sends[0].fds == tuple(fds) and not sends[0].delay \
            and not sends[0].main_socket and not sends[0].stall
        forwards = tuple(Forward(s.data, s.fds, s.delay, s.main_socket, s.stall) for s in sends[1 if original else 0:])
        used = {fd for s in sends for fd in s.fds}
        unused = tuple(fd for fd in fds if fd not in used)
        names = ", ".join(next(f.text for f in self.faults if f.fault is r) for r in fired)
        msg_id, cmd, _size, flags, _err = spec.HEADER.unpack_from(data) if len(data) >= 16 else (0, 0, 0, 0, 0)
        kind = "reply" if flags & spec.FLAG_TYPE_MASK == spec.MSG_TYPE_REPLY else "command"
        what = f"{spec.command_name(cmd)} {kind} id={msg_id}"
        outcome = ("not forwarded" if not sends else "forwarded as it was, then " + _count(len(forwards)) if original
                   else f"withheld; {_count(len(forwards))} forwarded instead")
        if close:
            outcome += "; the proxy closes the connection"
        return Plan(original, forwards, close, unused, f"fault {names} ({self.side}): {what} {outcome}")


def _count(n: int) -> str:
    return f"{n} injected message{'s' if n != 1 else ''}"
