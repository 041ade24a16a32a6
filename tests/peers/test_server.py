"""The emulated server, spoken to directly: negotiation like libvfio-user, errnos for bad requests."""

from __future__ import annotations

import errno
import json
import os
import socket
import struct

import pytest

from vfudissect import spec
from vfudissect.peers.client import QEMU_VERSION_JSON, Client, VfuError
from vfudissect.peers.server import DeviceServer
from vfudissect.peers.wire import PeerClosed, command, pack, recv_message, send_message

C = spec.Command


def exchange(sock: socket.socket, data: bytes, fds: list[int] | tuple[int, ...] = ()) -> tuple[int, int, bytes, int]:
    """Send one command, return (flags, error, payload, number of fds) of the reply."""
    send_message(sock, data, fds)
    m = recv_message(sock)
    n = len(m.fds)
    m.close_fds()
    return m.flags, m.error, m.payload, n


@pytest.fixture
def raw(device: DeviceServer):  # type: ignore[no-untyped-def]
    s = socket.socket(socket.AF_UNIX)
    s.connect(device.path)
    s.settimeout(5)
    yield s
    s.close()


def negotiate(sock: socket.socket, minor: int = 0) -> dict:
    flags, err, payload, nfds = exchange(sock, command(0, C.VERSION, struct.pack("<HH", 0, minor) + QEMU_VERSION_JSON))
    assert flags == 1 and nfds == 0
    assert payload.endswith(b"\0")
    return {"minor": struct.unpack_from("<H", payload, 2)[0], **json.loads(payload[4:-1])}


@pytest.mark.parametrize("client_minor, expected", [(0, 0), (1, 1), (2, 2), (7, 2)])
def test_version_reply_is_libvfio_user_like(raw: socket.socket, client_minor: int, expected: int) -> None:
    got = negotiate(raw, client_minor)
    assert got == {"minor": expected, "capabilities": {"max_msg_fds": 8, "max_data_xfer_size": 1048576}}


@pytest.mark.parametrize("payload", [
    struct.pack("<HH", 1, 0),  # major 1
    struct.pack("<HH", 0, 0) + b'{"capabilities": {}}',  # no NUL
    struct.pack("<HH", 0, 0) + b"{nope\0",  # not JSON
    struct.pack("<HH", 0, 0) + b'{"capabilities": {"max_data_xfer_size": "big"}}\0',
])
def test_bad_version_is_refused_with_einval_and_the_connection_closed(raw: socket.socket, payload: bytes) -> None:
    flags, err, body, _ = exchange(raw, command(0, C.VERSION, payload))
    assert flags == 0x21 and err == errno.EINVAL and body == b""
    with pytest.raises(PeerClosed):
        recv_message(raw)


def test_commands_before_version_are_refused(raw: socket.socket) -> None:
    flags, err, _, _ = exchange(raw, command(3, C.DEVICE_GET_INFO, pack("device_info", argsz=16)))
    assert flags == 0x21 and err == errno.EINVAL


@pytest.mark.parametrize("cmd, payload, err", [
    (C.DEVICE_GET_REGION_INFO, pack("region_info", argsz=32, index=9), errno.EINVAL),
    (C.DEVICE_GET_REGION_INFO, pack("region_info", argsz=16, index=1), errno.EINVAL),
    (C.DEVICE_GET_IRQ_INFO, pack("irq_info", argsz=16, index=5), errno.EINVAL),
    (C.REGION_READ, struct.pack("<QII", 0xFFC, 0, 8), errno.EINVAL),
    (C.REGION_READ, struct.pack("<QII", 0, 99, 4), errno.EINVAL),
    (C.REGION_WRITE, struct.pack("<QII", 0, 0, 8) + b"1234", errno.EINVAL),
    (C.DEVICE_SET_IRQS, pack("irq_set", argsz=20, flags=0x24 | 0x02, index=0, count=1), errno.EINVAL),
    (C.DEVICE_SET_IRQS, pack("irq_set", argsz=20, flags=0x24, index=1, start=3, count=2), errno.EINVAL),
    (C.DMA_UNMAP, pack("dma_unmap", argsz=24, address=0x5000, size=0x1000), errno.ENOENT),
    (C.DMA_MAP, pack("dma_map", argsz=32, flags=0x10, address=0, size=0x1000), errno.EINVAL),
    (C.DEVICE_FEATURE, pack("device_feature", argsz=16, flags=spec.FEATURE_MIGRATION | spec.FEATURE_SET), errno.EINVAL),
    (C.DEVICE_FEATURE, pack("device_feature", argsz=16, flags=9 | spec.FEATURE_GET), errno.EINVAL),
    (C.DEVICE_FEATURE, pack("device_feature", argsz=16, flags=2 | spec.FEATURE_SET) + struct.pack("<II", 0, 0),
     errno.EINVAL),
    (C.MIG_DATA_READ, pack("mig_data", argsz=72, size=64), errno.EINVAL),  # not in a saving state
    (C.REGION_WRITE_MULTI, struct.pack("<Q", 0), errno.EINVAL),  # like libvfio-user: not implemented
    (99, b"", errno.EINVAL),
])
def test_bad_requests_get_error_replies_with_errnos(raw: socket.socket, cmd: int, payload: bytes, err: int) -> None:
    negotiate(raw)
    flags, got, body, nfds = exchange(raw, command(5, cmd, payload))
    assert (flags, got, body, nfds) == (0x21, err, b"", 0)
    # the connection goes on
    flags, got, body, _ = exchange(raw, command(6, C.DEVICE_GET_INFO, pack("device_info", argsz=16)))
    assert flags == 1 and struct.unpack("<IIII", body) == (16, 3, 9, 5)


