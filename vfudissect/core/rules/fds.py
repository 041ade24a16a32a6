"""File descriptors (fact sheet H12): fds on messages whose command carries none (the per-command counts live with
their commands: DMA_MAP in dma, SET_IRQS in irqs, region accesses and region info in regions, the twin socket in
negotiation)."""

from __future__ import annotations

from ... import spec
from .base import COMMAND, PAIRED, REQUEST, Code, Msg, on

C = spec.Command
_REGION_ACCESS = (C.REGION_READ, C.REGION_WRITE)
_OTHERS = tuple(c for c in C if c not in _REGION_ACCESS)
_NONE_IN_REQUEST = tuple(c for c in _OTHERS if spec.COMMANDS[c].request_fds[1] == 0)
_NONE_IN_REPLY = tuple(c for c in _OTHERS if spec.COMMANDS[c].reply_fds[1] == 0)


@on(COMMAND, emits=(Code.FDS_UNEXPECTED,), priority=1, undefined=True)
def unknown_command_fds(m: Msg) -> None:
    if m.nfds:
        m.add(Code.FDS_UNEXPECTED, f"{m.nfds} fds on an unknown command")


@on(REQUEST, *_NONE_IN_REQUEST, emits=(Code.FDS_UNEXPECTED,), priority=-1)
def request_carries_none(m: Msg) -> None:
    if m.nfds:
        m.add(Code.FDS_UNEXPECTED, f"{m.nfds} fds on a {m.name} request, which carries none")



@on(PAIRED, *_NONE_IN_REPLY, emits=(Code.FDS_UNEXPECTED,), priority=-2)
def reply_carries_none(m: Msg) -> None:
    if m.nfds:
        m.add(Code.FDS_UNEXPECTED, f"{m.nfds} fds on a {m.name} reply, which carries none")
