"""The VfioUser header: round trips, the flags breakdown, size auto-fill, payload dispatch, request/reply
matching (answers/hashret), the Info text, and random bytes that never make it raise."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, strategies as st
from scapy.config import conf
from scapy.packet import NoPayload, Raw

import vfudissect.layers as L
from vfudissect import spec
from vfudissect.layers.header import PAYLOADS, HeaderFlags

from tests.layers.strategies import fixed_kwargs, round_trip

HEADER = fixed_kwargs(L.VfioUser)


@pytest.fixture(autouse=True)
def _strict_dissector():
    """Our layers must not lean on scapy's catch-all: dissector errors raise in these tests."""
    old, conf.debug_dissector = conf.debug_dissector, True
    yield
    conf.debug_dissector = old


@given(HEADER)
def test_header_round_trips_every_field_value(kw: dict) -> None:
    p = L.VfioUser(**kw)
    again = round_trip(p)
    assert again.getfieldval("command") == kw["command"]
    assert int(again.flags) == kw["flags"]
    wire = bytes(p)
    assert wire[:16] == spec.HEADER.pack(kw["msg_id"], kw["command"], kw["size"], kw["flags"], kw["error"])


@given(st.integers(0, 65535), st.binary(max_size=64))
def test_size_is_filled_in_from_the_payload(msg_id: int, body: bytes) -> None:
    wire = bytes(L.VfioUser(msg_id=msg_id, command=99) / Raw(body))
    assert struct.unpack_from("<I", wire, 4)[0] == 16 + len(body)
    assert L.VfioUser(wire).size == 16 + len(body)


@given(st.integers(0, 2**32 - 1))
def test_flags_breakdown_type_no_reply_error(flags: int) -> None:
    p = L.VfioUser(bytes(L.VfioUser(flags=flags)))
    assert isinstance(p.flags, HeaderFlags)
    assert p.flags.type == flags & spec.FLAG_TYPE_MASK
    assert p.flags.no_reply == bool(flags & spec.FLAG_NO_REPLY)
    assert p.flags.error == bool(flags & spec.FLAG_ERROR)
    assert p.flags.reserved == flags & spec.FLAG_RESERVED_MASK
    assert L.VfioUser(flags=str(p.flags)).flags == flags  # the text form parses back


def test_flags_text() -> None:
    assert str(L.VfioUser(flags=0x21).flags) == "reply+error"
    assert str(L.VfioUser(flags=0x10).flags) == "command+no_reply"
    assert str(L.VfioUser(flags=0x43).flags) == "type3+0x40"
    assert int(L.VfioUser(flags="reply|error").flags) == 0x21


def test_command_is_the_code_and_still_scapys_command_method() -> None:
    p = L.VfioUser(command=2)
    assert p.command == 2 and isinstance(p.command, int)
    assert p.command() == "VfioUser(command=2)"
    p.command = 9
    assert p.getfieldval("command") == 9
    assert "REGION_READ" in p.show(dump=True)


def test_no_field_name_shadows_a_scapy_packet_attribute() -> None:
    reserved = set(dir(L.VfuPacket)) - {"command"}
    for cls in [c for c in vars(L).values() if isinstance(c, type) and issubclass(c, L.VfuPacket)]:
        clash = {f.name for f in cls.fields_desc} & reserved
        assert not clash, f"{cls.__name__}: {clash}"


def test_every_spec_layout_has_a_payload_layer() -> None:
    for code, info in spec.COMMANDS.items():
        for mtype, key in ((spec.MSG_TYPE_COMMAND, info.request_layout), (spec.MSG_TYPE_REPLY, info.reply_layout)):
            assert ((code, mtype) in PAYLOADS) == (key is not None), (info.name, mtype)


@pytest.mark.parametrize("code", sorted(spec.COMMANDS))
@pytest.mark.parametrize("mtype", [spec.MSG_TYPE_COMMAND, spec.MSG_TYPE_REPLY])
def test_dispatch_by_command_and_type(code: int, mtype: int) -> None:
    info = spec.COMMANDS[code]
    key = info.request_layout if mtype == spec.MSG_TYPE_COMMAND else info.reply_layout
    body = bytes(64)
    p = L.VfioUser(bytes(L.VfioUser(command=code, flags=mtype) / Raw(body)))
    if key is None:
        assert isinstance(p.payload, Raw)
    else:
        assert isinstance(p.payload, L.VfuPacket)
        assert p.payload.layout_key in (key, "dma_access")
    assert bytes(p) == bytes(L.VfioUser(command=code, flags=mtype) / Raw(body))


def test_unknown_command_and_undefined_type_stay_raw() -> None:
    for code, flags in ((0, 0), (19, 0), (65535, 1), (2, 2), (2, 15)):
        p = L.VfioUser(bytes(L.VfioUser(command=code, flags=flags) / Raw(bytes(32))))
        assert isinstance(p.payload, Raw)


