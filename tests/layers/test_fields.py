"""Field helpers: spec layouts become fields_desc lists, structs give widths, derived fields are read-only,
entry and TLV lists cut any bytes into elements and give them back unchanged."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, strategies as st
from scapy.fields import Field
from scapy.packet import Packet

from vfudissect import spec
from vfudissect.export.lua import STRUCTS
from vfudissect.layers.base import VfuPacket
from vfudissect.layers.fields import (
    DerivedField, EntryListField, LEFlagsField, TlvListField, flag_text, layout_fields, named_struct_fields,
    struct_fields,
)


def _width(f: Field) -> int:  # type: ignore[type-arg]
    return f.sz if isinstance(f, LEFlagsField) else struct.calcsize(f.fmt)


@pytest.mark.parametrize("key", sorted(spec.LAYOUTS))
def test_layout_fields_follow_the_spec_layout(key: str) -> None:
    lay = spec.LAYOUTS[key]
    fields = layout_fields(key)
    assert [f.name for f in fields] == [f.name for f in lay.fields]
    assert [_width(f) for f in fields] == [f.size for f in lay.fields]
    for sf, f in zip(lay.fields, fields):
        if sf.bits:
            assert isinstance(f, LEFlagsField)
        elif sf.values:
            assert f.i2s == dict(sf.values)  # type: ignore[attr-defined]
        assert f.fmt.startswith("<") or isinstance(f, LEFlagsField)


@pytest.mark.parametrize("key", sorted(STRUCTS))
def test_named_struct_fields_take_widths_from_the_spec_struct(key: str) -> None:
    st_, members = STRUCTS[key]
    fields = named_struct_fields(key, prefix="x_")
    assert [f.name for f in fields] == ["x_" + n for n, _, _ in members]
    assert sum(f.sz for f in fields) == st_.size


def test_struct_fields_rejects_mismatched_names_and_big_endian() -> None:
    with pytest.raises(ValueError):
        struct_fields(struct.Struct("<II"), ("a",))
    with pytest.raises(ValueError):
        struct_fields(struct.Struct(">I"), ("a",))


class _Flags(VfuPacket):
    fields_desc = [LEFlagsField("flags", 0, 4, spec.DMA_MAP_FLAGS)]


@given(st.integers(0, 2**32 - 1))
def test_le_flags_field_round_trips_and_names_bits(value: int) -> None:
    wire = struct.pack("<I", value)
    p = _Flags(wire)
    assert int(p.flags) == value
    assert bytes(p) == wire
    named = [n for b, n in spec.DMA_MAP_FLAGS.items() if value & b]
    rest = [f"0x{value & ~0xF:x}"] if value & ~0xF else []
    assert flag_text(value, spec.DMA_MAP_FLAGS) == ("|".join(named + rest) or "0")


def test_le_flags_field_takes_names() -> None:
    assert int(_Flags(flags="READ+WRITE").flags) == 3
    assert _Flags(flags=3).flags.WRITE
    assert _Flags().fieldtype["flags"].i2repr(None, 0) == "0"


class _Derived(VfuPacket):
    fields_desc = [Field("a", 0, fmt="<H"), DerivedField("twice", lambda p: 2 * p.a)]


def test_derived_field_is_computed_read_only_and_takes_no_bytes() -> None:
    p = _Derived(b"\x05\x00")
    assert p.twice == 10
    assert bytes(p) == b"\x05\x00"
    assert "twice     = 10" in p.show(dump=True)
    with pytest.raises(ValueError):
        _Derived(twice=3)


class _Entry(VfuPacket):
    fields_desc = [Field("v", 0, fmt="<I")]


class _Strided(VfuPacket):
    fields_desc = [Field("n", 0, fmt="B"), Field("stride", 4, fmt="B"),
                   EntryListField("items", _Entry, count_from=lambda p: p.n, stride_from=lambda p, _: p.stride)]


@given(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=120))
def test_entry_list_cuts_by_stride_and_count_and_round_trips(n: int, stride: int, body: bytes) -> None:
    wire = bytes([n, stride]) + body
    p = _Strided(wire)
    assert bytes(p) == wire
    items = p.items
    assert len(items) <= n
    step = max(1, stride)
    assert len(items) == min(n, -(-len(body) // step))
    for i, e in enumerate(items):
        chunk = body[i * step:(i + 1) * step]
        assert bytes(e) == chunk
        if len(chunk) >= 4:
            assert e.v == struct.unpack_from("<I", chunk)[0]
        else:
            assert e.cut_at == "v"


class _Tlv(VfuPacket):
    fields_desc = [Field("t", 0, fmt=">H"), Field("ln", 0, fmt=">H")]


class _Tlvs(VfuPacket):
    fields_desc = [TlvListField("tlvs", _Tlv, struct.Struct(">HH"), pad4=False, stop_type=0)]


@given(st.lists(st.tuples(st.integers(1, 65535), st.binary(max_size=12)), max_size=5), st.binary(max_size=20))
def test_tlv_list_stops_after_the_end_tag(tlvs: list[tuple[int, bytes]], after: bytes) -> None:
    wire = b"".join(struct.pack(">HH", t, len(v)) + v for t, v in tlvs) + struct.pack(">HH", 0, 0)
    p = _Tlvs(wire + after)
    assert bytes(p) == wire + after
    assert len(p.tlvs) == len(tlvs) + 1
    assert p.tlvs[-1].t == 0
    assert bytes(p.payload) == after


@given(st.binary(max_size=64))
def test_tlv_list_never_raises_on_garbage(blob: bytes) -> None:
    p = _Tlvs(blob)
    assert bytes(p) == blob


def test_packet_list_elements_know_their_record() -> None:
    p = _Strided(bytes([2, 4]) + bytes(8))
    assert all(isinstance(e.underlayer, Packet) and e.underlayer is p for e in p.items)
