"""Header and framing (fact sheet 7.1): sizes, type and flag bits, what the recorder could not frame, error replies."""

from __future__ import annotations

from ... import spec
from .base import COMMAND, ERROR_REPLY, HEADER, PAIRED, REPLY, Code, ConnState, Msg, declares, on

C = spec.Command
_RESERVED_OR_TYPE = 0xFFFFFFCE  # type values above 1 and the reserved bits
_REGION_ACCESS = (C.REGION_READ, C.REGION_WRITE)
_OTHERS = tuple(c for c in C if c not in _REGION_ACCESS)
# the flags every message is tested against, as plain ints (no module lookups on the hot path)
_VF_FRAMING_ERROR, _VF_BEYOND_LIMIT, _VF_FDS_CTRUNC = spec.VF_FRAMING_ERROR, spec.VF_BEYOND_LIMIT, spec.VF_FDS_CTRUNC
_VF_FDS_NOT_AT_MSG_START, _VF_TRUNCATED, _VF_INJECTED = spec.VF_FDS_NOT_AT_MSG_START, spec.VF_TRUNCATED, spec.VF_INJECTED
_LVU_MAX, _FLAG_RESERVED = spec.LVU_SERVER_MAX_MSG_SIZE, spec.FLAG_RESERVED_MASK
_FLAG_ERROR, _FLAG_NO_REPLY = spec.FLAG_ERROR, spec.FLAG_NO_REPLY
_DIRTY_PAGES, _DEVICE_RESET = int(C.DIRTY_PAGES), int(C.DEVICE_RESET)
_COMMANDS = spec.COMMANDS


@on(HEADER, emits=(Code.BAD_SIZE, Code.MESSAGE_INCOMPLETE, Code.MESSAGE_TOO_LARGE, Code.BAD_TYPE,
                   Code.RESERVED_FLAGS, Code.FDS_TRUNCATED, Code.FDS_NOT_AT_MSG_START, Code.CAPTURE_TRUNCATED,
                   Code.UNKNOWN_COMMAND, Code.REMOVED_COMMAND, Code.FAULT_INJECTED))
def header(m: Msg) -> None:
    """Sizes, type and flag bits; then, for a message the recorder framed, its record flags and command code."""
    size, wire = m.size, m.wire
    if size != wire:
        if size < 16:
            m.add(Code.BAD_SIZE, f"size {size} is below the 16-byte header")
        elif m.ev.flags & _VF_FRAMING_ERROR:
            pass  # the recorder did not wait for a body it could not frame: not an incomplete message
        elif size > wire:
            m.add(Code.MESSAGE_INCOMPLETE, f"size says {size} bytes, only {wire} arrived")
        else:
            m.add(Code.BAD_SIZE, f"size says {size} bytes but the message is {wire}")
    fl = m.ev.flags
    if fl & _VF_BEYOND_LIMIT:
        m.add(Code.MESSAGE_TOO_LARGE, f"size {size} is beyond what its receiver accepts: the recorder kept its header "
                                      "and recorded its body as raw bytes as it came")
    elif size > _LVU_MAX:
        m.add(Code.MESSAGE_TOO_LARGE, f"size {size} exceeds libvfio-user's {_LVU_MAX}")
    flags = m.flags
    if flags & _RESERVED_OR_TYPE:
        if m.mtype > 1:
            m.add(Code.BAD_TYPE, f"flags type {m.mtype} is neither command (0) nor reply (1)")
        if flags & _FLAG_RESERVED:
            m.add(Code.RESERVED_FLAGS, f"reserved flag bits 0x{flags & _FLAG_RESERVED:x} set")
    if fl:
        if fl & _VF_FRAMING_ERROR:
            return  # not framed: the rest of its checks are FRAMING_LOST's (unframeable_header)
        if fl & _VF_FDS_CTRUNC:
            m.add(Code.FDS_TRUNCATED, "the kernel truncated the passed fds (MSG_CTRUNC)")
        if fl & _VF_FDS_NOT_AT_MSG_START:
            m.add(Code.FDS_NOT_AT_MSG_START, "fds arrived after the first byte of the message")
        if fl & _VF_TRUNCATED:
            m.add(Code.CAPTURE_TRUNCATED, f"payload truncated to {m.n} of {m.wire} bytes by the recorder")
        if fl & _VF_INJECTED:
            m.add(Code.FAULT_INJECTED, "the proxy forwarded this message for a fault asked for (record --fault); "
                                       "the peers answer what they were given")
    if m.name is None:
        m.add(Code.UNKNOWN_COMMAND, f"command {m.cmd} is not defined by the spec")
    elif m.cmd == _DIRTY_PAGES:
        m.add(Code.REMOVED_COMMAND, "DIRTY_PAGES (14) was removed from the spec in 2023")


@declares(Code.BAD_SIZE)
def shorter_than_a_header(n: int) -> tuple[str, str]:
    """A message of fewer than 16 bytes: nothing else can be judged."""
    return Code.BAD_SIZE, f"message of {n} bytes is shorter than the 16-byte header"


