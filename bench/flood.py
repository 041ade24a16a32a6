"""A pipelined vfio-user client in C, compiled on the spot: N 4-byte REGION_READs with K outstanding (as QEMU
pipelines), every round trip timed; prints one JSON line.  The load generator of the soak and capacity benchmarks:
in C so that the client is never what limits the rate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

FLOOD_C = r"""#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

struct hdr { uint16_t id, cmd; uint32_t size, flags, err; } __attribute__((packed));
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static void put(int fd, const void *b, size_t n) {
    const char *p = b;
    while (n) { ssize_t k = write(fd, p, n); if (k < 0) { if (errno == EINTR) continue; perror("write"); exit(2); } p += k; n -= k; }
}
static char rb[1 << 20]; static size_t rlen, rpos;
static void get(int fd, void *b, size_t n) {
    char *p = b;
    while (n) {
        if (rpos == rlen) { ssize_t k = read(fd, rb, sizeof rb); if (k <= 0) { fprintf(stderr, "peer closed\n"); exit(2); } rlen = k; rpos = 0; }
        size_t c = rlen - rpos < n ? rlen - rpos : n; memcpy(p, rb + rpos, c); rpos += c; p += c; n -= c;
    }
}
#define BUCKETS 4000  /* log histogram of round trips: 1 % per bucket from 1 us */
static uint64_t hist[BUCKETS];
int main(int argc, char **argv) {
    if (argc < 6) { fprintf(stderr, "usage: flood SOCK N OUTSTANDING REGION COUNT\n"); return 2; }
    long n = atol(argv[2]); int k = atoi(argv[3]); uint32_t region = atoi(argv[4]), count = atoi(argv[5]);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX }; strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
    if (connect(fd, (void *)&a, sizeof a) < 0) { perror("connect"); return 2; }
    const char *caps = "{\"capabilities\": {\"max_msg_fds\": 8, \"max_data_xfer_size\": 1048576}}";
    size_t cl = strlen(caps) + 1;
    struct hdr h = { 0, 1, 16 + 4 + cl, 0, 0 };
    char vbuf[256]; memcpy(vbuf, &h, 16); memset(vbuf + 16, 0, 4); memcpy(vbuf + 20, caps, cl);
    put(fd, vbuf, h.size);
    struct hdr r; get(fd, &r, 16); { char skip[4096]; size_t left = r.size - 16; while (left) { size_t c = left < sizeof skip ? left : sizeof skip; get(fd, skip, c); left -= c; } }
    if (r.flags & 0x20) { fprintf(stderr, "VERSION refused: errno %u\n", r.err); return 2; }
    double *sent = calloc(65536, sizeof(double));
    char req[32]; struct hdr q = { 0, 9, 32, 0, 0 }; uint64_t off = 0;
    memcpy(req + 16, &off, 8); memcpy(req + 24, &region, 4); memcpy(req + 28, &count, 4);
    long issued = 0, done = 0, errors = 0; double worst = 0, t0 = now();
    char body[65536];
    while (done < n) {
        while (issued < n && issued - done < k) {
            q.id = (uint16_t)(issued + 1); memcpy(req, &q, 16); sent[q.id] = now(); put(fd, req, 32); issued++;
        }
        get(fd, &r, 16);
        size_t left = r.size - 16; if (left > sizeof body) { fprintf(stderr, "reply of %u bytes\n", r.size); return 2; }
        get(fd, body, left);
        if (r.flags & 0x20) errors++;
        double rtt = now() - sent[r.id];
        if (rtt > worst) worst = rtt;
        int b = rtt > 1e-6 ? (int)(log(rtt / 1e-6) / log(1.01)) : 0; if (b >= BUCKETS) b = BUCKETS - 1;
        hist[b]++; done++;
    }
    double dt = now() - t0;
    uint64_t seen = 0, rank = (uint64_t)ceil(0.99 * n); double p99 = worst;
    for (int b = 0; b < BUCKETS; b++) { seen += hist[b]; if (seen >= rank) { p99 = 1e-6 * pow(1.01, b + 0.5); break; } }
    printf("{\"requests\": %ld, \"seconds\": %.6f, \"messages_per_s\": %.1f, \"worst_rtt\": %.6f, \"p99_rtt\": %.6f, \"errors\": %ld}\n",
           n, dt, 2.0 * n / dt, worst, p99 > worst ? worst : p99, errors);
    close(fd);
    return 0;
}
"""


def build(tmp: str) -> str | None:
    """Compile the flood client into ``tmp``; None without a C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    src, exe = os.path.join(tmp, "flood.c"), os.path.join(tmp, "flood")
    with open(src, "w") as f:
        f.write(FLOOD_C)
    r = subprocess.run([cc, "-O2", "-o", exe, src, "-lm"], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"cannot build the flood client: {r.stderr[-500:]}")
    return exe


def flood(exe: str, sock: str, n: int, outstanding: int = 32, region: int = 0, count: int = 4,
          timeout: float = 3600) -> dict:
    """Run the client against ``sock``: requests, seconds, messages/s (both directions), worst and p99 round trip."""
    p = subprocess.run([exe, sock, str(n), str(outstanding), str(region), str(count)], capture_output=True, text=True,
                       timeout=timeout)
    if p.returncode:
        raise RuntimeError(f"flood client failed: {p.stderr.strip()[-300:]}")
    return json.loads(p.stdout)
