"""One `vfudissect record` run: socket paths, capture and live-view sinks, signals, the relay, the summary."""

from __future__ import annotations

import errno
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from ..capture.files import open_capture_fd
from ..capture.rotate import RotatingCaptureWriter
from ..capture.writer import CaptureWriter
from .listener import (Intercept, PathError, ServerStatus, intercept, listen_at, same_file,
                       server_status)
from .recorder import LiveView, Recorder
from .relay import Relay, RelayConfig
from .sinks import BufferedSink, ThreadSink, open_sink


@dataclass
class ProxyOptions:
    write: str  # capture path, "-" for stdout
    listen: str | None = None
    connect: str | None = None
    intercept: str | None = None
    mode: int = 0o600
    snaplen: int | None = None
    rotate_size: int | None = None  # bytes per file of a rotated capture (None: one file)
    quiet: bool = False
    color: bool = False
    timeout: float = 5.0
    relay: RelayConfig = field(default_factory=RelayConfig)
    comment: str = ""
    summary: bool = True
    group_read: bool = False  # captures 0640 instead of 0600
    wait_server: float | None = None  # seconds to wait for a missing / not yet listening server (0: for ever)


WAIT_POLL = 0.05  # seconds between two looks at a server socket being waited for


class Stopped(Exception):
    """A stop (signal, stop()) came while setup() waited for the server: nothing was set up."""


