"""The demo's peers: pipelined commands leave together with the fd on the first, fault schedules go per connection."""

from __future__ import annotations

import os
import socket
import struct

import pytest

from vfudissect import spec
from vfudissect.demo.peers import DemoClient, PerConnection
from vfudissect.peers.client import QEMU_VERSION_JSON
from vfudissect.peers.faults import Fault, Faults
from vfudissect.peers.server import DeviceServer
from vfudissect.peers.wire import pack, recv_message

C = spec.Command


def test_pipelined_commands_arrive_back_to_back_with_the_fd_on_the_first() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    memfd = os.memfd_create("t", os.MFD_CLOEXEC)
    try:
        c = DemoClient(sock=a)
        ids = c.send_pipelined([(C.DMA_MAP, pack("dma_map", argsz=32, flags=3, size=4096), (memfd,)),
                                (C.DMA_MAP, pack("dma_map", argsz=32, flags=1, address=8192, size=4096), ())])
        b.settimeout(5)
        first, second = recv_message(b), recv_message(b)
        assert [first.msg_id, second.msg_id] == ids == [0, 1]
        assert len(first.fds) == 1 and second.fds == []
        assert os.fstat(first.fds[0]).st_ino == os.fstat(memfd).st_ino
        first.close_fds()
        with pytest.raises(ValueError, match="only the first"):
            c.send_pipelined([(C.DEVICE_RESET, b"", ()), (C.DMA_MAP, b"", (memfd,))])
    finally:
        os.close(memfd)
        a.close()
        b.close()


def test_fault_schedules_go_to_connections_in_the_order_they_arrive(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = Faults(Fault("bad_version", command=C.VERSION, kind="reply"))
    srv = DeviceServer(os.path.join(tmp_path, "d.sock"), faults=PerConnection(bad)).start()  # type: ignore[arg-type]
    try:
        majors = []
        for _ in range(3):
            with DemoClient(srv.path, timeout=5) as c:
                m = c.request(C.VERSION, struct.pack("<HH", 0, 0) + QEMU_VERSION_JSON)
                majors.append(struct.unpack_from("<H", m.payload)[0])
        assert majors == [1, 0, 0]
    finally:
        srv.stop()
