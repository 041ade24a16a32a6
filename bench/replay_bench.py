#!/usr/bin/env python3
"""Replay speed: `vfudissect replay client` against a fresh server, and `replay server` for the emulated client, in
messages per second and against the recorded session's own duration.

    .venv/bin/python bench/replay_bench.py
    .venv/bin/python bench/replay_bench.py --lvu-server /tmp/lvu/build/samples/server   # + libvfio-user's sample
    .venv/bin/python bench/replay_bench.py --quick

Captures: captures/demo.pcapng (the demo session, emulated server) and a session recorded here through `record
--watch-irqs` between the emulated peers (its server side is also served to the emulated client); with --lvu-server, libvfio-user's sample client against its sample server, recorded
here through `record` and replayed against a fresh sample server (its client arms the server's timer with an
absolute time: replayed later, the server refuses it and makes no DMA, so the replay waits --timeout once for
what never comes; that row says how long the rest takes), and QEMU 10.2's boot from captures/ against a fresh
gpio sample beside it.  Each replay runs in a fresh process, as a user runs it;
the figure is the replay's own wall time from its summary (process start-up excluded), best of --runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VFU = [sys.executable, "-m", "vfudissect"]


def _wait(path: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise SystemExit(f"{path} never appeared")
        time.sleep(0.01)


def _serve(cmd: list[str], path: str) -> subprocess.Popen:
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait(path)
    return p


def _stop(p: subprocess.Popen) -> None:
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()


def record_session(d: str, server_cmd: list[str], client_cmd: list[str], name: str) -> str:
    """One session of client_cmd against server_cmd, through `vfudissect record`; the capture."""
    srv_sock, prx_sock, out = os.path.join(d, f"{name}-srv.sock"), os.path.join(d, f"{name}-prx.sock"), \
        os.path.join(d, f"{name}.pcapng")
    srv = _serve([a.replace("{sock}", srv_sock) for a in server_cmd], srv_sock)
    rec = _serve(VFU + ["record", "--listen", prx_sock, "--connect", srv_sock, "-w", out, "-q", "--no-summary",
                        "--watch-irqs"], prx_sock)
    subprocess.run([a.replace("{sock}", prx_sock) for a in client_cmd], cwd=ROOT, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120)
    time.sleep(0.3)
    for p in (rec, srv):
        _stop(p)
    return out


def replay_client(d: str, capture: str, server_cmd: list[str], timeout: float) -> dict:
    sock = os.path.join(d, "live.sock")
    if os.path.exists(sock):
        os.unlink(sock)
    srv = _serve([a.replace("{sock}", sock) for a in server_cmd], sock)
    try:
        p = subprocess.run(VFU + ["replay", "client", capture, "--connect", sock, "--json", "-q", "--timeout",
                                  str(timeout), "-w", os.path.join(d, "replayed.pcapng")], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    finally:
        _stop(srv)
    return json.loads(p.stdout)


def replay_server(d: str, capture: str) -> tuple[dict, float]:
    sock = os.path.join(d, "dev.sock")
    srv = subprocess.Popen(VFU + ["replay", "server", capture, "--listen", sock, "--json", "-q",
                                  "-w", os.path.join(d, "served.pcapng")], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
    _wait(sock)
    t0 = time.perf_counter()
    subprocess.run(VFU + ["client", sock], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=120)
    wall = time.perf_counter() - t0
    out, _ = srv.communicate(timeout=60)
    return json.loads(out), wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lvu-server", help="libvfio-user's samples/server (its samples/client is found beside it)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="one run of each")
    args = ap.parse_args()
    runs = 1 if args.quick else args.runs
    serve = VFU + ["serve", "--socket", "{sock}"]
    d = tempfile.mkdtemp(prefix="vfurb", dir="/tmp")
    rows = []
    try:
        recorded = record_session(d, serve, VFU + ["client", "{sock}"], "emulated")
        cases = [("captures/demo.pcapng", os.path.join(ROOT, "captures", "demo.pcapng"), serve, 5.0),
                 ("emulated session, recorded here", recorded, serve, 5.0)]
        if args.lvu_server:
            lvu_client = os.path.join(os.path.dirname(args.lvu_server), "client")
            lvu = record_session(d, [args.lvu_server, "{sock}"], [lvu_client, "{sock}"], "lvu")
            cases.append(("libvfio-user sample, recorded here", lvu, [args.lvu_server, "{sock}"], 1.0))
            gpio = os.path.join(os.path.dirname(args.lvu_server), "gpio-pci-idio-16")
            if os.path.exists(gpio):  # QEMU 10.2's boot against the gpio sample, replayed against a fresh one
                cases.append(("QEMU 10.2 boot (captures/), against libvfio-user's gpio sample",
                              os.path.join(ROOT, "captures", "qemu-10.2-gpio-pci-idio-16.pcapng"), [gpio, "{sock}"],
                              5.0))
        for name, cap, srv, timeout in cases:
            best = min((replay_client(d, cap, srv, timeout) for _ in range(runs)), key=lambda s: s["seconds"])
            msgs = best["sent"] + best["received"]
            rows.append((f"client side of {name}", msgs, best["recorded_seconds"], best["seconds"],
                         best["divergences"], best["findings"]))
        for name, cap in (("emulated session, recorded here with --watch-irqs", recorded),):
            res = [replay_server(d, cap) for _ in range(runs)]
            best, wall = min(res, key=lambda r: r[0]["seconds"])
            rows.append((f"server side of {name} (emulated client)", 2 * best["requests"], None, best["seconds"],
                         best["divergences"], best["findings"]))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print("| replay | messages | recorded session | replay | messages/s | replay / recorded | divergences |")
    print("|---|---|---|---|---|---|---|")
    for name, msgs, rec_s, s, div, found in rows:
        ratio = f"{s / rec_s:.2f}x" if rec_s else "—"
        rec = f"{rec_s * 1e3:.1f} ms" if rec_s else "—"
        why = f" ({', '.join(f'{c} {n}' for c, n in sorted(found.items()))})" if div else ""
        print(f"| {name} | {msgs} | {rec} | {s * 1e3:.1f} ms | {msgs / s:,.0f} | {ratio} | {div}{why} |")
    print("(server side: the session's pace is the live client's, so it has no recorded duration to compare with)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
