"""The common layer base: a payload cut anywhere keeps the fields that fit, names where it stopped, keeps
the rest as Raw and gives the same bytes back."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, strategies as st
from scapy.config import conf
from scapy.packet import Raw

import vfudissect.layers as L
from vfudissect import spec
from vfudissect.layers.base import VfuPacket, plain

from tests.layers.strategies import fixed_kwargs

FIXED = sorted(L.LAYOUT_CLASSES.items())


@pytest.fixture(autouse=True)
def _strict_dissector():
    old, conf.debug_dissector = conf.debug_dissector, True
    yield
    conf.debug_dissector = old


@pytest.mark.parametrize("key,cls", FIXED, ids=[k for k, _ in FIXED])
@given(data=st.data())
def test_cut_anywhere_in_the_fixed_part(key: str, cls: type[VfuPacket], data: st.DataObject) -> None:
    lay = spec.LAYOUTS[key]
    kw = data.draw(fixed_kwargs(cls))
    wire = bytes(cls(**kw))[:lay.size]
    blob = wire[:data.draw(st.integers(1, lay.size - 1))]  # (scapy leaves b"" undissected)
    p = cls(blob)
    assert bytes(p) == blob
    # the fields wholly inside the cut are decoded; the first that does not fit is named
    off, fitted = 0, []
    for f in lay.fields:
        if off + f.size > len(blob):
            assert p.cut_at == f.name
            break
        fitted.append(f.name)
        off += f.size
    for f in lay.fields:
        if f.name in fitted:
            at = lay.offset_of(f.name)
            assert plain(p.getfieldval(f.name)) == int.from_bytes(blob[at:at + f.size], "little")
    assert isinstance(p.payload, Raw) or len(blob) == off
    assert f"[cut at {p.cut_at}]" in p.key_fields()


def test_a_whole_fixed_part_is_not_cut() -> None:
    for key, cls in FIXED:
        p = cls(bytes(spec.LAYOUTS[key].size))
        assert p.cut_at is None, key


def test_short_header_is_cut_and_stays_raw() -> None:
    p = L.VfioUser(struct.pack("<HH", 7, 2) + b"\x30")
    assert p.cut_at == "size" and p.msg_id == 7 and p.getfieldval("command") == 2
    assert isinstance(p.payload, Raw) and p.payload.load == b"\x30"
