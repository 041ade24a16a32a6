"""Arbitrary exchanges through the real proxy: for any sequence of messages (well-formed or not, with memfds,
eventfds and sockets, fds sent after the header), the proxy records exactly the frames the model says, and its
live findings, `read --json` and the sans-io Playbook agree on every code and frame."""

from __future__ import annotations

import shutil
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from vfudissect import spec
from vfudissect.demo.catalogue import READY
from vfudissect.demo.scripted import Scenario, Step, expected, findings_key
from vfudissect.testing import (device_reset, dma_map, dma_read, dma_unmap, dma_write, get_info, message,
                                region_read, region_read_reply, region_write, reply, set_irqs, version)

from .conftest import model_shape, run_in_process

ids = st.integers(0, 40)
regions = st.sampled_from([0, 1, 2, 7, 12])
kinds = st.lists(st.sampled_from(["memfd", "eventfd", "socket"]), max_size=3).map(tuple)

client_messages = st.one_of(
    st.builds(region_read, ids, regions, st.integers(0, 0x2000), st.integers(0, 64)),
    st.builds(region_write, ids, regions, st.integers(0, 0x2000), st.binary(max_size=64), st.booleans()),
    st.builds(dma_map, ids, st.integers(0, 1 << 24), st.integers(0, 1 << 20), st.integers(0, 15)),
    st.builds(dma_unmap, ids, st.integers(0, 1 << 24), st.integers(0, 1 << 20), st.integers(0, 3)),
    st.builds(get_info, ids), st.builds(device_reset, ids),
    st.builds(set_irqs, ids, st.integers(0, 6), st.integers(0, 4), st.integers(0, 4), st.integers(0, 0x3F)),
    st.builds(version, ids),
)
server_messages = st.one_of(
    st.builds(region_read_reply, ids, regions, st.integers(0, 0x2000), st.integers(0, 64)),
    st.builds(lambda r, e: reply(r, error=e), client_messages, st.sampled_from([0, 0, 22, 14, 5000])),
    st.builds(dma_read, ids, st.integers(0, 1 << 24), st.integers(0, 64)),
    st.builds(dma_write, ids, st.integers(0, 1 << 24), st.binary(max_size=64)),
)
anything = st.builds(lambda i, c, p, f, e: message(i, c, p, flags=f, error=e), ids, st.integers(0, 40),
                     st.binary(max_size=48), st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF))


unframeable = st.builds(lambda size, rest: spec.HEADER.pack(7, 9, size, 0, 0) + rest,
                        st.one_of(st.integers(0, 15), st.integers(1 << 25, 0xFFFFFFFF)), st.binary(max_size=40))


@st.composite
def exchanges(draw: st.DrawFn) -> list[Step]:
    """Messages both ways, at times a header that cannot be framed, and perhaps a peer dying mid-message."""
    out: list[Step] = []
    raw: set[str] = set()
    for _ in range(draw(st.integers(0, 8))):
        d = draw(st.sampled_from([spec.C2S, spec.S2C]))
        data = draw(st.one_of(client_messages if d == spec.C2S else server_messages, anything,
                              unframeable if draw(st.integers(0, 9)) == 0 else anything))
        fds = draw(kinds)
        split = len(data) > spec.HEADER_SIZE and d not in raw and draw(st.booleans())
        out.append(Step(d, data, fds, how="split" if split else "whole"))
        size = spec.HEADER.unpack_from(data)[2]
        if not spec.HEADER_SIZE <= size <= 1 << 24:
            raw.add(d)
    end = draw(st.sampled_from(["", "cut", "close"]))
    if end:
        d = draw(st.sampled_from([spec.C2S, spec.S2C]))
        if end == "close":
            out.append(Step(d, how="close"))
        else:
            msg = draw(client_messages if d == spec.C2S else server_messages)
            out.append(Step(d, msg[:draw(st.integers(1, len(msg) - 1))], how="cut"))
    return out


@settings(max_examples=25, deadline=None)
@given(exchanges(), st.booleans())
def test_any_exchange_is_recorded_and_judged_the_same_live_offline_and_sans_io(tail: list[Step],
                                                                              negotiated: bool) -> None:
    scn = Scenario("random", tuple((READY if negotiated else []) + tail))
    workdir = tempfile.mkdtemp(prefix="vfr", dir="/tmp")
    try:
        out = run_in_process(scn, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    want = findings_key(expected(scn).findings())
    assert out.shape == model_shape(scn)
    assert out.live == want
    assert out.read == want
