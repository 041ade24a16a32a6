"""Generate a QEMU-like VFUC capture of N messages with the project's writer (for the benchmarks), judged as the
recorder judges with ``--judged``: a VERDICTS record first, the engine's findings as FINDING records."""

from __future__ import annotations

import argparse
import json
import random
import struct

from vfudissect import spec
from vfudissect.capture.judge import JudgingWriter
from vfudissect.capture.writer import CaptureWriter
from vfudissect.core.events import ConnClosed, ConnOpened, FdInfo, MessageIn

QEMU_CAPS = {"capabilities": {"pgsizes": 4096, "max_msg_fds": 16, "max_dma_maps": 65535,
                              "max_data_xfer_size": 1048576,
                              "migration": {"max_bitmap_size": 268435456, "pgsize": 4096}, "write_multiple": True}}
LVU_CAPS = {"capabilities": {"max_msg_fds": 8, "max_data_xfer_size": 1048576}}


def msg(msg_id: int, cmd: int, flags: int, payload: bytes, error: int = 0) -> bytes:
    return spec.HEADER.pack(msg_id, cmd, 16 + len(payload), flags, error) + payload


def generate(path: str, n: int, seed: int = 1, judged: bool = False) -> int:
    rnd = random.Random(seed)
    ts = 1_700_000_000.0
    count = 0
    with open(path, "wb") as f:
        timeout = spec.DEFAULT_REPLY_TIMEOUT
        cw = CaptureWriter(f, comment=f"bench: {n} QEMU-like messages", flush=False,
                           judged=timeout if judged else None)
        w = JudgingWriter(cw, timeout=timeout) if judged else cw
        w.write(ConnOpened(ts, 1, "/run/bench.sock"))
        mid = 0

        def pair(req: bytes, rep: bytes, fds: tuple[FdInfo, ...] = ()) -> None:
            nonlocal ts, count
            ts += 0.00002
            w.write(MessageIn(ts, 1, "c2s", req, fds))
            ts += 0.00003 + rnd.random() * 0.00004
            w.write(MessageIn(ts, 1, "s2c", rep))
            count += 2

        v = struct.pack("<HH", 0, 0)
        pair(msg(mid, 1, 0, v + json.dumps(QEMU_CAPS).encode() + b"\0"),
             msg(mid, 1, 1, v + json.dumps(LVU_CAPS).encode() + b"\0"))
        for i in range(8):
            mid += 1
            body = struct.pack("<IIQQQ", 32, 3, 0, i << 28, 1 << 28)
            pair(msg(mid, 2, 0, body), msg(mid, 2, 1, b""), (FdInfo("memfd", 1 << 28, 1000 + i),))
        mid += 1
        pair(msg(mid, 4, 0, struct.pack("<IIII", 16, 0, 0, 0)), msg(mid, 4, 1, struct.pack("<IIII", 16, 3, 9, 5)))
        sizes = {0: 0x1000, 1: 0x10000, 7: 0x100}
        for r, size in sizes.items():
            mid += 1
            pair(msg(mid, 5, 0, struct.pack("<IIIIQQ", 32, 0, r, 0, 0, 0)),
                 msg(mid, 5, 1, struct.pack("<IIIIQQ", 32, 3, r, 0, size, 0)))
        while count < n - 1:
            mid = (mid + 1) & 0xFFFF
            region = rnd.choice((0, 1, 7))
            off = rnd.randrange(0, sizes[region] - 4, 4)
            if rnd.random() < 0.6:
                pair(msg(mid, 9, 0, struct.pack("<QII", off, region, 4)),
                     msg(mid, 9, 1, struct.pack("<QII", off, region, 4) + rnd.randbytes(4)))
            else:
                pair(msg(mid, 10, 0, struct.pack("<QII", off, region, 4) + rnd.randbytes(4)),
                     msg(mid, 10, 1, struct.pack("<QII", off, region, 4)))
        w.write(ConnClosed(ts + 0.001, 1))
        if isinstance(w, JudgingWriter):
            w.finish(ts + 0.001)
        f.flush()
    return count


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out")
    ap.add_argument("-n", type=int, default=1_000_000)
    ap.add_argument("--judged", action="store_true", help="open with a VERDICTS record, the findings as FINDING records")
    a = ap.parse_args()
    print(generate(a.out, a.n, judged=a.judged), "messages ->", a.out)
