"""The demo's peers: the emulated client with QEMU's pipelining, and per-connection fault schedules for the server."""

from __future__ import annotations

from typing import Sequence

from ..peers.client import Client
from ..peers.faults import FaultInjector, Faults
from ..peers.wire import command


class DemoClient(Client):
    """The emulated client, plus pipelined commands that are recorded in the order they were sent."""

    def send_pipelined(self, commands: Sequence[tuple[int, bytes, tuple[int, ...]]]) -> list[int]:
        """Send several commands back to back without waiting, as QEMU pipelines its DMA_MAPs; returns the ids.

        They leave in one sendmsg, so they are all in the socket before the server can answer the first:
        the proxy reads and records them in order whatever the scheduler does.  Only the first may carry
        fds (the kernel hands a sendmsg's fds to the read that starts it: the first message).
        """
        if any(fds for _cmd, _payload, fds in commands[1:]):
            raise ValueError("only the first pipelined command may carry fds")
        ids = [self.new_id() for _ in commands]
        for mid in ids:
            self._pending.add(mid)
        data = b"".join(command(mid, cmd, payload) for mid, (cmd, payload, _fds) in zip(ids, commands))
        self.send_raw(data, commands[0][2] if commands else ())
        return ids


class PerConnection:
    """Fault schedules for a DeviceServer, one per connection in the order they arrive (then none)."""

    def __init__(self, *schedules: Faults) -> None:
        self._left = list(schedules)

    def __bool__(self) -> bool:
        return True

    def injector(self) -> FaultInjector:
        return (self._left.pop(0) if self._left else Faults()).injector()
