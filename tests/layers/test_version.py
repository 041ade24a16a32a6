"""VERSION payloads: major/minor and the JSON version data, raw and decoded; bad JSON becomes json_error."""

from __future__ import annotations

import json

from hypothesis import given, strategies as st

import vfudissect.layers as L
from vfudissect.capture.reader import open_capture
from vfudissect.core.events import MessageIn

from tests.conftest import LVU, QEMU
from tests.layers.strategies import fixed_kwargs, round_trip, scapy_capture

json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=12)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


@given(fixed_kwargs(L.VfuVersion), st.dictionaries(st.text(max_size=10), json_values, max_size=4))
def test_version_round_trips_with_capabilities(kw: dict, caps: dict) -> None:
    p = L.VfuVersion(**kw, version_data=L.version_data_bytes({"capabilities": caps}))
    again = round_trip(p)
    assert again.capabilities == caps
    assert again.version_json == {"capabilities": caps}
    assert again.json_error is None
    assert again.version_data.endswith(b"\0")


@given(st.binary(max_size=80))
def test_any_version_data_decodes_without_raising(raw: bytes) -> None:
    p = L.VfuVersion(bytes(L.VfuVersion(major=0, minor=0, version_data=raw)))
    assert p.version_data == raw
    text = p.show(dump=True)
    assert "json_error" in text
    if p.capabilities is not None:
        assert isinstance(p.capabilities, dict) and p.json_error is None
    assert p.nul_terminated == (raw.endswith(b"\0") if raw else None)


def test_bad_json_is_reported_not_raised() -> None:
    bad = L.VfuVersion(version_data=b'{"capabilities": {"max_msg_fds": 8,}\0')
    assert bad.capabilities is None and bad.version_json is None
    assert "does not parse" in bad.json_error
    not_object = L.VfuVersion(version_data=b"[1, 2]\0")
    assert not_object.version_json == [1, 2] and "not an object" in not_object.json_error
    no_nul = L.VfuVersion(version_data=b'{"capabilities": {}}')
    assert no_nul.capabilities == {} and no_nul.json_error is None and no_nul.nul_terminated is False
    assert L.VfuVersion(version_data=b"{}\0").nul_terminated is True
    assert L.VfuVersion().json_error is None and L.VfuVersion().capabilities is None


def _version_json(path, direction: str) -> dict:
    for ev in open_capture(path):
        if isinstance(ev, MessageIn) and ev.dir == direction and ev.data[2] == 1:
            return json.loads(ev.data[20:].rstrip(b"\0"))
    raise AssertionError("no VERSION")


def test_qemu_version_capabilities_from_the_real_capture() -> None:
    pkts = [p for p in scapy_capture(QEMU) if L.VfuVersion in p]
    request, reply = pkts[0][L.VfuVersion], pkts[1][L.VfuVersion]
    assert request.capabilities == _version_json(QEMU, "c2s")["capabilities"]
    assert reply.capabilities == _version_json(QEMU, "s2c")["capabilities"]
    # what QEMU's client sends (fact sheet 6.2): 16 fds, 1 MiB, write_multiple, the legacy migration object
    assert request.capabilities["max_msg_fds"] == 16
    assert request.capabilities["max_data_xfer_size"] == 1048576
    assert request.capabilities["write_multiple"] is True
    assert request.capabilities["migration"]["pgsize"] == 4096
    assert (request.major, request.minor) == (0, 0)
    assert reply.json_error is None


def test_libvfio_user_version_reply() -> None:
    reply = [p for p in scapy_capture(LVU) if L.VfuVersion in p][1][L.VfuVersion]
    assert reply.capabilities == _version_json(LVU, "s2c")["capabilities"]
    assert reply.capabilities["max_msg_fds"] == 8  # libvfio-user's value (fact sheet 6.2)
