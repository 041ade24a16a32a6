"""The proxy's recording cost per message, off the relay: capture write + analysis engine (+ live view lines).

    .venv/bin/python bench/recorder_bench.py [--messages N] [--profile]
    .venv/bin/python bench/recorder_bench.py --base 4836b6e     # and a baseline revision, alternately, as ratios

Feeds the Recorder `vfudissect record` uses with the round-trip workload of
bench/proxy_bench.py (4-byte REGION_READ request and reply, no fds) after a
QEMU-like handshake, capture and live view going to /dev/null; prints
microseconds per message for each configuration.  This is the work the relay
does when no socket is ready; profile it here first (--profile).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vfudissect import spec, testing  # noqa: E402
from vfudissect.capture.writer import CaptureWriter  # noqa: E402
from vfudissect.core.events import ConnOpened, make_message_in  # noqa: E402
from vfudissect.proxy.recorder import LiveView, Recorder  # noqa: E402
from vfudissect.proxy.sinks import FileSink  # noqa: E402


def run(n: int, live: bool, quiet: bool) -> float:
    """Seconds per message for n request/reply pairs."""
    out = open(os.devnull, "wb")
    view = LiveView(FileSink(os.open(os.devnull, os.O_WRONLY)), quiet=quiet) if live else None
    rec = Recorder(CaptureWriter(out, flush=False), view)
    t = time.time()
    rec.record(ConnOpened(t, 1, "/run/dev.sock", None, None))
    for d, m in testing.handshake_steps():
        rec.record(make_message_in(t, 1, d, m, (), 0, -1, 0))
    reqs = [testing.region_read(i + 10, 0, 0, 4) for i in range(n)]
    reps = [testing.region_read_reply(i + 10, 0, 0, 4) for i in range(n)]
    t0 = time.perf_counter()
    for i in range(n):
        t += 1e-5
        rec.record(make_message_in(t, 1, spec.C2S, reqs[i], (), 0, -1, 0))
        rec.record(make_message_in(t, 1, spec.S2C, reps[i], (), 0, -1, 0))
        if i % 100 == 0:
            rec.idle()
    dt = time.perf_counter() - t0
    out.close()
    return dt / (2 * n)


CONFIGS = (("capture + engine", False, False), ("+ live view -q (findings only)", True, True),
           ("+ live view lines", True, False))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def checkout(rev: str) -> str:
    """The tree of a git revision, unpacked once under bench/out/ (its own recorder_bench.py measures it)."""
    where = os.path.join(ROOT, "bench", "out", f"base-{rev}")
    if not os.path.isdir(where):
        os.makedirs(where + ".tmp", exist_ok=True)
        archive = subprocess.run(["git", "-C", ROOT, "archive", rev], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", where + ".tmp"], input=archive, check=True)
        os.rename(where + ".tmp", where)
    return where


def run_in(root: str, n: int, live: bool, quiet: bool) -> float:
    """run() of the tree at ``root``, in a fresh process (its own vfudissect first on the path)."""
    code = (f"import sys; sys.path[:0] = [{root!r}, {os.path.join(root, 'bench')!r}]; import recorder_bench as rb; "
            f"print(rb.run({n}, {live}, {quiet}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    return float(out.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=50000, help="request/reply pairs (default %(default)s)")
    ap.add_argument("--profile", action="store_true", help="cProfile the full configuration")
    ap.add_argument("--base", metavar="REV", help="also measure this git revision (unpacked under bench/out/), "
                                                  "each configuration alternately in fresh processes, best of "
                                                  "--repeat, and print now / base")
    ap.add_argument("--repeat", type=int, default=3, help="alternating runs per configuration with --base "
                                                          "(default %(default)s)")
    args = ap.parse_args()
    if args.base:
        base = checkout(args.base)
        print(f"{'':32s} {args.base:>9s} {'now':>9s}  now / base")
        for name, live, quiet in CONFIGS:
            b = float("inf")
            w = float("inf")
            for _ in range(args.repeat):
                b = min(b, run_in(base, args.messages, live, quiet))
                w = min(w, run_in(ROOT, args.messages, live, quiet))
            print(f"{name:32s} {b * 1e6:6.2f} µs {w * 1e6:6.2f} µs  {w / b:.2f}x")
        return 0
    for name, live, quiet in CONFIGS:
        print(f"{name:32s} {run(args.messages, live, quiet) * 1e6:6.2f} µs/message")
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(run, args.messages, True, False)
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
