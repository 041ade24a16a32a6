"""The 16-byte vfio-user header layer (VfioUser): flags breakdown, payload dispatch, request/reply matching, Info text.

Payload classes are looked up in :data:`PAYLOADS` by (command, message type); an entry is
either a layer class or a chooser ``(header, payload bytes) -> class`` for commands whose
layout depends on lengths or flags.  ``vfudissect.layers`` fills the table.

``command`` is a field name scapy also uses for its ``Packet.command()`` method; the
header returns a :class:`CommandCode` for it: an ``int`` (the command code) that can still be
called like the scapy method.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Union

from scapy.config import conf
from scapy.fields import FlagValue, LEIntEnumField, LEIntField, LEShortEnumField, LEShortField
from scapy.packet import Packet
from scapy.volatile import VolatileValue

from .. import spec
from ..render import human_size
from .base import VfuPacket
from .fields import LEFlagsField

Chooser = Callable[["VfioUser", bytes], type[Packet]]
PAYLOADS: dict[tuple[int, int], Union[type[Packet], Chooser]] = {}


def register_payload(command: int, msg_type: int, target: Union[type[Packet], Chooser]) -> None:
    """Say which layer decodes the payload of ``command`` messages of ``msg_type`` (0 command, 1 reply)."""
    PAYLOADS[(command, msg_type)] = target


# flag-bit names, bit by bit: the type nibble, then spec.HEADER_FLAG_BITS, the rest reserved
_FLAG_NAMES: list[str] = [
    f"type_bit{i}" if (1 << i) & spec.FLAG_TYPE_MASK else spec.HEADER_FLAG_BITS.get(1 << i, f"reserved_{i}")
    for i in range(32)
]
_TYPE_CODES = {name: code for code, name in spec.MSG_TYPE_NAMES.items()}


class HeaderFlags(FlagValue):
    """The header flag word: ``.type`` (0 command, 1 reply), ``.no_reply``, ``.error``, ``.reserved``."""

    # no __slots__ here: FlagValue.__setattr__ looks its own slot names up on self.__slots__

    @property
    def type(self) -> int:
        return self.value & spec.FLAG_TYPE_MASK

    @property
    def type_name(self) -> str:
        return spec.MSG_TYPE_NAMES.get(self.type, f"type{self.type}")

    @property
    def reserved(self) -> int:
        return self.value & spec.FLAG_RESERVED_MASK

    def _fixvalue(self, value: Any) -> int:
        if isinstance(value, str):
            out = 0
            for tok in value.replace("|", "+").split("+"):
                tok = tok.strip()
                if not tok:
                    continue
                if tok in _TYPE_CODES:
                    out |= _TYPE_CODES[tok]
                elif tok.startswith("type") and tok[4:].isdigit():
                    out |= int(tok[4:]) & spec.FLAG_TYPE_MASK
                elif tok in self.names:
                    out |= 1 << self.names.index(tok)
                else:
                    out |= int(tok, 0)
            return out
        return super()._fixvalue(value)

    def __str__(self) -> str:
        parts = [self.type_name]
        parts += [name for bit, name in spec.HEADER_FLAG_BITS.items() if self.value & bit]
        if self.reserved:
            parts.append(f"0x{self.reserved:x}")
        return "+".join(parts)


class HeaderFlagsField(LEFlagsField):
    """The 32-bit header flags, as a :class:`HeaderFlags`."""

    def __init__(self, name: str, default: int) -> None:
        super().__init__(name, default, 4, list(_FLAG_NAMES))

    def _fixup_val(self, x: Any) -> Any:
        if x is None or isinstance(x, (HeaderFlags, VolatileValue)):
            return x
        return HeaderFlags(int(x) if isinstance(x, FlagValue) else x, self.names)


class CommandCode(int):
    """The header's command code; calling it gives scapy's ``Packet.command()`` text as usual."""

    def __new__(cls, value: int, pkt: Packet) -> "CommandCode":
        obj = super().__new__(cls, value)
        obj._pkt = pkt  # type: ignore[attr-defined]
        return obj

    def __call__(self) -> str:
        return Packet.command(self._pkt)  # type: ignore[attr-defined,no-any-return]

    def __repr__(self) -> str:
        return int.__repr__(self)

    __str__ = __repr__


def capture_context(pkt: Packet) -> tuple[int | None, int | None]:
    """(conn_id, dir code) of the VFUC record under this message, (None, None) without one."""
    under = pkt.underlayer
    if under is None or "conn_id" not in under.fieldtype:
        return None, None
    d = under.getfieldval("dir")
    return under.getfieldval("conn_id"), d if d in (0, 1) else None


class VfioUser(VfuPacket):
    """One vfio-user message: the 16-byte header; the payload layer follows."""

    name = "vfio-user"
    show_summary = True
    fields_desc = [
        LEShortField("msg_id", 0),
        LEShortEnumField("command", 0, dict(spec.COMMAND_NAMES)),
        LEIntField("size", None),
        HeaderFlagsField("flags", 0),
        LEIntEnumField("error", 0, dict(spec.ERRNO_NAMES)),
    ]

    # ------------------------------------------------------------ building
    def post_build(self, pkt: bytes, pay: bytes) -> bytes:
        if self.getfieldval("size") is None and len(pkt) >= spec.HEADER_SIZE:
            pkt = pkt[:4] + struct.pack("<I", (len(pkt) + len(pay)) & 0xFFFFFFFF) + pkt[8:]
        return pkt + pay

    # ------------------------------------------------------------ dissecting
    def extract_padding(self, s: bytes) -> tuple[bytes, bytes | None]:
        size = self.getfieldval("size")
        if self.cut_at is not None or not isinstance(size, int):
            return s, None
        n = max(0, size - spec.HEADER_SIZE)
        return s[:n], s[n:] or None

    @property
    def msg_type(self) -> int:
        return int(self.getfieldval("flags") or 0) & spec.FLAG_TYPE_MASK

    @property
    def is_reply(self) -> bool:
        return self.msg_type == spec.MSG_TYPE_REPLY

    @property
    def is_error(self) -> bool:
        return self.is_reply and bool(int(self.getfieldval("flags") or 0) & spec.FLAG_ERROR)

    def next_layer(self, payload: bytes) -> type[Packet]:
        target = PAYLOADS.get((int(self.getfieldval("command") or 0), self.msg_type))
        if target is None:
            return conf.raw_layer  # type: ignore[no-any-return]
        if isinstance(target, type):
            return target
        return target(self, payload)

    # ------------------------------------------------------------ matching
    def _pair_key(self) -> bytes:
        """(conn, direction of the command's sender, msg_id, command): the same for a command and its reply."""
        conn, d = capture_context(self)
        if d is not None and self.is_reply:
            d ^= 1
        return struct.pack("<IBHH", conn or 0, 0xFF if d is None else d, self.getfieldval("msg_id") or 0,
                           int(self.getfieldval("command") or 0))

    def hashret(self) -> bytes:
        return self._pair_key()

    def answers(self, other: Packet) -> int:
        if not isinstance(other, VfioUser):
            return 0
        if not self.is_reply or other.msg_type != spec.MSG_TYPE_COMMAND:
            return 0
        if self.getfieldval("msg_id") != other.getfieldval("msg_id"):
            return 0
        if int(self.getfieldval("command") or 0) != int(other.getfieldval("command") or 0):
            return 0
        conn, d = capture_context(self)
        oconn, od = capture_context(other)
        if conn is not None and oconn is not None and conn != oconn:
            return 0
        if d is not None and od is not None and d == od:
            return 0
        return 1

    # ------------------------------------------------------------ Info text
    def info_text(self) -> str:
        """The Info-column line: ``NAME kind id=N sizeB [errno] [fds=[...]] key=value ...``."""
        if self.cut_at is not None:
            return f"[{len(self.original or b'')} bytes, shorter than the {spec.HEADER_SIZE}-byte header]"
        flags = int(self.getfieldval("flags") or 0)
        mtype = flags & spec.FLAG_TYPE_MASK
        cmd = int(self.getfieldval("command") or 0)
        if mtype == spec.MSG_TYPE_COMMAND:
            kind = "command (no_reply)" if flags & spec.FLAG_NO_REPLY else "command"
        elif mtype == spec.MSG_TYPE_REPLY:
            kind = "error reply" if flags & spec.FLAG_ERROR else "reply"
        else:
            kind = f"type{mtype}"
        size = self.getfieldval("size")
        if size is None:
            size = len(self)
        parts = [f"{spec.command_name(cmd)} {kind} id={self.getfieldval('msg_id')} {size}B"]
        err = self.getfieldval("error") or 0
        if self.is_error:
            parts.append(f"{spec.errno_name(err)}({err})")
        under = self.underlayer
        if under is not None and "fds" in under.fieldtype:
            fds = under.getfieldval("fds") or []
            if fds:
                parts.append("fds=[" + ", ".join(fd_summary(fd) for fd in fds) + "]")
        pay = self.payload
        if isinstance(pay, VfuPacket) and not self.is_error:
            parts += pay.key_fields()
        if under is not None and "flags" in under.fieldtype and "rec_type" in under.fieldtype:
            if int(under.getfieldval("flags") or 0) & spec.VF_TRUNCATED:
                parts.append("[truncated]")
        return " ".join(parts)

    def mysummary(self) -> Any:
        under = self.underlayer
        if under is not None and "conn_id" in under.fieldtype:
            return self.info_text(), [type(under)]
        return self.info_text()


def _command(self: VfioUser) -> CommandCode:
    return CommandCode(self.getfieldval("command") or 0, self)


# set after the class is made: scapy's metaclass would take a class attribute named like a field as its default
VfioUser.command = property(_command)  # type: ignore[assignment,method-assign]


def fd_summary(fd: Packet) -> str:
    """``memfd 256MiB``: an fd entry as the Info column shows it."""
    kind = spec.FD_KINDS.get(fd.getfieldval("kind") or 0, "unknown")
    size = fd.getfieldval("size") or 0
    return f"{kind} {human_size(size)}" if size else kind
