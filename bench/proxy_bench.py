"""Benchmark of `vfudissect record` against a direct connection, same run, same peers; prints ratios.

    .venv/bin/python bench/proxy_bench.py            # table
    .venv/bin/python bench/proxy_bench.py --rounds 5 --markdown

Peers: the project's emulated server (`vfudissect serve`, its own process) and
client (this process, blocking sockets, no timeouts).  The proxy is the real
`vfudissect record` subprocess recording to a file in a temporary directory,
its live view going to a file as well.  Each round measures direct, then each
proxy variant; the medians over rounds are reported.  Targets (issue): a
4-byte REGION_READ round trip at most 1.5x direct, 8 KiB and 1 MiB read
throughput at least 0.5x direct.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from vfudissect.peers.client import Client  # noqa: E402

WORKLOADS = (("rtt_4B", 0, 4, 20000), ("read_8KiB", 1, 8192, 5000), ("read_1MiB", 1, 1 << 20, 300))
VARIANTS = {
    "record": [],
    "record -q": ["-q"],
    "record --busy-poll 0": ["--busy-poll", "0"],
}


def wait_path(path: str, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > end:
            raise SystemExit(f"{path} never appeared (exit {proc.returncode})")
        time.sleep(0.01)


def measure(path: str, scale: float) -> dict[str, float]:
    """Mean seconds per read for each workload."""
    out: dict[str, float] = {}
    with Client(path, timeout=None) as c:
        c.version()
        for name, region, count, n in WORKLOADS:
            n = max(int(n * scale), 20)
            for _ in range(min(n // 10, 200)):
                c.region_read(region, 0, count)
            t = time.perf_counter()
            for _ in range(n):
                c.region_read(region, 0, count)
            out[name] = (time.perf_counter() - t) / n
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the iteration counts")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="vfu-bench-")
    dev = os.path.join(tmp, "dev.sock")
    py = sys.executable
    server = subprocess.Popen([py, "-m", "vfudissect", "serve", "--socket", dev, "--bar1-size", str(2 << 20)],
                              cwd=ROOT, stderr=subprocess.DEVNULL)
    results: dict[str, list[dict[str, float]]] = {"direct": []}
    cap_sizes: dict[str, int] = {}
    try:
        wait_path(dev, server)
        for r in range(args.rounds):
            results["direct"].append(measure(dev, args.scale))
            for v in args.variants:
                px = os.path.join(tmp, "px.sock")
                cap = os.path.join(tmp, "bench.pcapng")
                live = open(os.path.join(tmp, "live.txt"), "wb")
                proc = subprocess.Popen([py, "-m", "vfudissect", "record", "--listen", px, "--connect", dev,
                                         "-w", cap, "--color", "never", *VARIANTS[v]],
                                        cwd=ROOT, stdout=live, stderr=subprocess.STDOUT)
                try:
                    wait_path(px, proc)
                    results.setdefault(v, []).append(measure(px, args.scale))
                finally:
                    proc.terminate()
                    proc.wait(timeout=60)
                    live.close()
                cap_sizes[v] = os.path.getsize(cap)
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    med = {v: {w: statistics.median(run[w] for run in runs) for w, *_ in WORKLOADS} for v, runs in results.items()}
    base = med["direct"]
    if args.json:
        print(json.dumps({"median_seconds_per_read": med, "capture_bytes": cap_sizes}, indent=2))
        return 0
    rows = []
    for v, m in med.items():
        rtt = m["rtt_4B"]
        tp8 = 8192 / m["read_8KiB"] / 1e6
        tp1 = (1 << 20) / m["read_1MiB"] / 1e6
        if v == "direct":
            rows.append((v, f"{rtt * 1e6:.1f} µs", f"{tp8:.0f} MB/s", f"{tp1:.0f} MB/s"))
        else:
            rows.append((v, f"{rtt * 1e6:.1f} µs ({rtt / base['rtt_4B']:.2f}x)",
                         f"{tp8:.0f} MB/s ({base['read_8KiB'] / m['read_8KiB']:.2f}x)",
                         f"{tp1:.0f} MB/s ({base['read_1MiB'] / m['read_1MiB']:.2f}x)"))
    head = ("path", "4-byte REGION_READ round trip", "8 KiB reads", "1 MiB reads")
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
        for row in [head] + rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
