"""Fault injection: what each action does to a message, and that each produces its finding end to end."""

from __future__ import annotations

import json
import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vfudissect import spec
from vfudissect.capture.reader import read_events
from vfudissect.analysis import analyze
from vfudissect.core.analyzer import AnalyzerConfig
from vfudissect.core.records import Finding
from vfudissect.peers.client import Client, run_session
from vfudissect.peers.faults import ACTIONS, DEFAULT_GARBAGE, OVERSIZED, Fault, Faults
from vfudissect.peers.server import DeviceServer
from vfudissect.testing import get_info_reply, region_read_reply, version_reply

from tests.proxy.conftest import Proxy

C = spec.Command
H = spec.HEADER


def out(fault: Fault, data: bytes, fds: tuple[int, ...] = ()) -> list:
    return Faults(fault).injector().outgoing(data, fds)


def test_each_action_on_one_reply() -> None:
    rep = region_read_reply(5, 7, count=4, data=b"abcd")
    (s,) = out(Fault("delay", delay=2.5), rep)
    assert s.delay == 2.5 and s.data == rep
    assert out(Fault("drop"), rep) == []
    assert [x.data for x in out(Fault("duplicate"), rep)] == [rep, rep]
    assert H.unpack_from(out(Fault("wrong_id"), rep)[0].data)[0] == 5 + 0x1000
    assert H.unpack_from(out(Fault("wrong_command"), rep)[0].data)[1] == C.DEVICE_GET_INFO
    assert out(Fault("garbage"), rep)[0].data == DEFAULT_GARBAGE
    assert out(Fault("garbage", data=b"\x01\x02"), rep)[0].data == b"\x01\x02"
    assert H.unpack_from(out(Fault("oversized_header"), rep)[0].data)[2] == OVERSIZED
    (t,) = out(Fault("truncate", count=20), rep)
    assert t.data == rep[:20] and t.stall
    assert H.unpack_from(out(Fault("patch_header", header={"flags": 0x41}), rep)[0].data)[3] == 0x41
    rp = out(Fault("replace_payload", data=b"xy"), rep)[0].data
    assert rp[16:] == b"xy" and H.unpack_from(rp)[2] == 18
    assert out(Fault("close"), rep)[0].close_connection


def test_version_actions_edit_the_json() -> None:
    v = version_reply(0)
    assert struct.unpack_from("<H", out(Fault("bad_version"), v)[0].data, 16)[0] == 1
    assert not out(Fault("caps_no_nul"), v)[0].data.endswith(b"\0")
    with pytest.raises(ValueError):
        json.loads(out(Fault("caps_malformed"), v)[0].data[20:-1])
    assert isinstance(json.loads(out(Fault("caps_not_object"), v)[0].data[20:-1]), list)
    bad = json.loads(out(Fault("caps_bad_value"), v)[0].data[20:-1])["capabilities"]
    assert bad["max_msg_fds"] < 0 and isinstance(bad["max_data_xfer_size"], str)


def test_fd_actions_add_or_remove_one() -> None:
    efd = os.eventfd(0)
    try:
        (s,) = out(Fault("extra_fd"), get_info_reply(1), (efd,))
        assert len(s.fds) == 2 and s.fds[0] == efd and s.close_after == (s.fds[1],)
        os.close(s.fds[1])
        assert out(Fault("missing_fd"), get_info_reply(1), (efd,))[0].fds == ()
    finally:
        os.close(efd)


def test_matching_by_command_kind_and_nth() -> None:
    inj = Faults(Fault("drop", command=C.DEVICE_GET_INFO, kind="reply", nth=2)).injector()
    rep = get_info_reply(1)
    assert len(inj.outgoing(rep)) == 1  # first matching: untouched
    assert len(inj.outgoing(region_read_reply(1, 7))) == 1  # another command: not counted
    assert inj.outgoing(rep) == []  # second matching: dropped
    assert len(inj.outgoing(rep)) == 1
    assert [f.action for f in inj.fired] == ["drop"]  # what fired, for a demo to report
    every = Faults(Fault("drop", nth=0)).injector()
    assert every.outgoing(rep) == [] and every.outgoing(rep) == []
    with pytest.raises(ValueError, match="unknown fault action"):
        Fault("explode")


