"""`vfudissect demo`: emulated device and QEMU-shaped client with `vfudissect record` between them, twice.

Run 1 is a clean session (captures/demo.pcapng); run 2 has the server
misbehave on cue (captures/demo-faults.pcapng).  Each run prints the proxy's
live view as it happens, then the offline analysis of the capture it wrote,
and checks them against each other and against what the run was meant to
show.  Socket paths are relative names in a private directory, so the
captures record the same names on every run: re-running changes timestamps,
inode numbers and process ids, nothing else.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, TextIO

from .. import spec
from ..capture.reader import CaptureError, open_capture
from ..core.analyzer import Analyzer, AnalyzerConfig
from ..core.events import ConnClosed, ConnOpened, Event
from ..core.records import Finding
from ..peers.server import DeviceServer
from ..render import Renderer
from .peers import DemoClient
from .record_process import RecordProcess, live_findings
from .sessions import (CONSEQUENCES, FAULTS, LATE_BY, clean_session, fault_frames, fault_schedules, faulty_session,
                       version_refused)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
DEVICE_SOCK, PROXY_SOCK = "gpio.sock", "vfio-user.sock"
CLEAN, FAULTY = "demo.pcapng", "demo-faults.pcapng"


@dataclass
class DemoOptions:
    out_dir: str = "captures"
    timeout: float = 0.3  # REPLY_TIMEOUT threshold of run 2 (run 1 keeps QEMU's default)
    color: bool = False
    plugin: str = "plugins/vfio_user.lua"


@dataclass
class RunResult:
    """A run's capture, its live and offline findings, and the problems found checking them."""

    capture: str
    events: list[Event] = field(default_factory=list)
    live: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class _Out:
    def __init__(self, stream: TextIO, color: bool) -> None:
        self.stream = stream
        self.color = color

    def __call__(self, text: str = "") -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def head(self, text: str) -> None:
        self("")
        self(f"\033[1m━━ {text}\033[0m" if self.color else f"━━ {text}")

    def mark(self, ok: bool) -> str:
        if not self.color:
            return "✓" if ok else "✗"
        return "\033[32m✓\033[0m" if ok else "\033[1;31m✗\033[0m"


def _tee(pipe: TextIO, out: _Out, into: list[str]) -> threading.Thread:
    """Echo the proxy's live view line by line as it comes, and keep it."""
    def run() -> None:
        for line in pipe:
            into.append(line)
            out.stream.write("  " + line if line.strip() else line)
            out.stream.flush()
    t = threading.Thread(target=run, name="vfudissect-demo-tee", daemon=True)
    t.start()
    return t


def _events(path: str) -> list[Event]:
    try:
        return list(open_capture(path))
    except CaptureError:
        return []


