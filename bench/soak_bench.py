#!/usr/bin/env python3
"""The proxy under sustained load: a pipelined flood of 4-byte REGION_READs (32 outstanding, as QEMU pipelines),
direct, through `vfudissect record -w FILE -q` and through a minimal C relay, in the same run.

    .venv/bin/python bench/soak_bench.py                          # 500,000 requests against the emulated server
    .venv/bin/python bench/soak_bench.py -n 5000000
    .venv/bin/python bench/soak_bench.py --lvu-server /tmp/lvu/build/samples/server   # libvfio-user's sample

Reports, per path: messages/s (both directions), worst and p99 round trip (timed by the C client for every
request), the proxy's peak RSS and its RSS before and after the load, the REPLY_TIMEOUT / NO_REPLY findings its own
capture carries (a server that answers promptly deserves none: any is the proxy's doing), and whether the capture
holds every message.  The ratio record / C relay is issue 12's capacity figure; the worst round trip and peak RSS
are issue 13's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from flood import build, flood  # noqa: E402
from proxy_bench import build_c_relay  # noqa: E402

PY = sys.executable


def wait_path(path: str, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > end:
            raise SystemExit(f"{path} never appeared (exit {proc.returncode})")
        time.sleep(0.01)


def status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


class Server:
    """The device: `vfudissect serve` (emulated) or libvfio-user's sample server, started afresh per path."""

    def __init__(self, tmp: str, lvu: str | None) -> None:
        self.tmp, self.lvu = tmp, lvu
        self.proc: subprocess.Popen | None = None
        self.path = ""

    def start(self, name: str) -> str:
        self.started = getattr(self, "started", 0) + 1  # a path of its own each time: no stale socket to connect to
        self.path = os.path.join(self.tmp, f"dev-{self.started}.sock")
        if self.lvu:
            argv = [self.lvu, self.path]
        else:
            argv = [PY, "-m", "vfudissect", "serve", "--socket", self.path]
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_path(self.path, self.proc)
        return self.path

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


def capture_figures(cap: str, timeout: float) -> dict:
    p = subprocess.run([PY, "-m", "vfudissect", "stats", "--json", "--no-progress", "--fail-on", "never",
                        "--timeout", f"{timeout:g}", cap], capture_output=True, text=True, cwd=ROOT)
    j = json.loads(p.stdout)
    found = j["overall"]["findings"]
    return {"messages": j["overall"]["messages"], "reply_timeouts": found.get("REPLY_TIMEOUT", 0),
            "no_replies": found.get("NO_REPLY", 0)}