@given(st.sampled_from(sorted(ACTIONS)), st.binary(min_size=16, max_size=200), st.integers(0, 3))
def test_any_action_on_any_message_gives_sends(action: str, data: bytes, nth: int) -> None:
    sends = Faults(Fault(action, nth=nth, header={"msg_id": 1})).injector().outgoing(data)
    for s in sends:
        assert isinstance(s.data, bytes)
        for fd in s.close_after:
            os.close(fd)


# fault in what the server sends -> the finding the engine reports on the recorded capture
END_TO_END = [
    (Fault("delay", command=C.DEVICE_GET_INFO, delay=0.5), "REPLY_TIMEOUT"),
    (Fault("wrong_id", command=C.DEVICE_GET_INFO), "UNMATCHED_REPLY"),
    (Fault("wrong_command", command=C.DEVICE_GET_IRQ_INFO), "REPLY_COMMAND_MISMATCH"),
    (Fault("drop", command=C.DEVICE_RESET), "NO_REPLY"),  # (the capture ends before its timeout would)
    (Fault("duplicate", command=C.DEVICE_GET_INFO), "UNMATCHED_REPLY"),
    (Fault("bad_version", command=C.VERSION), "VERSION_MAJOR_MISMATCH"),
    (Fault("caps_malformed", command=C.VERSION), "CAPS_MALFORMED"),
    (Fault("caps_no_nul", command=C.VERSION), "CAPS_NOT_NUL_TERMINATED"),
    (Fault("caps_not_object", command=C.VERSION), "CAPS_NOT_OBJECT"),
    (Fault("caps_bad_value", command=C.VERSION), "CAPS_BAD_VALUE"),
    (Fault("garbage", command=C.DEVICE_GET_INFO), "BAD_SIZE"),
    (Fault("extra_fd", command=C.DEVICE_GET_INFO), "FDS_UNEXPECTED"),
    (Fault("missing_fd", command=C.DEVICE_GET_REGION_INFO, nth=3), "FDS_MISSING"),
    (Fault("oversized_header", command=C.DEVICE_GET_INFO), "MESSAGE_TOO_LARGE"),  # framed by its header, body raw
    (Fault("truncate", command=C.DEVICE_GET_INFO, count=20), "MESSAGE_INCOMPLETE"),
    (Fault("patch_header", command=C.DEVICE_GET_INFO, header={"flags": 0x41}), "RESERVED_FLAGS"),
    (Fault("patch_header", command=C.DEVICE_GET_INFO, header={"flags": 0x11}), "MISPLACED_FLAG"),
    (Fault("replace_payload", command=C.DEVICE_GET_INFO, data=b"\0" * 4), "PAYLOAD_TOO_SHORT"),
]


@pytest.mark.parametrize("fault, code", END_TO_END, ids=[f"{f.action}-{c}" for f, c in END_TO_END])
def test_each_fault_produces_its_finding_through_the_proxy(sockdir: str, fault: Fault, code: str) -> None:
    srv = DeviceServer(os.path.join(sockdir, "dev.sock"), faults=Faults(fault)).start()
    px = Proxy(sockdir, srv.path, timeout=0.3, stall=0.2)
    try:
        try:
            with Client(px.path, timeout=2.0) as c:
                run_session(c)
        except Exception:  # a misbehaving server: the client gives up, the capture tells why
            pass
    finally:
        events = px.events()
        srv.stop()
    timeout = 30.0 if fault.action == "drop" else 0.3
    found = {it.code for it in analyze(iter(events), AnalyzerConfig(timeout=timeout)) if isinstance(it, Finding)}
    assert code in found, sorted(found)
    with open(px.capture, "rb") as f:
        assert len(list(read_events(f))) == len(events)
