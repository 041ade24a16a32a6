"""The emulated client: a QEMU-shaped session that really works, and answering the server's commands."""

from __future__ import annotations

import errno
import socket
import struct
import threading

import pytest

from vfudissect import spec
from vfudissect.capture.reader import open_capture
from vfudissect.core.events import MessageIn
from vfudissect.peers.client import QEMU_VERSION_JSON, TWIN_VERSION_JSON, Client, ReplyTimeout, run_session
from vfudissect.peers.faults import Fault, Faults
from vfudissect.peers.server import DeviceServer
from vfudissect.peers.wire import command, recv_message, reply, send_message
from tests.conftest import QEMU

C = spec.Command


def test_version_json_is_qemus_byte_for_byte() -> None:
    first = next(e for e in open_capture(str(QEMU)) if isinstance(e, MessageIn))
    assert first.data[20:] == QEMU_VERSION_JSON


@pytest.mark.parametrize("json_text", [QEMU_VERSION_JSON, TWIN_VERSION_JSON], ids=["main-socket", "twin-socket"])
def test_session_verifies_every_effect(device: DeviceServer, json_text: bytes) -> None:
    with Client(device.path) as c:
        rep = run_session(c, migration=True, json_text=json_text)
        assert (c.twin is not None) == (json_text == TWIN_VERSION_JSON)
    assert rep.ok, rep
    assert rep.interrupts_seen == 2 and rep.dma_served == 3
    assert rep.device_info == {"argsz": 16, "flags": 3, "num_regions": 9, "num_irqs": 5}
    assert rep.irq_counts == {0: 1, 1: 4, 2: 0, 3: 1, 4: 1}
    assert [i for i, r in rep.regions.items() if r.size] == [0, 1, 7]
    (sc,) = device.connections
    assert sc.stats.interrupts == 2 and sc.stats.errors == 0 and sc.device.resets == 1


def test_server_commands_are_answered_while_a_reply_is_awaited() -> None:
    a, b = socket.socketpair()
    b.settimeout(5)
    c = Client(sock=a, timeout=5)
    mem = c.add_memory(0x4000, 0x1000, shared=False)
    mem.mem[0:8] = b"guestRAM"

    def server() -> None:
        req = recv_message(b)  # the client's REGION_READ: answer only after two DMA commands and a stranger
        send_message(b, command(1, C.DMA_READ, struct.pack("<QQ", 0x4000, 8)))
        got.append(recv_message(b))
        send_message(b, command(2, C.DMA_WRITE, struct.pack("<QQ", 0x4010, 4) + b"DATA"))
        got.append(recv_message(b))
        send_message(b, command(3, 42, b""))
        got.append(recv_message(b))
        send_message(b, command(4, C.DMA_READ, struct.pack("<QQ", 0x9000, 8)))  # unmapped
        got.append(recv_message(b))
        send_message(b, reply(req.msg_id, C.REGION_READ, req.payload[:16] + b"\x01\x02\x03\x04"))

    got: list = []
    t = threading.Thread(target=server)
    t.start()
    assert c.region_read(0, 0, 4) == b"\x01\x02\x03\x04"
    t.join()
    dma_read, dma_write, unknown, unmapped = got
    assert dma_read.is_reply and dma_read.payload == struct.pack("<QQ", 0x4000, 8) + b"guestRAM"
    assert dma_write.is_reply and dma_write.payload == struct.pack("<QQ", 0x4010, 4)  # libvfio-user's 16 bytes
    assert mem.mem[0x10:0x14] == b"DATA"
    assert (unknown.is_error, unknown.error) == (True, errno.ENOSYS)
    assert (unmapped.is_error, unmapped.error) == (True, errno.EFAULT)
    c.close()
    b.close()


def test_a_dropped_reply_times_out_and_a_stray_one_is_kept_aside(sockdir: str) -> None:
    import os

    faults = Faults(Fault("drop", command=C.DEVICE_GET_INFO), Fault("wrong_id", command=C.DEVICE_RESET))
    with DeviceServer(os.path.join(sockdir, "f.sock"), faults=faults) as srv:
        with Client(srv.path, timeout=1.0) as c:
            c.version()
            with pytest.raises(ReplyTimeout):
                c.get_info()
            with pytest.raises(ReplyTimeout):
                c.reset()
            assert [m.msg_id for m in c.unexpected] == [(2 + 0x1000) & 0xFFFF]
            assert c.read32(0, 0) == 0x56465544  # still usable
