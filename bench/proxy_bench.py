"""Benchmark of `vfudissect record` against a direct connection, same run, same peers; prints ratios.

    .venv/bin/python bench/proxy_bench.py                 # table
    .venv/bin/python bench/proxy_bench.py --blocks 40 --markdown

Peers: the project's emulated server (`vfudissect serve`, its own process) and
client (this process, blocking sockets, no timeouts).  Paths measured, each
round in turn: direct; a naive relay (two blocking threads per connection,
whatever recvmsg returns is sent on, fds included, nothing recorded: the
issue's reference point); the same relay in ~50 lines of C, compiled on the
spot when a C compiler is there (a floor for any relay on the machine); the
real `vfudissect record` subprocess recording
to a file in a temporary directory, its live view going to a file too, in
four configurations.  All paths are open at once and the work is done in
short blocks, each block of each workload running every path in a shuffled
order, so that every path sees the same machine (on a shared machine the
direct round trip alone drifts between 25 and 75 µs within minutes).  Means
over all blocks are reported, with each proxy's CPU time per relayed message.  Targets (issue): a 4-byte REGION_READ round
trip at most 1.5x direct, 8 KiB and 1 MiB read throughput at least 0.5x direct.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from vfudissect.peers.client import Client  # noqa: E402

WORKLOADS = (("rtt_4B", 0, 4, 20000), ("read_8KiB", 1, 8192, 5000), ("read_1MiB", 1, 1 << 20, 300))
RECORD = ["-m", "vfudissect", "record", "--color", "never"]
VARIANTS: dict[str, list[str] | None] = {
    "naive relay (no recording)": None,
    "C relay (no recording)": ["<c>"],
    "record --busy-poll 0": ["--busy-poll", "0"],
    "record -q --busy-poll 0": ["-q", "--busy-poll", "0"],
    "record --busy-poll 200": ["--busy-poll", "200"],
    "record -q --busy-poll 200": ["-q", "--busy-poll", "200"],
    # on request (--variants): calibration paths behind bench/README.md's analysis
    "spinning Python relay (no recording)": ["<spin>"],
    "record --busy-poll 0, proxy on CPU 0": ["<cpu0>", "--busy-poll", "0"],
    "record --busy-poll 0, proxy on CPU 1": ["<cpu1>", "--busy-poll", "0"],
}
DEFAULT_VARIANTS = [v for v in VARIANTS if "spinning" not in v and "proxy on CPU" not in v]
NAIVE_RELAY = r"""
import array, os, socket, sys, threading
ANC = socket.CMSG_SPACE(253 * 4)
def pump(src, dst):
    try:
        while True:
            data, anc, _, _ = src.recvmsg(1 << 20, ANC)
            if not data:
                break
            fds = [fd for _l, _t, b in anc for fd in array.array("i", b[:len(b) - len(b) % 4])]
            dst.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else [])
            for fd in fds:
                os.close(fd)
    except OSError:
        pass
ls = socket.socket(socket.AF_UNIX); ls.bind(sys.argv[1]); ls.listen(16)
while True:
    c, _ = ls.accept(); s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[2])
    threading.Thread(target=pump, args=(c, s), daemon=True).start()
    threading.Thread(target=pump, args=(s, c), daemon=True).start()
"""

SPIN_RELAY = r"""
import array, os, select, socket, sys
ANC = socket.CMSG_SPACE(253 * 4)
ls = socket.socket(socket.AF_UNIX); ls.bind(sys.argv[1]); ls.listen(16); ls.setblocking(False)
ep = select.epoll(); ep.register(ls.fileno(), select.EPOLLIN)
pairs = {}
buf = memoryview(bytearray(1 << 20))
while True:
    for fd, _ in ep.poll(0):  # never sleeps
        if fd == ls.fileno():
            c, _ = ls.accept(); s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[2])
            pairs[c.fileno()], pairs[s.fileno()] = (c, s), (s, c)
            ep.register(c.fileno(), select.EPOLLIN); ep.register(s.fileno(), select.EPOLLIN)
            continue
        src, dst = pairs[fd]
        n, anc, _, _ = src.recvmsg_into([buf], ANC, socket.MSG_DONTWAIT)
        if not n:
            ep.unregister(fd); dst.shutdown(socket.SHUT_WR); continue
        fds = [f for _l, _t, b in anc for f in array.array("i", b[:len(b) - len(b) % 4])]
        dst.sendmsg([buf[:n]], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else [])
        for f in fds:
            os.close(f)
