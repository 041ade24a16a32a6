"""The emulated PCI device's state: config space, BAR0 registers, BAR1 memory (a memfd), IRQs, migration.

Pure device model, no sockets: the server connection calls into it and
turns ``DeviceError(errno)`` into error replies.  BAR0 register map (the
client drives it; offsets are bytes into BAR0):

    0x00 ID         RO  0x56465544 ("DUFV")
    0x04 SCRATCH    RW
    0x08 DMA_ADDR   RW  u64 client DMA address
    0x10 DMA_LEN    RW  bytes to transfer
    0x14 DMA_OFF    RW  offset into BAR1 (the device side of a transfer)
    0x18 IRQ_SEL    RW  0 = INTx, 1 + n = MSI vector n
    0x1C STATUS     RO  errno of the last doorbell action (0 = ok)
    0x20 DOORBELL   WO  bit0 raise IRQ_SEL, bit1 DMA client->BAR1, bit2 DMA BAR1->client,
                        bit3 use DMA_READ/DMA_WRITE messages even when the memory is mmapped
    0x24 CHECKSUM   RO  crc32 of the data moved by the last DMA
    0x28 IRQ_COUNT  RO  interrupts raised so far
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
import zlib
from dataclasses import dataclass, field

from .. import spec

REG_ID, REG_SCRATCH, REG_DMA_ADDR, REG_DMA_LEN, REG_DMA_OFF = 0x00, 0x04, 0x08, 0x10, 0x14
REG_IRQ_SEL, REG_STATUS, REG_DOORBELL, REG_CHECKSUM, REG_IRQ_COUNT = 0x18, 0x1C, 0x20, 0x24, 0x28
DEVICE_ID_VALUE = 0x56465544
DB_IRQ, DB_DMA_TO_DEVICE, DB_DMA_FROM_DEVICE, DB_FORCE_MESSAGES = 0x1, 0x2, 0x4, 0x8
_RO_REGS = (REG_ID, REG_STATUS, REG_CHECKSUM, REG_IRQ_COUNT)

BAR0, BAR1, CONFIG = 0, 1, 7
PCI_VENDOR, PCI_DEVICE = 0x1AF4, 0x10F0  # a made-up device id under a well-known vendor
CAP_MSI_OFF, CAP_PM_OFF = 0x40, 0x50
IRQ_COUNTS = {0: 1, 1: 4, 2: 0, 3: 1, 4: 1}  # INTX, MSI, MSIX, ERR, REQ

# Direct migration arcs (SPEC Direct State Transitions).
MIG_ARCS = {
    (spec.MIG_STATE_RUNNING, spec.MIG_STATE_STOP), (spec.MIG_STATE_STOP_COPY, spec.MIG_STATE_STOP),
    (spec.MIG_STATE_RESUMING, spec.MIG_STATE_STOP), (spec.MIG_STATE_PRE_COPY, spec.MIG_STATE_RUNNING),
    (spec.MIG_STATE_STOP, spec.MIG_STATE_RUNNING), (spec.MIG_STATE_RUNNING, spec.MIG_STATE_PRE_COPY),
    (spec.MIG_STATE_STOP, spec.MIG_STATE_STOP_COPY), (spec.MIG_STATE_PRE_COPY, spec.MIG_STATE_STOP_COPY),
    (spec.MIG_STATE_STOP, spec.MIG_STATE_RESUMING),
}
_SAVING = {spec.MIG_STATE_PRE_COPY, spec.MIG_STATE_STOP_COPY}


class DeviceError(Exception):
    """A request the device refuses: becomes an error reply with this errno."""

    def __init__(self, err: int, why: str = "") -> None:
        super().__init__(why or errno.errorcode.get(err, str(err)))
        self.errno = err


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """What the emulated device looks like and which limits its server advertises."""

    bar0_size: int = 0x1000
    bar1_size: int = 0x10000
    max_msg_fds: int = 8
    max_data_xfer_size: int = spec.DEFAULT_MAX_DATA_XFER_SIZE
    max_minor: int = 2
    offer_twin_socket: bool = True


@dataclass(slots=True)
class DmaRegion:
    address: int
    size: int
    flags: int
    offset: int
    mem: mmap.mmap | None  # the client's memory, when an fd came with the DMA_MAP


def migration_path(cur: int, target: int) -> list[int] | None:
    """States to step through from cur to target (direct arcs, no saving state in the middle).

    STOP_COPY -> PRE_COPY is refused outright, as by the kernel's table, although a path exists."""
    if cur == target:
        return []
    if cur == spec.MIG_STATE_STOP_COPY and target == spec.MIG_STATE_PRE_COPY:
        return None
    frontier: list[list[int]] = [[cur]]
    seen = {cur}
    while frontier:
        nxt: list[list[int]] = []
        for path in frontier:
            for a, b in MIG_ARCS:
                if a != path[-1] or b in seen:
                    continue
                if b == target:
                    return path[1:] + [b]
                if b in _SAVING:
                    continue
                seen.add(b)
                nxt.append(path + [b])
        frontier = nxt
    return None


