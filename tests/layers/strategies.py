"""Shared helpers for the layer tests: hypothesis strategies for field values within their widths, the
round-trip check, and the real captures dissected through scapy's own readers."""

from __future__ import annotations

import functools
import pathlib
import struct
from typing import Any

from hypothesis import strategies as st
from scapy.fields import ConditionalField, Field, FlagValue, StrField, StrFixedLenField
from scapy.packet import NoPayload, Packet
from scapy.utils import rdpcap

import vfudissect.layers as L
from vfudissect.layers.fields import DerivedField, EntryListField, LEFlagsField


def int_width(f: Field[Any, Any]) -> tuple[int, int]:
    """(min, max) of an integer field, from its struct format (or byte width for flag words)."""
    if isinstance(f, LEFlagsField):
        return 0, (1 << (8 * f.sz)) - 1
    code = f.fmt[-1]
    bits = 8 * struct.calcsize(f.fmt)
    if code.islower():
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def is_int_field(f: Field[Any, Any]) -> bool:
    if isinstance(f, (DerivedField, EntryListField, StrField)) or f.islist:
        return False
    return isinstance(f, LEFlagsField) or f.fmt[-1] in "bBhHiIqQ"


def fixed_kwargs(cls: type[Packet], skip: tuple[str, ...] = ()) -> st.SearchStrategy[dict[str, Any]]:
    """Values for every plain integer / fixed-length field of ``cls``, each within its width."""
    out: dict[str, st.SearchStrategy[Any]] = {}
    for f in cls.fields_desc:
        if isinstance(f, ConditionalField) or f.name in skip:
            continue
        if isinstance(f, StrFixedLenField):
            out[f.name] = st.binary(min_size=f.sz, max_size=f.sz)
        elif is_int_field(f):
            lo, hi = int_width(f)
            out[f.name] = st.integers(lo, hi)
    return st.fixed_dictionaries(out)


def _plain(v: Any, explicit: bool) -> Any:
    if isinstance(v, FlagValue):
        return int(v)
    if isinstance(v, list):
        return [_layers(e, explicit) if isinstance(e, Packet) else _plain(e, explicit) for e in v]
    return v


def _layers(pkt: Packet, explicit: bool) -> list[dict[str, Any]]:
    out = []
    p: Packet = pkt
    while not isinstance(p, NoPayload):
        row: dict[str, Any] = {"__class__": type(p).__name__}
        for f in p.fields_desc:
            if isinstance(f, DerivedField) or (explicit and f.name not in p.fields):
                continue
            if isinstance(f, ConditionalField) and not f._evalcond(p):
                continue
            row[f.name] = _plain(p.getfieldval(f.name), explicit)
        out.append(row)
        p = p.payload
    return out


def values(pkt: Packet) -> list[dict[str, Any]]:
    """Every field of every layer as plain values (flag words -> int, packet lists -> nested)."""
    return _layers(pkt, explicit=False)


def _subset(want: Any, got: Any) -> bool:
    if isinstance(want, dict) and isinstance(got, dict):
        return all(k in got and _subset(v, got[k]) for k, v in want.items())
    if isinstance(want, list) and isinstance(got, list):
        return len(want) == len(got) and all(_subset(a, b) for a, b in zip(want, got))
    return bool(want == got)


def round_trip(pkt: Packet) -> Packet:
    """Build -> bytes -> dissect with the same class: every field that was set comes back with its
    value (auto fields such as sizes get theirs), the layers are the same, and the bytes too."""
    wire = bytes(pkt)
    again = type(pkt)(wire)
    want, got = _layers(pkt, explicit=True), values(again)
    assert _subset(want, got), f"set {want}\n got {got}"
    assert bytes(again) == wire
    return again


def assert_fields(pkt: Packet, expect: dict[str, Any]) -> None:
    for name, want in expect.items():
        got = pkt.getfieldval(name)
        if isinstance(got, FlagValue):
            got = int(got)
        assert got == want, f"{type(pkt).__name__}.{name}: {got!r} != {want!r}"


@functools.lru_cache(maxsize=None)
def scapy_capture(path: pathlib.Path) -> tuple[Packet, ...]:
    """A capture through scapy's stock rdpcap (link type 252 registered by vfudissect.layers)."""
    assert L.ExportedPdu  # the registration happens on import
    return tuple(rdpcap(str(path)))
