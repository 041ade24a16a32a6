"""What a rule sees and how it speaks: the message in hand (Msg), the one helper that adds a finding, the registry.

A rule is a function of one ``Msg`` that reads the connection's state and
adds findings with ``m.add(Code.X, text, *other_frames)``; it changes no
state.  ``@on(stage, *commands, emits=...)`` registers it (no commands: every
message of the stage); ``@updates(stage, *commands)`` registers a transition,
the only code that changes state, run after the stage's rules so every rule
sees the state as it was before the message.  Within a stage, rules run by
``priority`` (lower first), then in the order their modules registered them.
A rule returns True when the rest of its stage cannot judge the message (a
reply without its fixed part).  ``emits`` is checked when the rule's module
loads (every code must be declared in core/findings.py) and the tests check
that a rule adds no code it does not declare.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ... import spec
from ..events import MessageIn
from ..findings import CATALOGUE, Code
from ..state import ConnState, EngineState, Match, Pending

# Stages of one message, in the order the analyzer runs them (see core/analyzer.py).
HEADER = "header"  # every message of 16 bytes or more, the recorder's unframeable headers included
FRAMED = "framed"  # every message the recorder framed (not its unframeable headers)
ORDER = "order"  # before the connection's VERSION exchange completed (main sockets only)
CHANNEL = "channel"  # a message on a connection with a twin socket (or on the twin): which socket it travels on
COMMAND = "command"  # every command: header bits, direction, fixed part
REQUEST = "request"  # a command of a code the spec defines, fixed fields decoded (``m.fields``, may be empty)
TRACK = "track"  # a command about to wait for its reply (before it is tracked)
REPLY = "reply"  # every reply, before pairing
PAIRING = "pairing"  # every reply, after pairing (``m.match``, ``m.req``)
PAIRED = "paired"  # a successful reply of a defined code to a request of the same code (``m.req``)
ERROR_REPLY = "error_reply"  # an error reply (``m.req`` may be None)
STAGES = (HEADER, FRAMED, ORDER, CHANNEL, COMMAND, REQUEST, TRACK, REPLY, PAIRING, PAIRED, ERROR_REPLY)

Found = list[tuple[str, str, tuple[int, ...]]]  # (code, text, frames besides the message's own)
_NOTHING: Found = []  # shared empty default: never appended to (add() gives the message a list of its own)
_NO_FIELDS: dict[str, Any] = {}  # shared empty default: the analyzer gives a decoded message a dict of its own
_TYPE_MASK = spec.FLAG_TYPE_MASK
_NAMES = spec.COMMAND_NAMES


class Msg:
    """One message as the rules see it: the event, its header, decoded fields, its connection, its pairing."""

    __slots__ = ("ev", "c", "st", "dir", "msg_id", "cmd", "size", "flags", "err", "mtype", "is_reply", "nfds", "n",
                 "wire", "plen", "name", "fields", "match", "req", "found", "caps", "vdata")

    def __init__(self, ev: MessageIn, c: ConnState, st: EngineState, msg_id: int, cmd: int, size: int, flags: int,
                 err: int) -> None:
        self.ev = ev
        self.c = c
        self.st = st
        self.dir = ev.dir
        self.msg_id, self.cmd, self.size, self.flags, self.err = msg_id, cmd, size, flags, err
        self.mtype = mtype = flags & _TYPE_MASK
        self.is_reply = mtype == 1
        self.nfds = len(ev.fds)
        self.n = n = len(ev.data)
        self.wire = wire = ev.msg_len if ev.msg_len >= 0 else n
        self.plen = wire - 16
        self.name: str | None = _NAMES.get(cmd)
        self.fields: dict[str, Any] = _NO_FIELDS
        self.match: Match | None = None
        self.req: Pending | None = None
        self.found: Found = _NOTHING  # a list of its own once a rule adds to it
        self.caps: Any = None  # VERSION: the capabilities object (None when absent or malformed)
        self.vdata: list[tuple[str, str]] = _NOTHING  # type: ignore[assignment]  # VERSION: its version data's problems

    def add(self, code: Code, text: str, *frames: int) -> None:
        """The one way a rule reports: a finding on this message (and the other frames it concerns)."""
        if self.found is _NOTHING:
            self.found = []
        self.found.append((code, text, frames))


Rule = Callable[[Msg], None]


@dataclass(frozen=True, slots=True)
class Registered:
    fn: Callable[[Msg], Any]
    stage: str
    commands: tuple[int, ...]  # () = every message of the stage
    emits: tuple[Code, ...]  # () for a transition
    priority: int
    family: str
    undefined: bool = False  # only for command codes the spec does not define

    def applies(self, cmd: int) -> bool:
        """Whether it runs for a message of command ``cmd`` (a code the spec defines)."""
        return not self.undefined and (not self.commands or cmd in self.commands)


RULES: list[Registered] = []
TRANSITIONS: list[Registered] = []
EMITS: dict[str, tuple[Code, ...]] = {}  # a judge's qualified name -> codes it declares (the tests hold it to them)


def _commands(stage: str, commands: tuple[spec.Command, ...]) -> tuple[int, ...]:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    return tuple(int(c) for c in commands)


def on(stage: str, *commands: spec.Command, emits: tuple[Code, ...], priority: int = 0,
       undefined: bool = False) -> Callable[[Rule], Rule]:
    """Register a rule for ``stage`` and the commands it is about (none: every message of the stage; with
    ``undefined``: only messages whose command code the spec does not define)."""
    cmds = _commands(stage, commands)
    for code in emits:
        if code not in CATALOGUE:
            raise ValueError(f"{code!r} is not a declared finding code")

    def register(fn: Rule) -> Rule:
        RULES.append(Registered(fn, stage, cmds, tuple(emits), priority, fn.__module__.rsplit(".", 1)[-1],
                                undefined))
        EMITS[f"{fn.__module__}.{fn.__qualname__}"] = tuple(emits)
        return fn

    return register


def updates(stage: str, *commands: spec.Command) -> Callable[[Callable[[Msg], None]], Callable[[Msg], None]]:
    """Register a state transition for ``stage`` (run after the stage's rules)."""
    cmds = _commands(stage, commands)

    def register(fn: Callable[[Msg], None]) -> Callable[[Msg], None]:
        TRANSITIONS.append(Registered(fn, stage, cmds, (), 0, fn.__module__.rsplit(".", 1)[-1]))
        return fn

    return register


def declares(*emits: Code) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """For the engine's other judges (a timeout, a close, raw bytes, a capture note): the codes they may raise."""
    for code in emits:
        if code not in CATALOGUE:
            raise ValueError(f"{code!r} is not a declared finding code")

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        EMITS[f"{fn.__module__}.{fn.__qualname__}"] = tuple(emits)
        return fn

    return mark


def bits_text(value: int, names: Any) -> str:
    parts = [n for bit, n in names.items() if value & bit]
    return "|".join(parts) if parts else "0"


def name_of(cmd: int) -> str | int:
    """A command's short name, or its number when it has none (as the finding texts say it)."""
    return spec.COMMAND_NAMES.get(cmd, cmd)


__all__ = ["CHANNEL", "COMMAND", "Code", "ConnState", "ERROR_REPLY", "EngineState", "FRAMED", "HEADER", "Msg", "ORDER",
           "PAIRED", "PAIRING", "Pending", "REPLY", "REQUEST", "TRACK", "bits_text", "declares", "name_of", "on",
           "updates"]
