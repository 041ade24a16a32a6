"""The recording proxy (`vfudissect record`'s ProxySession) in a thread of this process, for the proxy and e2e tests."""

from __future__ import annotations

import os
import threading
import time

from vfudissect.capture.reader import read_events
from vfudissect.core.events import Event
from vfudissect.proxy.relay import RelayConfig
from vfudissect.proxy.session import ProxyOptions, ProxySession


class Proxy:
    """`vfudissect record` in a thread of this process (busy-poll off: it would starve our own threads)."""

    def __init__(self, sockdir: str, connect: str | None = None, *, intercept: str | None = None,
                 stall: float = 0.3, timeout: float = 5.0, snaplen: int | None = None, quiet: bool = False,
                 busy_poll: float = 0.0, rotate_size: int | None = None, faults: tuple = (), watch_irqs: bool = False) -> None:
        self.listen = None if intercept else os.path.join(sockdir, "proxy.sock")
        self.capture = os.path.join(sockdir, "capture.pcapng")
        self.live_path = os.path.join(sockdir, "live.txt")
        self._live_fd = os.open(self.live_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.errors: list[str] = []
        opts = ProxyOptions(write=self.capture, listen=self.listen, connect=connect, intercept=intercept,
                            timeout=timeout, snaplen=snaplen, quiet=quiet, rotate_size=rotate_size,
                            relay=RelayConfig(stall_timeout=stall, busy_poll=busy_poll, faults=faults,
                                              watch_irqs=watch_irqs))
        self.session = ProxySession(opts, stdout_fd=self._live_fd, stderr_fd=self._live_fd, error=self.errors.append)
        self.session.setup()
        self.path = self.listen or intercept
        self._thread = threading.Thread(target=self.session.run, kwargs={"install_signals": False}, daemon=True)
        self._thread.start()
        assert self.session.wait_ready(), "proxy never became ready"
        self.stopped = False

    @property
    def relay(self):  # type: ignore[no-untyped-def]
        return self.session.relay

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.session.stop()
            self._thread.join(timeout=20)
            assert not self._thread.is_alive(), "proxy did not stop"
            os.close(self._live_fd)

    def events(self) -> list[Event]:
        self.stop()
        with open(self.capture, "rb") as f:
            return list(read_events(f))

    def live(self) -> str:
        self.stop()
        with open(self.live_path, encoding="utf-8") as f:
            return f.read()

    def wait_messages(self, n: int, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while self.relay.messages < n:
            assert time.monotonic() < end, f"proxy saw {self.relay.messages} messages, expected {n}"
            time.sleep(0.005)