def _config_space(cfg: DeviceConfig) -> bytearray:
    c = bytearray(256)
    struct.pack_into("<HHHH", c, 0, PCI_VENDOR, PCI_DEVICE, 0x0000, 0x0010)  # status: capability list
    struct.pack_into("<BBBB", c, 8, 0x01, 0x00, 0x80, 0xFF)  # revision, prog-if, subclass, class (other)
    struct.pack_into("<I", c, 0x10, 0x0)  # BAR0: 32-bit memory
    struct.pack_into("<I", c, 0x14, 0x8)  # BAR1: 32-bit prefetchable memory
    struct.pack_into("<HH", c, 0x2C, PCI_VENDOR, 0x0001)  # subsystem
    c[0x34] = CAP_MSI_OFF
    c[0x3D] = 1  # interrupt pin INTA
    # MSI capability: id 5, next -> PM, control: 64-bit, 4 vectors capable (MMC=2)
    struct.pack_into("<BBH", c, CAP_MSI_OFF, 0x05, CAP_PM_OFF, 0x0084)
    # Power management capability: id 1, next 0, PMC version 3
    struct.pack_into("<BBH", c, CAP_PM_OFF, 0x01, 0x00, 0x0003)
    return c


def _config_write_mask() -> bytearray:
    m = bytearray(256)
    m[0x04:0x06] = b"\x07\x05"  # command: io, mem, master, serr, intx disable
    m[0x10:0x18] = b"\xf0\xff\xff\xff" * 2  # BAR0, BAR1 address bits (type bits read-only; sizing on read)
    m[0x3C] = 0xFF  # interrupt line
    m[CAP_MSI_OFF + 2:CAP_MSI_OFF + 4] = b"\x71\x00"  # MSI enable, MME
    m[CAP_MSI_OFF + 4:CAP_MSI_OFF + 14] = b"\xff" * 10  # address lo/hi, data
    m[CAP_PM_OFF + 4:CAP_PM_OFF + 6] = b"\x03\x81"  # PMCSR
    return m


