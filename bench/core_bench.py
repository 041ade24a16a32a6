#!/usr/bin/env python3
"""The analysis core's per-core rate against tshark merely reading the frames: `vfudissect stats` and
`vfudissect read --json` against `tshark -r F -T fields -e frame.number` (no vfio-user dissector), same file, same run.

    .venv/bin/python bench/core_bench.py              # 200,000 messages, best of 3
    .venv/bin/python bench/core_bench.py -n 1000000

The capture is bench/gen_capture.py's QEMU-like one, judged (VERDICTS and FINDING records, as every writer of
vfudissect writes them), cached under bench/out/.  tshark's figure is the floor of any Wireshark-based analysis:
it reads and counts frames and decodes nothing of vfio-user.  Memory is the peak RSS of each process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)


def _timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (MB) of one run, its output thrown away."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env=None if env is None else {**os.environ, **env})
    _pid, status, usage = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)}: exit {p.returncode}")
    return dt, usage.ru_maxrss // 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=200_000, help="messages (default %(default)s)")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    from gen_capture import generate

    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    path = os.path.join(HERE, "out", f"core-{args.n}.pcapng")
    if not os.path.exists(path):
        generate(path, args.n, judged=True)
    # byte-compiled first, as `pip install` leaves a package: with PYTHONDONTWRITEBYTECODE set (as on this machine)
    # an editable checkout would otherwise be compiled anew by every run, a cost tshark does not pay
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(ROOT, "vfudissect")], check=True)
    vfu = [sys.executable, "-m", "vfudissect"]
    cases = [("tshark -T fields -e frame.number (no dissector)",
              ["tshark", "-r", path, "-T", "fields", "-e", "frame.number"]),
             ("vfudissect stats", vfu + ["stats", "--no-progress", path]),
             ("vfudissect read --json", vfu + ["read", "--json", "--no-progress", "--fail-on", "never", path]),
             ("vfudissect stats, pure Python (VFUDISSECT_PURE=1)", vfu + ["stats", "--no-progress", path])]
    envs = {cases[-1][0]: {"VFUDISSECT_PURE": "1"}}
    if not shutil.which("tshark"):
        cases = cases[1:]
    best: dict[str, tuple[float, int]] = {}
    for _ in range(args.runs):  # interleaved: a noisy moment hits every tool alike
        for name, cmd in cases:
            dt, rss = _timed(cmd, envs.get(name))
            if name not in best or dt < best[name][0]:
                best[name] = (dt, rss)
    size = os.path.getsize(path) / 1e6
    print(f"{args.n:,} messages ({size:.1f} MB), best of {args.runs}, one core each")
    print("| tool | time | messages/s | peak RSS | rate / tshark's |")
    print("|---|---|---|---|---|")
    floor = best.get(cases[0][0], (0, 0))[0] if shutil.which("tshark") else 0
    for name, _cmd in cases:
        dt, rss = best[name]
        ratio = f"{floor / dt:.2f}x" if floor else "—"
        print(f"| {name} | {dt:.2f} s | {args.n / dt:,.0f} | {rss} MB | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