def _wait_closed(capture: str, timeout: float = 10.0) -> None:
    """Until the capture shows both directions of every connection closed: what follows is recorded after."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        opened: set[int] = set()
        closed: dict[int, set[str]] = {}
        for ev in _events(capture):
            if isinstance(ev, ConnOpened):
                opened.add(ev.conn)
            elif isinstance(ev, ConnClosed):
                closed.setdefault(ev.conn, set()).update((spec.C2S, spec.S2C) if ev.dir is None else (ev.dir,))
        if opened and all(len(closed.get(c, ())) == 2 for c in opened):
            return
        time.sleep(0.02)


def record_run(work: str, name: str, timeout: float | None, color: bool, out: _Out,
               drive: Callable[[str, str], None], faults: object = None) -> tuple[str, list[str]]:
    """Device server + `vfudissect record` in ``work``; ``drive(proxy_path, capture)`` plays the client."""
    server = DeviceServer(os.path.join(work, DEVICE_SOCK), faults=faults)  # type: ignore[arg-type]
    server.start()
    rp = RecordProcess(PROXY_SOCK, DEVICE_SOCK, name, cwd=work, timeout=timeout,
                       color="always" if color else "never", stdout=subprocess.PIPE)  # type: ignore[arg-type]
    out(f"  $ {rp.command}")
    lines: list[str] = []
    try:
        rp.start()
        assert rp.proc is not None and rp.proc.stdout is not None
        tee = _tee(io.TextIOWrapper(rp.proc.stdout, encoding="utf-8", errors="replace"), out, lines)
        try:
            drive(rp.listen, rp.capture)
            _wait_closed(rp.capture)
        finally:
            rp.stop()
            tee.join(10)
    finally:
        rp.kill()
        server.stop()
    return rp.capture, lines


def _analyze(path: str, timeout: float) -> tuple[list[Event], list[Finding]]:
    events = list(open_capture(path))
    an = Analyzer(AnalyzerConfig(timeout=timeout))
    found: list[Finding] = []
    for ev in events:
        found += [it for it in an.feed(ev) if isinstance(it, Finding)]
    found += [it for it in an.finish(max((e.ts for e in events), default=0.0)) if isinstance(it, Finding)]
    return events, found


def _summary(findings: list[Finding]) -> str:
    sev = Counter(f.severity for f in findings)
    codes = Counter(f.code for f in findings)
    text = f"{sev['error']} errors, {sev['warning']} warnings, {sev['note']} notes"
    if codes:
        text += " (" + ", ".join(f"{c} x{n}" if n > 1 else c for c, n in sorted(codes.items())) + ")"
    return text


def _key(findings: list[Finding]) -> list[tuple[str, tuple[int, ...]]]:
    return sorted((f.code, tuple(f.frames)) for f in findings)


def run_clean(work: str, opts: DemoOptions, out: _Out) -> RunResult:
    out.head("1. A clean session: QEMU-shaped client, emulated PCI device, the recording proxy in between")
    out("  The emulated device (9 regions, 5 IRQ types; BAR0 registers, BAR1 memory in a memfd) listens on "
        f"{DEVICE_SOCK};")
    out(f"  the proxy listens on {PROXY_SOCK}, relays every message with its fds and records it;")
    out("  the client speaks like QEMU 10.2 (its VERSION capabilities byte for byte) and checks every effect.")
    report: list[object] = []

    def drive(proxy: str, capture: str) -> None:
        with DemoClient(proxy) as c:
            report.append(clean_session(c))

    path, lines = record_run(work, CLEAN, None, opts.color, out, drive)
    res = RunResult(path)
    res.events, res.findings = _analyze(path, spec.DEFAULT_REPLY_TIMEOUT)
    res.live = sorted((code, fr) for _s, code, fr in live_findings(_ANSI.sub("", "".join(lines))))
    out("")
    out("  What the client verified:")
    rep = report[0] if report else None
    for line in rep.lines() if rep is not None else ["the session did not complete"]:  # type: ignore[attr-defined]
        out(f"    {line}")
    if rep is None or not rep.ok:  # type: ignore[attr-defined]
        res.problems.append("the client could not verify every effect of the session")
    bad = [f for f in res.findings if f.severity != "note"]
    if bad:
        res.problems.append(f"{len(bad)} warning/error findings in the clean session")
    if res.live != _key(res.findings):
        res.problems.append("the live view and the offline analysis disagree")
    return res


def run_faulty(work: str, opts: DemoOptions, out: _Out) -> RunResult:
    out.head(f"2. The peers misbehave on cue (REPLY_TIMEOUT threshold {opts.timeout:g} s for the demo)")
    out("  The server's fault schedule (vfudissect serve --fault does the same):")
    for f in FAULTS:
        out(f"    {f.label:<24} -> {f.code:<24} on {f.on}")
    out(f"  The late reply is held back {LATE_BY:g} s, longer than QEMU's own {spec.DEFAULT_REPLY_TIMEOUT:g} s "
        f"x-msg-timeout: the proxy flags it after {opts.timeout:g} s, while the request still waits.")
    seen: list[str] = []

    def drive(proxy: str, capture: str) -> None:
        with DemoClient(proxy, timeout=LATE_BY + 5.0) as c:
            seen.extend(faulty_session(c))
        _wait_closed(capture)
        with DemoClient(proxy, timeout=LATE_BY + 5.0) as c:
            seen.append(version_refused(c))

    path, lines = record_run(work, FAULTY, opts.timeout, opts.color, out, drive, fault_schedules())
    res = RunResult(path)
    res.events, res.findings = _analyze(path, opts.timeout)
    res.live = sorted((code, fr) for _s, code, fr in live_findings(_ANSI.sub("", "".join(lines))))
    out("")
    out("  What the client noticed:")
    for s in seen:
        out(f"    {s}")
    out("")
    out(f"  The offline analysis of {os.path.join(opts.out_dir, FAULTY)} (warnings and errors, "
        f"--timeout {opts.timeout:g}):")
    r = Renderer(opts.color)
    for f in res.findings:
        if f.severity != "note":
            out(r.finding_line(f, standalone=True))
    try:
        where = fault_frames(res.events)
    except LookupError as exc:
        where = {}
        res.problems.append(str(exc))
    out("")
    out("  Each injected fault, flagged once on its frame:")
    for inj in FAULTS:
        hits = [f for f in res.findings if f.code == inj.code]
        ok = len(hits) == 1 and hits[0].frames == where.get(inj.label)
        frames = ", ".join(map(str, hits[0].frames)) if len(hits) == 1 else f"{len(hits)} findings"
        out(f"    {out.mark(ok)} {inj.label:<24} {inj.code:<24} frame {frames}")
        if not ok:
            res.problems.append(f"{inj.label}: expected one {inj.code} on frames {where.get(inj.label)}, got "
                                f"{[h.frames for h in hits]}")
    for code, why in CONSEQUENCES:
        hits = [f for f in res.findings if f.code == code]
        ok = len(hits) == 1 and hits[0].frames == where.get(code)
        out(f"    {out.mark(ok)} {'(and as a consequence)':<24} {code:<24} on {why}")
        if not ok:
            res.problems.append(f"expected one {code} on frames {where.get(code)}, got {[h.frames for h in hits]}")
    expected_codes = sorted([f.code for f in FAULTS] + [c for c, _ in CONSEQUENCES])
    got_codes = sorted(f.code for f in res.findings if f.severity != "note")
    if got_codes != expected_codes:
        res.problems.append(f"warning/error findings {got_codes}, expected {expected_codes}")
    if res.live != _key(res.findings):
        res.problems.append("the live view and the offline analysis disagree")
    return res


def command_hint() -> tuple[str, str]:
    """How to run vfudissect from here: ``vfudissect`` when that is on PATH and this one, else the path of this
    interpreter's script (and how to put it on PATH), else ``python -m vfudissect``."""
    import shutil
    import sys

    here = os.path.join(os.path.dirname(sys.executable), "vfudissect")
    found = shutil.which("vfudissect")
    if found and os.path.exists(here) and os.path.samefile(found, here):
        return "vfudissect", ""
    if os.path.exists(here):
        rel = os.path.relpath(here)
        shown = rel if not rel.startswith("..") else here
        venv = os.path.dirname(os.path.dirname(here))
        activate = os.path.join(os.path.relpath(venv) if not rel.startswith("..") else venv, "bin", "activate")
        return shown, f"or `. {activate}` first to have `vfudissect` on PATH"
    return f"{os.path.basename(sys.executable)} -m vfudissect", ""


