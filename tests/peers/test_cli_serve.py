"""`vfudissect serve`: the device as a standalone program (socket path or inherited fd, faults, SIGTERM)."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from vfudissect import spec
from vfudissect.cli_serve import _fault
from vfudissect.peers.client import Client, run_session

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_serves_on_a_socket_path_until_sigterm(sockdir: str) -> None:
    path = os.path.join(sockdir, "dev.sock")
    proc = subprocess.Popen([sys.executable, "-m", "vfudissect", "serve", "--socket-path", path, "-v"], cwd=ROOT,
                            stderr=subprocess.PIPE)
    end = time.monotonic() + 10
    while not os.path.exists(path):
        assert time.monotonic() < end and proc.poll() is None
        time.sleep(0.01)
    with Client(path) as c:
        assert run_session(c, migration=True).ok
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and b"Traceback" not in err
    assert b"client connected" in err and b"client gone after" in err
    assert not os.path.exists(path)


def test_sigterm_ends_it_even_when_no_client_ever_came(sockdir: str) -> None:
    path = os.path.join(sockdir, "idle.sock")
    for _ in range(5):  # the signal may land on the accept thread: it must still end the program
        proc = subprocess.Popen([sys.executable, "-m", "vfudissect", "serve", "--socket", path], cwd=ROOT,
                                stderr=subprocess.DEVNULL)
        end = time.monotonic() + 10
        while not os.path.exists(path):
            assert time.monotonic() < end and proc.poll() is None
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert not os.path.exists(path)


def test_serves_one_client_on_an_inherited_fd() -> None:
    mine, theirs = socket.socketpair()
    proc = subprocess.Popen([sys.executable, "-m", "vfudissect", "serve", "--fd", str(theirs.fileno())], cwd=ROOT,
                            pass_fds=[theirs.fileno()])
    theirs.close()
    with Client(sock=mine) as c:
        assert run_session(c).ok
    assert proc.wait(timeout=10) == 0


def test_fault_specs_parse_and_bad_ones_are_named() -> None:
    f = _fault("delay,command=REGION_READ,kind=reply,nth=2,delay=1.5")
    assert (f.action, f.command, f.kind, f.nth, f.delay) == ("delay", spec.Command.REGION_READ, "reply", 2, 1.5)
    assert _fault("garbage,data=0102ff").data == b"\x01\x02\xff"
    assert _fault("drop,command=vfio_user_device_reset").command == spec.Command.DEVICE_RESET
    for bad in ("explode", "delay,command=NOPE", "delay,when=now", "drop,nth=x"):
        with pytest.raises(argparse.ArgumentTypeError):
            _fault(bad)


def test_refuses_an_existing_path_with_one_line(sockdir: str) -> None:
    path = os.path.join(sockdir, "taken")
    open(path, "w").close()
    r = subprocess.run([sys.executable, "-m", "vfudissect", "serve", "--socket", path], cwd=ROOT,
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [f"vfudissect: error: {path} exists; remove it first"]