"""


C_RELAY = r"""#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
struct pair { int src, dst; };
static void *pump(void *arg) {
    struct pair *p = arg;
    static __thread char buf[1 << 20];
    char cbuf[CMSG_SPACE(253 * sizeof(int))];
    for (;;) {
        struct iovec iov = { buf, sizeof buf };
        struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf };
        ssize_t n = recvmsg(p->src, &m, 0);
        if (n <= 0) break;
        struct msghdr o = { .msg_iov = &iov, .msg_iovlen = 1 };
        iov.iov_len = n;
        if (m.msg_controllen) { o.msg_control = cbuf; o.msg_controllen = m.msg_controllen; }
        if (sendmsg(p->dst, &o, 0) < 0) break;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
            int *fds = (int *)CMSG_DATA(c); int k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (int i = 0; i < k; i++) close(fds[i]);
        }
    }
    shutdown(p->dst, SHUT_WR);
    return NULL;
}
int main(int argc, char **argv) {
    int ls = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
    bind(ls, (void *)&a, sizeof a); listen(ls, 16);
    for (;;) {
        int c = accept(ls, NULL, NULL);
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un b = { .sun_family = AF_UNIX };
        strncpy(b.sun_path, argv[2], sizeof b.sun_path - 1);
        if (connect(s, (void *)&b, sizeof b) < 0) { close(c); close(s); continue; }
        struct pair *p1 = malloc(sizeof *p1), *p2 = malloc(sizeof *p2);
        *p1 = (struct pair){ c, s }; *p2 = (struct pair){ s, c };
        pthread_t t; pthread_create(&t, NULL, pump, p1); pthread_create(&t, NULL, pump, p2);
    }
}
"""


def build_c_relay(tmp: str) -> str | None:
    """Compile the C calibration relay (same job as NAIVE_RELAY, in C); None without a C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    src, exe = os.path.join(tmp, "relay.c"), os.path.join(tmp, "c-relay")
    with open(src, "w") as f:
        f.write(C_RELAY)
    r = subprocess.run([cc, "-O2", "-pthread", "-o", exe, src], capture_output=True)
    return exe if r.returncode == 0 else None