def run_path(name: str, server: Server, client: str, tmp: str, n: int, c_relay: str | None,
             timeout: float) -> dict:
    dev = server.start(name)
    relay: subprocess.Popen | None = None
    row: dict = {"path": name}
    try:
        sock = dev
        if name != "direct":
            sock = os.path.join(tmp, f"px-{server.started}.sock")
            if name == "C relay":
                relay = subprocess.Popen([c_relay, sock, dev], stdout=subprocess.DEVNULL)  # type: ignore[list-item]
            else:
                cap = os.path.join(tmp, "soak.pcapng")
                relay = subprocess.Popen([PY, "-m", "vfudissect", "record", "--listen", sock, "--connect", dev,
                                          "-w", cap, "-q", "--color", "never", "--timeout", f"{timeout:g}"],
                                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_path(sock, relay)
            time.sleep(0.3)
            row["rss_idle_mb"] = status_kib(relay.pid, "VmRSS") / 1024
        # libvfio-user's sample: BAR0 is one 8-byte register, BAR1 memory; the emulated device: BAR0 registers
        row.update(flood(client, sock, n, region=1 if server.lvu else 0))
        if row["errors"]:
            raise SystemExit(f"{name}: the server refused {row['errors']} reads: the workload is wrong")
        if relay is not None:
            row["rss_peak_mb"] = status_kib(relay.pid, "VmHWM") / 1024
            time.sleep(2.0)
            row["rss_after_mb"] = status_kib(relay.pid, "VmRSS") / 1024
            relay.send_signal(signal.SIGTERM)
            relay.wait(timeout=600)
            if name == "record":
                row.update(capture_figures(os.path.join(tmp, "soak.pcapng"), timeout))
                row["capture_complete"] = row["messages"] == 2 * n + 2
    finally:
        if relay is not None and relay.poll() is None:
            relay.kill()
        server.stop()
    return row


def fmt(row: dict) -> str:
    cells = [row["path"], f"{row['messages_per_s']:,.0f}", f"{row['worst_rtt'] * 1e3:.1f} ms",
             f"{row['p99_rtt'] * 1e6:.0f} µs"]
    if "rss_peak_mb" in row:
        cells.append(f"{row['rss_idle_mb']:.0f} / {row['rss_peak_mb']:.0f} / {row['rss_after_mb']:.0f} MB")
    else:
        cells.append("")
    if "messages" in row:
        cells.append(f"{row['reply_timeouts']} / {row['no_replies']}")
        cells.append(f"{row['messages']:,} {'(all)' if row['capture_complete'] else '(MISSING SOME)'}")
    else:
        cells += ["", ""]
    return "| " + " | ".join(cells) + " |"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=500_000, help="REGION_READ requests per path (default %(default)s)")
    ap.add_argument("--lvu-server", metavar="BINARY", help="libvfio-user's sample server (else the emulated one)")
    ap.add_argument("--paths", default="direct,record,C relay", help="comma-separated (default %(default)s)")
    ap.add_argument("--timeout", type=float, default=5.0, help="the proxy's REPLY_TIMEOUT threshold (QEMU's 5 s)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run the paths this many times, interleaved; the table shows each path's fastest round and "
                         "the ratios of every round (default %(default)s)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="vfu-soak-")
    try:
        client = build(tmp)
        if client is None:
            raise SystemExit("the soak benchmark needs a C compiler (for its load generator)")
        c_relay = build_c_relay(tmp)
        server = Server(tmp, a.lvu_server)
        rounds: list[list[dict]] = []
        for r in range(a.rounds):
            rows = []
            for name in [p.strip() for p in a.paths.split(",") if p.strip()]:
                if name == "C relay" and c_relay is None:
                    continue
                rows.append(run_path(name, server, client, tmp, a.n, c_relay, a.timeout))
                print(f"round {r + 1}: {name} done", file=sys.stderr)
            rounds.append(rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    best: dict[str, dict] = {}
    for rows in rounds:
        for row in rows:
            if row["path"] not in best or row["messages_per_s"] > best[row["path"]]["messages_per_s"]:
                best[row["path"]] = row
    rows = list(best.values())
    if a.json:
        print(json.dumps({"best": rows, "rounds": rounds}, indent=2))
        return 0
    who = f"libvfio-user's sample server ({a.lvu_server})" if a.lvu_server else "the emulated server (vfudissect serve)"
    print(f"{a.n:,} pipelined 4-byte REGION_READs, 32 outstanding, against {who}; {os.cpu_count()} CPUs"
          + (f"; each path's fastest of {a.rounds} interleaved rounds" if a.rounds > 1 else ""))
    print("| path | messages/s | worst round trip | p99 round trip | proxy RSS idle / peak / after | "
          "REPLY_TIMEOUT / NO_REPLY in its capture | messages in the capture |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(fmt(row))
    by = {r["path"]: r for r in rows}
    if "record" in by and "C relay" in by:
        print(f"record / C relay: {by['record']['messages_per_s'] / by['C relay']['messages_per_s']:.2f}x")
    if "record" in by and "direct" in by:
        print(f"record / direct: {by['record']['messages_per_s'] / by['direct']['messages_per_s']:.2f}x")
    if a.rounds > 1 and "record" in by and "C relay" in by:
        each = []
        for rows in rounds:
            r = {x["path"]: x["messages_per_s"] for x in rows}
            each.append(f"{r['record'] / r['C relay']:.2f}x")
        print(f"record / C relay in each round: {', '.join(each)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