@dataclass
class Device:
    """One device instance (each client connection gets its own)."""

    config: DeviceConfig = field(default_factory=DeviceConfig)

    def __post_init__(self) -> None:
        cfg = self.config
        self.cfg_space = _config_space(cfg)
        self.cfg_mask = _config_write_mask()
        self.regs = bytearray(cfg.bar0_size)
        struct.pack_into("<I", self.regs, REG_ID, DEVICE_ID_VALUE)
        self.bar1_fd = os.memfd_create("vfudissect-bar1", os.MFD_CLOEXEC)
        os.ftruncate(self.bar1_fd, cfg.bar1_size)
        self.bar1 = mmap.mmap(self.bar1_fd, cfg.bar1_size)
        self.bar1_view = memoryview(self.bar1)
        self.irq_fds: dict[tuple[int, int], int] = {}
        self.irq_masked: set[tuple[int, int]] = set()
        self.dma: list[DmaRegion] = []
        self.mig_state = spec.MIG_STATE_RUNNING
        self.mig_out = b""
        self.mig_in = bytearray()
        self.interrupts = 0
        self.resets = 0

    # ------------------------------------------------------------ regions
    def region_size(self, index: int) -> int:
        return {BAR0: self.config.bar0_size, BAR1: self.config.bar1_size, CONFIG: 256}.get(index, 0)

    def region_flags(self, index: int) -> int:
        if index == BAR1:
            return spec.REGION_FLAG_READ | spec.REGION_FLAG_WRITE | spec.REGION_FLAG_MMAP
        if index in (BAR0, CONFIG):
            return spec.REGION_FLAG_READ | spec.REGION_FLAG_WRITE
        return 0

    def sparse_areas(self, index: int) -> list[tuple[int, int]]:
        """BAR1's mmap-able areas: all of it but one page-sized hole at 0x1000 (for registers)."""
        if index != BAR1:
            return []
        size = self.config.bar1_size
        if size <= 0x2000:
            return [(0, size)]
        return [(0, 0x1000), (0x2000, size - 0x2000)]

    def read(self, index: int, offset: int, count: int) -> bytes:
        self._check_range(index, offset, count)
        if index == BAR1:
            return self.bar1_view[offset:offset + count].tobytes()
        if index == CONFIG:
            out = bytearray(self.cfg_space[offset:offset + count])
            for bar, size in ((0x10, self.config.bar0_size), (0x14, self.config.bar1_size)):
                lo, hi = max(offset, bar), min(offset + count, bar + 4)
                if lo < hi:
                    val = struct.unpack_from("<I", self.cfg_space, bar)[0]
                    val = (val & ~(size - 1) & 0xFFFFFFFF) | (val & 0xF)
                    out[lo - offset:hi - offset] = struct.pack("<I", val)[lo - bar:hi - bar]
            return bytes(out)
        return bytes(self.regs[offset:offset + count])

    def write(self, index: int, offset: int, data: bytes) -> int:
        """Store data; returns the doorbell value when DOORBELL was written (else -1)."""
        self._check_range(index, offset, len(data))
        if index == BAR1:
            self.bar1_view[offset:offset + len(data)] = data
            return -1
        if index == CONFIG:
            for i, b in enumerate(data):
                m = self.cfg_mask[offset + i]
                old = self.cfg_space[offset + i]
                self.cfg_space[offset + i] = (old & ~m) | (b & m)
            return -1
        saved = {r: self.regs[r:r + 4] for r in _RO_REGS}
        self.regs[offset:offset + len(data)] = data
        for r, v in saved.items():
            self.regs[r:r + 4] = v
        if offset <= REG_DOORBELL < offset + len(data):
            bell = struct.unpack_from("<I", self.regs, REG_DOORBELL)[0]
            self.regs[REG_DOORBELL:REG_DOORBELL + 4] = b"\0\0\0\0"
            return bell
        return -1

    def _check_range(self, index: int, offset: int, count: int) -> None:
        if index >= spec.PCI_NUM_REGIONS:
            raise DeviceError(errno.EINVAL, f"region {index} does not exist")
        if offset + count > self.region_size(index):
            raise DeviceError(errno.EINVAL, f"{spec.PCI_REGIONS[index]} access {offset:#x}+{count} beyond its size")

    def reg(self, off: int, size: int = 4) -> int:
        return int.from_bytes(self.regs[off:off + size], "little")

    def set_reg(self, off: int, value: int) -> None:
        struct.pack_into("<I", self.regs, off, value & 0xFFFFFFFF)

    # ------------------------------------------------------------ interrupts
    def raise_irq(self, sel: int) -> bool:
        key = (0, 0) if sel == 0 else (1, sel - 1)
        fd = self.irq_fds.get(key)
        if fd is None or key in self.irq_masked:
            return False
        os.eventfd_write(fd, 1)
        self.interrupts += 1
        self.set_reg(REG_IRQ_COUNT, self.interrupts)
        return True

    def set_irq_fd(self, key: tuple[int, int], fd: int | None) -> None:
        old = self.irq_fds.pop(key, None)
        if old is not None:
            os.close(old)
        if fd is not None:
            self.irq_fds[key] = fd

    def disable_irqs(self, index: int | None = None) -> None:
        for key in [k for k in self.irq_fds if index is None or k[0] == index]:
            self.set_irq_fd(key, None)

    # ------------------------------------------------------------ DMA
    def find_dma(self, address: int, count: int) -> DmaRegion | None:
        for r in self.dma:
            if r.address <= address and address + count <= r.address + r.size:
                return r
        return None

    def add_dma(self, address: int, size: int, flags: int, offset: int, fd: int | None) -> None:
        if size == 0 or address + size > 1 << 64:
            raise DeviceError(errno.EINVAL, "degenerate DMA range")
        for r in self.dma:
            if address < r.address + r.size and r.address < address + size:
                raise DeviceError(errno.EEXIST, f"overlaps the mapping at {r.address:#x}")
        if len(self.dma) >= spec.DEFAULT_MAX_DMA_MAPS:
            raise DeviceError(errno.ENOSPC, "too many DMA mappings")
        mem = None
        if fd is not None:
            prot = (mmap.PROT_READ if flags & 1 else 0) | (mmap.PROT_WRITE if flags & 2 else 0)
            try:
                mem = mmap.mmap(fd, size, mmap.MAP_SHARED, prot or mmap.PROT_READ, offset=offset)
            except (OSError, ValueError, OverflowError) as exc:
                raise DeviceError(errno.EINVAL, f"cannot mmap the DMA fd: {exc}") from None
        self.dma.append(DmaRegion(address, size, flags, offset, mem))

    def remove_dma(self, address: int, size: int, all_: bool = False) -> None:
        if all_:
            victims = list(self.dma)
        else:
            victims = [r for r in self.dma if r.address == address and r.size == size]
            if not victims:
                raise DeviceError(errno.ENOENT, f"no DMA mapping {address:#x}+{size:#x}")
        for r in victims:
            self.dma.remove(r)
            if r.mem is not None:
                r.mem.close()

    # ------------------------------------------------------------ reset / migration
    def reset(self) -> None:
        self.cfg_space = _config_space(self.config)
        regs = bytearray(self.config.bar0_size)
        struct.pack_into("<I", regs, REG_ID, DEVICE_ID_VALUE)
        struct.pack_into("<I", regs, REG_IRQ_COUNT, self.interrupts)
        self.regs = regs
        self.mig_state = spec.MIG_STATE_RUNNING
        self.resets += 1

    def set_mig_state(self, target: int) -> None:
        if target not in spec.MIG_STATES_SETTABLE:
            raise DeviceError(errno.EINVAL, f"migration state {target} cannot be requested")
        path = migration_path(self.mig_state, target)
        if path is None:
            raise DeviceError(errno.EINVAL, f"no path from {spec.MIG_STATES.get(self.mig_state)} to "
                                            f"{spec.MIG_STATES.get(target)}")
        for st in path:
            if st in _SAVING and not self.mig_out:
                self.mig_out = bytes(self.cfg_space) + bytes(self.regs[:0x40])
            if self.mig_state == spec.MIG_STATE_RESUMING and st == spec.MIG_STATE_STOP:
                blob = bytes(self.mig_in)
                if len(blob) >= 256 + 0x40:
                    self.cfg_space[:] = blob[:256]
                    self.regs[:0x40] = blob[256:256 + 0x40]
                self.mig_in.clear()
            if st == spec.MIG_STATE_RUNNING:
                self.mig_out = b""
            self.mig_state = st

    def mig_read(self, size: int) -> bytes:
        if self.mig_state not in _SAVING:
            raise DeviceError(errno.EINVAL, "migration data read outside PRE_COPY/STOP_COPY")
        out, self.mig_out = self.mig_out[:size], self.mig_out[size:]
        return out

    def mig_write(self, data: bytes) -> None:
        if self.mig_state != spec.MIG_STATE_RESUMING:
            raise DeviceError(errno.EINVAL, "migration data write outside RESUMING")
        self.mig_in += data

    def checksum(self, data: bytes) -> None:
        self.set_reg(REG_CHECKSUM, zlib.crc32(data))

    def close(self) -> None:
        if self.bar1.closed:
            return
        self.disable_irqs()
        self.remove_dma(0, 0, all_=True)
        self.bar1_view.release()
        self.bar1.close()
        os.close(self.bar1_fd)