class ProxySession:
    """Sets up paths and sinks; ``run()`` relays until stop() / SIGTERM / SIGINT, then cleans up everything."""

    def __init__(self, opts: ProxyOptions, *, stdout_fd: int = 1, stderr_fd: int = 2,
                 error: Callable[[str], None] | None = None) -> None:
        self.opts = opts
        self._stdout, self._stderr = stdout_fd, stderr_fd
        self.error = error or self._default_error
        self.relay: Relay | None = None
        self.recorder: Recorder | None = None
        self.intercepted: Intercept | None = None
        self.listen_path = ""
        self._ready = threading.Event()
        self._stop_requested = False
        self._old_handlers: dict[int, object] = {}

    def _default_error(self, text: str) -> None:
        try:
            os.write(self._stderr, f"vfudissect: error: {text}\n".encode("utf-8", "replace"))
        except OSError:
            pass

    def setup(self) -> None:
        """Paths first (so a refusal leaves nothing behind), then the capture file. Raises PathError, or Stopped
        when stop() comes while waiting for the server (--wait-server)."""
        o = self.opts
        if o.intercept:
            if o.listen or o.connect:
                raise PathError("--intercept replaces --listen/--connect; give one or the other")
            if o.wait_server is not None:
                raise PathError("--wait-server goes with --connect: --intercept takes over a server that is "
                                "already listening")
            self.intercepted = intercept(o.intercept, None if o.mode == 0o600 else o.mode)
            listener, target, self.listen_path = self.intercepted.listener, self.intercepted.moved, o.intercept
            label = o.intercept
        else:
            if not (o.listen and o.connect):
                raise PathError("need --listen PATH and --connect PATH (or --intercept PATH)")
            if same_file(o.listen, o.connect) or os.path.abspath(o.listen) == os.path.abspath(o.connect):
                raise PathError(f"--listen and --connect are the same file ({o.listen}): use --intercept to "
                                "sit in front of a server's own socket")
            waiting = self._server_or_wait(o.connect)
            listener, target, self.listen_path = listen_at(o.listen, o.mode), o.connect, o.listen
            label = o.connect
            if waiting is not None:
                try:
                    self._wait_server(o.connect, waiting)
                except (PathError, Stopped):
                    listener.close()
                    self._release_paths()
                    raise
        try:
            if o.rotate_size is not None and o.write == "-":
                raise PathError("--rotate-size needs a capture file, not - (stdout)")
            cap_sink = None if o.rotate_size is not None else self._capture_sink()
            rotating = None if o.rotate_size is None else RotatingCaptureWriter(
                o.write, o.rotate_size, self._part_sink, comment=o.comment, if_name=f"vfio-user:{label}",
                snaplen=o.snaplen, on_rotate=self._rotated, error=self.error, judged=o.timeout)
        except PathError:
            listener.close()
            self._release_paths()
            raise
        live_fd = self._stderr if o.write == "-" else self._stdout
        live_sink = open_sink(live_fd, drop=True, close_fd=False, name="live")
        self._live_sink = live_sink
        live = LiveView(live_sink, o.color, o.quiet)
        out: BufferedSink | RotatingCaptureWriter
        if rotating is not None:
            writer = out = rotating
            live.renderer.frame = rotating.label  # frames as the part files number them
        else:
            out = BufferedSink(cap_sink)  # type: ignore[arg-type]
            writer = CaptureWriter(out, comment=o.comment, if_name=f"vfio-user:{label}",  # type: ignore[arg-type]
                                   snaplen=o.snaplen, flush=False, judged=o.timeout)
            out.commit()  # the file header right away: a reader (Wireshark on a pipe) can start
        self._cap_sink = out
        self.recorder = Recorder(writer, live, o.timeout, commit=out.commit,  # type: ignore[arg-type]
                                 capture_error=lambda: (out.error or "write error") if out.broken else "")
        self.relay = Relay(listener, target, self.recorder, o.relay, socket_label=label, error=self.error)

    def _server_or_wait(self, path: str) -> ServerStatus | None:
        """None when the server socket is usable; its status when it is not yet and --wait-server allows waiting
        (after checking what would be refused after the wait); PathError, one line, otherwise."""
        st = server_status(path)
        if st.ok:
            return None
        if not st.waitable:
            raise PathError(st.why)
        if self.opts.wait_server is None:
            raise PathError(f"{st.why}; start the server first, or give --wait-server [SECONDS] to wait for it")
        if self.opts.write != "-" and not os.path.isdir(os.path.dirname(os.path.abspath(self.opts.write))):
            raise PathError(f"cannot write the capture {self.opts.write}: {os.strerror(errno.ENOENT)}")
        return st

    def _wait_server(self, path: str, st: ServerStatus) -> None:
        """Wait (--wait-server seconds, 0: for ever) until the server socket is usable; the proxy's socket is already
        listening, so a client that connects meanwhile waits in its backlog and is served once the server is there.
        PathError when the time is up or the path turns unusable, Stopped on stop()."""
        wait = self.opts.wait_server
        assert wait is not None
        # a status line, shown with -q too: -q drops the per-message lines, not what the proxy is doing
        limit = "for ever" if wait == 0 else f"up to {wait:g} s"
        self._say(f"waiting for the server socket {path} ({st.short}; {limit}) ...\n")
        end = None if wait == 0 else time.monotonic() + wait
        while not st.ok:
            if not st.waitable:
                raise PathError(st.why)
            if self._stop_requested:
                raise Stopped()
            if end is not None and time.monotonic() >= end:
                raise PathError(f"{st.why}; waited {wait:g} s (--wait-server)")
            time.sleep(WAIT_POLL)
            st = server_status(path)

    def _say(self, text: str) -> None:
        """A line on the live view's stream before the live view exists."""
        try:
            os.write(self._stderr if self.opts.write == "-" else self._stdout, text.encode("utf-8", "replace"))
        except OSError:
            pass

    def _capture_sink(self):  # type: ignore[no-untyped-def]
        if self.opts.write == "-":
            return ThreadSink(self._stdout, drop=False, close_fd=False, name="capture")
        return self._file_sink(self.opts.write)

    def _file_sink(self, path: str):  # type: ignore[no-untyped-def]
        """A capture file, created 0600 (0640 with group_read) or truncated and never widened (PathError, in one
        line, when it cannot be): it holds guest memory and the peers' credentials."""
        try:
            fd = open_capture_fd(path, self.opts.group_read)
        except OSError as exc:
            raise PathError(f"cannot write the capture {path}: {exc.strerror or exc}") from None
        return open_sink(fd, close_fd=True, name="capture")

    def _part_sink(self, path: str) -> BufferedSink:
        """A file of a rotated capture."""
        return BufferedSink(self._file_sink(path))

    def _rotated(self, path: str, context: int) -> None:
        if self.recorder is not None and self.recorder.live is not None:  # a status line: -q shows it too
            self.recorder.live.text(f"── the capture continues in {path} (its frames start at 1; "
                                    f"{context} records of connection state first)\n")

    def _release_paths(self) -> None:
        if self.intercepted is not None:
            self.intercepted.restore()
        elif self.listen_path:
            try:
                os.unlink(self.listen_path)
            except OSError:
                pass

    def wait_ready(self, timeout: float = 5.0) -> bool:
        return self._ready.wait(timeout)

    def stop(self) -> None:
        self._stop_requested = True
        if self.relay is not None:
            self.relay.stop()

    def install_signals(self) -> None:
        """SIGTERM / SIGINT / SIGHUP stop the session (call before setup(): a signal that comes while the
        paths are being set up must still lead to their restoration)."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                self._old_handlers[sig] = signal.signal(sig, lambda *_: self.stop())

    def run(self, install_signals: bool = True) -> int:
        """Relay until stopped; always restores the paths and closes the capture. Returns the exit status."""
        assert self.relay is not None and self.recorder is not None
        if install_signals and not self._old_handlers:
            self.install_signals()
        if self._stop_requested:
            self.relay.stop()
        self._ready.set()
        try:
            self.relay.run()
        finally:
            self._release_paths()
            assert self.recorder.writer is not None
            self.recorder.writer.close()
            if self.opts.summary:
                self.recorder.live.text("\n" + self.recorder.summary(self.opts.color) + "\n")  # type: ignore[union-attr]
                sinfo = self._cap_sink
                if getattr(sinfo, "broken", False):
                    why = getattr(sinfo, "error", "") or "closed pipe?"
                    self.error(f"the capture output broke off ({why}); the capture is incomplete")
            self._live_sink.close()
            for sig, handler in self._old_handlers.items():
                signal.signal(sig, handler)  # type: ignore[arg-type]
            self._old_handlers.clear()
        return 0


def run_proxy(opts: ProxyOptions) -> int:
    """`vfudissect record`: exit 0 after a clean stop, 2 when a path, permission or peer is unusable."""
    s = ProxySession(opts)
    s.install_signals()
    try:
        s.setup()
    except PathError as exc:
        s.error(str(exc))
        return 2
    except Stopped:
        s._say("stopped before the server socket was there: nothing recorded\n")
        return 0
    # what the proxy listens on and writes to: a status line, shown with -q too (as tshark -q does)
    where = "the capture on stdout" if opts.write == "-" else opts.write
    if s.intercepted is not None:
        head = (f"intercepting {s.intercepted.path} (server socket linked at {s.intercepted.moved} until "
                "exit)")
    else:
        head = f"listening on {opts.listen}, each client forwarded to {opts.connect}"
    s.recorder.live.text(f"{head}; recording to {where}; Ctrl-C to stop\n")  # type: ignore[union-attr]
    return s.run()


__all__ = ["PathError", "ProxyOptions", "ProxySession", "Stopped", "run_proxy"]