@declares(Code.FRAMING_LOST)
def unframeable_header(c: ConnState, d: str, size: int) -> tuple[str, str] | None:
    """A header the recorder could not frame (size below 16 or beyond what was negotiated): once per direction."""
    if d in c.raw_dirs:
        return None
    why = "below 16" if size < 16 else "beyond what can be framed"
    return (Code.FRAMING_LOST, f"{d} stream could not be framed: header size {size} is {why}; relayed raw from here on")


@declares(Code.FRAMING_LOST)
def raw_bytes(c: ConnState, d: str, note: str, flags: int = 0) -> tuple[str, str] | None:
    """Bytes relayed raw: the first of a direction says why framing was lost (the body of a message beyond its
    receiver's limit is raw by design: framing resumes after it)."""
    if d in c.raw_dirs or flags & spec.VF_BEYOND_LIMIT:
        return None
    why = f": {note}" if note else ""
    return Code.FRAMING_LOST, f"{d} stream could not be framed{why}; relayed raw from here on"


@declares(Code.CAPTURE_CORRUPT)
def corrupt_record(text: str) -> tuple[str, str] | None:
    """A record the capture reader could not decode (it says so in a note)."""
    return (Code.CAPTURE_CORRUPT, text) if text.startswith(spec.NOTE_CORRUPT_PREFIX) else None


@on(COMMAND, emits=(Code.MISPLACED_FLAG, Code.ERROR_IN_COMMAND, Code.WRONG_DIRECTION, Code.PAYLOAD_TOO_SHORT))
def command_header(m: Msg) -> None:
    if m.flags & _FLAG_ERROR:
        m.add(Code.MISPLACED_FLAG, "Error flag set on a command")
    if m.err:
        m.add(Code.ERROR_IN_COMMAND, f"error field {m.err} in a command (reserved, should be 0)")
    info = _COMMANDS.get(m.cmd)
    if info is None:
        return
    if info.requester != m.dir:
        m.add(Code.WRONG_DIRECTION, f"{m.name} is sent by the {'client' if info.requester == spec.C2S else 'server'}, "
                                    f"not the {'client' if m.dir == spec.C2S else 'server'}")
    if m.plen < info.request_min:
        m.add(Code.PAYLOAD_TOO_SHORT, f"{m.name} request payload is {m.plen} bytes, needs at least {info.request_min}")
    elif m.plen == 0 and m.cmd != _DEVICE_RESET:
        m.add(Code.PAYLOAD_TOO_SHORT, f"{m.name} request has no payload")


@on(REPLY, emits=(Code.MISPLACED_FLAG,))
def reply_header(m: Msg) -> None:
    if m.flags & _FLAG_NO_REPLY:
        m.add(Code.MISPLACED_FLAG, "No_reply flag set on a reply")


@on(PAIRED, *_OTHERS, emits=(Code.PAYLOAD_TOO_SHORT,), priority=-1)
def reply_fixed_part(m: Msg) -> bool:
    """A successful reply without its command's fixed part: nothing more of it can be judged."""
    info = spec.COMMANDS[m.cmd]
    if m.plen < info.reply_min and not (m.cmd == C.DMA_UNMAP and m.plen == 0) and m.cmd != C.DMA_WRITE:
        m.add(Code.PAYLOAD_TOO_SHORT, f"{m.name} reply payload is {m.plen} bytes, needs at least {info.reply_min}")
        return True
    return False


@declares(Code.PAYLOAD_TOO_SHORT)
def unpaired_reply_fixed_part(m: Msg) -> None:
    """A reply that answers no request of its own command still needs its fixed part."""
    info = spec.COMMANDS.get(m.cmd)
    if info is not None and m.plen < info.reply_min:
        m.add(Code.PAYLOAD_TOO_SHORT, f"{m.name} reply payload is {m.plen} bytes, needs at least {info.reply_min}")


@on(ERROR_REPLY, emits=(Code.ERROR_REPLY_NO_ERRNO, Code.ERROR_REPLY, Code.UNKNOWN_ERRNO,
                        Code.ERROR_REPLY_WITH_PAYLOAD))
def error_reply(m: Msg) -> None:
    err = m.err
    if err == 0:
        m.add(Code.ERROR_REPLY_NO_ERRNO, "error reply with errno 0")
    else:
        m.add(Code.ERROR_REPLY, f"{m.name or m.cmd} failed: {spec.errno_name(err)} ({err})")
        if err > spec.MAX_ERRNO or err not in spec.ERRNO_NAMES:
            m.add(Code.UNKNOWN_ERRNO, f"errno {err} is unknown or above {spec.MAX_ERRNO}")
    if m.plen > 0:
        m.add(Code.ERROR_REPLY_WITH_PAYLOAD, f"error reply with {m.plen} payload bytes "
                                             "(libvfio-user's way for region accesses; the spec says header only)")
