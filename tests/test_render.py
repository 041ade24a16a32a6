"""The views' JSON lines: json.dumps's text exactly, whatever the object holds."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from vfudissect.render import json_line

_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20)


@given(st.dictionaries(st.text(max_size=8), _values, max_size=8))
def test_a_json_line_is_what_json_dumps_writes(obj: dict) -> None:
    assert json_line(obj) == json.dumps(obj)
