"""`vfudissect replay` as a user runs it: exit statuses, the summary (text and JSON), one line for what cannot be played."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Iterator

import pytest

from tests.conftest import ROOT


def vfu(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vfudissect", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


def _wait_for(path: str) -> None:
    end = time.monotonic() + 10
    while not os.path.exists(path):
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.02)


@pytest.fixture
def serve(sockdir: str) -> Iterator:  # type: ignore[type-arg]
    procs: list[subprocess.Popen] = []

    def start(*fault: str) -> str:
        path = os.path.join(sockdir, f"serve{len(procs)}.sock")
        args = [a for f in fault for a in ("--fault", f)]
        procs.append(subprocess.Popen([sys.executable, "-m", "vfudissect", "serve", "--socket", path, *args], cwd=ROOT,
                                      stderr=subprocess.DEVNULL))
        _wait_for(path)
        return path

    yield start
    for p in procs:
        p.terminate()
        p.wait(10)


def test_a_clean_replay_says_so_and_exits_0(recorded: dict[str, str], serve, sockdir: str) -> None:
    out = os.path.join(sockdir, "r.pcapng")
    p = vfu("replay", "client", recorded["clean"], "--connect", serve(), "-w", out, "-q")
    assert p.returncode == 0, p.stderr
    last = p.stdout.splitlines()[-1]
    assert last.startswith("replayed connection #1 of ") and "66 messages sent, 66 received" in last
    assert last.endswith(f"as recorded; capture: {out}")
    assert os.stat(out).st_mode & 0o777 == 0o600  # it holds guest memory, like every capture
    r = vfu("read", out, "--fail-on", "never")
    assert r.returncode == 0 and "DMA_UNMAP" in r.stdout


def test_a_divergence_exits_1_and_the_json_summary_counts_it(recorded: dict[str, str], serve, sockdir: str) -> None:
    path = serve("drop,command=DEVICE_GET_INFO")
    p = vfu("replay", "client", recorded["clean"], "--connect", path, "--timeout", "2", "--json",
            "-w", os.path.join(sockdir, "r.pcapng"))
    assert p.returncode == 1, p.stderr
    summary = json.loads(p.stdout)
    assert summary["divergences"] == 1 and summary["findings"] == {"REPLAY_NO_REPLY": 1}
    assert summary["sent"] == 66 and summary["received"] == 65 and summary["stopped"] is None
    assert "REPLAY_NO_REPLY: no reply to DEVICE_GET_INFO command" in p.stderr  # the live view went to stderr


def test_the_default_output_is_beside_the_capture_and_never_the_capture(recorded: dict[str, str], serve,
                                                                        tmp_path) -> None:  # type: ignore[no-untyped-def]
    cap = tmp_path / "boot.pcapng"
    cap.write_bytes(open(recorded["clean"], "rb").read())
    p = vfu("replay", "client", str(cap), "--connect", serve(), "-q")
    assert p.returncode == 0 and (tmp_path / "boot-replay-client.pcapng").exists()
    p = vfu("replay", "client", str(cap), "--connect", "x.sock", "-w", str(cap))
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    assert "would overwrite the capture it replays" in p.stderr


def test_a_connection_that_is_not_there_is_one_line_exit_2(recorded: dict[str, str]) -> None:
    p = vfu("replay", "client", recorded["clean"], "--connect", "x.sock", "--conn", "5")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr == (f"vfudissect: error: {recorded['clean']}: no connection #5 (its connections: #1); --conn "
                        "names a main connection\n")


def test_a_server_that_is_not_there_is_one_line_exit_2(recorded: dict[str, str], sockdir: str) -> None:
    none = os.path.join(sockdir, "none.sock")
    p = vfu("replay", "client", recorded["clean"], "--connect", none, "-w", os.path.join(sockdir, "r.pcapng"))
    assert p.returncode == 2 and p.stderr == f"vfudissect: error: cannot connect to {none}: no such socket\n"


def test_a_damaged_capture_is_one_line_exit_2(recorded: dict[str, str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    cut = tmp_path / "cut.pcapng"
    data = open(recorded["clean"], "rb").read()
    cut.write_bytes(data[:len(data) // 3])
    p = vfu("replay", "server", str(cut), "--listen", str(tmp_path / "l.sock"))
    assert p.returncode == 2 and p.stderr.startswith(f"vfudissect: error: cannot replay {cut}: it is damaged (")
    assert p.stderr.count("\n") == 1 and not (tmp_path / "l.sock").exists()


def test_the_server_side_for_the_emulated_client(recorded: dict[str, str], sockdir: str) -> None:
    listen = os.path.join(sockdir, "dev.sock")
    srv = subprocess.Popen([sys.executable, "-m", "vfudissect", "replay", "server", recorded["irqs"], "--listen",
                            listen, "--json", "-w", os.path.join(sockdir, "s.pcapng")], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(listen)
        c = vfu("client", listen)
        out, err = srv.communicate(timeout=30)
    finally:
        srv.kill()
    checks = [line[2:] for line in c.stdout.splitlines() if line.startswith("  ")]
    # every check of what crosses the socket passes; what the device wrote through its own mmap of the memfd is
    # in no capture, so the client sees it missing and says so in its exit status
    assert [x for x in checks if not x.startswith("ok   ")] == [
        "FAIL DMA device -> guest memory through the device's mmap of the memfd"], checks
    assert "ok   BAR1 through its mmap-able region fd" in checks and c.returncode == 1
    summary = json.loads(out)
    assert (summary["requests"], summary["exact"], summary["unmatched"], summary["never_asked"]) == (63, 63, 0, 0)
    assert srv.returncode == 0, err


def test_no_client_within_the_accept_timeout_is_one_line(recorded: dict[str, str], sockdir: str) -> None:
    p = vfu("replay", "server", recorded["clean"], "--listen", os.path.join(sockdir, "l.sock"), "--accept-timeout",
            "0.2", "-q")
    assert p.returncode == 2 and p.stderr.endswith("l.sock within 0.2 s\n") and "no client connected" in p.stderr


def test_the_rules_are_printed() -> None:
    p = vfu("replay", "rules")
    assert p.returncode == 0
    assert "offset               in DEVICE_GET_REGION_INFO reply carrying fds:" in p.stdout
    assert p.stdout.splitlines()[-1].startswith("fds                  an fd is compared by kind")
