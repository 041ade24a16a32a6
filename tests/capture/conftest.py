"""Every capture test runs twice: on the compiled fast paths (when built) and on the pure-Python path."""

from __future__ import annotations

from typing import Iterator

import pytest

from vfudissect.capture import reader, writer


@pytest.fixture(autouse=True, params=["compiled", "pure"])
def codec_path(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "compiled" and reader._scan is None:
        pytest.skip("the compiled fast path is not in use here (VFUDISSECT_PURE, or not built)")
    saved = reader._scan, writer._pack
    if request.param == "pure":
        reader._scan, writer._pack = None, None
    yield request.param
    reader._scan, writer._pack = saved
