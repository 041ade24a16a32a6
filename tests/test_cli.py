"""The CLI as users run it: real fixtures in, lines/JSON/exit codes out; bad input gives one clear line."""

from __future__ import annotations


import json
import subprocess
import sys

import pytest

from vfudissect import cli
from vfudissect.capture.writer import CaptureWriter
from vfudissect.core.events import ConnOpened, MessageIn
from vfudissect.testing import region_read, region_read_reply, version, version_reply
from tests.conftest import LVU, QEMU


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vfudissect", *args], capture_output=True, input=stdin,
                          timeout=120)


def jsonl(out: bytes) -> tuple[list[dict], list[dict]]:
    rows = [json.loads(line) for line in out.decode().splitlines()]
    return [r for r in rows if "msg_id" in r], [r for r in rows if "finding" in r]


def test_read_json_real_qemu_traffic():
    p = run("read", "--json", str(QEMU))
    assert p.returncode == 0, p.stderr
    msgs, findings = jsonl(p.stdout)
    assert len(msgs) == 398 and all(m["command_name"] and not m["command_name"].startswith("CMD_") for m in msgs)
    keys = {"frame", "ts", "conn", "dir", "msg_id", "command", "command_name", "msg_type", "size", "flags", "error",
            "fds", "request_frame", "response_frame", "rtt", "findings"}
    assert keys <= set(msgs[0])
    assert [f for f in findings if f["severity"] != "note"] == []
    by_frame = {m["frame"]: m for m in msgs}
    for m in msgs:  # every command answered, links symmetric
        if m["msg_type"] == "command":
            assert by_frame[m["response_frame"]]["request_frame"] == m["frame"]
    maps = [m for m in msgs if m["command_name"] == "DMA_MAP" and m["msg_type"] == "command"]
    assert sum(len(m["fds"]) == 1 and m["fds"][0]["kind"] == "memfd" for m in maps) == 13
    assert {"kind", "size", "ino"} <= set(maps[0]["fds"][0])


def test_read_real_libvfio_user_traffic_flags_only_what_it_contains():
    p = run("read", "--json", str(LVU))
    msgs, findings = jsonl(p.stdout)
    assert len(msgs) == 216
    serious = [(f["finding"], f["frames"]) for f in findings if f["severity"] != "note"]
    error = next(m for m in msgs if m["error"])
    assert serious == [("ERROR_REPLY", [error["frame"]])]  # its sample client provokes one EINVAL on purpose
    assert p.returncode == 0  # a warning is below the default --fail-on error
    assert run("read", "--json", "--fail-on", "warning", str(LVU)).returncode == 1


def test_read_text_lines_and_summary():
    p = run("read", "--color", "never", str(LVU))
    text = p.stdout.decode()
    assert "C→S VERSION command id=55893" in text
    assert "S→C REGION_READ error reply id=61455 16B EINVAL(22)" in text
    assert "! warning ERROR_REPLY: REGION_READ failed: EINVAL (22)" in text
    assert "overall: 1 connection(s)" in text and "\x1b[" not in text


def test_color_when_asked():
    assert b"\x1b[" in run("read", "--color", "always", str(LVU)).stdout


def test_filters():
    p = run("read", "--json", "-c", "DMA_MAP", "--dir", "c2s", str(QEMU))
    msgs, _ = jsonl(p.stdout)
    assert len(msgs) == 18 and all(m["command"] == 2 and m["dir"] == "c2s" for m in msgs)
    p = run("read", "--json", "-f", "error_reply", str(LVU))
    msgs, findings = jsonl(p.stdout)
    assert [m["error_name"] for m in msgs] == ["EINVAL"] and [f["finding"] for f in findings] == ["ERROR_REPLY"]
    assert findings[0]["frames"] == [msgs[0]["frame"]]
    p = run("read", "--json", "-s", "warning", str(QEMU))
    assert jsonl(p.stdout) == ([], [])
    p = run("read", "--json", "--conn", "2", str(QEMU))
    assert jsonl(p.stdout)[0] == []
    bad = run("read", "-f", "NOPE", str(QEMU))
    assert bad.returncode == 2 and b"unknown finding code" in bad.stderr and b"Traceback" not in bad.stderr


def test_stats_text_and_json():
    p = run("stats", "--color", "never", str(QEMU))
    text = p.stdout.decode()
    assert p.returncode == 0 and "REGION_READ" in text and "p99" in text and "fds: memfd 13, eventfd 3" in text
    j = json.loads(run("stats", "--json", str(QEMU)).stdout)
    rt = j["overall"]["response_times"]["REGION_READ"]
    assert rt["count"] == 93 and rt["min"] <= rt["p50"] <= rt["p99"] <= rt["max"]
    assert j["overall"]["fds"] == {"memfd": 13, "eventfd": 3}


