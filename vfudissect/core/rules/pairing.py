"""Pairing and timing (fact sheet 7.2, T1, T2): which reply answers which command, ids, channels, time, silence."""

from __future__ import annotations

from ... import spec
from ..state import Pending
from .base import CHANNEL, PAIRING, TRACK, Code, Msg, declares, name_of, on

C2S, S2C = spec.C2S, spec.S2C


@on(CHANNEL, emits=(Code.WRONG_CHANNEL,))
def channel(m: Msg) -> None:
    c = m.c
    what_cmd = m.name or f"command {m.cmd}"
    if c.twin_negotiated and m.mtype == 0 and m.dir == S2C:
        m.add(Code.WRONG_CHANNEL, f"server {what_cmd} on the main socket: with a twin socket negotiated, server "
                                  "commands go on the twin socket")
    elif c.twin_of is not None and (m.mtype == 0 and m.dir == C2S or m.is_reply and m.dir == S2C):
        what = f"client {what_cmd} command" if m.mtype == 0 else "server reply"
        m.add(Code.WRONG_CHANNEL, f"{what} on the twin socket, which carries server commands and their replies only")


@on(TRACK, emits=(Code.DUPLICATE_PENDING_ID, Code.DMA_COLLISION))
def ids_in_flight(m: Msg) -> None:
    older = m.st.older_pending(m.ev.conn, m.dir, m.msg_id)
    if older is not None:
        m.add(Code.DUPLICATE_PENDING_ID, f"msg_id {m.msg_id} is still outstanding ({name_of(older.command)} in frame "
                                         f"{older.frame})", older.frame)
    # T2: without a twin socket, a client command while a server DMA command waits
    c = m.c
    if m.dir == C2S and c.twin_conn is None and c.outstanding[S2C]:
        dma = next(iter(c.outstanding[S2C].values()))
        if not dma.no_reply:
            m.add(Code.DMA_COLLISION, f"client sent a command while server {spec.COMMAND_NAMES.get(dma.command)} "
                                      f"id={dma.msg_id} (frame {dma.frame}) is unanswered: libvfio-user reads it as "
                                      "the awaited reply", dma.frame)


@on(PAIRING, emits=(Code.UNMATCHED_REPLY, Code.REPLY_TO_NO_REPLY, Code.OUT_OF_ORDER_REPLY,
                    Code.REPLY_COMMAND_MISMATCH))
def reply_pairs(m: Msg) -> None:
    match = m.match
    assert match is not None
    req = match.req
    if req is None:
        m.add(Code.UNMATCHED_REPLY, f"reply id={m.msg_id} matches no outstanding "
                                    f"{'client' if m.dir == S2C else 'server'} command")
        return
    if match.to_no_reply:
        m.add(Code.REPLY_TO_NO_REPLY, f"reply to {name_of(req.command)} id={m.msg_id} (frame {req.frame}) which was "
                                      "sent with No_reply", req.frame)
        return
    older = match.overtook
    if older is not None:
        m.add(Code.OUT_OF_ORDER_REPLY, f"answers frame {req.frame} before the older {name_of(older.command)} "
                                       f"id={older.msg_id} (frame {older.frame})", req.frame, older.frame)
    if req.command != m.cmd:
        m.add(Code.REPLY_COMMAND_MISMATCH, f"reply says {name_of(m.cmd)}, its request (frame {req.frame}) was "
                                           f"{name_of(req.command)}", req.frame)


@declares(Code.REPLY_TIMEOUT)
def reply_timeout(p: Pending, timeout: float) -> tuple[str, str]:
    """A command whose deadline passed while it still waits (fired by a later event or a Tick)."""
    return Code.REPLY_TIMEOUT, f"{name_of(p.command)} id={p.msg_id} unanswered after {timeout:g} s{_withheld(p)}"


@declares(Code.NO_REPLY)
def closed_unanswered(p: Pending) -> tuple[str, str] | None:
    """A command still waiting when its connection closed (unless it already timed out or expects nothing)."""
    if p.no_reply or p.timed_out:
        return None
    return Code.NO_REPLY, f"{name_of(p.command)} id={p.msg_id} got no reply before the connection closed{_withheld(p)}"


@declares(Code.NO_REPLY)
def ended_unanswered(p: Pending, end: float) -> tuple[str, str]:
    """A command still waiting when the capture (or session) ended."""
    return Code.NO_REPLY, (f"{name_of(p.command)} id={p.msg_id} got no reply before the capture ended "
                           f"({end - p.ts:.3f} s){_withheld(p)}")


def _withheld(p: Pending) -> str:
    return f" (the peer's reply, frame {p.withheld}, was withheld by the proxy: record --fault)" if p.withheld else ""
