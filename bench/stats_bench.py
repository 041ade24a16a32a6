#!/usr/bin/env python3
"""Benchmark `vfudissect stats` on a generated QEMU-like capture against tshark + the Lua plugin, same file, same run.

Reports messages/s, the ratio to the tshark baseline, and peak memory (RSS)
for two capture lengths to show memory does not grow with the file.
Usage: python bench/stats_bench.py [-n 1000000] [--no-tshark]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
sys.path.insert(0, str(HERE))

from gen_capture import generate  # noqa: E402


def run(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and the child's peak RSS in MB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(after, before) // 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=1_000_000)
    ap.add_argument("--no-tshark", action="store_true")
    a = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    exe = str(pathlib.Path(sys.executable).with_name("vfudissect"))
    rows = []
    for n in (a.n // 10, a.n):
        path = OUT / f"stats-{n}.pcapng"
        if not path.exists():
            generate(str(path), n)
        wall, rss = run([exe, "stats", "--no-progress", str(path)])
        rows.append((n, wall, rss))
        print(f"vfudissect stats  {n:>9} msgs  {wall:7.2f} s  {n / wall:>9,.0f} msg/s  peak RSS {rss} MB")
    n, wall, _ = rows[-1]
    plugin = ROOT / "plugins" / "vfio_user.lua"
    if not a.no_tshark and shutil.which("tshark") and plugin.exists():
        path = OUT / f"stats-{n}.pcapng"
        t0 = time.perf_counter()
        subprocess.run(["tshark", "-r", str(path), "-X", f"lua_script:{plugin}", "-T", "fields",
                        "-e", "vfio_user.command"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tw = time.perf_counter() - t0
        print(f"tshark + Lua plugin {n:>7} msgs  {tw:7.2f} s  {n / tw:>9,.0f} msg/s")
        print(f"ratio: vfudissect stats is {tw / wall:.1f}x tshark+Lua on the same file")
    else:
        print("tshark or plugins/vfio_user.lua missing: no baseline run")
    print(f"cpu: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
