"""replay.match: fields as the dissector decodes them, differences after the normalisation rules (properties too)."""

from __future__ import annotations

import struct

from hypothesis import given, strategies as st

from vfudissect import spec
from vfudissect.core.events import FdInfo
from vfudissect.replay import match

C = spec.Command


def _m(cmd: int, payload: bytes, reply: bool = True, msg_id: int = 1) -> bytes:
    return spec.HEADER.pack(msg_id, cmd, 16 + len(payload), spec.MSG_TYPE_REPLY if reply else 0, 0) + payload


def test_version_capabilities_compare_as_json_values_whatever_their_spacing() -> None:
    a = _m(C.VERSION, struct.pack("<HH", 0, 0) + b'{"capabilities": {"max_msg_fds": 8, "pgsizes": 4096}}\0')
    b = _m(C.VERSION, struct.pack("<HH", 0, 0) + b'{ "capabilities": { "pgsizes": 4096, "max_msg_fds": 8 } }\0')
    assert [d.field for d in match.differences(a, (), b, ())] == ["size"]  # the spacing, nothing else
    c = _m(C.VERSION, struct.pack("<HH", 0, 0) + b'{"capabilities": {"max_msg_fds": 16, "pgsizes": 4096}}\0')
    assert [d.text() for d in match.differences(a, (), c, ())] == [
        "size 0x4a recorded, 0x4b now", "json.capabilities.max_msg_fds 8 recorded, 16 now"]


def test_a_region_fds_mmap_offset_is_the_servers_own_but_is_compared_without_an_fd() -> None:
    info = lambda off: _m(C.DEVICE_GET_REGION_INFO, struct.pack("<IIIIQQ", 32, 7, 1, 0, 0x1000, off))  # noqa: E731
    fd = (FdInfo("memfd", 0x1000, 5),)
    assert match.differences(info(0), fd, info(0x10000), fd) == []
    assert [d.field for d in match.differences(info(0), (), info(0x10000), ())] == ["offset"]


def test_a_servers_own_ids_are_compared_from_its_first_command() -> None:
    dma = lambda i: _m(C.DMA_READ, struct.pack("<QQ", 0, 4), reply=False, msg_id=i)  # noqa: E731
    assert match.differences(dma(5), (), dma(105), (), id_offset=100) == []
    assert [d.field for d in match.differences(dma(5), (), dma(107), (), id_offset=100)] == [
        "msg_id (counted from the first server command)"]


def test_a_data_difference_names_its_first_differing_byte() -> None:
    a = _m(C.REGION_READ, struct.pack("<QII", 0, 1, 8) + b"ABCDEFGH")
    b = _m(C.REGION_READ, struct.pack("<QII", 0, 1, 8) + b"ABCDxFGH")
    assert [d.text() for d in match.differences(a, (), b, ())] == ["data[0x4] 0x45464748 recorded, 0x78464748 now"]


def test_requests_are_keyed_by_command_flags_and_fields() -> None:
    r = lambda off, no_reply=False: spec.HEADER.pack(  # noqa: E731
        9, C.REGION_WRITE, 36, spec.FLAG_NO_REPLY if no_reply else 0, 0) + struct.pack("<QII", off, 1, 4) + b"abcd"
    assert match.request_key(r(0)) == match.request_key(r(0)[:0] + struct.pack("<H", 77) + r(0)[2:])  # id aside
    assert match.request_key(r(0)) != match.request_key(r(4))
    assert match.request_key(r(0)) != match.request_key(r(0, no_reply=True))


messages = st.builds(
    lambda mid, cmd, reply, payload: _m(cmd, payload, reply, mid),
    st.integers(0, 0xFFFF), st.sampled_from([int(c) for c in C] + [0, 99, 0xFFFF]), st.booleans(),
    st.binary(max_size=300))


@given(messages)
def test_any_message_decodes_to_fields_and_equals_itself(data: bytes) -> None:
    fs = match.fields_of(data)
    assert isinstance(fs, dict)
    assert match.differences(data, (), data, ()) == []
    match.request_key(data)  # never raises


@given(messages, st.integers(16, 315), st.integers(1, 255))
def test_any_changed_payload_byte_is_a_difference(data: bytes, at: int, flip: int) -> None:
    if at >= len(data):
        return
    other = data[:at] + bytes([data[at] ^ flip]) + data[at + 1:]
    assert match.differences(data, (), other, ()) != [] or match.fields_of(data) == match.fields_of(other)
