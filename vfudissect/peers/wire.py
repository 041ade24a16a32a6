"""Message I/O for the emulated peers: build messages from spec layouts, send and receive them with fds.

Every message goes out with ONE ``sendmsg`` (header, body and SCM_RIGHTS
fds together), the way QEMU and libvfio-user send; receiving is framed by
the proxy's own sans-io deframer (core/framing.py): the header, then exactly
the body, collecting fds on every read.
"""

from __future__ import annotations

import array
import json
import os
import socket
import struct
from dataclasses import dataclass, field
from typing import Any, Sequence

from .. import spec
from ..core.framing import MESSAGE, Deframer

MAX_FDS = 253  # SCM_MAX_FD
_ANC = socket.CMSG_SPACE(MAX_FDS * 4)
_HDR = spec.HEADER
_RECV_FLAGS = getattr(socket, "MSG_CMSG_CLOEXEC", 0)

# One struct per layout, derived from spec.LAYOUTS (field order = spec order).
STRUCTS: dict[str, struct.Struct] = {key: struct.Struct(lay.fmt) for key, lay in spec.LAYOUTS.items()}


class ProtocolError(Exception):
    """The peer sent something we cannot frame or do not accept; says what and where."""


class PeerClosed(ProtocolError):
    """The peer closed the connection."""


@dataclass(slots=True)
class Message:
    """A received message: header fields, the whole bytes, and the fds that came with it (owned by the caller)."""

    msg_id: int
    command: int
    size: int
    flags: int
    error: int
    data: bytes
    fds: list[int] = field(default_factory=list)

    @property
    def payload(self) -> bytes:
        return self.data[spec.HEADER_SIZE:]

    @property
    def is_reply(self) -> bool:
        return (self.flags & spec.FLAG_TYPE_MASK) == spec.MSG_TYPE_REPLY

    @property
    def is_error(self) -> bool:
        return bool(self.flags & spec.FLAG_ERROR)

    @property
    def no_reply(self) -> bool:
        return bool(self.flags & spec.FLAG_NO_REPLY)

    def close_fds(self) -> None:
        close_fds(self.fds)
        self.fds = []


def close_fds(fds: Sequence[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


# ------------------------------------------------------------------ building
def header(msg_id: int, command: int, size: int, flags: int = 0, error: int = 0) -> bytes:
    return _HDR.pack(msg_id & 0xFFFF, command & 0xFFFF, size & 0xFFFFFFFF, flags & 0xFFFFFFFF,
                     error & 0xFFFFFFFF)


def command(msg_id: int, cmd: int, payload: bytes = b"", no_reply: bool = False) -> bytes:
    flags = spec.MSG_TYPE_COMMAND | (spec.FLAG_NO_REPLY if no_reply else 0)
    return header(msg_id, cmd, spec.HEADER_SIZE + len(payload), flags) + payload


def reply(msg_id: int, cmd: int, payload: bytes = b"") -> bytes:
    return header(msg_id, cmd, spec.HEADER_SIZE + len(payload), spec.MSG_TYPE_REPLY) + payload


def error_reply(msg_id: int, cmd: int, errno_: int) -> bytes:
    return header(msg_id, cmd, spec.HEADER_SIZE, spec.MSG_TYPE_REPLY | spec.FLAG_ERROR, errno_)


def pack(key: str, **values: int) -> bytes:
    """The fixed fields of layout ``key``; missing fields are 0."""
    lay = spec.LAYOUTS[key]
    return STRUCTS[key].pack(*(values.get(f.name, 0) for f in lay.fields))


def unpack(key: str, payload: bytes) -> dict[str, int]:
    """The fixed fields of layout ``key`` at the start of ``payload``; ProtocolError if it is too short."""
    st = STRUCTS[key]
    if len(payload) < st.size:
        raise ProtocolError(f"{spec.LAYOUTS[key].title} payload of {len(payload)} bytes, need {st.size}")
    return dict(zip((f.name for f in spec.LAYOUTS[key].fields), st.unpack_from(payload)))


# ------------------------------------------------------------------ socket I/O
def send_message(sock: socket.socket, data: bytes, fds: Sequence[int] = ()) -> None:
    """One sendmsg with the whole message and its fds (the rest only if the kernel took part of it)."""
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
    n = sock.sendmsg([data], anc)
    if n < len(data):
        sock.sendall(memoryview(data)[n:])


def _take_fds(ancdata: list[tuple[int, int, bytes]], out: list[int]) -> None:
    for level, kind, blob in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(blob[:len(blob) - len(blob) % a.itemsize])
            out.extend(a)


def recv_message(sock: socket.socket, max_size: int = spec.LVU_SERVER_MAX_MSG_SIZE) -> Message:
    """Read one message, framed by the deframer the proxy uses (core/framing.py): the header, then exactly its
    body, collecting fds on every read.  Raises PeerClosed / ProtocolError."""
    d = Deframer(limit=max_size)
    fds: list[int] = []
    try:
        while True:
            buf = d.buffer()
            k, anc, fl, _addr = sock.recvmsg_into([buf], _ANC, _RECV_FLAGS)
            got: list[int] = []
            if anc:
                _take_fds(anc, got)
                fds.extend(got)
            if k == 0:
                if not d.partial:
                    raise PeerClosed("peer closed the connection")
                raise ProtocolError(f"peer closed in the middle of a message ({d.got or d.hgot} bytes of it came)")
            for o in d.received(k, got, bool(fl & socket.MSG_CTRUNC)):
                if o.kind != MESSAGE or o.flags & (spec.VF_FRAMING_ERROR | spec.VF_BEYOND_LIMIT):
                    msg_id, cmd, size, _f, _e = _HDR.unpack_from(bytes(o.data).ljust(16, b"\0"))
                    raise ProtocolError(f"message size {size} out of range (16..{max_size}), msg_id {msg_id} "
                                        f"command {cmd}")
                data = bytes(o.data)
                msg_id, cmd, size, flags, err = _HDR.unpack_from(data)
                return Message(msg_id, cmd, size, flags, err, data, list(o.fds))
    except BaseException:
        close_fds(fds)
        raise


def caps_json(obj: Any) -> bytes:
    """libvfio-user (json-c) style JSON text with its terminating NUL: ``{ "a": 1 }``."""
    def enc(v: Any) -> str:
        if isinstance(v, dict):
            if not v:
                return "{ }"
            return "{ " + ", ".join(f"{_jstr(k)}: {enc(x)}" for k, x in v.items()) + " }"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return _jstr(v)
        return str(v)
    return enc(obj).encode() + b"\0"


def _jstr(s: str) -> str:
    return json.dumps(s)