def test_no_reply_commands_get_no_reply_even_on_error(raw: socket.socket) -> None:
    negotiate(raw)
    send_message(raw, command(7, C.REGION_WRITE, struct.pack("<QII", 4, 0, 4) + b"abcd", no_reply=True))
    send_message(raw, command(8, C.REGION_READ, struct.pack("<QII", 0, 99, 4), no_reply=True))
    flags, _, body, _ = exchange(raw, command(9, C.REGION_READ, struct.pack("<QII", 4, 0, 4)))
    assert flags == 1 and body[16:] == b"abcd"  # the next message read is the reply to id 9


def test_region_info_is_truncated_like_libvfio_user_until_the_caps_fit(raw: socket.socket) -> None:
    negotiate(raw)
    flags, _, body, nfds = exchange(raw, command(1, C.DEVICE_GET_REGION_INFO, pack("region_info", argsz=32, index=1)))
    argsz, rflags, _idx, cap_off, size, _off = struct.unpack_from("<IIIIQQ", body)
    assert (len(body), argsz, rflags, cap_off, size, nfds) == (32, 80, 0x7, 0, 0x10000, 0)
    flags, _, body, nfds = exchange(raw, command(2, C.DEVICE_GET_REGION_INFO, pack("region_info", argsz=80, index=1)))
    argsz, rflags, _idx, cap_off, size, _off = struct.unpack_from("<IIIIQQ", body)
    assert (len(body), argsz, rflags, cap_off, nfds) == (80, 80, 0xF, 32, 1)
    cap_id, version, nxt = spec.REGION_CAP_HEADER.unpack_from(body, 32)
    n, _ = spec.SPARSE_MMAP_HEAD.unpack_from(body, 40)
    areas = [spec.SPARSE_AREA.unpack_from(body, 48 + 16 * i) for i in range(n)]
    assert (cap_id, version, nxt, areas) == (1, 1, 0, [(0, 0x1000), (0x2000, 0xE000)])


def test_migration_state_machine_through_device_feature(device: DeviceServer) -> None:
    with Client(device.path) as c:
        c.version()
        state = lambda: spec.MIG_STATE_DATA.unpack_from(  # noqa: E731
            c.feature(spec.FEATURE_MIG_DEVICE_STATE, spec.FEATURE_GET, argsz=16), 8)[0]
        assert state() == spec.MIG_STATE_RUNNING
        for target in (spec.MIG_STATE_STOP_COPY, spec.MIG_STATE_STOP, spec.MIG_STATE_RESUMING):
            c.feature(spec.FEATURE_MIG_DEVICE_STATE, spec.FEATURE_SET, spec.MIG_STATE_DATA.pack(target, 0))
            assert state() == target
        with pytest.raises(VfuError) as e:
            c.feature(spec.FEATURE_MIG_DEVICE_STATE, spec.FEATURE_SET, spec.MIG_STATE_DATA.pack(0, 0))
        assert e.value.errno == errno.EINVAL
        probe = pack("device_feature", argsz=16, flags=spec.FEATURE_MIGRATION | spec.FEATURE_PROBE | spec.FEATURE_GET)
        assert c.request(C.DEVICE_FEATURE, probe).payload == probe  # PROBE echoes the request


def test_each_client_gets_its_own_device(device: DeviceServer) -> None:
    with Client(device.path) as a, Client(device.path) as b:
        a.version()
        b.version()
        a.write32(0, 4, 111)
        b.write32(0, 4, 222)
        assert (a.read32(0, 4), b.read32(0, 4)) == (111, 222)
    assert len(device.connections) == 2


def test_garbage_makes_the_server_hang_up_not_crash(raw: socket.socket, device: DeviceServer) -> None:
    raw.sendall(struct.pack("<HHIII", 1, 1, 5, 0, 0))
    with pytest.raises(PeerClosed):
        recv_message(raw)
    with Client(device.path) as c:  # the server goes on serving others
        assert c.version()["max_msg_fds"] == 8
    assert any("out of range" in line for sc in device.connections for line in sc.stats.log)
    assert os.path.exists(device.path)
