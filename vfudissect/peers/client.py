"""The emulated vfio-user client: QEMU-shaped requests, real memfds and eventfds, and it serves the server's DMA.

``Client`` is the protocol engine (ids from 0 like QEMU, pipelined
requests, replies matched by id, server DMA_READ/DMA_WRITE commands
answered from its own memory whenever they arrive, on the main socket or
the twin socket).  ``run_session()`` drives a session shaped like QEMU's
real one (captures/qemu-10.2-gpio-pci-idio-16) and checks that everything
really worked: interrupts through eventfds, DMA by messages and through the
mmapped memfd, BAR1 through the region fd.
"""

from __future__ import annotations

import errno
import mmap
import os
import select
import socket
import struct
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable

from .. import spec
from .device import (
    BAR0, BAR1, CONFIG, DB_DMA_FROM_DEVICE, DB_DMA_TO_DEVICE, DB_FORCE_MESSAGES, DB_IRQ, DEVICE_ID_VALUE,
    REG_CHECKSUM, REG_DMA_ADDR, REG_DMA_LEN, REG_DMA_OFF, REG_DOORBELL, REG_ID, REG_IRQ_SEL, REG_SCRATCH,
    REG_STATUS,
)
from .faults import Faults, deliver
from .wire import (
    STRUCTS, Message, PeerClosed, ProtocolError, close_fds, command, error_reply, pack, recv_message, reply,
    unpack,
)

C = spec.Command
# QEMU 10.2's VERSION data, byte for byte (captures/qemu-10.2-gpio-pci-idio-16, frame 2).
QEMU_VERSION_JSON = (b'{"capabilities": {"pgsizes": 4096, "max_msg_fds": 16, "max_dma_maps": 65535, '
                     b'"max_data_xfer_size": 1048576, "migration": {"max_bitmap_size": 268435456, '
                     b'"pgsize": 4096}, "write_multiple": true}}\0')
TWIN_VERSION_JSON = (b'{"capabilities": {"max_msg_fds": 16, "max_data_xfer_size": 1048576, '
                     b'"twin_socket": {"supported": true}}}\0')
_ACCESS = STRUCTS["region_access"]
_DMA_ACCESS = STRUCTS["dma_access"]
_HDR = spec.HEADER


class VfuError(Exception):
    """The server answered with an error reply."""

    def __init__(self, what: str, err: int) -> None:
        super().__init__(f"{what}: {spec.errno_name(err)} ({err})")
        self.errno = err


class ReplyTimeout(Exception):
    """No reply within the client's timeout."""


@dataclass(slots=True)
class Memory:
    """A range of the client's memory exported with DMA_MAP (memfd-backed or private)."""

    address: int
    size: int
    mem: mmap.mmap
    fd: int | None  # memfd, when shared with the server


@dataclass(slots=True)
class RegionInfo:
    index: int
    flags: int
    size: int
    offset: int
    areas: list[tuple[int, int]] = field(default_factory=list)
    fd: int | None = None


