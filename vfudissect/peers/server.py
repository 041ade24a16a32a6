"""The emulated vfio-user server: a fake PCI device on an AF_UNIX socket, one thread per client.

Negotiates like libvfio-user (reply major 0, minor min(client, 2), its
capability JSON with a terminating NUL, a twin socket when asked), answers
every command of the protocol with replies or errnos, and, when the client
rings BAR0's doorbell, raises interrupts through the client's eventfds and
moves data with server-initiated DMA_READ / DMA_WRITE messages (or through
the mmapped memfd).  Faults from ``faults.py`` apply to everything it sends.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import socket
import struct
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import spec
from .device import (
    DB_DMA_FROM_DEVICE, DB_DMA_TO_DEVICE, DB_FORCE_MESSAGES, DB_IRQ, IRQ_COUNTS, REG_DMA_ADDR,
    REG_DMA_LEN, REG_DMA_OFF, REG_IRQ_SEL, REG_STATUS, Device, DeviceConfig, DeviceError,
)
from .faults import FaultInjector, Faults, deliver
from .wire import (
    STRUCTS, Message, PeerClosed, ProtocolError, caps_json, close_fds, command, error_reply, pack,
    recv_message, reply, unpack,
)

C = spec.Command
_ACCESS = STRUCTS["region_access"]
_DMA_ACCESS = STRUCTS["dma_access"]
_HDR = spec.HEADER
_dma_ids = itertools.count(1)  # like libvfio-user: one process-global counter for server DMA ids
_dma_ids_lock = threading.Lock()


def _next_dma_id() -> int:
    with _dma_ids_lock:
        return next(_dma_ids) & 0xFFFF


class _Reply(Exception):
    """Stop handling and send this reply now (used for the negotiation outcome)."""


@dataclass
class ConnStats:
    """What happened on one connection, for tests and the `serve` log."""

    requests: int = 0
    errors: int = 0
    dma_messages: int = 0
    interrupts: int = 0
    log: list[str] = field(default_factory=list)


class ServerConnection:
    """One client: its own device, negotiation state, twin socket and fault counters."""

    def __init__(self, sock: socket.socket, config: DeviceConfig, faults: FaultInjector,
                 log: Callable[[str], None] | None = None) -> None:
        self.sock = sock
        self.config = config
        self.faults = faults
        self.device = Device(config)
        self.stats = ConnStats()
        self._log = log
        self.negotiated = False
        self.client_max_xfer = spec.DEFAULT_MAX_DATA_XFER_SIZE
        self.client_max_fds = spec.DEFAULT_MAX_MSG_FDS
        self.twin: socket.socket | None = None
        self._deferred: deque[Message] = deque()
        self._alive = True
        self._max_in = config.max_data_xfer_size + spec.HEADER_SIZE + 16

    def log(self, text: str) -> None:
        self.stats.log.append(text)
        if self._log is not None:
            self._log(text)

    # ------------------------------------------------------------ main loop
    def run(self) -> None:
        self.log("client connected")
        try:
            while self._alive:
                msg = self._deferred.popleft() if self._deferred else recv_message(self.sock, self._max_in)
                try:
                    self._dispatch(msg)
                finally:
                    msg.close_fds()
        except PeerClosed:
            pass
        except ProtocolError as exc:
            self.log(f"closing: {exc}")
        except OSError as exc:
            if self._alive:
                self.log(f"closing: {exc.strerror or exc}")
        finally:
            self.close()
            self.log(f"client gone after {self.stats.requests} requests ({self.stats.errors} refused)")

    def close(self) -> None:
        self._alive = False
        for s in (self.sock, self.twin):
            if s is not None:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
        self.twin = None
        self.device.close()
        for m in self._deferred:
            m.close_fds()
        self._deferred.clear()

    def _send(self, data: bytes, fds: tuple[int, ...] = (), sock: socket.socket | None = None) -> None:
        if not deliver(sock or self.sock, self.faults.outgoing(data, fds)):
            self._alive = False

    def _dispatch(self, msg: Message) -> None:
        if msg.is_reply:
            self.log(f"unexpected reply {spec.command_name(msg.command)} id={msg.msg_id}: ignored")
            return
        self.stats.requests += 1
        cmd = msg.command
        fds_out: tuple[int, ...] = ()
        close_after: list[int] = []
        try:
            if not self.negotiated and cmd != C.VERSION:
                self._alive = False
                raise DeviceError(errno.EINVAL, f"{spec.command_name(cmd)} before VERSION")
            handler = _HANDLERS.get(cmd)
            if handler is None:
                raise DeviceError(errno.EINVAL, f"unsupported command {cmd}")
            result = handler(self, msg)
            if isinstance(result, tuple):
                payload, fds_out = result
                close_after = [fd for fd in fds_out]
            else:
                payload = result
            out = reply(msg.msg_id, cmd, payload)
        except DeviceError as exc:
            self.stats.errors += 1
            self.log(f"{spec.command_name(cmd)} id={msg.msg_id}: {spec.errno_name(exc.errno)}: {exc}")
            out = error_reply(msg.msg_id, cmd, exc.errno)
            fds_out = ()
        if msg.no_reply:
            close_fds(close_after)
            return
        try:
            self._send(out, fds_out)
        finally:
            close_fds(close_after)

    # ------------------------------------------------------------ handlers
    def h_version(self, msg: Message) -> tuple[bytes, tuple[int, ...]] | bytes:
        if self.negotiated:
            raise DeviceError(errno.EINVAL, "VERSION after negotiation")
        p = msg.payload
        v = unpack("version", p)
        caps: Any = None
        text = p[4:]
        if text:
            if text[-1:] != b"\0":
                self._alive = False
                raise DeviceError(errno.EINVAL, "version data is not NUL-terminated")
            try:
                caps = json.loads(text[:-1].decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError):
                self._alive = False
                raise DeviceError(errno.EINVAL, "version data is not valid JSON") from None
        if v["major"] != 0:
            self._alive = False
            raise DeviceError(errno.EINVAL, f"unsupported major version {v['major']}")
        want_twin = False
        if isinstance(caps, dict) and isinstance(caps.get("capabilities"), dict):
            c = caps["capabilities"]
            for key, attr in (("max_msg_fds", "client_max_fds"), ("max_data_xfer_size", "client_max_xfer")):
                if key in c:
                    if not isinstance(c[key], int) or isinstance(c[key], bool) or c[key] < 0:
                        self._alive = False
                        raise DeviceError(errno.EINVAL, f"bad {key} {c[key]!r}")
                    setattr(self, attr, c[key])
            tw = c.get("twin_socket")
            want_twin = isinstance(tw, dict) and tw.get("supported") is True
        out: dict[str, Any] = {"max_msg_fds": self.config.max_msg_fds,
                               "max_data_xfer_size": self.config.max_data_xfer_size}
        fds: tuple[int, ...] = ()
        if want_twin and self.config.offer_twin_socket and self.client_max_fds > 0:
            mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            self.twin = mine
            out["twin_socket"] = {"supported": True, "fd_index": 0}
            fds = (theirs.detach(),)
        self.negotiated = True
        minor = min(v["minor"], self.config.max_minor)
        return STRUCTS["version"].pack(0, minor) + caps_json({"capabilities": out}), fds

    def h_dma_map(self, msg: Message) -> bytes:
        f = unpack("dma_map", msg.payload)
        if f["argsz"] < 32:
            raise DeviceError(errno.EINVAL, f"argsz {f['argsz']} < 32")
        if f["flags"] & ~spec.DMA_MAP_FLAGS_SPEC:
            raise DeviceError(errno.EINVAL, f"DMA_MAP flags {f['flags']:#x}")
        fd = msg.fds[0] if msg.fds else None
        self.device.add_dma(f["address"], f["size"], f["flags"], f["offset"], fd)
        return b""

    def h_dma_unmap(self, msg: Message) -> bytes:
        f = unpack("dma_unmap", msg.payload)
        if f["argsz"] < 24:
            raise DeviceError(errno.EINVAL, f"argsz {f['argsz']} < 24")
        if f["flags"] not in (0, 2):
            raise DeviceError(errno.ENOTSUP if f["flags"] == 1 else errno.EINVAL, f"flags {f['flags']:#x}")
        if f["flags"] == 2 and (f["address"] or f["size"]):
            raise DeviceError(errno.EINVAL, "UNMAP_ALL with an address or size")
        self.device.remove_dma(f["address"], f["size"], all_=f["flags"] == 2)
        return pack("dma_unmap", argsz=24, flags=f["flags"], address=f["address"], size=f["size"])

    def h_get_info(self, msg: Message) -> bytes:
        f = unpack("device_info", msg.payload)
        if f["argsz"] < 16:
            raise DeviceError(errno.EINVAL, f"argsz {f['argsz']} < 16")
        return pack("device_info", argsz=16, flags=0x3, num_regions=spec.PCI_NUM_REGIONS,
                    num_irqs=len(IRQ_COUNTS))

    def h_region_info(self, msg: Message) -> tuple[bytes, tuple[int, ...]] | bytes:
        f = unpack("region_info", msg.payload)
        idx = f["index"]
        if f["argsz"] < 32 or idx >= spec.PCI_NUM_REGIONS:
            raise DeviceError(errno.EINVAL, f"argsz {f['argsz']} index {idx}")
        d = self.device
        flags, size = d.region_flags(idx), d.region_size(idx)
        areas = d.sparse_areas(idx)
        caps = b""
        if areas:
            caps = (spec.REGION_CAP_HEADER.pack(spec.REGION_CAP_SPARSE_MMAP, 1, 0)
                    + spec.SPARSE_MMAP_HEAD.pack(len(areas), 0)
                    + b"".join(spec.SPARSE_AREA.pack(o, s) for o, s in areas))
        full = 32 + len(caps)
        if caps and f["argsz"] >= full:
            body = pack("region_info", argsz=full, flags=flags | spec.REGION_FLAG_CAPS, index=idx, cap_offset=32,
                        size=size, offset=0) + caps
            return body, (os.dup(d.bar1_fd),)
        # caps do not fit: like libvfio-user, MMAP stays set, no CAPS, no fd; the client retries
        return pack("region_info", argsz=full, flags=flags, index=idx, size=size)

    def h_region_io_fds(self, msg: Message) -> bytes:
        f = unpack("region_io_fds", msg.payload)
        if f["flags"] or f["count"] or f["index"] >= spec.PCI_NUM_REGIONS or f["argsz"] < 16:
            raise DeviceError(errno.EINVAL, "bad GET_REGION_IO_FDS request")
        if not self.device.region_flags(f["index"]):
            raise DeviceError(errno.EINVAL, f"region {f['index']} does not exist")
        return pack("region_io_fds", argsz=16, index=f["index"])

    def h_irq_info(self, msg: Message) -> bytes:
        f = unpack("irq_info", msg.payload)
        if f["argsz"] < 16 or f["index"] not in IRQ_COUNTS:
            raise DeviceError(errno.EINVAL, f"argsz {f['argsz']} index {f['index']}")
        idx = f["index"]
        flags = 0x1 | (0x2 | 0x4 if idx == 0 else 0)  # EVENTFD; INTx also MASKABLE|AUTOMASKED
        return pack("irq_info", argsz=16, flags=flags, index=idx, count=IRQ_COUNTS[idx])

    def h_set_irqs(self, msg: Message) -> bytes:
        p = msg.payload
        f = unpack("irq_set", p)
        flags, idx, start, count = f["flags"], f["index"], f["start"], f["count"]
        data_bits, action_bits = flags & spec.IRQ_SET_DATA_MASK, flags & spec.IRQ_SET_ACTION_MASK
        bad = (f["argsz"] < 20 or idx not in IRQ_COUNTS or bin(data_bits).count("1") != 1
               or bin(action_bits).count("1") != 1 or flags & ~0x3F)
        if bad:
            raise DeviceError(errno.EINVAL, f"SET_IRQS flags {flags:#x} index {idx}")
        n = IRQ_COUNTS[idx]
        if count == 0:
            if start or flags != (spec.IRQ_SET_DATA_NONE | spec.IRQ_SET_ACTION_TRIGGER):
                raise DeviceError(errno.EINVAL, "count 0 needs start 0 and DATA_NONE|ACTION_TRIGGER")
            self.device.disable_irqs(idx)
            return b""
        if start >= n or start + count > n or (idx >= 3 and (action_bits != spec.IRQ_SET_ACTION_TRIGGER or count > 1)):
            raise DeviceError(errno.EINVAL, f"SET_IRQS range {start}+{count} of {n}")
        if data_bits == spec.IRQ_SET_DATA_BOOL and len(p) != 20 + count:
            raise DeviceError(errno.EINVAL, "DATA_BOOL payload length")
        if msg.fds and data_bits != spec.IRQ_SET_DATA_EVENTFD:
            raise DeviceError(errno.EINVAL, "fds without DATA_EVENTFD")
        keys = [(idx, start + i) for i in range(count)]
        if data_bits == spec.IRQ_SET_DATA_EVENTFD:
            if msg.fds and len(msg.fds) != count:
                raise DeviceError(errno.EINVAL, f"{len(msg.fds)} fds for count {count}")
            if action_bits != spec.IRQ_SET_ACTION_TRIGGER:
                raise DeviceError(errno.EINVAL, "eventfds only with ACTION_TRIGGER")
            for i, key in enumerate(keys):
                fd = msg.fds[i] if msg.fds else None
                self.device.set_irq_fd(key, None if fd is None else os.dup(fd))
            return b""
        fire = [True] * count if data_bits == spec.IRQ_SET_DATA_NONE else [bool(b) for b in p[20:20 + count]]
        for key, on in zip(keys, fire):
            if not on:
                continue
            if action_bits == spec.IRQ_SET_ACTION_MASK_BIT:
                self.device.irq_masked.add(key)
            elif action_bits == spec.IRQ_SET_ACTION_UNMASK:
                self.device.irq_masked.discard(key)
            else:
                self.device.raise_irq(0 if key[0] == 0 else key[1] + 1)
        return b""

    def h_region_read(self, msg: Message) -> bytes:
        p = msg.payload
        if len(p) < 16:
            raise DeviceError(errno.EINVAL, "REGION_READ payload < 16")
        offset, region, count = _ACCESS.unpack_from(p)
        if count == 0:
            return b""
        if count > self.config.max_data_xfer_size:
            raise DeviceError(errno.EINVAL, f"count {count} above max_data_xfer_size")
        return p[:16] + self.device.read(region, offset, count)

    def h_region_write(self, msg: Message) -> bytes:
        p = msg.payload
        if len(p) < 16:
            raise DeviceError(errno.EINVAL, "REGION_WRITE payload < 16")
        offset, region, count = _ACCESS.unpack_from(p)
        if count == 0:
            return b""
        if count > self.config.max_data_xfer_size or len(p) != 16 + count:
            raise DeviceError(errno.EINVAL, f"REGION_WRITE count {count} with {len(p) - 16} data bytes")
        bell = self.device.write(region, offset, p[16:])
        if bell > 0:
            self._doorbell(bell)
        return p[:16]

    def h_reset(self, msg: Message) -> bytes:
        self.device.reset()
        return b""

    def h_feature(self, msg: Message) -> bytes:
        p = msg.payload
        f = unpack("device_feature", p)
        feature, ops = f["flags"] & spec.FEATURE_MASK, f["flags"] & ~spec.FEATURE_MASK
        get, set_, probe = ops & spec.FEATURE_GET, ops & spec.FEATURE_SET, ops & spec.FEATURE_PROBE
        if not ops or ops & ~(spec.FEATURE_GET | spec.FEATURE_SET | spec.FEATURE_PROBE) or (get and set_ and not probe):
            raise DeviceError(errno.EINVAL, f"feature op bits {ops:#x}")
        supported = {spec.FEATURE_MIGRATION: spec.FEATURE_GET | spec.FEATURE_PROBE,
                     spec.FEATURE_MIG_DEVICE_STATE: spec.FEATURE_GET | spec.FEATURE_SET | spec.FEATURE_PROBE}
        if feature not in supported or (ops & ~spec.FEATURE_PROBE) & ~supported[feature]:
            raise DeviceError(errno.EINVAL, f"feature {feature} ops {ops:#x} not supported")
        if probe:
            return p
        if feature == spec.FEATURE_MIGRATION:
            if f["argsz"] < 16:
                raise DeviceError(errno.EINVAL, "argsz < 16")
            return pack("device_feature", argsz=16, flags=f["flags"]) + struct.pack("<Q", 0x1 | 0x4)
        if get:
            if f["argsz"] < 16:
                raise DeviceError(errno.EINVAL, "argsz < 16")
            return pack("device_feature", argsz=16, flags=f["flags"]) + spec.MIG_STATE_DATA.pack(
                self.device.mig_state, 0)
        if len(p) < 16:
            raise DeviceError(errno.EINVAL, "MIG_DEVICE_STATE SET without a state")
        self.device.set_mig_state(spec.MIG_STATE_DATA.unpack_from(p, 8)[0])
        return p

    def h_mig_read(self, msg: Message) -> bytes:
        f = unpack("mig_data", msg.payload)
        if f["size"] > self.client_max_xfer or f["argsz"] < 8 + f["size"]:
            raise DeviceError(errno.EINVAL, f"MIG_DATA_READ size {f['size']} argsz {f['argsz']}")
        data = self.device.mig_read(f["size"])
        return pack("mig_data", argsz=8 + len(data), size=len(data)) + data

    def h_mig_write(self, msg: Message) -> bytes:
        p = msg.payload
        f = unpack("mig_data", p)
        if len(p) < 8 + f["size"] or f["argsz"] < 8 + f["size"]:
            raise DeviceError(errno.EINVAL, "MIG_DATA_WRITE size/argsz")
        self.device.mig_write(p[8:8 + f["size"]])
        return b""

    # ------------------------------------------------------------ doorbell: interrupts and DMA
    def _doorbell(self, bell: int) -> None:
        d = self.device
        status = 0
        try:
            if bell & (DB_DMA_TO_DEVICE | DB_DMA_FROM_DEVICE):
                addr, length, off = d.reg(REG_DMA_ADDR, 8), d.reg(REG_DMA_LEN), d.reg(REG_DMA_OFF)
                if off + length > self.config.bar1_size:
                    raise DeviceError(errno.EINVAL, "DMA beyond BAR1")
                force = bool(bell & DB_FORCE_MESSAGES)
                if bell & DB_DMA_TO_DEVICE:
                    data = self.dma_read(addr, length, force)
                    d.bar1_view[off:off + length] = data
                    d.checksum(data)
                if bell & DB_DMA_FROM_DEVICE:
                    data = d.bar1_view[off:off + length].tobytes()
                    self.dma_write(addr, data, force)
                    d.checksum(data)
            if bell & DB_IRQ:
                if d.raise_irq(d.reg(REG_IRQ_SEL)):
                    self.stats.interrupts += 1
                else:
                    status = errno.ENODEV
        except DeviceError as exc:
            self.log(f"doorbell {bell:#x}: {exc}")
            status = exc.errno
        d.set_reg(REG_STATUS, status)

    def dma_read(self, address: int, count: int, force_messages: bool = False) -> bytes:
        region = self.device.find_dma(address, count)
        if region is None:
            raise DeviceError(errno.EFAULT, f"DMA {address:#x}+{count} outside every mapping")
        if region.mem is not None and not force_messages:
            off = address - region.address
            return region.mem[off:off + count]
        out = bytearray()
        for a, n in self._chunks(address, count):
            rep = self._dma_exchange(command(_next_dma_id(), C.DMA_READ, _DMA_ACCESS.pack(a, n)))
            if len(rep.payload) < 16 + n or _DMA_ACCESS.unpack_from(rep.payload) != (a, n):
                raise DeviceError(errno.EINVAL, "bad reply to DMA_READ")
            out += rep.payload[16:16 + n]
        return bytes(out)

    def dma_write(self, address: int, data: bytes, force_messages: bool = False) -> None:
        region = self.device.find_dma(address, len(data))
        if region is None:
            raise DeviceError(errno.EFAULT, f"DMA {address:#x}+{len(data)} outside every mapping")
        if region.mem is not None and not force_messages:
            off = address - region.address
            region.mem[off:off + len(data)] = data
            return
        pos = 0
        for a, n in self._chunks(address, len(data)):
            rep = self._dma_exchange(command(_next_dma_id(), C.DMA_WRITE,
                                             _DMA_ACCESS.pack(a, n) + data[pos:pos + n]))
            pos += n
            if len(rep.payload) < 16 or _DMA_ACCESS.unpack_from(rep.payload) != (a, n):
                raise DeviceError(errno.EINVAL, "bad reply to DMA_WRITE")

    def _chunks(self, address: int, count: int) -> list[tuple[int, int]]:
        step = max(self.client_max_xfer, 1)
        return [(address + o, min(step, count - o)) for o in range(0, count, step)]

    def _dma_exchange(self, cmd_bytes: bytes) -> Message:
        """Send a DMA command (twin socket if negotiated) and wait for its reply; client commands meanwhile wait."""
        sends = self.faults.outgoing(cmd_bytes)
        sock = self.sock if any(s.main_socket for s in sends) else (self.twin or self.sock)
        msg_id = _HDR.unpack_from(cmd_bytes)[0]
        self.stats.dma_messages += 1
        if not deliver(sock, sends):
            self._alive = False
        if not self._alive:
            raise DeviceError(errno.EPIPE, "connection unusable")
        while True:
            try:
                m = recv_message(sock, self._max_in)
            except (ProtocolError, OSError) as exc:
                self._alive = False
                raise DeviceError(errno.EPROTO, f"waiting for the DMA reply: {exc}") from None
            if m.is_reply and m.msg_id == msg_id:
                m.close_fds()
                if m.is_error:
                    raise DeviceError(m.error or errno.EIO, f"client refused the DMA: {spec.errno_name(m.error)}")
                return m
            if not m.is_reply and sock is self.sock:
                self._deferred.append(m)  # libvfio-user would fail here (EPROTO); we keep it for later
                continue
            m.close_fds()
            raise DeviceError(errno.EPROTO, f"expected the reply to DMA id={msg_id}, got "
                                            f"{spec.command_name(m.command)} id={m.msg_id}")


_HANDLERS: dict[int, Callable[[ServerConnection, Message], Any]] = {
    C.VERSION: ServerConnection.h_version,
    C.DMA_MAP: ServerConnection.h_dma_map,
    C.DMA_UNMAP: ServerConnection.h_dma_unmap,
    C.DEVICE_GET_INFO: ServerConnection.h_get_info,
    C.DEVICE_GET_REGION_INFO: ServerConnection.h_region_info,
    C.DEVICE_GET_REGION_IO_FDS: ServerConnection.h_region_io_fds,
    C.DEVICE_GET_IRQ_INFO: ServerConnection.h_irq_info,
    C.DEVICE_SET_IRQS: ServerConnection.h_set_irqs,
    C.REGION_READ: ServerConnection.h_region_read,
    C.REGION_WRITE: ServerConnection.h_region_write,
    C.DEVICE_RESET: ServerConnection.h_reset,
    C.DEVICE_FEATURE: ServerConnection.h_feature,
    C.MIG_DATA_READ: ServerConnection.h_mig_read,
    C.MIG_DATA_WRITE: ServerConnection.h_mig_write,
}


class DeviceServer:
    """Listens on ``path``; each accepted client is served by a ServerConnection in its own thread."""

    def __init__(self, path: str, config: DeviceConfig | None = None, faults: Faults | None = None,
                 log: Callable[[str], None] | None = None, backlog: int = 128) -> None:
        self.path = path
        self.config = config or DeviceConfig()
        self.faults = faults or Faults()
        self._log = log
        self._backlog = backlog
        self.connections: list[ServerConnection] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = False

    def bind(self) -> "DeviceServer":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(self.path)
            s.listen(self._backlog)
        except OSError:
            s.close()
            raise
        self._listener = s
        return self

    def start(self) -> "DeviceServer":
        """Bind and accept in a background thread."""
        if self._listener is None:
            self.bind()
        self._thread = threading.Thread(target=self.serve_forever, name="vfu-server-accept", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        if self._listener is None:
            self.bind()
        listener = self._listener
        assert listener is not None
        while not self._stopping:
            try:
                conn, _ = listener.accept()
            except OSError:
                break
            sc = ServerConnection(conn, self.config, self.faults.injector(), self._log)
            t = threading.Thread(target=sc.run, name="vfu-server-conn", daemon=True)
            with self._lock:
                self.connections.append(sc)
                self._threads = [x for x in self._threads if x.is_alive()] + [t]
            t.start()

    def stop(self) -> None:
        self._stopping = True
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # the accept thread wakes (EINVAL) and ends
            except OSError:
                pass
            if self._thread is not None and self._thread is not threading.current_thread():
                # closed only once that thread is gone: an fd number freed under a thread about to accept() on it
                # would have it accept on whichever socket of this process takes the number next
                self._thread.join(timeout=2)
            self._listener.close()
            self._listener = None
            try:
                os.unlink(self.path)
            except OSError:
                pass
        with self._lock:
            conns, threads = list(self.connections), list(self._threads)
        for sc in conns:
            if sc._alive:
                for s in (sc.sock, sc.twin):
                    try:
                        s.shutdown(socket.SHUT_RDWR) if s is not None else None
                    except OSError:
                        pass
        for t in threads:
            t.join(timeout=2)
        if self._thread is not None:
            self._thread.join(timeout=2)

    def __enter__(self) -> "DeviceServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
