"""The `read -V` decode tree: a message's layers and fields as text, its fds, and its bytes as `tshark -x` dumps them.

Values are shown as a reader of the spec writes them, never as Python literals: text (a VERSION's JSON) in
quotes, other bytes in hex (the hex dump below the tree has them all), flags and enumerations by name (the
fields' own ``i2repr``), yes/no for what is true or false, and a field that does not apply to this message (a
derived field with nothing to say) left out.  Names are aligned per layer, however long.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .core.records import MessageRecord

if TYPE_CHECKING:
    from scapy.packet import Packet  # scapy itself is imported by the first tree made: `read` without -V never needs it

_INDENT = "   "
_HEX_SHOWN = 16  # bytes of a binary value shown in the tree (all of them are in the dump)


def value_text(value: bytes) -> str:
    """Bytes as text when they are printable text (a NUL at the end said), else as hex."""
    body, nul = (value[:-1], True) if value.endswith(b"\0") else (value, False)
    if body and b"\0" not in body:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        if text and text.isprintable():
            return f'"{text}"' + (" (NUL-terminated)" if nul else "")
    if not value:
        return "(none)"
    head = " ".join(f"{c:02x}" for c in value[:_HEX_SHOWN])
    return f"{len(value)} bytes: {head}" + (" ..." if len(value) > _HEX_SHOWN else "")


def _shown(layer: Packet, fld: Any) -> str | list[Packet] | None:
    """What one field shows: a line's text, the packets of a list of entries, or None (left out)."""
    from scapy.fields import StrField
    from scapy.packet import Packet

    raw = layer.getfieldval(fld.name)
    if getattr(fld, "holds_packets", False) or isinstance(raw, Packet):
        entries = raw if isinstance(raw, list) else [raw] if raw is not None else []
        return [e for e in entries if isinstance(e, Packet)] or None
    human = fld.i2h(layer, raw)
    if human is None:
        return None
    if isinstance(human, bool):
        return "yes" if human else "no"
    if isinstance(human, (bytes, bytearray)) and type(fld).i2repr is StrField.i2repr:
        return value_text(bytes(human))
    text = fld.i2repr(layer, raw)
    return value_text(bytes(human)) if isinstance(text, str) and text.startswith(("b'", 'b"')) else str(text)


def packet_tree(pkt: Packet, depth: int = 0) -> list[str]:
    """Every layer of ``pkt`` (and the entries its list fields hold), one line per field."""
    from scapy.packet import NoPayload, Raw

    lines: list[str] = []
    layer: Packet = pkt
    while not isinstance(layer, NoPayload):
        pad = _INDENT * depth
        lines.append(f"{pad}[{layer.name}]")
        if isinstance(layer, Raw):
            lines.append(f"{pad}{_INDENT}{'data'} = {value_text(bytes(layer.load))}")
        else:
            rows = [(f.name, _shown(layer, f)) for f in layer.fields_desc]
            rows = [(n, v) for n, v in rows if v is not None]
            width = max((len(n) for n, v in rows if isinstance(v, str)), default=0)
            for name, v in rows:
                if isinstance(v, str):
                    lines.append(f"{pad}{_INDENT}{name:<{width}} = {v}")
                else:
                    lines.append(f"{pad}{_INDENT}{name}: {len(v)} entr{'y' if len(v) == 1 else 'ies'}")
                    for e in v:
                        lines.extend(packet_tree(e, depth + 2))
        layer = layer.payload
        depth += 1
    return lines


def decode_tree(data: bytes, rec: MessageRecord) -> str:
    """The full decode tree of one message (the VfioUser layers), its fds, and a hex dump of its bytes as
    `tshark -x` shows them."""
    lines = []
    try:
        from .layers import VfioUser

        lines.extend(packet_tree(VfioUser(data)))
    except Exception as exc:  # noqa: BLE001 - a decode tree must never stop the listing
        lines.append(f"[decode tree unavailable: {type(exc).__name__}: {exc}]")
    for i, fd in enumerate(rec.fds):
        lines.append(f"fd[{i}]: {fd.kind} size={fd.size} ino={fd.ino}" + (f" {fd.path}" if fd.path else ""))
    return "\n".join("    " + line for line in lines) + "\n" + hexdump(data)


def hexdump(data: bytes, indent: str = "    ") -> str:
    """Offset, 16 bytes in hex, and their printable characters, per line (tshark -x's layout)."""
    out = []
    for off in range(0, len(data), 16):
        chunk = data[off:off + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        out.append(f"{indent}{off:04x}  {hexes:<47}   {text}")
    return "\n".join(out)

