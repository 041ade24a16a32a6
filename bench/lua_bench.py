"""Benchmark the Wireshark Lua plugin: tshark on a generated 200,000-message QEMU-like capture, one pass and -2."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gen_capture import generate  # noqa: E402

from vfudissect.export import lua  # noqa: E402


def run(args: list[str]) -> tuple[float, int]:
    """Seconds and number of output lines of one tshark run; fails on anything Lua says."""
    t0 = time.perf_counter()
    p = subprocess.run(args, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    said = [line for line in p.stderr.splitlines() if not line.startswith("Running as user")]
    if p.returncode or said:
        raise SystemExit(f"tshark failed: {' / '.join(said)}")
    return dt, sum(1 for line in p.stdout.split("\n") if line)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=200_000, help="messages (default %(default)s)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"), help="where the capture goes")
    ap.add_argument("--repeat", type=int, default=1, help="runs per configuration (best is reported)")
    a = ap.parse_args()
    tshark = shutil.which("tshark")
    if not tshark:
        raise SystemExit("tshark is required")
    os.makedirs(a.out, exist_ok=True)
    cap = Path(a.out) / f"lua-{a.n}.pcapng"
    if not cap.exists():
        generate(str(cap), a.n)
    plugin = lua.write(Path(a.out) / "vfio_user.lua")
    base = [tshark, "-n", "-r", str(cap), "-T", "fields"]
    configs = [
        ("no plugin: -e frame.number", base + ["-e", "frame.number"]),
        ("plugin, one pass: -e vfio_user.command", base + ["-X", f"lua_script:{plugin}", "-e", "vfio_user.command"]),
        ("plugin, -2: -e vfio_user.command", base + ["-2", "-X", f"lua_script:{plugin}", "-e", "vfio_user.command"]),
        ("plugin, -2, summary lines (Info column)", [tshark, "-n", "-2", "-r", str(cap), "-X", f"lua_script:{plugin}"]),
    ]
    small = Path(a.out) / f"lua-{a.n // 10}.pcapng"
    if not small.exists():
        generate(str(small), a.n // 10)
    size_mb = cap.stat().st_size / 1e6
    print(f"capture: {cap} ({a.n} messages, {size_mb:.1f} MB); tshark {subprocess.run([tshark, '--version'], capture_output=True, text=True).stdout.split()[2]}")
    for name, args in configs:
        best = min(run(args)[0] for _ in range(a.repeat))
        print(f"{name:<45} {best:7.2f} s  {a.n / best:9.0f} messages/s")
    # flat cost per message: the same run on a capture ten times shorter
    base_small = min(run([tshark, "-n", "-r", str(small), "-T", "fields", "-e", "frame.number"])[0]
                     for _ in range(a.repeat))
    base_big = min(run(configs[0][1])[0] for _ in range(a.repeat))
    small_s = min(run([tshark, "-n", "-r", str(small), "-T", "fields", "-X", f"lua_script:{plugin}", "-e",
                       "vfio_user.command"])[0] for _ in range(a.repeat))
    big_s = min(run(configs[1][1])[0] for _ in range(a.repeat))
    per_small = (small_s - base_small) / (a.n // 10) * 1e6
    per_big = (big_s - base_big) / a.n * 1e6
    print(f"plugin cost per message, one pass: {per_small:.1f} µs at {a.n // 10} messages, {per_big:.1f} µs at "
          f"{a.n} (ratio {per_big / per_small:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
