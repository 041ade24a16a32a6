"""The load test's peers, run in a process of their own (`python -m tests.proxy.flood_peers serve|flood ...`).

Out of the test's process so that the relay under test owns its interpreter: a server and a client in threads
beside it would hold the GIL while the relay has sockets ready, and the test would time the harness.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from vfudissect import spec
from vfudissect.core.build import region_read, version, version_reply

HDR = spec.HEADER
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def serve(path: str) -> None:
    """Answers every REGION_READ at once (4 bytes of data): a server that is never late."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    c, _ = listener.accept()
    f = c.makefile("rb")
    while True:
        head = f.read(16)
        if len(head) < 16:
            break
        msg_id, cmd, size, _flags, _err = HDR.unpack(head)
        body = f.read(size - 16)
        if cmd == spec.Command.VERSION:
            c.sendall(version_reply(msg_id))
        else:
            c.sendall(HDR.pack(msg_id, cmd, 16 + 16 + 4, 1, 0) + body[:16] + b"\1\2\3\4")
    c.close()


def flood(path: str, n: int, outstanding: int = 32) -> list[float]:
    """Pipelined 4-byte REGION_READs; the round trip of each, in seconds."""
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(path)
    f = c.makefile("rb")
    c.sendall(version(0))
    head = f.read(16)
    f.read(HDR.unpack(head)[2] - 16)
    sent: dict[int, float] = {}
    rtts: list[float] = []
    issued = 0
    while len(rtts) < n:
        batch = b""
        while issued < n and issued - len(rtts) < outstanding:
            issued += 1
            sent[issued & 0xFFFF] = time.monotonic()
            batch += region_read(issued & 0xFFFF, 0, 0, 4)
        if batch:
            c.sendall(batch)
        head = f.read(16)
        msg_id, _cmd, size, _fl, _err = HDR.unpack(head)
        f.read(size - 16)
        rtts.append(time.monotonic() - sent.pop(msg_id))
    c.close()
    return rtts


class EchoServer:
    """`serve` in a child process; its socket exists once the constructor returns."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.proxy.flood_peers", "serve", path], cwd=ROOT)
        end = time.monotonic() + 20
        while not os.path.exists(path):
            assert self.proc.poll() is None and time.monotonic() < end, "the echo server never listened"
            time.sleep(0.01)

    def close(self) -> None:
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def flood_from_child(path: str, n: int) -> list[float]:
    """`flood` in a child process: the round trips it timed."""
    out = subprocess.run([sys.executable, "-m", "tests.proxy.flood_peers", "flood", path, str(n)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        print(json.dumps(flood(sys.argv[2], int(sys.argv[3]))))