def wait_path(path: str, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > end:
            raise SystemExit(f"{path} never appeared (exit {proc.returncode})")
        time.sleep(0.01)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_block(c: Client, region: int, count: int, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        c.region_read(region, 0, count)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", type=int, default=20, help="blocks per workload and path (default %(default)s)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the iterations per block")
    ap.add_argument("--variants", nargs="*", default=DEFAULT_VARIANTS, choices=list(VARIANTS),
                    help="paths besides direct (default: all but the calibration ones)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pin", metavar="CPUS", default="",
                    help="run everything (client, server, relays) on these CPUs, e.g. 0: peers and relay then "
                         "hand over on one CPU instead of waking each other across CPUs")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.pin:
        os.sched_setaffinity(0, {int(c) for c in args.pin.split(",")})  # inherited by every child
    rng = random.Random(args.seed)
    tmp = tempfile.mkdtemp(prefix="vfu-bench-")
    dev = os.path.join(tmp, "dev.sock")
    py = sys.executable
    procs: dict[str, subprocess.Popen] = {}
    clients: dict[str, Client] = {}
    files = []
    server = subprocess.Popen([py, "-m", "vfudissect", "serve", "--socket", dev, "--bar1-size", str(2 << 20)],
                              cwd=ROOT, stderr=subprocess.DEVNULL)
    total: dict[tuple[str, str], float] = {}
    count: dict[tuple[str, str], int] = {}
    msgs: dict[str, int] = {}
    cpu0: dict[str, float] = {}
    cpu: dict[str, float] = {}
    try:
        wait_path(dev, server)
        paths = {"direct": dev}
        for i, v in enumerate(args.variants):
            px = os.path.join(tmp, f"px{i}.sock")
            extra = VARIANTS[v]
            if extra == ["<c>"]:
                exe = build_c_relay(tmp)
                if exe is None:
                    print("no C compiler: skipping the C relay", file=sys.stderr)
                    continue
                argv = [exe, px, dev]
            elif extra is None:
                argv = [py, "-c", NAIVE_RELAY, px, dev]
            elif extra == ["<spin>"]:
                argv = [py, "-c", SPIN_RELAY, px, dev]
            elif extra[0] in ("<cpu0>", "<cpu1>"):
                argv = ["taskset", "-c", extra[0][4], py, *RECORD, "--listen", px, "--connect", dev, "-w",
                        os.path.join(tmp, f"c{i}.pcapng"), *extra[1:]]
            else:
                argv = [py, *RECORD, "--listen", px, "--connect", dev, "-w", os.path.join(tmp, f"c{i}.pcapng"),
                        *extra]
            live = open(os.path.join(tmp, f"live{i}.txt"), "wb")
            files.append(live)
            procs[v] = subprocess.Popen(argv, cwd=ROOT, stdout=live, stderr=subprocess.STDOUT)
            wait_path(px, procs[v])
            paths[v] = px
        for name, path in paths.items():
            clients[name] = Client(path, timeout=None)
            clients[name].version()
            msgs[name] = 2
            if name in procs:
                cpu0[name] = cpu_seconds(procs[name].pid)
        for wname, region, cnt, n in WORKLOADS:
            per_block = max(int(n * args.scale / args.blocks), 5)
            for c in clients.values():  # warm up
                run_block(c, region, cnt, max(per_block // 4, 2))
            for name in paths:
                msgs[name] += 2 * max(per_block // 4, 2)
            for b in range(args.blocks):
                order = list(paths)
                rng.shuffle(order)
                for name in order:
                    dt = run_block(clients[name], region, cnt, per_block)
                    total[(name, wname)] = total.get((name, wname), 0.0) + dt
                    count[(name, wname)] = count.get((name, wname), 0) + per_block
                    msgs[name] += 2 * per_block
            print(f"{wname} done", file=sys.stderr)
        for name, p in procs.items():
            cpu[name] = (cpu_seconds(p.pid) - cpu0[name]) / msgs[name]
    finally:
        for c in clients.values():
            c.close()
        for p in procs.values():
            p.terminate()
            p.wait(timeout=120)
        for f in files:
            f.close()
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    mean = {name: {w: total[(name, w)] / count[(name, w)] for w, *_ in WORKLOADS} for name in paths}
    base = mean["direct"]
    if args.json:
        print(json.dumps({"mean_seconds_per_read": mean, "proxy_cpu_seconds_per_message": cpu}, indent=2))
        return 0
    rows = []
    for v, m in mean.items():
        rtt = m["rtt_4B"]
        tp8 = 8192 / m["read_8KiB"] / 1e6
        tp1 = (1 << 20) / m["read_1MiB"] / 1e6
        c = f"{cpu[v] * 1e6:.0f} µs" if v in cpu else ""
        if v == "direct":
            rows.append((v, f"{rtt * 1e6:.1f} µs", f"{tp8:.0f} MB/s", f"{tp1:.0f} MB/s", c))
        else:
            rows.append((v, f"{rtt * 1e6:.1f} µs ({rtt / base['rtt_4B']:.2f}x)",
                         f"{tp8:.0f} MB/s ({base['read_8KiB'] / m['read_8KiB']:.2f}x)",
                         f"{tp1:.0f} MB/s ({base['read_1MiB'] / m['read_1MiB']:.2f}x)", c))
    head = ("path", "4-byte REGION_READ round trip", "8 KiB reads", "1 MiB reads", "proxy CPU / message")
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
