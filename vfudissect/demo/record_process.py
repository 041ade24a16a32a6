"""`vfudissect record` as a child process: start it, know when it listens, stop it, read back its live findings."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import time
from typing import IO

_FINDING = re.compile(r"^ {8}\S (note|warning|error) ([A-Z][A-Z0-9_]*): (.*?)(?: \[frames? ([0-9, ]+)\])?$")
_LINE = re.compile(r"^ *(\d+) +-?\d+\.\d{6} #\d+ ")
_PCAPNG_HEADER = 28 + 20  # the smallest SHB and IDB: the capture is open once this much is there


class ProxyError(Exception):
    """The proxy could not be started or did not stop; carries what it said."""


class RecordProcess:
    """The real `vfudissect record` command line in a child process.

    ``stdout`` receives its live view (a file object, or None to share ours).
    Paths may be relative to ``cwd``: they are what the capture records as the socket's name.
    """

    def __init__(self, listen: str, connect: str, write: str, *, cwd: str | None = None,
                 timeout: float | None = None, snaplen: int | None = None, color: str = "never",
                 stdout: IO[bytes] | IO[str] | None = None, extra: tuple[str, ...] = ()) -> None:
        self.argv = ["record", "--listen", listen, "--connect", connect, "-w", write]
        if timeout is not None:
            self.argv += ["--timeout", f"{timeout:g}"]
        if snaplen is not None:
            self.argv += ["--snaplen", str(snaplen)]
        self.argv += list(extra)
        self.color = color
        self.cwd = cwd
        self.listen = os.path.join(cwd or "", listen)
        self.capture = os.path.join(cwd or "", write)
        self.stdout = stdout
        self.proc: subprocess.Popen[bytes] | None = None
        self._limit: tuple[int, int] | None = None

    @property
    def command(self) -> str:
        """The command line, as a user would type it (without the --color the caller chose)."""
        return "vfudissect " + " ".join(self.argv)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, wait: float = 20.0) -> "RecordProcess":
        """Start it and return once it listens (the capture file's header is written after the socket listens)."""
        try:
            os.unlink(self.capture)
        except FileNotFoundError:
            pass
        argv = [sys.executable, "-m", "vfudissect", *self.argv, "--color", self.color]
        self.proc = subprocess.Popen(argv, cwd=self.cwd,
                                     stdout=self.stdout, stderr=subprocess.STDOUT if self.stdout else None,
                                     stdin=subprocess.DEVNULL)
        end = time.monotonic() + wait
        while True:
            try:
                if os.path.getsize(self.capture) >= _PCAPNG_HEADER:
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise ProxyError(f"`{self.command}` exited with status {self.proc.returncode} before listening")
            if time.monotonic() > end:
                self.kill()
                raise ProxyError(f"`{self.command}` did not start listening within {wait:g} s")
            time.sleep(0.01)

    def stop(self, wait: float = 20.0) -> int:
        """SIGTERM (as Ctrl-C would): it finishes the capture, prints its summary and exits; its exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ProxyError(f"`{self.command}` did not stop within {wait:g} s of SIGTERM") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    # ------------------------------------------------------------ no free descriptor, on cue
    def starve_fds(self) -> None:
        """Lower the proxy's RLIMIT_NOFILE to its lowest free descriptor number: it can take no new fd, so
        fds passed to it now are dropped by the kernel (recvmsg reports MSG_CTRUNC)."""
        used = {int(n) for n in os.listdir(f"/proc/{self.pid}/fd")}
        lowest_free = next(n for n in range(len(used) + 1) if n not in used)
        self._limit = resource.prlimit(self.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(self.pid, resource.RLIMIT_NOFILE, (lowest_free, self._limit[1]))

    def feed_fds(self) -> None:
        """Give the proxy its descriptor limit back."""
        if self._limit is not None:
            resource.prlimit(self.pid, resource.RLIMIT_NOFILE, self._limit)
            self._limit = None

    def __enter__(self) -> "RecordProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.kill()


def live_findings(text: str) -> list[tuple[str, str, tuple[int, ...]]]:
    """(severity, code, frames) of every finding in a live view (or `read` listing) without colour.

    A finding line names its frames when it stands alone or involves several; otherwise it belongs to
    the message or connection line above it.
    """
    out: list[tuple[str, str, tuple[int, ...]]] = []
    last = 0
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            last = int(m.group(1))
            continue
        f = _FINDING.match(line)
        if f:
            frames = tuple(int(x) for x in f.group(4).split(",")) if f.group(4) else (last,)
            out.append((f.group(1), f.group(2), frames))
    return out
