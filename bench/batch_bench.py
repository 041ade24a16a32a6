#!/usr/bin/env python3
"""Benchmark `vfudissect stats` over many captures: one process against `-j N` (a local Dask cluster), same run.

The workload is a fleet of generated QEMU-like captures (bench/gen_capture.py,
a different seed per file), cached under /tmp (not in the repo): by default
200 captures of 50,000 messages (10 million messages, about 1.3 GB).  Each
run is timed wall-clock from the command's start to its exit (so -j pays for
starting its cluster), the process tree's memory is sampled every 50 ms
(RSS per process, from /proc through psutil), and the two JSON outputs must
be identical byte for byte (else the benchmark fails).

Prints the table of bench/README.md's "many captures" section, the speed-up
and the peak memory of each worker against the one-process run.

Usage: python bench/batch_bench.py [--files 200] [--messages 50000] [-j 2] [--quick]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gen_capture import generate  # noqa: E402


def fleet(files: int, messages: int) -> pathlib.Path:
    """The cached fleet: FILES captures of MESSAGES messages each, generated once (seed = file number)."""
    d = pathlib.Path("/tmp") / f"vfudissect-batch-bench-{files}x{messages}"
    d.mkdir(exist_ok=True)
    made = 0
    t0 = time.perf_counter()
    for i in range(files):
        path = d / f"host{i:04d}.pcapng"
        if not path.exists():
            tmp = d / f".host{i:04d}.tmp"
            generate(str(tmp), messages, seed=i + 1)
            tmp.rename(path)
            made += 1
    if made:
        print(f"generated {made} captures in {time.perf_counter() - t0:.0f} s under {d}", file=sys.stderr)
    return d


class Sampler:
    """Peak RSS of a process and of each of its descendants, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak: dict[int, int] = {}  # pid -> peak RSS in bytes
        self.cpu: dict[int, float] = {}  # pid -> CPU seconds (user + system) at the last sample
        self.others = 0.0  # CPU seconds other processes took during the run
        self.kind: dict[int, str] = {}  # pid -> "main" | "worker" | "other"
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root] + self.root.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            for p in procs:
                try:
                    rss = p.memory_info().rss
                    t = p.cpu_times()
                    self.cpu[p.pid] = t.user + t.system
                    if p.pid not in self.kind:
                        cmd = " ".join(p.cmdline())
                        self.kind[p.pid] = ("main" if p.pid == self.root.pid else
                                            "worker" if "multiprocessing.spawn" in cmd and "spawn_main" in cmd
                                            else "other")
                except psutil.Error:
                    continue
                if rss > self.peak.get(p.pid, 0):
                    self.peak[p.pid] = rss
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._t.join()

    def of(self, kind: str) -> list[int]:
        return [v for pid, v in self.peak.items() if self.kind.get(pid) == kind]

    def cpu_of(self, kind: str) -> float:
        return sum(v for pid, v in self.cpu.items() if self.kind.get(pid) == kind)


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (every core, every process) since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run(cmd: list[str]) -> tuple[float, bytes, Sampler]:
    t0 = time.perf_counter()
    b0 = busy_seconds()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    s = Sampler(p.pid)
    out, _ = p.communicate()
    wall = time.perf_counter() - t0
    s.stop()
    s.others = max(busy_seconds() - b0 - sum(s.cpu.values()), 0.0)  # CPU the rest of the machine took meanwhile
    if p.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} exited with status {p.returncode}")
    return wall, out, s


def mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--messages", type=int, default=50_000, help="messages per capture")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="20 captures of 5,000 messages")
    a = ap.parse_args()
    if a.quick:
        a.files, a.messages = 20, 5_000
    d = fleet(a.files, a.messages)
    total = a.files * a.messages
    size = sum(p.stat().st_size for p in d.glob("host*.pcapng"))
    exe = str(pathlib.Path(sys.executable).with_name("vfudissect"))
    base = [exe, "stats", "--json", "--no-progress", str(d)]
    load = os.getloadavg()[0]

    seq_wall, seq_out, seq = run(base)
    par_wall, par_out, par = run(base[:2] + ["-j", str(a.jobs)] + base[2:])
    if seq_out != par_out:
        print("FAILED: the -j output differs from the one-process output", file=sys.stderr)
        return 1

    seq_rss = max(seq.of("main"))
    workers = sorted(par.of("worker"), reverse=True)
    main_rss = max(par.of("main"))
    print(f"workload: {a.files} captures x {a.messages:,} messages = {total:,} messages ({size / 1e9:.2f} GB), "
          f"load average {load:.2f} before the runs, {os.cpu_count()} CPUs")
    print()
    print("| run | time | messages/s | peak RSS |")
    print("|---|---|---|---|")
    print(f"| `vfudissect stats` (one process) | {seq_wall:.1f} s | {total / seq_wall:,.0f} | {mb(seq_rss)} |")
    print(f"| `vfudissect stats -j {a.jobs}` (local Dask cluster, {len(workers)} worker processes) | {par_wall:.1f} s "
          f"| {total / par_wall:,.0f} | parent {mb(main_rss)}; per worker "
          f"{', '.join(mb(w) for w in workers) or '—'} |")
    print()
    print(f"speed-up: {seq_wall / par_wall:.2f}x with -j {a.jobs} (goal: at least 1.7x on 2 cores); "
          f"the JSON outputs are identical")
    if workers:
        print(f"peak RSS per worker / one-process run: {workers[0] / seq_rss:.2f}x "
              f"({mb(workers[0])} / {mb(seq_rss)})")
    print(f"CPU seconds (sampled): one process {seq.cpu_of('main'):.1f}; -j {a.jobs}: parent (scheduler, client, "
          f"merge) {par.cpu_of('main'):.1f}, workers {par.cpu_of('worker'):.1f}")
    print(f"other processes on the machine meanwhile: {seq.others:.1f} CPU s during the one-process run "
          f"({seq.others / seq_wall:.2f} cores), {par.others:.1f} CPU s during -j {a.jobs} "
          f"({par.others / par_wall:.2f} cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
