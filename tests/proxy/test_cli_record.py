"""`vfudissect record` as a user runs it: a subprocess, signals, refusals with one line, a capture on stdout."""

from __future__ import annotations

import errno
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from vfudissect.capture.reader import read_events
from vfudissect.core.events import ConnClosed, ConnOpened, FindingIn, MessageIn, NoteIn, VerdictsIn
from vfudissect.peers.client import Client, run_session
from vfudissect.peers.server import DeviceServer
from vfudissect.proxy.listener import MOVED_SUFFIX

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


_SPAWNED: list[subprocess.Popen] = []


def record(*args: str, **kw: object) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "vfudissect", "record", "--color", "never", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)  # type: ignore[call-overload]
    _SPAWNED.append(proc)
    return proc


@pytest.fixture(autouse=True)
def _no_proxy_left_behind():  # type: ignore[no-untyped-def]
    """A test that fails half way must not leave its `record` running (it would hold sockets and a CPU)."""
    yield
    while _SPAWNED:
        proc = _SPAWNED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def wait_for(cond, timeout: float = 10.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vfudissect", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)


def test_sigterm_during_traffic_leaves_a_capture_read_accepts(sockdir: str, device: DeviceServer) -> None:
    px, cap = os.path.join(sockdir, "p.sock"), os.path.join(sockdir, "c.pcapng")
    proc = record("--listen", px, "--connect", device.path, "-w", cap)
    wait_for(lambda: os.path.exists(px), what="the proxy socket")
    stop = threading.Event()
    count = [0]
    errors: list[BaseException] = []

    def traffic() -> None:
        try:
            with Client(px, timeout=5) as c:
                c.version()
                while not stop.is_set():
                    c.region_write(1, 0, os.urandom(512))
                    count[0] += 1
        except Exception as exc:  # the proxy going away mid-request is the point
            errors.append(exc)

    t = threading.Thread(target=traffic)
    t.start()
    wait_for(lambda: count[0] > 50, what="traffic")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    stop.set()
    t.join(timeout=10)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err
    assert b"overall: 1 connection(s)" in out  # the summary
    with open(cap, "rb") as f:
        events = list(read_events(f))
    msgs = [e for e in events if isinstance(e, MessageIn)]
    assert len(msgs) >= 2 * 50
    assert isinstance(events[0], VerdictsIn) and isinstance(events[1], ConnOpened)
    assert isinstance([e for e in events if not isinstance(e, FindingIn)][-1], ConnClosed)
    assert not os.path.exists(px)  # the listening socket is cleaned up


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_intercept_takes_over_and_puts_the_server_socket_back(sockdir: str, device: DeviceServer,
                                                                 sig: signal.Signals) -> None:
    cap = os.path.join(sockdir, "c.pcapng")
    ino = os.stat(device.path).st_ino
    proc = record("--intercept", device.path, "-w", cap, "-q")
    wait_for(lambda: os.path.lexists(device.path + MOVED_SUFFIX), what="the interception")
    wait_for(lambda: os.stat(device.path).st_ino != ino, what="the proxy socket in place")
    with Client(device.path) as c:  # a client that knows nothing of the proxy
        assert run_session(c).ok
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and b"Traceback" not in err
    # -q keeps the status line (what it took over, where it records), drops the per-message ones
    assert out.decode().splitlines()[0].startswith(f"intercepting {device.path} (server socket linked at ")
    assert "C→S VERSION" not in out.decode()
    assert os.stat(device.path).st_ino == ino and not os.path.lexists(device.path + MOVED_SUFFIX)
    with Client(device.path) as c:  # the server is reachable at its own path again, directly
        assert c.version()["max_msg_fds"] == 8
    with open(cap, "rb") as f:
        events = list(read_events(f))
    assert sum(isinstance(e, MessageIn) for e in events) > 100


def test_capture_on_stdout_with_the_live_view_on_stderr(sockdir: str, device: DeviceServer) -> None:
    px = os.path.join(sockdir, "p.sock")
    proc = record("--listen", px, "--connect", device.path, "-w", "-")
    wait_for(lambda: os.path.exists(px), what="the proxy socket")
    with Client(px) as c:
        c.version()
        c.get_info()
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    events = list(read_events(io.BytesIO(out)))
    assert [e.dir for e in events if isinstance(e, MessageIn)] == ["c2s", "s2c", "c2s", "s2c"]
    assert b"DEVICE_GET_INFO reply" in err
    assert err.splitlines()[0].decode() == (f"listening on {px}, each client forwarded to {device.path}; "
                                            "recording to the capture on stdout; Ctrl-C to stop")


def test_a_capture_that_cannot_be_written_is_said_at_once_and_relaying_goes_on(sockdir: str,
                                                                              device: DeviceServer) -> None:
    px = os.path.join(sockdir, "p.sock")
    proc = record("--listen", px, "--connect", device.path, "-w", "/dev/full")  # every write: ENOSPC
    wait_for(lambda: os.path.exists(px), what="the proxy socket")
    with Client(px) as c:
        c.version()
        assert len(c.region_read(7, 0, 4)) == 4
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    said = out.decode() + err.decode()
    assert said.count("writing the capture failed (No space left on device)") == 1
    assert "REGION_READ reply" in said  # the live view went on
    assert "the capture output broke off (No space left on device)" in said


@pytest.mark.parametrize("args, words", [
    (["--listen", "{d}/same.sock", "--connect", "{d}/same.sock"], "same file"),
    (["--listen", "{d}/file.txt", "--connect", "{dev}"], "not a socket"),
    (["--listen", "{d}/p.sock", "--connect", "{d}/absent.sock"], "No such file"),
    (["--intercept", "{d}/file.txt"], "not a socket"),
    (["--listen", "{d}/p.sock", "--connect", "{dev}", "-w", "{d}/no/such/dir/c.pcapng"], "cannot write"),
    (["--listen", "{d}/p.sock"], "need --listen PATH and --connect PATH"),
])
def test_unusable_paths_get_one_error_line_and_exit_2(sockdir: str, device: DeviceServer, args: list[str],
                                                       words: str) -> None:
    with open(os.path.join(sockdir, "file.txt"), "w") as f:
        f.write("data")
    argv = [a.format(d=sockdir, dev=device.path) for a in args]
    if "-w" not in argv:
        argv += ["-w", os.path.join(sockdir, "c.pcapng")]
    r = run_cli("record", *argv)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vfudissect: error: ") and words in lines[0], r.stderr
    with open(os.path.join(sockdir, "file.txt")) as f:
        assert f.read() == "data"


def test_a_server_that_went_away_drops_the_client_with_an_error_line(sockdir: str) -> None:
    srv = DeviceServer(os.path.join(sockdir, "dev.sock")).start()
    px, cap = os.path.join(sockdir, "p.sock"), os.path.join(sockdir, "c.pcapng")
    proc = record("--listen", px, "--connect", srv.path, "-w", cap)
    wait_for(lambda: os.path.exists(px), what="the proxy socket")
    srv.stop()  # the server's socket disappears
    c = Client(px, timeout=3)
    with pytest.raises(Exception):
        c.version()
    c.close()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert err.decode().count("vfudissect: error: connection #1: cannot connect to") == 1
    assert b"Traceback" not in err


def test_help_explains_both_ways_in() -> None:
    r = run_cli("record", "--help")
    assert r.returncode == 0
    for words in ("--intercept", "--listen", "wireshark -k -i -", "--busy-poll", "restored"):
        assert words in r.stdout


def test_a_signal_right_after_the_takeover_still_puts_the_socket_back(sockdir: str, device: DeviceServer) -> None:
    ino = os.stat(device.path).st_ino
    for _ in range(5):  # SIGTERM as soon as the socket is ours: the earliest moment a user could send it
        proc = record("--intercept", device.path, "-w", os.path.join(sockdir, "c.pcapng"), "-q")
        wait_for(lambda: os.path.lexists(device.path + MOVED_SUFFIX), what="the interception")
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
        assert proc.returncode == 0
        assert os.stat(device.path).st_ino == ino and not os.path.lexists(device.path + MOVED_SUFFIX)


PLUGIN = os.path.join(ROOT, "plugins", "vfio_user.lua")


@pytest.mark.tshark
@pytest.mark.skipif(shutil.which("tshark") is None or not os.path.exists(PLUGIN), reason="needs tshark and the plugin")
def test_the_capture_streams_live_into_tshark(sockdir: str, device: DeviceServer) -> None:
    px = os.path.join(sockdir, "p.sock")
    proc = record("--listen", px, "--connect", device.path, "-w", "-", "-q")
    ts = subprocess.Popen(["tshark", "-l", "-i", "-", "-X", f"lua_script:{PLUGIN}", "-T", "fields",
                           "-e", "frame.number", "-e", "vfio_user.command"], stdin=proc.stdout,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None and ts.stdout is not None
    proc.stdout.close()
    wait_for(lambda: os.path.exists(px), what="the proxy socket")
    with Client(px) as c:
        c.version()
        c.get_info()
    lines: list[list[str]] = []

    def read_lines() -> None:  # everything, the two directions' close records included, arrives live
        commands, last = 0, 0
        while commands < 4 or len(lines) < last + 2:
            lines.append(ts.stdout.readline().split())
            if len(lines[-1]) == 2:
                commands, last = commands + 1, len(lines)

    reader = threading.Thread(target=read_lines, daemon=True)
    reader.start()
    reader.join(timeout=30)
    assert proc.poll() is None  # ... while the proxy still runs
    assert [ln[0] for ln in lines] == [str(n) for n in range(1, len(lines) + 1)]  # every record, findings' too
    assert [ln[1] for ln in lines if len(ln) == 2] == ["1", "1", "4", "4"]
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    rest, _ = ts.communicate(timeout=30)
    assert ts.returncode == 0 and rest == ""


# ----------------------------------------------------------------- the server socket: checked at start, waited for


def _stale(path: str) -> str:
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()  # the socket file stays, nobody listens on it
    return path


@pytest.mark.parametrize("kind, words", [
    ("stale", "nobody listens at server socket {srv} (connection refused"),
    ("file", "server path {srv} is not a socket"),
    ("dir", "server path {srv} is not a socket"),
    ("missing", "cannot use server socket {srv}: No such file or directory; start the server first, or give "
                "--wait-server [SECONDS] to wait for it"),
])
def test_an_unusable_server_socket_is_refused_at_start_in_one_line(sockdir: str, kind: str, words: str) -> None:
    srv, px, cap = (os.path.join(sockdir, n) for n in ("srv.sock", "p.sock", "c.pcapng"))
    if kind == "stale":
        _stale(srv)
    elif kind == "file":
        open(srv, "w").close()
    elif kind == "dir":
        os.mkdir(srv)
    r = run_cli("record", "--listen", px, "--connect", srv, "-w", cap)
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vfudissect: error: ") and words.format(srv=srv) in lines[0], lines
    assert not os.path.lexists(px) and not os.path.lexists(cap)  # nothing left behind


def _wait_for_line(proc: subprocess.Popen, timeout: float = 10.0) -> str:
    """The first line of the proxy's stdout (read in a thread: the pipe has no timeout of its own)."""
    got: list[bytes] = []
    t = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    t.start()
    t.join(timeout)
    assert got, "the proxy said nothing"
    return got[0].decode()


@pytest.mark.parametrize("before", ["missing", "stale"])
def test_wait_server_listens_at_once_and_holds_early_clients_until_the_server_is_there(sockdir: str,
                                                                                       before: str) -> None:
    srv_path, px, cap = (os.path.join(sockdir, n) for n in ("dev.sock", "p.sock", "c.pcapng"))
    if before == "stale":
        _stale(srv_path)
    proc = record("--listen", px, "--connect", srv_path, "-w", cap, "--wait-server", "10")
    short = "it does not exist yet" if before == "missing" else "nobody listens on it yet"
    assert _wait_for_line(proc) == f"waiting for the server socket {srv_path} ({short}; up to 10 s) ...\n"
    wait_for(lambda: os.path.exists(px), what="the proxy socket")  # there while the proxy waits
    got: dict[str, object] = {}

    def early() -> None:
        with Client(px, timeout=10) as c:  # connects now; its VERSION waits with the proxy
            got["version"] = c.version()

    t = threading.Thread(target=early)
    t.start()
    time.sleep(0.3)
    assert "version" not in got and proc.poll() is None
    if before == "stale":
        os.unlink(srv_path)
    srv = DeviceServer(srv_path).start()
    try:
        t.join(timeout=10)
        assert got["version"]["max_msg_fds"] == 8  # type: ignore[index]
        with Client(px) as c:  # and the ones after
            c.version()
            assert c.get_info()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        srv.stop()
    assert proc.returncode == 0 and err == b"", err
    assert out.decode().splitlines()[0].startswith(f"listening on {px}, each client forwarded to {srv_path}")
    with open(cap, "rb") as f:
        events = list(read_events(f))
    assert sorted({e.conn for e in events if isinstance(e, MessageIn)}) == [1, 2]


def test_wait_server_gives_up_in_one_line_and_closes_the_clients_it_held(sockdir: str) -> None:
    srv_path, px, cap = (os.path.join(sockdir, n) for n in ("dev.sock", "p.sock", "c.pcapng"))
    start = time.monotonic()
    proc = record("--listen", px, "--connect", srv_path, "-w", cap, "--wait-server", "0.5")
    wait_for(lambda: os.path.exists(px), what="the proxy socket")
    held = socket.socket(socket.AF_UNIX)
    held.connect(px)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    assert time.monotonic() - start < 5
    assert err.decode().splitlines() == [f"vfudissect: error: cannot use server socket {srv_path}: No such file or "
                                         "directory; waited 0.5 s (--wait-server)"]
    assert out.decode() == f"waiting for the server socket {srv_path} (it does not exist yet; up to 0.5 s) ...\n"
    held.settimeout(5)
    try:
        assert held.recv(1) == b""
    except ConnectionResetError:
        pass  # closed either way: the client is not left hanging
    held.close()
    assert not os.path.lexists(px) and not os.path.lexists(cap)


def test_a_stop_while_waiting_for_the_server_is_a_clean_exit_that_leaves_nothing(sockdir: str) -> None:
    srv_path, px, cap = (os.path.join(sockdir, n) for n in ("dev.sock", "p.sock", "c.pcapng"))
    proc = record("--listen", px, "--connect", srv_path, "-w", cap, "--wait-server")  # 30 s, default
    assert "up to 30 s" in _wait_for_line(proc)
    wait_for(lambda: os.path.exists(px), what="the proxy socket")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and err == b""
    assert out.decode() == "stopped before the server socket was there: nothing recorded\n"
    assert not os.path.lexists(px) and not os.path.lexists(cap)


def test_wait_server_refuses_what_waiting_cannot_mend_at_once(sockdir: str) -> None:
    srv_path, px = os.path.join(sockdir, "dev.sock"), os.path.join(sockdir, "p.sock")
    open(srv_path, "w").close()
    r = run_cli("record", "--listen", px, "--connect", srv_path, "-w", os.path.join(sockdir, "c.pcapng"),
                "--wait-server", "30")
    assert r.returncode == 2 and r.stderr == f"vfudissect: error: server path {srv_path} is not a socket\n"
    r = run_cli("record", "--listen", px, "--connect", os.path.join(sockdir, "absent.sock"),
                "-w", os.path.join(sockdir, "no", "dir", "c.pcapng"), "--wait-server", "30")
    assert r.returncode == 2 and "cannot write the capture" in r.stderr and len(r.stderr.splitlines()) == 1
    r = run_cli("record", "--intercept", srv_path, "-w", os.path.join(sockdir, "c.pcapng"), "--wait-server")
    assert r.returncode == 2 and "--wait-server goes with --connect" in r.stderr


def test_a_client_that_comes_while_the_server_is_down_is_closed_and_serving_goes_on(sockdir: str) -> None:
    srv_path, px, cap = (os.path.join(sockdir, n) for n in ("dev.sock", "p.sock", "c.pcapng"))
    srv = DeviceServer(srv_path).start()
    proc = record("--listen", px, "--connect", srv_path, "-w", cap)
    try:
        wait_for(lambda: os.path.exists(px), what="the proxy socket")
        with Client(px) as c:
            c.version()
        srv.stop()
        _stale(srv_path)  # the server died and left its socket file: connection refused
        c = Client(px, timeout=3)
        with pytest.raises(Exception):
            c.version()
        c.close()
        os.unlink(srv_path)
        srv = DeviceServer(srv_path).start()  # back
        with Client(px) as c:
            assert c.version()["max_msg_fds"] == 8
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        srv.stop()
    assert proc.returncode == 0
    said = f"cannot connect to {srv_path}: nobody listens on it (Connection refused: the server is gone)"
    assert [ln for ln in err.decode().splitlines() if ln] == [
        f"vfudissect: error: connection #2: {said}; client pid {os.getpid()} closed, still accepting clients"]
    assert f"#2     note {said}; client closed, the proxy goes on accepting clients" in out.decode()
    with open(cap, "rb") as f:
        events = [e for e in read_events(f) if getattr(e, "conn", None) == 2]
    assert [type(e) for e in events] == [ConnOpened, NoteIn, ConnClosed]
    assert events[1].proxy_errno == errno.ECONNREFUSED and "client closed" in events[1].text
    with open(cap, "rb") as f:
        assert {e.conn for e in read_events(f) if isinstance(e, MessageIn)} == {1, 3}
