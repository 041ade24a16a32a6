"""The demo's sessions against the emulated device directly: every effect verified, every fault noticed."""

from __future__ import annotations

import os

import pytest

from vfudissect.capture.reader import open_capture
from vfudissect.demo.peers import DemoClient
from vfudissect.demo.sessions import clean_session, fault_frames, fault_schedules, faulty_session, version_refused
from vfudissect.peers.server import DeviceServer
from tests.conftest import CAPTURES


def test_the_clean_session_verifies_interrupts_dma_and_config_space(tmp_path) -> None:  # type: ignore[no-untyped-def]
    srv = DeviceServer(os.path.join(tmp_path, "d.sock")).start()
    try:
        with DemoClient(srv.path) as c:
            rep = clean_session(c)
    finally:
        srv.stop()
    assert rep.ok, rep.lines()
    assert rep.interrupts == ["INTx", "MSI vector 1"] and (rep.regions, rep.irq_types) == (9, 5)
    assert all(line.endswith("ok") for line in rep.lines() if ":" in line and "interrupts" not in line)


def test_the_faulty_sessions_notice_each_fault(tmp_path) -> None:  # type: ignore[no-untyped-def]
    late_by = 0.3  # the demo's 5.5 s would only make the test slow
    faults = fault_schedules(late_by)
    srv = DeviceServer(os.path.join(tmp_path, "d.sock"), faults=faults).start()  # type: ignore[arg-type]
    try:
        with DemoClient(srv.path) as c:
            seen = faulty_session(c)
        with DemoClient(srv.path) as c:
            seen.append(version_refused(c))
    finally:
        srv.stop()
    assert "answer 0x56465544 arrived after 0.3 s" in seen[0]
    assert "the reply says DEVICE_GET_INFO" in seen[1]
    assert "a reply with id=4102 came instead" in seen[2]
    assert "answered 1.0 with unparseable capabilities" in seen[3]


def test_fault_frames_refuse_a_capture_of_another_session() -> None:
    with pytest.raises(LookupError, match="faults are injected into"):
        fault_frames(list(open_capture(str(CAPTURES / "demo.pcapng"))))
