"""scapy fields for vfio-user: spec.Layout -> fields_desc, derived (computed) fields, entry and TLV lists.

Everything numeric is derived from ``spec``: :func:`layout_fields` turns a
``spec.Layout`` into a ``fields_desc`` list; :func:`named_struct_fields` does the
same for the variable-tail structs (widths from spec.py's ``struct.Struct``
formats, member names from the struct table the Wireshark plugin uses, so the
scapy and Wireshark field names agree); :func:`struct_fields` is the general form.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Iterable, Mapping, Sequence

from scapy.config import conf
from scapy.fields import (
    ByteEnumField, ByteField, Field, FlagsField, FlagValue, LEIntEnumField, LEIntField, StrLenField,
    LELongEnumField, LELongField, LEShortEnumField, LEShortField, StrFixedLenField, XByteField,
    XLEIntField, XLELongField, XLEShortField,
)
from scapy.packet import Packet

from .. import spec
from ..spec import SUB_STRUCTS as STRUCTS

_PLAIN: Mapping[int, type[Field[Any, Any]]] = {1: ByteField, 2: LEShortField, 4: LEIntField, 8: LELongField}
_HEX: Mapping[int, type[Field[Any, Any]]] = {1: XByteField, 2: XLEShortField, 4: XLEIntField, 8: XLELongField}
_ENUM: Mapping[int, type[Field[Any, Any]]] = {
    1: ByteEnumField, 2: LEShortEnumField, 4: LEIntEnumField, 8: LELongEnumField,
}
_CODES: Mapping[str, int] = {"B": 1, "H": 2, "I": 4, "Q": 8}


class LEFlagsField(FlagsField):
    """A byte-aligned little-endian flag word, read and written with struct (no bit-field machinery)."""

    __slots__ = ["_st"]

    def __init__(self, name: str, default: int | None, nbytes: int,
                 names: Mapping[int, str] | list[str]) -> None:
        super().__init__(name, default, -8 * nbytes, dict(names) if isinstance(names, Mapping) else names)
        self._st = struct.Struct("<" + {1: "B", 2: "H", 4: "I", 8: "Q"}[nbytes])
        self.sz = nbytes

    def getfield(self, pkt: Packet, s: bytes) -> tuple[bytes, Any]:  # type: ignore[override]
        return s[self.sz:], self.m2i(pkt, self._st.unpack_from(s)[0])

    def addfield(self, pkt: Packet, s: bytes, val: Any) -> bytes:  # type: ignore[override]
        return s + self._st.pack(int(self.i2m(pkt, val) or 0) & ((1 << (8 * self.sz)) - 1))

    def i2len(self, pkt: Packet, x: Any) -> int:
        return self.sz

    def i2repr(self, pkt: Packet | None, x: Any) -> str:
        """Flag names joined by "|", as the one-line view writes them (scapy's own repr joins them with "+")."""
        return (super().i2repr(pkt, x) or "0").replace("+", "|")


class DataField(StrLenField):
    """A payload's data: shown as hex (and, for 1, 2, 4 or 8 bytes, as the little-endian number a register holds),
    not as a Python bytes literal."""

    def i2repr(self, pkt: Packet | None, x: Any) -> str:
        b = bytes(x or b"")
        if not b:
            return "(none)"
        head = " ".join(f"{c:02x}" for c in b[:16]) + (" ..." if len(b) > 16 else "")
        value = f" = 0x{int.from_bytes(b, 'little'):x}" if len(b) in (1, 2, 4, 8) else ""
        return f"{len(b)} bytes: {head}{value}"


def spec_field(f: spec.Field, default: int | None = 0) -> Field[Any, Any]:
    """One scapy field for one spec field: flags -> LEFlagsField, enumerations -> enum, hex or plain."""
    if f.bits:
        return LEFlagsField(f.name, default, f.size, f.bits)
    if f.values:
        return _ENUM[f.size](f.name, default, dict(f.values))
    return (_HEX if f.hex else _PLAIN)[f.size](f.name, default)


def layout_fields(key: str, *, replace: Mapping[str, Field[Any, Any]] | None = None) -> list[Field[Any, Any]]:
    """The fixed part of ``spec.LAYOUTS[key]`` as a fields_desc list (``replace`` swaps chosen fields)."""
    replace = replace or {}
    return [replace.get(f.name) or spec_field(f) for f in spec.LAYOUTS[key].fields]


def layout_size(key: str) -> int:
    return spec.LAYOUTS[key].size


def struct_fields(st: struct.Struct, names: Sequence[str], like: str | None = None,
                  values: Mapping[str, Mapping[int, str]] | None = None,
                  hex_names: Iterable[str] = ()) -> list[Field[Any, Any]]:
    """Fields for a little-endian spec struct: widths from its format, ``names`` in order.

    A name that the spec layout ``like`` also has takes that spec field's metadata (enumeration,
    flag bits, hex); ``values`` adds enumerations, ``hex_names`` hex display; ``Ns`` codes become
    fixed-length byte strings.
    """
    fmt = st.format if isinstance(st.format, str) else st.format.decode()
    if fmt[0] not in "<=":
        raise ValueError(f"struct {fmt!r} is not little-endian")
    codes: list[tuple[str, int]] = []
    num = ""
    for ch in fmt[1:]:
        if ch.isdigit():
            num += ch
            continue
        codes.append((ch, int(num) if num else 1))
        num = ""
    if len(codes) != len(names):
        raise ValueError(f"struct {fmt!r} has {len(codes)} members, got {len(names)} names")
    template = {f.name: f for f in spec.LAYOUTS[like].fields} if like else {}
    values = values or {}
    hexes = set(hex_names)
    out: list[Field[Any, Any]] = []
    for (code, count), name in zip(codes, names):
        if code == "s":
            out.append(StrFixedLenField(name, b"\0" * count, count))
            continue
        size = _CODES[code]
        sf = template.get(name)
        if sf is not None and sf.size == size:
            out.append(spec_field(sf))
        else:
            out.append(spec_field(spec.Field(name, size, hex=name in hexes, values=values.get(name))))
    return out


def named_struct_fields(key: str, prefix: str = "") -> list[Field[Any, Any]]:
    """Fields of a variable-tail sub-structure by its key in the shared struct table (the names, hex
    display and enumerations Wireshark's vfio_user.<key>.<name> fields use); ``prefix`` keeps them
    apart from same-named fields of the enclosing layout."""
    st, members = STRUCTS[key]
    return struct_fields(st, [prefix + n for n, _, _ in members],
                         values={prefix + n: getattr(spec, e) for n, _, e in members if e},
                         hex_names=[prefix + n for n, h, _ in members if h])


class DerivedField(Field[None, None]):
    """A read-only field computed from the packet: no wire bytes, shown by show() and readable as pkt.<name>."""

    __slots__ = ["fn", "text"]

    def __init__(self, name: str, fn: Callable[[Packet], Any],
                 text: Callable[[Any], str] | None = None) -> None:
        super().__init__(name, None, fmt="B")
        self.fn = fn
        self.text = text or repr
        self.sz = 0

    def getfield(self, pkt: Packet, s: bytes) -> tuple[bytes, None]:  # type: ignore[override]
        return s, None

    def addfield(self, pkt: Packet, s: bytes, val: Any) -> bytes:  # type: ignore[override]
        return s

    def any2i(self, pkt: Packet | None, x: Any) -> None:
        if x is not None:
            raise ValueError(f"{self.name} is computed from the other fields and cannot be set")
        return None

    def i2h(self, pkt: Packet | None, x: Any) -> Any:
        if pkt is None:
            return None
        try:
            return self.fn(pkt)
        except Exception:  # a half-decoded packet: nothing to compute from
            return None

    def i2repr(self, pkt: Packet | None, x: Any) -> str:
        return self.text(self.i2h(pkt, x))

    def i2len(self, pkt: Packet, x: Any) -> int:
        return 0

    def randval(self) -> None:  # type: ignore[override]
        return None


class EntryListField(Field[list[Packet], list[Packet]]):
    """A run of entries of one stride each (stride from the packet, or the entry class's fixed size).

    Each entry is dissected from exactly ``stride`` bytes; what the entry class does not use stays in
    that entry (as its Raw payload), so any byte string round-trips.  ``count_from`` limits the number
    of entries; bytes after the last entry are left to the packet's payload.
    """

    __slots__ = ["cls", "count_from", "stride_from", "cls_from", "length_from", "_size"]
    islist = 1
    holds_packets = 1

    def __init__(self, name: str, cls: type[Packet], count_from: Callable[[Packet], int | None] | None = None,
                 stride_from: Callable[[Packet, int], int] | None = None,
                 cls_from: Callable[[Packet, int], type[Packet]] | None = None,
                 length_from: Callable[[Packet], int] | None = None) -> None:
        super().__init__(name, None, fmt="B")
        self.cls = cls
        self.count_from = count_from
        self.stride_from = stride_from
        self.cls_from = cls_from
        self.length_from = length_from
        self._size: int | None = None

    def i2m(self, pkt: Packet | None, x: Any) -> list[Packet]:
        return [] if x is None else x

    def any2i(self, pkt: Packet | None, x: Any) -> list[Packet]:
        if x is None:
            return []
        return list(x) if isinstance(x, (list, tuple)) else [x]

    def i2len(self, pkt: Packet, x: Any) -> int:
        return sum(len(p) for p in self.i2m(pkt, x))

    def i2repr(self, pkt: Packet | None, x: Any) -> str:
        return f"[{len(x or [])} entries]"

    def getfield(self, pkt: Packet, s: bytes) -> tuple[bytes, list[Packet]]:  # type: ignore[override]
        rest = b""
        if self.length_from is not None:
            n = max(0, self.length_from(pkt))
            s, rest = s[:n], s[n:]
        if self.stride_from is not None:
            stride = self.stride_from(pkt, len(s))
        else:
            if self._size is None:
                self._size = len(self.cls())
            stride = self._size
        stride = max(1, stride)
        count = self.count_from(pkt) if self.count_from else None
        cls = self.cls_from(pkt, stride) if self.cls_from else self.cls
        out: list[Packet] = []
        while s and (count is None or len(out) < count):
            out.append(cls(s[:stride], _internal=1, _underlayer=pkt))
            s = s[stride:]
        return s + rest, out

    def addfield(self, pkt: Packet, s: bytes, val: Any) -> bytes:  # type: ignore[override]
        return s + b"".join(bytes(p) for p in self.i2m(pkt, val))

    def randval(self) -> None:  # type: ignore[override]
        return None


class TlvListField(EntryListField):
    """Type-length-value entries: each cut at 4 + length (+ padding to 4 when ``pad4``), class by type."""

    __slots__ = ["hdr", "pad4", "stop_type", "dispatch"]

    def __init__(self, name: str, cls: type[Packet], hdr: struct.Struct, pad4: bool,
                 stop_type: int | None = None, length_from: Callable[[Packet], int] | None = None,
                 dispatch: Callable[[int, int], type[Packet]] | None = None) -> None:
        super().__init__(name, cls, length_from=length_from)
        self.hdr = hdr
        self.pad4 = pad4
        self.stop_type = stop_type
        self.dispatch = dispatch

    def getfield(self, pkt: Packet, s: bytes) -> tuple[bytes, list[Packet]]:  # type: ignore[override]
        rest = b""
        if self.length_from is not None:
            n = max(0, self.length_from(pkt))
            s, rest = s[:n], s[n:]
        out: list[Packet] = []
        while s:
            if len(s) < self.hdr.size:
                out.append(conf.raw_layer(s, _internal=1, _underlayer=pkt))
                s = b""
                break
            typ, ln = self.hdr.unpack_from(s)
            span = self.hdr.size + ln
            if self.pad4:
                span += -span % 4
            cls = self.dispatch(typ, ln) if self.dispatch else self.cls
            out.append(cls(s[:span], _internal=1, _underlayer=pkt))
            s = s[span:]
            if self.stop_type is not None and typ == self.stop_type:
                break
        return s + rest, out


def flag_text(value: int, names: Mapping[int, str], sep: str = "|") -> str:
    """``READ|WRITE``-style text of a flag word (unnamed bits in hex; ``0`` when clear)."""
    value = int(value)
    parts = [n for bit, n in names.items() if value & bit]
    rest = value & ~sum(names)
    if rest:
        parts.append(f"0x{rest:x}")
    return sep.join(parts) if parts else "0"


def flag_value(value: Any) -> int:
    return int(value) if isinstance(value, (int, FlagValue)) else 0