class Client:
    """A vfio-user client on one connection (plus the twin socket when negotiated)."""

    def __init__(self, path: str | None = None, *, sock: socket.socket | None = None, faults: Faults | None = None,
                 timeout: float | None = 10.0, first_id: int = 0) -> None:
        if sock is None:
            if path is None:
                raise ValueError("need a path or a socket")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
            except OSError:
                sock.close()
                raise
        sock.settimeout(timeout)  # also bounds a read inside a message whose rest never comes
        self.sock = sock
        self.twin: socket.socket | None = None
        self.timeout = timeout
        self.faults = (faults or Faults()).injector()
        self._next_id = first_id
        self._pending: set[int] = set()
        self._replies: dict[int, deque[Message]] = {}
        self.unexpected: list[Message] = []
        self.memory: list[Memory] = []
        self.server_caps: dict[str, object] = {}
        self.max_xfer = spec.DEFAULT_MAX_DATA_XFER_SIZE
        self.server_max_fds = spec.QEMU_DEFAULT_MAX_MSG_FDS
        self.dma_served = 0
        self.closed = False

    # ------------------------------------------------------------ plumbing
    def new_id(self) -> int:
        mid = self._next_id & 0xFFFF
        self._next_id += 1
        return mid

    def send(self, cmd: int, payload: bytes = b"", fds: Iterable[int] = (), *, no_reply: bool = False,
             msg_id: int | None = None) -> int:
        """Send a command without waiting; returns its msg_id."""
        mid = self.new_id() if msg_id is None else msg_id
        if not no_reply:
            self._pending.add(mid)
        self.send_raw(command(mid, cmd, payload, no_reply), tuple(fds))
        return mid

    def send_raw(self, data: bytes, fds: tuple[int, ...] = (), sock: socket.socket | None = None) -> None:
        """Send bytes as they are (through the fault schedule)."""
        if not deliver(sock or self.sock, self.faults.outgoing(data, fds)):
            self.closed = True

    def wait(self, msg_id: int, timeout: float | None = -1.0) -> Message:
        """The reply to msg_id, serving server commands while waiting."""
        t = self.timeout if timeout == -1.0 else timeout
        deadline = None if t is None else time.monotonic() + t
        while True:
            q = self._replies.get(msg_id)
            if q:
                m = q.popleft()
                if not q:
                    del self._replies[msg_id]
                self._pending.discard(msg_id)
                return m
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                self._pending.discard(msg_id)
                raise ReplyTimeout(f"no reply to id={msg_id} within {t:g} s")
            self.pump(remaining)

    def pump(self, timeout: float | None) -> bool:
        """Read and handle one message from whichever socket has one; False on timeout."""
        socks = [self.sock] + ([self.twin] if self.twin is not None else [])
        if timeout is not None or len(socks) > 1:
            ready, _, _ = select.select(socks, [], [], timeout)
            if not ready:
                return False
            sock = ready[0]
        else:
            sock = self.sock
        try:
            m = recv_message(sock, self.max_xfer + spec.HEADER_SIZE + 32)
        except TimeoutError:
            raise ReplyTimeout(f"message cut short: nothing more came within {self.timeout:g} s") from None
        if m.is_reply:
            if m.msg_id in self._pending:
                self._replies.setdefault(m.msg_id, deque()).append(m)
            else:
                self.unexpected.append(m)
        else:
            self._serve(m, sock)
        return True

    def request(self, cmd: int, payload: bytes = b"", fds: Iterable[int] = (), *, check: bool = True,
                timeout: float | None = -1.0) -> Message:
        m = self.wait(self.send(cmd, payload, fds), timeout)
        if check and m.is_error:
            m.close_fds()
            raise VfuError(spec.command_name(cmd), m.error)
        return m

    def close(self) -> None:
        for s in (self.sock, self.twin):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        for q in self._replies.values():
            for m in q:
                m.close_fds()
        for m in self.unexpected:
            m.close_fds()
        for region in self.memory:
            region.mem.close()
            if region.fd is not None:
                os.close(region.fd)
        self.memory.clear()
        self.closed = True

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ serving the server's DMA
    def _find(self, address: int, count: int) -> Memory | None:
        for r in self.memory:
            if r.address <= address and address + count <= r.address + r.size:
                return r
        return None

    def _serve(self, m: Message, sock: socket.socket) -> None:
        m.close_fds()
        p = m.payload
        if m.command not in (C.DMA_READ, C.DMA_WRITE):
            self.send_raw(error_reply(m.msg_id, m.command, errno.ENOSYS), sock=sock)
            return
        if len(p) < 16:
            self.send_raw(error_reply(m.msg_id, m.command, errno.EINVAL), sock=sock)
            return
        address, count = _DMA_ACCESS.unpack_from(p)
        region = self._find(address, count)
        if region is None:
            self.send_raw(error_reply(m.msg_id, m.command, errno.EFAULT), sock=sock)
            return
        off = address - region.address
        self.dma_served += 1
        if m.command == C.DMA_READ:
            if count > self.max_xfer:
                self.send_raw(error_reply(m.msg_id, m.command, errno.E2BIG), sock=sock)
                return
            out = reply(m.msg_id, C.DMA_READ, p[:16] + region.mem[off:off + count])
        else:
            if len(p) < 16 + count:
                self.send_raw(error_reply(m.msg_id, m.command, errno.E2BIG), sock=sock)
                return
            region.mem[off:off + count] = p[16:16 + count]
            out = reply(m.msg_id, C.DMA_WRITE, p[:16])  # libvfio-user's 16-byte DMA_WRITE reply
        if not m.no_reply:
            self.send_raw(out, sock=sock)

    # ------------------------------------------------------------ commands
    def version(self, json_text: bytes | None = QEMU_VERSION_JSON, major: int = 0, minor: int = 0) -> dict:
        m = self.request(C.VERSION, struct.pack("<HH", major, minor) + (json_text or b""))
        import json
        text = m.payload[4:]
        caps: dict = {}
        if text:
            try:
                obj = json.loads(text.rstrip(b"\0").decode())
                caps = obj.get("capabilities", {}) if isinstance(obj, dict) else {}
            except (ValueError, RecursionError):
                caps = {}
        self.server_caps = caps
        if isinstance(caps.get("max_data_xfer_size"), int):
            self.max_xfer = int(caps["max_data_xfer_size"])
        if isinstance(caps.get("max_msg_fds"), int):
            self.server_max_fds = int(caps["max_msg_fds"])
        tw = caps.get("twin_socket")
        if isinstance(tw, dict) and tw.get("supported") is True:
            idx = tw.get("fd_index")
            if not isinstance(idx, int) or not 0 <= idx < len(m.fds):
                m.close_fds()
                raise ProtocolError(f"twin_socket fd_index {idx!r} with {len(m.fds)} fds")
            self.twin = socket.socket(fileno=m.fds.pop(idx))
            self.twin.settimeout(self.timeout)
        m.close_fds()
        return caps

    def add_memory(self, address: int, size: int, shared: bool = True, name: str = "guest-ram") -> Memory:
        fd = None
        if shared:
            fd = os.memfd_create(name, os.MFD_CLOEXEC)
            os.ftruncate(fd, size)
            mem = mmap.mmap(fd, size)
        else:
            mem = mmap.mmap(-1, size)
        region = Memory(address, size, mem, fd)
        self.memory.append(region)
        return region

    def dma_map_send(self, region: Memory, flags: int = 3, offset: int = 0, size: int | None = None,
                     address: int | None = None) -> int:
        payload = pack("dma_map", argsz=32, flags=flags, offset=offset,
                       address=region.address if address is None else address,
                       size=region.size if size is None else size)
        return self.send(C.DMA_MAP, payload, (region.fd,) if region.fd is not None else ())

    def dma_unmap(self, address: int, size: int, flags: int = 0) -> None:
        self.request(C.DMA_UNMAP, pack("dma_unmap", argsz=24, flags=flags, address=address, size=size))

    def get_info(self) -> dict[str, int]:
        return unpack("device_info", self.request(C.DEVICE_GET_INFO, pack("device_info", argsz=16)).payload)

    def region_info(self, index: int, argsz: int = 32) -> RegionInfo:
        m = self.request(C.DEVICE_GET_REGION_INFO, pack("region_info", argsz=argsz, index=index))
        f = unpack("region_info", m.payload)
        if f["argsz"] > argsz:  # truncated: ask again with room for the capabilities (QEMU and LVU do)
            m.close_fds()
            return self.region_info(index, f["argsz"])
        info = RegionInfo(index, f["flags"], f["size"], f["offset"])
        if f["flags"] & spec.REGION_FLAG_CAPS:
            info.areas = _sparse_areas(m.payload, f["cap_offset"])
        if m.fds:
            info.fd = m.fds.pop(0)
        m.close_fds()
        return info

    def irq_info(self, index: int) -> dict[str, int]:
        return unpack("irq_info", self.request(C.DEVICE_GET_IRQ_INFO, pack("irq_info", argsz=16, index=index)).payload)

    def set_irqs(self, index: int, start: int, fds: list[int], flags: int | None = None) -> None:
        count = len(fds)
        fl = flags if flags is not None else spec.IRQ_SET_DATA_EVENTFD | spec.IRQ_SET_ACTION_TRIGGER
        self.request(C.DEVICE_SET_IRQS, pack("irq_set", argsz=20, flags=fl, index=index, start=start, count=count),
                     fds)

    def disable_irqs(self, index: int) -> None:
        self.request(C.DEVICE_SET_IRQS, pack("irq_set", argsz=20, flags=spec.IRQ_SET_DATA_NONE
                                             | spec.IRQ_SET_ACTION_TRIGGER, index=index))

    def region_read(self, region: int, offset: int, count: int) -> bytes:
        m = self.request(C.REGION_READ, _ACCESS.pack(offset, region, count))
        return m.payload[16:16 + count]

    def region_write(self, region: int, offset: int, data: bytes, posted: bool = False) -> None:
        payload = _ACCESS.pack(offset, region, len(data)) + data
        if posted:
            self.send(C.REGION_WRITE, payload, no_reply=True)
        else:
            self.request(C.REGION_WRITE, payload)

    def read32(self, region: int, offset: int) -> int:
        return int.from_bytes(self.region_read(region, offset, 4), "little")

    def write32(self, region: int, offset: int, value: int) -> None:
        self.region_write(region, offset, struct.pack("<I", value & 0xFFFFFFFF))

    def reset(self) -> None:
        self.request(C.DEVICE_RESET)

    def feature(self, feature: int, ops: int, data: bytes = b"", argsz: int | None = None) -> bytes:
        payload = pack("device_feature", argsz=8 + max(len(data), 8) if argsz is None else argsz,
                       flags=feature | ops) + data
        return self.request(C.DEVICE_FEATURE, payload).payload


