"""End-to-end rig: the recording proxy in this process or as `vfudissect record`, scripted peers, `read --json`."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass


from vfudissect import cli
from vfudissect.capture.reader import read_events
from vfudissect.core.events import Event
from vfudissect.demo.record_process import RecordProcess, live_findings
from vfudissect.demo.scripted import Scenario, findings_key, model, play
from vfudissect.proxy.relay import RelayConfig
from tests.proxy_harness import Proxy

Key = list[tuple[str, tuple[int, ...]]]


def read_key(capture: str, timeout: float) -> Key:
    """(code, frames) of every finding `vfudissect read --json` prints for the capture, sorted."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = cli.main(["read", "--json", "--timeout", f"{timeout:g}", "--no-progress", capture])
    assert status in (0, 1), f"read exited {status}"
    return _json_key(out.getvalue())


def read_key_subprocess(capture: str, timeout: float) -> Key:
    """The same through the installed command line, in its own process."""
    r = subprocess.run([sys.executable, "-m", "vfudissect", "read", "--json", "--timeout", f"{timeout:g}", capture],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode in (0, 1), r.stderr
    return _json_key(r.stdout)


def _json_key(text: str) -> Key:
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return sorted((r["finding"], tuple(r["frames"])) for r in rows if "finding" in r)


def capture_shape(capture: str) -> list[tuple[str, str | None, int]]:
    """(event type, direction, frame) of every record read back from a capture."""
    with open(capture, "rb") as f:
        return [_shape(ev) for ev in read_events(f)]


def _shape(ev: Event) -> tuple[str, str | None, int]:
    return type(ev).__name__, getattr(ev, "dir", None), getattr(ev, "frame", 0)


def model_shape(scn: Scenario) -> list[tuple[str, str | None, int]]:
    """(event type, direction, frame) of every record the model says the proxy writes for ``scn``."""
    return [_shape(r.event) for r in model(scn)]


@dataclass
class Outcome:
    """What the proxy said live, what `read` says on its capture, and the capture's records."""

    live: Key
    read: Key
    shape: list[tuple[str, str | None, int]]
    capture: str


def listening(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(8)
    return s


def run_in_process(scn: Scenario, workdir: str) -> Outcome:
    """``scn`` through the proxy running in this process."""
    listener = listening(os.path.join(workdir, "dev.sock"))
    px = Proxy(workdir, os.path.join(workdir, "dev.sock"), stall=RelayConfig().stall_timeout, timeout=scn.timeout,
               snaplen=scn.snaplen)
    try:
        play(scn, px.path, listener)
    finally:
        px.stop()
        listener.close()
    assert px.errors == []
    assert px.session.recorder is not None
    return Outcome(findings_key(px.session.recorder.findings), read_key(px.capture, scn.timeout), capture_shape(px.capture), px.capture)


def run_as_process(scn: Scenario, workdir: str) -> Outcome:
    """``scn`` through `vfudissect record` in its own process (needed to starve it of fds); live view parsed."""
    listener = listening(os.path.join(workdir, "dev.sock"))
    with open(os.path.join(workdir, "live.txt"), "wb") as live:
        rp = RecordProcess("proxy.sock", "dev.sock", "capture.pcapng", cwd=workdir, timeout=scn.timeout,
                           snaplen=scn.snaplen, stdout=live)
        try:
            rp.start()
            play(scn, rp.listen, listener, starver=rp)
            assert rp.stop() == 0
        finally:
            rp.kill()
            listener.close()
    with open(os.path.join(workdir, "live.txt"), encoding="utf-8") as f:
        text = f.read()
    live_key = sorted((code, frames) for _sev, code, frames in live_findings(text))
    return Outcome(live_key, read_key_subprocess(rp.capture, scn.timeout), capture_shape(rp.capture), rp.capture)