def test_error_reply_header_only_and_with_libvfio_user_payload() -> None:
    p = L.VfioUser(bytes(L.VfioUser(msg_id=4, command=9, flags=0x21, error=22)))
    assert p.is_error and isinstance(p.payload, NoPayload)
    assert p.info_text() == "REGION_READ error reply id=4 16B EINVAL(22)"
    body = L.VfuRegionAccess(offset=0x10, region=7, count=4, data=b"\xff" * 4)
    p = L.VfioUser(bytes(L.VfioUser(msg_id=4, command=9, flags=0x21, error=22) / body))
    assert isinstance(p.payload, L.VfuRegionAccess)
    assert p.payload.data == b"\xff" * 4
    assert p.info_text() == "REGION_READ error reply id=4 36B EINVAL(22)"


def test_bytes_after_size_are_padding() -> None:
    one = bytes(L.VfioUser(msg_id=1, command=13))
    two = bytes(L.VfioUser(msg_id=2, command=13, flags=1))
    p = L.VfioUser(one + two)
    assert p.msg_id == 1 and bytes(p) == one + two
    assert bytes(p[conf.padding_layer]) == two


def test_info_text_like_the_info_column() -> None:
    p = L.VfioUser(msg_id=3, command=2) / L.VfuDmaMap(argsz=32, flags=3, address=0xFFFC0000, size=0x40000)
    assert L.VfioUser(bytes(p)).info_text() == \
        "DMA_MAP command id=3 48B flags=READ|WRITE offset=0x0 address=0xfffc0000 size=0x40000"
    r = L.VfioUser(msg_id=9, command=9, flags=1) / L.VfuRegionAccess(region=7, count=4, data=b"abcd")
    assert L.VfioUser(bytes(r)).summary() == "REGION_READ reply id=9 36B offset=0x0 region=CONFIG count=4 value=0x64636261"
    w = L.VfioUser(msg_id=1, command=10, flags=0x10) / L.VfuRegionAccess(region=2, count=1, data=b"x")
    assert L.VfioUser(bytes(w)).info_text().startswith("REGION_WRITE command (no_reply) id=1 33B")
    assert L.VfioUser(b"\x01\x02\x03").info_text() == "[3 bytes, shorter than the 16-byte header]"


@given(st.integers(0, 65535), st.sampled_from(sorted(spec.COMMANDS)), st.integers(0, 2**32 - 1))
def test_a_reply_answers_its_command_and_nothing_else(msg_id: int, code: int, err: int) -> None:
    cmd = L.VfioUser(bytes(L.VfioUser(msg_id=msg_id, command=code, flags=0)))
    rep = L.VfioUser(bytes(L.VfioUser(msg_id=msg_id, command=code, flags=0x21, error=err)))
    assert rep.answers(cmd) and not cmd.answers(rep)
    assert rep.hashret() == cmd.hashret()
    assert not rep.answers(L.VfioUser(msg_id=msg_id ^ 1, command=code))
    assert not rep.answers(L.VfioUser(msg_id=msg_id, command=code ^ 0x40))
    assert not rep.answers(rep)


def _record(conn: int, d: int, hdr: L.VfioUser) -> L.ExportedPdu:
    return L.ExportedPdu(bytes(L.ExportedPdu.for_vfucap(spec.DIRECTIONS[d]) / L.VfuCap(conn_id=conn, dir=d) / hdr))


def test_matching_uses_connection_and_direction() -> None:
    cmd = L.VfioUser(msg_id=5, command=11)  # a server DMA command, s2c
    rep = L.VfioUser(msg_id=5, command=11, flags=1)
    assert _record(1, 0, rep).answers(_record(1, 1, cmd))
    assert _record(1, 0, rep).hashret() == _record(1, 1, cmd).hashret()
    assert not _record(1, 1, rep).answers(_record(1, 1, cmd))  # same direction: not a reply to it
    assert not _record(2, 0, rep).answers(_record(1, 1, cmd))  # another connection
    client_cmd = L.VfioUser(msg_id=5, command=11)  # a client command with the same id: other id space
    assert _record(1, 0, client_cmd).hashret() != _record(1, 1, cmd).hashret()


@given(st.binary(max_size=200))
def test_random_bytes_never_raise_and_come_back_unchanged(blob: bytes) -> None:
    p = L.VfioUser(blob)
    p.show(dump=True)
    p.summary()
    if blob:
        assert bytes(p) == blob


@given(st.sampled_from(sorted(spec.COMMANDS)), st.sampled_from([0, 1, 0x10, 0x21]), st.binary(max_size=120),
       st.data())
def test_any_payload_of_any_command_dissects(code: int, flags: int, body: bytes, data: st.DataObject) -> None:
    wire = bytes(L.VfioUser(msg_id=1, command=code, flags=flags) / Raw(body))
    cut = data.draw(st.integers(0, len(wire)))
    for blob in (wire, wire[:cut]):
        p = L.VfioUser(blob)
        p.show(dump=True)
        assert p.summary()
        if blob:
            assert bytes(p) == blob