def _sparse_areas(payload: bytes, cap_offset: int) -> list[tuple[int, int]]:
    areas: list[tuple[int, int]] = []
    off, seen = cap_offset, set()
    while off and off not in seen and off + 8 <= len(payload):
        seen.add(off)
        cid, _ver, nxt = spec.REGION_CAP_HEADER.unpack_from(payload, off)
        if cid == spec.REGION_CAP_SPARSE_MMAP and off + 16 <= len(payload):
            n, _ = spec.SPARSE_MMAP_HEAD.unpack_from(payload, off + 8)
            for i in range(n):
                at = off + 16 + 16 * i
                if at + 16 <= len(payload):
                    areas.append(spec.SPARSE_AREA.unpack_from(payload, at))
        off = nxt
    return areas


# ------------------------------------------------------------------ a QEMU-shaped session
@dataclass
class SessionReport:
    """What the session did and what it verified end to end."""

    server_caps: dict = field(default_factory=dict)
    device_info: dict = field(default_factory=dict)
    regions: dict[int, RegionInfo] = field(default_factory=dict)
    irq_counts: dict[int, int] = field(default_factory=dict)
    interrupts_seen: int = 0
    dma_to_device_ok: bool = False  # server read our memory with DMA_READ messages
    dma_from_device_ok: bool = False  # server wrote our memory with DMA_WRITE messages
    dma_direct_ok: bool = False  # server wrote our memfd through its own mmap
    dma_rom_ok: bool = False  # DMA from a mapping passed without an fd
    bar1_mmap_ok: bool = False  # BAR1 seen through the region fd equals REGION_READ
    config_ok: bool = False
    migration_ok: bool | None = None
    dma_served: int = 0
    messages: int = 0

    @property
    def checks(self) -> list[tuple[str, bool]]:
        """What the session verified, each said in words: every one passes, or the session is not ok."""
        out = [("config space (vendor/device id, capability list)", self.config_ok),
               ("interrupts received through their eventfds", self.interrupts_seen >= 2),
               ("DMA guest memory -> device by DMA_READ", self.dma_to_device_ok),
               ("DMA device -> guest memory by DMA_WRITE", self.dma_from_device_ok),
               ("DMA device -> guest memory through the device's mmap of the memfd", self.dma_direct_ok),
               ("DMA from a mapping passed without an fd (by messages)", self.dma_rom_ok),
               ("BAR1 through its mmap-able region fd", self.bar1_mmap_ok)]
        if self.migration_ok is not None:
            out.append(("migration: feature GET/SET and MIG_DATA_READ", self.migration_ok))
        return out

    @property
    def ok(self) -> bool:
        return all(ok for _what, ok in self.checks)


