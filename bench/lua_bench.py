"""Benchmark the Wireshark Lua plugin: tshark with it against tshark without it, in one run, on a judged
200,000-message QEMU-like capture (bench/gen_capture.py).

The yardstick is `tshark -r F -T fields -e frame.number` without the plugin; each run with the plugin is also
set against the same run without it.  Runs alternate (without, with) and the best of --repeat is kept, so a
busy machine slows both sides alike.
"""

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


def run(args: list[str]) -> float:
    """Seconds of one tshark run; fails on anything tshark or Lua says."""
    t0 = time.perf_counter()
    p = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t0
    said = [line for line in p.stderr.splitlines() if not line.startswith("Running as user")]
    if p.returncode or said:
        raise SystemExit(f"tshark failed: {' / '.join(said)}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=200_000, help="messages (default %(default)s)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"), help="where the captures go")
    ap.add_argument("--repeat", type=int, default=3, help="runs per configuration (best is reported)")
    a = ap.parse_args()
    tshark = shutil.which("tshark")
    if not tshark:
        raise SystemExit("tshark is required")
    os.makedirs(a.out, exist_ok=True)
    cap = Path(a.out) / f"lua-judged-{a.n}.pcapng"
    small = Path(a.out) / f"lua-judged-{a.n // 10}.pcapng"
    for path, n in ((cap, a.n), (small, a.n // 10)):
        if not path.exists():
            generate(str(path), n, judged=True)
    plugin = lua.write(Path(a.out) / "vfio_user.lua")
    x = ["-X", f"lua_script:{plugin}"]

    def base(path: Path) -> list[str]:
        return [tshark, "-n", "-r", str(path)]

    fields_cmd = ["-T", "fields", "-e", "vfio_user.command"]
    whole = ["-o", "vfio_user.fields_only:FALSE"]  # the whole tree, as the GUI, -V and pyshark build it
    configs = [  # name, without the plugin, with it
        ("-T fields (-e frame.number / -e vfio_user.command)", ["-T", "fields", "-e", "frame.number"], x + fields_cmd),
        ("summary lines (Info column), one pass", [], x),
        ("-2 -T fields", ["-2", "-T", "fields", "-e", "frame.number"], ["-2"] + x + fields_cmd),
        ("-2 summary lines", ["-2"], ["-2"] + x),
        ("-T fields, whole tree (fields_only:FALSE)", ["-T", "fields", "-e", "frame.number"], x + fields_cmd + whole),
    ]
    version = subprocess.run([tshark, "--version"], capture_output=True, text=True).stdout.split()[2]
    print(f"capture: {cap.name} ({a.n} messages, {cap.stat().st_size / 1e6:.1f} MB, judged); tshark {version}; "
          f"best of {a.repeat}, {time.strftime('%Y-%m-%d')}")
    times: dict[str, tuple[float, float]] = {}
    for name, without, with_ in configs:
        best_wo = best_w = float("inf")
        for _ in range(a.repeat):
            best_wo = min(best_wo, run(base(cap) + without))
            best_w = min(best_w, run(base(cap) + with_))
        times[name] = best_wo, best_w
    yard = times[configs[0][0]][0]
    print(f"{'run':<52} {'without':>8} {'with':>8} {'ratio':>6} {'vs yardstick':>13} {'messages/s':>11}")
    for name, (wo, w) in times.items():
        print(f"{name:<52} {wo:7.2f}s {w:7.2f}s {w / wo:5.2f}x {w / yard:12.2f}x {a.n / w:11.0f}")
    # flat cost per message: the whole-tree run on a capture ten times shorter
    big_wo, big_w = times[configs[-1][0]]
    small_wo = min(run(base(small) + configs[-1][1]) for _ in range(a.repeat))
    small_w = min(run(base(small) + configs[-1][2]) for _ in range(a.repeat))
    per_small = (small_w - small_wo) / (a.n // 10) * 1e6
    per_big = (big_w - big_wo) / a.n * 1e6
    print(f"whole-tree plugin cost per message: {per_small:.1f} µs at {a.n // 10} messages, {per_big:.1f} µs at "
          f"{a.n} (ratio {per_big / per_small:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
