"""The CLI as users run it: real fixtures in, lines/JSON/exit codes out; bad input gives one clear line."""

from __future__ import annotations


import json
import os
import pathlib
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


# ------------------------------------------------------------ what a new user tripped over (issue 11)
def test_unusable_input_prints_its_error_alone_naming_the_file(tmp_path):
    for args in (["read", "missing.pcapng"], ["stats", "--json", "missing.pcapng"], ["read", str(tmp_path)]):
        p = run(*args)
        assert p.returncode == 2 and p.stdout == b"", args  # no summary, no empty JSON document
        err = p.stderr.decode().strip().splitlines()
        assert len(err) == 1 and "file header" not in err[0], err
    assert b"cannot read missing.pcapng: No such file or directory" in run("read", "missing.pcapng").stderr
    assert b"a directory with no capture in it" in run("read", str(tmp_path)).stderr


def _foreign_capture(path, dissector: bytes) -> None:
    """A pcapng of link type 252 (exported PDU) naming another dissector, as text2pcap -l 252 would make it."""
    import struct as st

    def block(t: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return st.pack("<II", t, 12 + len(body)) + body + st.pack("<I", 12 + len(body))

    name = dissector + b"\0" * (-len(dissector) % 4)
    pdu = st.pack(">HH", 12, len(name)) + name + st.pack(">HH", 0, 0) + b"payload of another protocol"
    shb = block(0x0A0D0D0A, st.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = block(1, st.pack("<HHI", 252, 0, 0))
    epb = block(6, st.pack("<IIIII", 0, 0, 0, len(pdu), len(pdu)) + pdu)
    path.write_bytes(shb + idb + epb)


def test_a_foreign_exported_pdu_capture_is_refused_like_a_foreign_link_type(tmp_path):
    path = tmp_path / "other.pcapng"
    _foreign_capture(path, b"http")
    for sub in ("read", "stats"):
        p = run(sub, str(path))
        assert p.returncode == 2 and p.stdout == b"", p.stdout[:200]
        assert b"exported PDU for dissector 'http'" in p.stderr and b"not a vfudissect capture" in p.stderr


def test_annotate_refuses_a_foreign_capture_before_writing_and_leaves_an_existing_output_alone(tmp_path):
    foreign = tmp_path / "other.pcapng"
    _foreign_capture(foreign, b"http")
    text = tmp_path / "notes.txt"
    text.write_text("not a capture\n")
    keep = tmp_path / "keep.pcapng"
    keep.write_bytes(b"an earlier capture, precious")
    for src, says in ((foreign, b"exported PDU for dissector 'http'"), (text, b"not a pcap or pcapng capture")):
        p = run("annotate", str(src), "-w", str(keep))
        err = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(err) == 1 and says in err[0] and b"written" not in err[0], err
        assert keep.read_bytes() == b"an earlier capture, precious"
        p = run("annotate", str(src), "-w", str(tmp_path / "new.pcapng"))
        assert p.returncode == 2 and not (tmp_path / "new.pcapng").exists()
    assert sorted(f.name for f in tmp_path.iterdir()) == ["keep.pcapng", "notes.txt", "other.pcapng"]  # no .part


def test_annotate_of_a_damaged_capture_keeps_what_came_before_the_damage(tmp_path):
    cut = tmp_path / "cut.pcapng"
    data = QEMU.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    out = tmp_path / "out.pcapng"
    out.write_bytes(b"old")
    p = run("annotate", str(cut), "-w", str(out))
    assert p.returncode == 2 and b"records before it written to" in p.stderr
    assert out.read_bytes()[:4] == bytes.fromhex("0a0d0d0a")  # the records before the damage, in its place


def test_read_from_a_pipe_shows_each_record_as_it_arrives():
    import select

    data = QEMU.read_bytes()
    # the file header, the verdicts record, the connection's open record and the first message, not one byte more
    cut = 0
    for _ in range(5):
        cut += int.from_bytes(data[cut + 4:cut + 8], "little")
    proc = subprocess.Popen([sys.executable, "-m", "vfudissect", "read", "--color", "never", "-"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(data[:cut])  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "nothing was shown while the stream stays open"
        line = proc.stdout.readline().decode()  # type: ignore[union-attr]
        assert "open gpio.sock" in line
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(timeout=30)


def test_read_json_has_every_record_type_the_text_view_shows():
    p = run("read", "--json", str(QEMU))
    rows = [json.loads(x) for x in p.stdout.decode().splitlines()]
    events = [r for r in rows if "event" in r]
    assert [e["event"] for e in events] == ["open", "close", "close"]
    assert {"frame", "ts", "conn", "dir", "event", "text", "findings", "file"} <= set(events[0])
    assert all(r["file"] == str(QEMU) for r in rows)  # every object says which capture it comes from


def test_options_that_make_no_sense_are_refused_with_a_reason():
    p = run("read", "--timeout", "-1", str(QEMU))
    assert p.returncode == 2 and b"must be 0 (off) or a positive number" in p.stderr
    p = run("read", "--conn", "99", str(QEMU))
    assert p.returncode == 2 and b"no connection #99" in p.stderr and b"its connections: #1" in p.stderr
    assert p.stdout == b""  # the error alone, not a summary of nothing
    p = run("stats", "--conn", "1", str(QEMU))  # an option of read's: the subcommand says it does not know it
    assert p.returncode == 2 and b"vfudissect stats: error: unrecognized arguments: --conn" in p.stderr
    p = run("serve", "--socket", "x.sock", "--bar1-size", "12k")
    assert p.returncode == 2 and b"'12k' is not a number of bytes" in p.stderr
    assert b"%%" not in run("stats", "--help").stdout
    assert b"3 an internal error" in run("--help").stdout
    assert b"JSON Lines" in run("codes", "--help").stdout


def test_many_captures_are_one_analysis_each_line_saying_its_file():
    p = run("read", "--color", "never", str(QEMU), str(LVU))
    text = p.stdout.decode()
    assert text.count("━━ ") == 2 and f"━━ {QEMU}" in text and f"━━ {LVU}" in text
    one = json.loads(run("stats", "--json", str(QEMU)).stdout)
    two = json.loads(run("stats", "--json", str(LVU)).stdout)
    both = json.loads(run("stats", "--json", str(QEMU), str(LVU)).stdout)
    assert both["overall"]["messages"] == one["overall"]["messages"] + two["overall"]["messages"]
    assert both["connections"] == 2 and set(both["per_connection"]) == {f"{QEMU}#1", f"{LVU}#1"}


def test_a_rotated_capture_is_read_as_one_from_its_first_part(tmp_path):
    import io

    from vfudissect.capture.rotate import RotatingCaptureWriter
    from vfudissect.capture.judge import JudgingWriter
    from vfudissect.capture.reader import read_events
    from vfudissect.proxy.sinks import BufferedSink, FileSink
    import os

    def part(path):  # type: ignore[no-untyped-def]
        return BufferedSink(FileSink(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)))

    w = RotatingCaptureWriter(str(tmp_path / "rot.pcapng"), 8192, part, judged=5.0)
    judge = JudgingWriter(w, timeout=5.0)
    last = 0.0
    for ev in read_events(io.BytesIO(QEMU.read_bytes())):
        if type(ev).__name__ not in ("FindingIn", "VerdictsIn"):
            judge.write(ev)
            last = ev.ts
    judge.finish(last)
    w.close()
    assert len(w.paths) >= 3
    whole = json.loads(run("stats", "--json", str(QEMU)).stdout)
    rotated = json.loads(run("stats", "--json", str(tmp_path / "rot.pcapng")).stdout)
    assert rotated["overall"] == whole["overall"] and rotated["connections"] == 1
    p = run("read", "--color", "never", str(tmp_path / "rot.pcapng"))
    assert p.stdout.decode().count("━━ ") == len(w.paths)  # every part, in order
    globbed = json.loads(run("stats", "--json", str(tmp_path / "rot*.pcapng")).stdout)
    assert globbed == rotated


def test_read_verbose_ends_each_message_with_a_hex_dump():
    p = run("read", "-V", "--color", "never", "-c", "VERSION", str(QEMU))
    text = p.stdout.decode()
    assert "    0000  00 00 01 00 d6 00 00 00 00 00 00 00 00 00 00 00   ................" in text


def test_a_register_access_shows_its_value_and_flags_are_spelled_one_way():
    p = run("read", "--color", "never", "-c", "REGION_WRITE", str(QEMU))
    line = next(x for x in p.stdout.decode().splitlines() if "REGION_WRITE command" in x and "count=4" in x)
    assert " value=0x" in line
    rows = [json.loads(x) for x in run("read", "--json", "-c", "REGION_READ", str(QEMU)).stdout.decode().splitlines()]
    reply = next(r for r in rows if r.get("msg_type") == "reply" and r["fields"].get("count") == 4)
    assert isinstance(reply["fields"]["value"], int)
    tree = run("read", "-V", "--color", "never", "-c", "DMA_MAP", str(QEMU)).stdout.decode()
    assert " flags   = READ|WRITE" in tree and "READ+WRITE" not in tree and "b'" not in tree


def test_the_decode_tree_speaks_the_spec_not_python():
    for capture in (QEMU, LVU):
        tree = run("read", "-V", "--color", "never", str(capture)).stdout.decode()
        values = [line.split(" = ", 1)[1] for line in tree.splitlines() if " = " in line]
        assert values and not [v for v in values if v.startswith(("b'", 'b"')) or v in ("None", "True", "False")]
    tree = run("read", "-V", "--color", "never", "-c", "VERSION", str(LVU)).stdout.decode()
    assert 'version_data   = "{"capabilities":{"max_msg_fds":32,"max_data_xfer_size":1024}}" (NUL-terminated)' in tree
    assert "nul_terminated = yes" in tree and "json_error" not in tree  # a field that does not apply is left out
    mig = run("read", "-V", "--color", "never", "-c", "MIG_DATA_READ", str(LVU)).stdout.decode()
    assert "data = 1016 bytes: 00 00 00 00" in mig  # the rest of a payload, in hex (all of it in the dump)


def test_import_errors_are_the_users_one_line_exit_2_and_leave_no_partial_capture(tmp_path):
    good = tmp_path / "t.jsonl"
    good.write_text('{"t": 1.0, "conn": 1, "open": "s"}\n')
    p = run("import", str(good), "-w", str(tmp_path / "missing" / "x.pcapng"))
    assert p.returncode == 2 and b"cannot write" in p.stderr and b"No such file or directory" in p.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"t": 1.0, "conn": 1, "open": "s"}\n{"conn": 1, "dir": "c2s", "data": "00"}\n')
    p = run("import", str(bad), "-w", str(tmp_path / "out.pcapng"))
    assert p.returncode == 2 and p.stderr.decode().strip() == f"vfudissect: error: {bad}:2: missing key 't'"
    assert not (tmp_path / "out.pcapng").exists() and list(tmp_path.glob(".vfudissect-*")) == []
    p = run("import", str(QEMU), "-w", str(tmp_path / "out.pcapng"))  # a capture, not a transcript
    assert p.returncode == 2 and b"not a text transcript" in p.stderr and b"please report" not in p.stderr
    assert not (tmp_path / "out.pcapng").exists()
    assert run("import", str(good), "-w", str(tmp_path / "ok.pcapng")).returncode == 0
    assert (tmp_path / "ok.pcapng").stat().st_mode & 0o777 == 0o600


def test_the_client_command_runs_the_emulated_session_and_says_one_line_when_it_cannot(tmp_path):
    import os
    import time

    srv = subprocess.Popen([sys.executable, "-m", "vfudissect", "serve", "--socket", str(tmp_path / "d.sock")],
                           stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 20
        while not os.path.exists(tmp_path / "d.sock"):
            assert time.monotonic() < end and srv.poll() is None, "serve never listened"
            time.sleep(0.01)
        p = run("client", str(tmp_path / "d.sock"))
        assert p.returncode == 0 and b"ok   interrupts received" in p.stdout
    finally:
        srv.terminate()
        srv.wait(timeout=10)
    p = run("client", str(tmp_path / "none.sock"))
    assert p.returncode == 2 and b"Traceback" not in p.stderr and len(p.stderr.splitlines()) == 1


# ------------------------------------------------------------------ sockdump captures
def _sockdump_file(tmp_path) -> pathlib.Path:  # type: ignore[no-untyped-def]
    from tests.capture.test_sockdump import QEMU as QEMU_JSONL, messages_of, qemu_style, sends, sockdump_pcap, \
        transcript

    if not QEMU_JSONL.exists():
        pytest.skip("the shared transcripts are not beside the checkout")
    f = tmp_path / "sockdump.pcap"
    f.write_bytes(sockdump_pcap(sends(messages_of(transcript(QEMU_JSONL)), qemu_style)))
    return f


def test_read_takes_a_sockdump_pcap_as_it_is_and_import_makes_it_a_capture(tmp_path) -> None:  # type: ignore[no-untyped-def]
    sd = _sockdump_file(tmp_path)
    direct = run("read", "--json", str(sd), "--fail-on", "never")
    assert direct.returncode == 0, direct.stderr
    recs = [json.loads(line) for line in direct.stdout.splitlines()]
    msgs = [r for r in recs if "msg_id" in r]
    assert len(msgs) > 300 and msgs[0]["command_name"] == "VERSION"
    assert any(r.get("event") == "note" and r["text"].startswith("fds not captured: ") for r in recs)
    assert not any(r.get("finding") in ("FDS_MISSING", "DMA_MAP_DEGENERATE") for r in recs)  # fds unseen: unjudged
    out = tmp_path / "imported.pcapng"
    p = run("import", "--sockdump", str(sd), "-w", str(out))
    assert p.returncode == 0 and p.stderr.decode().startswith(f"{out}: ") and os.stat(out).st_mode & 0o777 == 0o600
    again = run("read", "--json", str(out), "--fail-on", "never")
    assert [json.loads(x)["msg_id"] for x in again.stdout.splitlines() if b'"msg_id"' in x] == \
        [m["msg_id"] for m in msgs]


def test_import_takes_one_source_and_a_damaged_sockdump_is_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    sd = _sockdump_file(tmp_path)
    p = run("import", str(sd), "--sockdump", str(sd), "-w", str(tmp_path / "x.pcapng"))
    assert p.returncode == 2 and b"one of them" in p.stderr
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(sd.read_bytes()[:5000])
    p = run("import", "--sockdump", str(cut), "-w", str(tmp_path / "y.pcapng"))
    assert p.returncode == 2 and p.stderr.count(b"\n") == 1 and b"record" in p.stderr
    assert not (tmp_path / "y.pcapng").exists()  # all or nothing


def test_read_and_stats_start_without_scapy():
    """scapy (25 MB, a tenth of a second) serves -V and the layer API; the line view, JSON and stats never need it."""
    code = ("import sys, vfudissect.cli, vfudissect.analysis, vfudissect.batch; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'scapy'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout[:300]