def pattern(seed: int, n: int) -> bytes:
    """Deterministic test data (a CRC32 chain): what DMA round trips write and verify."""
    out = bytearray()
    x = seed
    while len(out) < n:
        x = zlib.crc32(struct.pack("<I", x))
        out += struct.pack("<I", x)
    return bytes(out[:n])


def _wait_eventfd(fd: int, timeout: float) -> int:
    ready, _, _ = select.select([fd], [], [], timeout)
    return os.eventfd_read(fd) if ready else 0


def run_session(client: Client, *, ram_size: int = 1 << 21, migration: bool = False,
                json_text: bytes | None = QEMU_VERSION_JSON, irq_wait: float = 2.0) -> SessionReport:
    """Drive a QEMU-shaped session on a connected client and check every effect; returns the report
    (``irq_wait``: how long to wait for each interrupt)."""
    rep = SessionReport()
    rep.server_caps = client.version(json_text)
    # Guest RAM (a memfd, like QEMU's memory-backend-memfd) and a ROM range passed without an fd, pipelined.
    ram = client.add_memory(0x0, ram_size, shared=True, name="memory-backend-memfd")
    rom = client.add_memory(0xFFFC0000, 0x40000, shared=False)
    rom.mem[:16] = b"vfudissect-ROM\0\0"
    ids = [client.dma_map_send(ram, flags=3), client.dma_map_send(rom, flags=1)]
    for mid in ids:
        m = client.wait(mid)
        if m.is_error:
            raise VfuError("DMA_MAP", m.error)
    rep.device_info = client.get_info()
    for idx in range(rep.device_info["num_regions"]):
        rep.regions[idx] = client.region_info(idx)
    for idx in range(rep.device_info["num_irqs"]):
        rep.irq_counts[idx] = client.irq_info(idx)["count"]
    intx = os.eventfd(0, os.EFD_CLOEXEC)
    msi = [os.eventfd(0, os.EFD_CLOEXEC) for _ in range(2)]
    try:
        client.set_irqs(0, 0, [intx])
        client.set_irqs(1, 0, msi)
        # config space like QEMU: the whole of it, then capability list, command register
        cfg = client.region_read(CONFIG, 0, 256)
        cap = cfg[0x34]
        caps_seen = []
        while cap and cap not in caps_seen:
            caps_seen.append(cap)
            cap = client.region_read(CONFIG, cap + 1, 1)[0]
        client.region_write(CONFIG, 0x04, b"\x06\x00")
        client.region_write(CONFIG, 0x10, b"\xff\xff\xff\xff")
        bar0_mask = client.read32(CONFIG, 0x10)
        rep.config_ok = (cfg[:4] == struct.pack("<HH", 0x1AF4, 0x10F0) and len(caps_seen) == 2
                         and client.region_read(CONFIG, 0x04, 2) == b"\x06\x00"
                         and (~bar0_mask & 0xFFFFFFF0) + 16 == rep.regions[BAR0].size)
        # BAR0 registers
        if client.read32(BAR0, REG_ID) != DEVICE_ID_VALUE:
            raise ProtocolError("BAR0 ID register mismatch")
        client.write32(BAR0, REG_SCRATCH, 0xC0FFEE)
        if client.read32(BAR0, REG_SCRATCH) != 0xC0FFEE:
            raise ProtocolError("BAR0 scratch register did not keep its value")
        # interrupts: INTx, then MSI vector 1, each really received through the eventfd
        for sel, fd in ((0, intx), (2, msi[1])):
            client.write32(BAR0, REG_IRQ_SEL, sel)
            client.write32(BAR0, REG_DOORBELL, DB_IRQ)
            rep.interrupts_seen += 1 if _wait_eventfd(fd, irq_wait) else 0
        # DMA: our memory -> BAR1 by DMA_READ messages
        a = pattern(1, 4096)
        ram.mem[0x10000:0x11000] = a
        _program_dma(client, 0x10000, 4096, 0x2000)
        client.write32(BAR0, REG_DOORBELL, DB_DMA_TO_DEVICE | DB_FORCE_MESSAGES)
        rep.dma_to_device_ok = (client.read32(BAR0, REG_STATUS) == 0 and client.region_read(BAR1, 0x2000, 4096) == a
                                and client.read32(BAR0, REG_CHECKSUM) == zlib.crc32(a))
        # BAR1 through the region fd (mmap the sparse area that holds 0x2000) equals what REGION_READ saw
        bar1 = rep.regions.get(BAR1)
        if bar1 is not None and bar1.fd is not None:
            for off, size in bar1.areas:
                if off <= 0x2000 < off + size:
                    with mmap.mmap(bar1.fd, size, offset=bar1.offset + off) as mm:
                        rep.bar1_mmap_ok = mm[0x2000 - off:0x3000 - off] == a
        # BAR1 -> our memory by DMA_WRITE messages, then by the server's mmap of our memfd
        b = pattern(2, 4096)
        client.region_write(BAR1, 0x3000, b)
        _program_dma(client, 0x20000, 4096, 0x3000)
        client.write32(BAR0, REG_DOORBELL, DB_DMA_FROM_DEVICE | DB_FORCE_MESSAGES)
        rep.dma_from_device_ok = client.read32(BAR0, REG_STATUS) == 0 and ram.mem[0x20000:0x21000] == b
        _program_dma(client, 0x30000, 4096, 0x3000)
        client.write32(BAR0, REG_DOORBELL, DB_DMA_FROM_DEVICE)
        rep.dma_direct_ok = client.read32(BAR0, REG_STATUS) == 0 and ram.mem[0x30000:0x31000] == b
        # DMA from the ROM range (no fd: always by messages)
        _program_dma(client, 0xFFFC0000, 16, 0x4000)
        client.write32(BAR0, REG_DOORBELL, DB_DMA_TO_DEVICE)
        rep.dma_rom_ok = client.region_read(BAR1, 0x4000, 16) == rom.mem[:16]
        if migration:
            rep.migration_ok = _migration(client)
        client.reset()
        client.disable_irqs(0)
        client.disable_irqs(1)
        client.dma_unmap(rom.address, rom.size)
        client.dma_unmap(0, 0, flags=2)  # UNMAP_ALL, as QEMU does at teardown
    finally:
        close_fds([intx, *msi])
        for r in rep.regions.values():
            if r.fd is not None:
                os.close(r.fd)
                r.fd = None
    rep.dma_served = client.dma_served
    rep.messages = client._next_id
    return rep


