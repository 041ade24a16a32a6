#!/usr/bin/env python3
"""One huge message through `vfudissect record`: the proxy's peak RSS while a REGION_WRITE far beyond what the server
negotiated goes through, against the message's size.

    .venv/bin/python bench/huge_bench.py            # 400 MB, as issue 13 measured it
    .venv/bin/python bench/huge_bench.py --mib 64

The client proposes max_data_xfer_size 2 GiB, the server answers 1 MiB; the client then sends a REGION_WRITE of
--mib MiB in 1 MiB writes, and the server (a plain socket here, counting bytes, keeping none) reads it all.  The
proxy frames against what the receiver negotiated: the header goes on at once, the body as raw bytes as it comes.
Reports the proxy's RSS before, its peak while the body flows (VmHWM) and after, and the time it took.
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _msg(msg_id: int, cmd: int, payload: bytes, flags: int = 0) -> bytes:
    return struct.pack("<HHIII", msg_id, cmd, 16 + len(payload), flags, 0) + payload


def _kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=400)
    args = ap.parse_args()
    d = tempfile.mkdtemp(prefix="vfuhuge", dir="/tmp")
    dev, px, cap = (os.path.join(d, n) for n in ("dev.sock", "p.sock", "c.pcapng"))
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(dev)
    server.listen(1)
    got = [0]

    def serve() -> None:
        c, _ = server.accept()
        c.sendall(_msg(0, 1, struct.pack("<HH", 0, 0) + b'{"capabilities": {"max_data_xfer_size": 1048576}}\0', 1))
        while True:
            data = c.recv(1 << 20)
            if not data:
                break
            got[0] += len(data)
        c.close()

    threading.Thread(target=serve, daemon=True).start()
    rec = subprocess.Popen([sys.executable, "-m", "vfudissect", "record", "--listen", px, "--connect", dev, "-w", cap,
                            "-q", "--no-summary"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not os.path.exists(px):
        time.sleep(0.01)
    time.sleep(0.2)
    before = _kib(rec.pid, "VmRSS")
    cli = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cli.connect(px)
    version = _msg(0, 1, struct.pack("<HH", 0, 0) + b'{"capabilities": {"max_data_xfer_size": 2147483648}}\0')
    cli.sendall(version)
    cli.recv(4096)
    size = args.mib << 20
    t0 = time.perf_counter()
    cli.sendall(struct.pack("<HHIII", 1, 10, 16 + 16 + size, 0, 0) + struct.pack("<QII", 0, 1, size))
    chunk = bytes(1 << 20)
    for _ in range(args.mib):
        cli.sendall(chunk)
    while got[0] < len(version) + 32 + size:
        time.sleep(0.01)
    took = time.perf_counter() - t0
    peak = _kib(rec.pid, "VmHWM")
    time.sleep(0.5)
    after = _kib(rec.pid, "VmRSS")
    cli.close()
    rec.terminate()
    rec.wait(30)
    print("| message | proxy RSS before | peak | after | time | capture |")
    print("|---|---|---|---|---|---|")
    print(f"| REGION_WRITE of {args.mib} MiB (server negotiated 1 MiB) | {before / 1024:.0f} MB | {peak / 1024:.0f} MB "
          f"| {after / 1024:.0f} MB | {took:.2f} s | {os.path.getsize(cap) / 1e6:.0f} MB |")
    os.unlink(cap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
