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
from ..peers.faults import SYNTAX, Fault, FaultInjector, parse_fault

CLIENT, SERVER = "client", "server"
SIDE_DIR = {CLIENT: spec.C2S, SERVER: spec.S2C}
__all__ = ["CLIENT", "SERVER", "SIDE_DIR", "SYNTAX", "Forward", "Injector", "LiveFault", "Plan", "parse"]


@dataclass(frozen=True, slots=True)
class LiveFault:
    """One `record --fault`: the side whose messages it changes, and the fault."""

    side: str
    fault: Fault
    text: str  # as the user wrote it


def parse(text: str) -> LiveFault:
    """``delay,side=server,command=REGION_READ,delay=6`` -> LiveFault; ValueError (one line) when it is not one."""
    side, fault = parse_fault(text)
    return LiveFault(side, fault, text)


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