def run(opts: DemoOptions, stream: TextIO | None = None) -> int:
    """Both runs; the captures go to ``opts.out_dir``. Exit status 0 when everything showed what it should."""
    out = _Out(stream or sys.stdout, opts.color)
    out("vfudissect demo: a vfio-user session recorded live by the man-in-the-middle proxy, then analyzed.")
    t0 = time.monotonic()
    os.makedirs(opts.out_dir, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="vfudemo", dir="/tmp") as work:
        for step in (run_clean, run_faulty):
            res = step(work, opts, out)
            dest = os.path.join(opts.out_dir, os.path.basename(res.capture))
            shutil.copyfile(res.capture, dest)
            res.capture = dest
            results.append(res)
    clean, faulty = results
    out.head("Captures")
    out(f"  {clean.capture:<32} {len(clean.events):>4} frames  {_summary(clean.findings)}")
    out(f"  {faulty.capture:<32} {len(faulty.events):>4} frames  "
        f"{_summary(faulty.findings)}")
    for res in results:
        agree = not any("disagree" in p for p in res.problems)
        out(f"  {out.mark(agree)} live view and offline analysis of {os.path.basename(res.capture)} agree "
            f"({len(res.live)} findings, same codes, same frames)")
    out("")
    cmd, how = command_hint()
    out("  Decode them here:" + (f" ({how})" if how else ""))
    out(f"    {cmd} read {clean.capture}")
    out(f"    {cmd} read {faulty.capture}")
    if os.path.exists(opts.plugin):
        out("  Open them in Wireshark with the vfio-user plugin:")
        out(f"    wireshark -X lua_script:{opts.plugin} {clean.capture}")
        out(f"    wireshark -X lua_script:{opts.plugin} {faulty.capture}")
        out(f"  or install the plugin once ({cmd} lua --install) and open them with plain `wireshark FILE` (not "
            "both: the installed one then wins).")
    else:  # outside a checkout: no plugins/ here to point at
        out(f"  Open them in Wireshark: install the plugin once ({cmd} lua --install), then `wireshark FILE`.")
    problems = [p for res in results for p in res.problems]
    out("")
    if problems:
        for p in problems:
            out(f"  {out.mark(False)} {p}")
        out(f"demo finished in {time.monotonic() - t0:.1f} s with {len(problems)} problem(s)")
        return 1
    out(f"demo finished in {time.monotonic() - t0:.1f} s")
    return 0