def make_bad_timeout_capture(path) -> None:
    with open(path, "wb") as f:
        w = CaptureWriter(f)
        w.write(ConnOpened(1.0, 1, "/s"))
        w.write(MessageIn(1.0, 1, "c2s", version(0)))
        w.write(MessageIn(1.1, 1, "s2c", version_reply(0)))
        w.write(MessageIn(1.2, 1, "c2s", region_read(1, 7)))
        w.write(MessageIn(9.0, 1, "s2c", region_read_reply(1, 7)))


def test_exit_status_and_timeout_option(tmp_path):
    path = tmp_path / "late.pcapng"
    make_bad_timeout_capture(path)
    p = run("read", "--json", str(path))
    _msgs, findings = jsonl(p.stdout)
    assert [(f["finding"], f["frames"]) for f in findings if f["severity"] != "note"] == [("REPLY_TIMEOUT", [4])]
    assert p.returncode == 0  # a warning
    assert run("read", "--fail-on", "warning", str(path)).returncode == 1
    assert run("read", "--timeout", "10", "--fail-on", "warning", str(path)).returncode == 0
    msgs, _ = jsonl(run("read", "--json", str(path)).stdout)
    req = next(m for m in msgs if m["frame"] == 4)
    assert req["findings"] == ["REPLY_TIMEOUT"] and req["response_frame"] == 5


@pytest.mark.parametrize("content, message", [
    (b"", b"empty file"),
    (b"this is text, not a capture at all", b"not a pcap or pcapng capture"),
])
def test_unusable_input_is_one_line_exit_2(tmp_path, content, message):
    path = tmp_path / "bad.pcapng"
    path.write_bytes(content)
    p = run("read", str(path))
    assert p.returncode == 2 and message in p.stderr and b"Traceback" not in p.stderr
    assert len(p.stderr.decode().strip().splitlines()) == 1
    assert run("stats", str(path)).returncode == 2


def test_truncated_capture_reports_what_was_read(tmp_path):
    data = QEMU.read_bytes()
    path = tmp_path / "cut.pcapng"
    path.write_bytes(data[: len(data) // 2])
    p = run("read", "--json", str(path))
    msgs, _ = jsonl(p.stdout)
    assert p.returncode == 2 and len(msgs) > 100
    assert b"cut.pcapng: record" in p.stderr and b"Traceback" not in p.stderr


def test_missing_file():
    p = run("read", "/nonexistent/x.pcapng")
    assert p.returncode == 2 and b"No such file" in p.stderr and b"Traceback" not in p.stderr


def test_import_then_read(tmp_path):
    src = tmp_path / "t.jsonl"
    src.write_text('{"t": 1.0, "conn": 1, "open": "s"}\n'
                   '{"t": 1.1, "conn": 1, "dir": "c2s", "data": "%s", "fds": []}\n' % version(0).hex())
    out = tmp_path / "t.pcapng"
    assert run("import", str(src), "-w", str(out)).returncode == 0
    msgs, findings = jsonl(run("read", "--json", str(out)).stdout)
    assert [m["command_name"] for m in msgs] == ["VERSION"]
    assert [f["finding"] for f in findings if f["severity"] != "note"] == ["NO_REPLY"]


def test_read_from_stdin():
    p = run("read", "--json", "-", stdin=QEMU.read_bytes())
    assert len(jsonl(p.stdout)[0]) == 398


def test_help_explains():
    p = run("--help")
    assert p.returncode == 0 and b"Exit status" in p.stdout
    for sub in ("read", "stats", "import", "codes"):
        assert run(sub, "--help").returncode == 0


def test_codes_lists_the_catalogue():
    p = run("codes", "--json")
    rows = [json.loads(x) for x in p.stdout.decode().splitlines()]
    assert {"UNMATCHED_REPLY", "REPLY_TIMEOUT", "CAPS_BAD_VALUE"} <= {r["finding"] for r in rows}


def test_broken_pipe_is_quiet():
    p = subprocess.run(f"{sys.executable} -m vfudissect read {QEMU} | head -1", shell=True, capture_output=True,
                       timeout=60)
    assert b"Traceback" not in p.stderr and p.stdout.count(b"\n") == 1


def test_an_internal_error_is_one_line_after_the_output_not_a_traceback(monkeypatch, capsys) -> None:
    from vfudissect.core import analyzer

    def broken(self, ev):  # type: ignore[no-untyped-def]
        raise ZeroDivisionError("made up by the test")

    monkeypatch.setattr(analyzer.Analyzer, "feed", broken)
    assert cli.main(["read", "--color", "never", "--no-progress", str(QEMU)]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error (ZeroDivisionError: made up by the test)" in err
