"""VERSION data checks, property-based: any bytes give findings, never exceptions."""

from __future__ import annotations

import json

from hypothesis import given, strategies as st

from vfudissect import spec
from vfudissect.core.capabilities import cap, parse_version_data
from vfudissect.core import findings

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
                           lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids,
                                                                                     max_size=3), max_leaves=8)


@given(st.binary(max_size=300))
def test_any_bytes_give_known_codes_only(raw):
    _vd, problems = parse_version_data(raw)
    assert all(code in findings.CATALOGUE for code, _ in problems)


@given(st.dictionaries(st.sampled_from(sorted(spec.CAPABILITIES) + ["x", "twin_socket.supported"]), json_values,
                       max_size=5))
def test_any_capabilities_object_is_checked_without_raising(caps):
    raw = json.dumps({"capabilities": caps}).encode() + b"\0"
    vd, problems = parse_version_data(raw)
    assert vd.capabilities == caps
    assert all(code in findings.CATALOGUE for code, _ in problems)


def test_qemu_and_libvfio_user_capabilities_are_clean_but_for_the_legacy_note():
    q = b'{"capabilities": {"pgsizes": 4096, "max_msg_fds": 16, "max_dma_maps": 65535, "max_data_xfer_size": ' \
        b'1048576, "migration": {"max_bitmap_size": 268435456, "pgsize": 4096}, "write_multiple": true}}\0'
    vd, problems = parse_version_data(q)
    assert [c for c, _ in problems] == ["CAPS_LEGACY_KEY"]
    assert cap(vd.capabilities, "max_msg_fds", 1) == 16 and cap(vd.capabilities, "migration.pgsize", 0) == 4096
    assert cap(vd.capabilities, "twin_socket.fd_index", None) is None


def test_bad_values_fall_back_to_defaults():
    vd, _ = parse_version_data(b'{"capabilities": {"max_data_xfer_size": "big"}}\0')
    assert cap(vd.capabilities, "max_data_xfer_size", 1048576) == 1048576
