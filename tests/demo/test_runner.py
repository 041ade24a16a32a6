"""`vfudissect demo`: the committed captures and a fresh run hold a clean QEMU-shaped session and each injected
fault flagged exactly once on its frame; a fresh run differs from the committed captures only in times and ids."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time
from typing import Any

import pytest

from vfudissect import spec
from vfudissect.capture.reader import open_capture
from vfudissect.core.events import MessageIn
from vfudissect.demo.sessions import CONSEQUENCES, FAULTS, LATE_BY, fault_frames
from tests.conftest import CAPTURES

FAULT_TIMEOUT = 0.3  # the threshold the demo's proxy uses for the faulty session


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], pathlib.Path, float]:
    """`vfudissect demo` run once, as a user runs it, into a temporary directory."""
    out = tmp_path_factory.mktemp("demo")
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "vfudissect", "demo", "-o", str(out), "--color", "never"],
                       capture_output=True, text=True, timeout=120)
    return p, out, time.monotonic() - t0


@pytest.fixture(params=["committed", "fresh"])
def captures(request: pytest.FixtureRequest) -> pathlib.Path:
    if request.param == "committed":
        return CAPTURES
    p, out, _ = request.getfixturevalue("fresh")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr
    return out


def read_json(path: pathlib.Path, timeout: float = spec.DEFAULT_REPLY_TIMEOUT) -> tuple[list[dict[str, Any]],
                                                                                         list[dict[str, Any]], int]:
    p = subprocess.run([sys.executable, "-m", "vfudissect", "read", "--json", "--timeout", f"{timeout:g}",
                        str(path)], capture_output=True, text=True, timeout=60)
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    return [r for r in rows if "msg_id" in r], [r for r in rows if "finding" in r], p.returncode


def test_the_clean_session_is_shaped_like_qemus_and_has_no_warning_or_error(captures: pathlib.Path) -> None:
    msgs, findings, status = read_json(captures / "demo.pcapng")
    assert status == 0
    assert [f for f in findings if f["severity"] != "note"] == []
    cmds = [m for m in msgs if m["msg_type"] == "command"]
    assert all(m["response_frame"] for m in cmds)  # every command answered
    first = cmds[0]
    assert first["command_name"] == "VERSION" and "migration" in first["fields"]["capabilities"]  # QEMU's caps
    maps = [m for m in cmds if m["command_name"] == "DMA_MAP"]
    assert [len(m["fds"]) for m in maps] == [1, 0] and maps[0]["fds"][0]["kind"] == "memfd"
    assert maps[1]["frame"] == maps[0]["frame"] + 1  # pipelined: both sent before the first reply
    assert sorted(m["fields"]["index"] for m in cmds if m["command_name"] == "DEVICE_GET_REGION_INFO") \
        == [0, 1, 1, 2, 3, 4, 5, 6, 7, 8]  # every region, BAR1 again with room for its capabilities
    assert sorted(m["fields"]["index"] for m in cmds if m["command_name"] == "DEVICE_GET_IRQ_INFO") == [0, 1, 2, 3, 4]
    assert [len(m["fds"]) for m in cmds if m["command_name"] == "DEVICE_SET_IRQS"] == [1, 2, 0, 0]
    regions = {(m["command_name"], m["fields"]["region"]) for m in cmds if m["command_name"].startswith("REGION")}
    assert {("REGION_READ", 7), ("REGION_READ", 0), ("REGION_WRITE", 0), ("REGION_READ", 1)} <= regions
    server = [m["command_name"] for m in cmds if m["dir"] == "s2c"]
    assert server == ["DMA_READ", "DMA_WRITE"]  # the DMA round trip
    assert [m["command_name"] for m in cmds[-5:]] == ["DEVICE_RESET", "DEVICE_SET_IRQS", "DEVICE_SET_IRQS",
                                                      "DMA_UNMAP", "DMA_UNMAP"]


@pytest.mark.parametrize("timeout", [FAULT_TIMEOUT, spec.DEFAULT_REPLY_TIMEOUT])
def test_each_injected_fault_is_flagged_once_on_its_frame(captures: pathlib.Path, timeout: float) -> None:
    """With the proxy's threshold and with read's default (the late reply is later than both)."""
    path = captures / "demo-faults.pcapng"
    msgs, findings, _ = read_json(path, timeout)
    where = fault_frames(list(open_capture(str(path))))
    by_frame = {m["frame"]: m for m in msgs}
    # the located messages are what the faults were put into
    late = by_frame[where["late reply"][0]]
    assert late["command_name"] == "REGION_READ" and by_frame[late["response_frame"]]["rtt"] >= LATE_BY
    assert by_frame[where["wrong command"][0]]["command_name"] == "DEVICE_GET_INFO"
    assert by_frame[where["wrong id"][0]]["request_frame"] is None
    assert by_frame[where["incompatible major"][0]]["fields"]["major"] == 1
    for inj in FAULTS:
        hits = [tuple(f["frames"]) for f in findings if f["finding"] == inj.code]
        assert hits == [where[inj.label]], inj.label
    for code, _why in CONSEQUENCES:
        assert [tuple(f["frames"]) for f in findings if f["finding"] == code] == [where[code]]
    serious = sorted(f["finding"] for f in findings if f["severity"] != "note")
    assert serious == sorted([i.code for i in FAULTS] + [c for c, _ in CONSEQUENCES])


def _shape(path: pathlib.Path, timeout: float) -> list[tuple[Any, ...]]:
    """Everything `read --json` says except times, inode numbers and fd paths."""
    msgs, findings, _ = read_json(path, timeout)
    return ([(m["frame"], m["conn"], m["dir"], m["command_name"], m["msg_id"], m["msg_type"], m["size"],
              m["flags"], m["error"], tuple((fd["kind"], fd["size"]) for fd in m["fds"]), m["request_frame"],
              json.dumps(m["fields"], sort_keys=True), tuple(m["findings"])) for m in msgs]
            + [(f["finding"], tuple(f["frames"]), f["text"]) for f in findings])


@pytest.mark.parametrize("name, timeout", [("demo.pcapng", 5.0), ("demo-faults.pcapng", FAULT_TIMEOUT)])
def test_a_fresh_run_differs_from_the_committed_captures_only_in_times_and_ids(fresh: Any, name: str,
                                                                               timeout: float) -> None:
    p, out, _ = fresh
    assert p.returncode == 0, p.stdout[-3000:]
    assert _shape(out / name, timeout) == _shape(CAPTURES / name, timeout)
    ours = [e for e in open_capture(str(out / name)) if isinstance(e, MessageIn)]
    theirs = [e for e in open_capture(str(CAPTURES / name)) if isinstance(e, MessageIn)]
    assert [e.data for e in ours] == [e.data for e in theirs]  # byte for byte


def test_the_demo_prints_the_live_view_the_analysis_and_how_to_open_wireshark(fresh: Any) -> None:
    p, out, elapsed = fresh
    text = p.stdout
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert elapsed < 60
    assert "$ vfudissect record --listen vfio-user.sock --connect gpio.sock -w demo.pcapng" in text
    assert "C→S VERSION command id=0 214B" in text  # the proxy's live view
    assert "! warning REPLY_TIMEOUT: REGION_READ id=4 unanswered after 0.3 s" in text
    assert text.count("overall: ") == 2  # the proxy's statistics, once per run
    assert "interrupts received through their eventfds: INTx, MSI vector 1" in text
    assert text.count("✓") == len(FAULTS) + len(CONSEQUENCES) + 2 and "problem" not in text
    for inj in FAULTS:
        assert f"✓ {inj.label:<24} {inj.code:<24} frame" in text
    assert f"wireshark -X lua_script:plugins/vfio_user.lua {out / 'demo.pcapng'}" in text
    assert "vfudissect lua --install" in text
    assert {f.name for f in out.iterdir()} == {"demo.pcapng", "demo-faults.pcapng"}


@pytest.mark.tshark
@pytest.mark.parametrize("name", ["demo.pcapng", "demo-faults.pcapng"])
def test_wireshark_with_the_plugin_flags_what_read_flags_on_the_same_frames(name: str) -> None:
    """The command the demo ends with works: tshark with plugins/vfio_user.lua, default preferences."""
    from collections import Counter

    from tests.export.tshark_run import run_tshark

    _msgs, findings, _ = read_json(CAPTURES / name)
    frames = run_tshark(CAPTURES / name)
    # each finding shows on every frame it names (and on its own FINDING record, counted apart)
    plugin = Counter((code, n) for n, fr in frames.items() if fr.rec_type != spec.RecType.FINDING
                     for code, k in fr.findings.items() for _ in range(k))
    assert plugin == Counter((f["finding"], n) for f in findings for n in f["frames"])
    records = Counter(code for fr in frames.values() if fr.rec_type == spec.RecType.FINDING for code in fr.findings)
    assert records == Counter(f["finding"] for f in findings)