def _program_dma(client: Client, address: int, length: int, bar1_off: int) -> None:
    client.region_write(BAR0, REG_DMA_ADDR, struct.pack("<Q", address))
    client.write32(BAR0, REG_DMA_LEN, length)
    client.write32(BAR0, REG_DMA_OFF, bar1_off)


def _migration(client: Client) -> bool:
    flags = struct.unpack_from("<Q", client.feature(spec.FEATURE_MIGRATION, spec.FEATURE_GET, argsz=16), 8)[0]
    state = spec.MIG_STATE_DATA.unpack_from(client.feature(spec.FEATURE_MIG_DEVICE_STATE, spec.FEATURE_GET,
                                                           argsz=16), 8)[0]
    client.feature(spec.FEATURE_MIG_DEVICE_STATE, spec.FEATURE_SET,
                   spec.MIG_STATE_DATA.pack(spec.MIG_STATE_PRE_COPY, 0))
    m = client.request(C.MIG_DATA_READ, pack("mig_data", argsz=8 + 64, size=64))
    got = unpack("mig_data", m.payload)["size"]
    client.feature(spec.FEATURE_MIG_DEVICE_STATE, spec.FEATURE_SET,
                   spec.MIG_STATE_DATA.pack(spec.MIG_STATE_RUNNING, 0))
    return flags == 0x5 and state == spec.MIG_STATE_RUNNING and got == 64


def connect_and_run(path: str, **kw: object) -> SessionReport:
    """Connect to ``path``, run the QEMU-shaped session, close."""
    with Client(path) as c:
        return run_session(c, **kw)  # type: ignore[arg-type]


__all__ = ["Client", "Message", "PeerClosed", "ProtocolError", "ReplyTimeout", "SessionReport", "VfuError",
           "QEMU_VERSION_JSON", "TWIN_VERSION_JSON", "connect_and_run", "run_session"]
