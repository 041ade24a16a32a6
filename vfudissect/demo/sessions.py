"""The demo's two sessions: a clean QEMU-shaped one, and one where the server misbehaves on cue.

The clean session follows QEMU 10.2's real one (captures/qemu-10.2-gpio-pci-idio-16):
VERSION with QEMU's capabilities, pipelined DMA_MAPs with a memfd, GET_INFO,
GET_REGION_INFO for every region, GET_IRQ_INFO, SET_IRQS with eventfds,
config-space reads, BAR reads and writes, an interrupt the client really
receives through its eventfd, a DMA round trip by DMA_READ/DMA_WRITE
messages, DEVICE_RESET and DMA_UNMAP; the client checks every effect.

The faulty session injects, through the emulated server's fault schedule,
the faults listed in FAULTS; ``fault_frames()`` finds the frame each one
must be flagged on from the capture's raw messages (not from the analysis).
"""

from __future__ import annotations

import os
import select
import struct
import time
import zlib
from dataclasses import dataclass, field

from .. import spec
from ..core.events import Event, MessageIn
from ..peers.client import QEMU_VERSION_JSON, VfuError, pattern
from ..peers.device import (BAR0, BAR1, CONFIG, DB_DMA_FROM_DEVICE, DB_DMA_TO_DEVICE, DB_FORCE_MESSAGES, DB_IRQ,
                            DEVICE_ID_VALUE, REG_CHECKSUM, REG_DMA_ADDR, REG_DMA_LEN, REG_DMA_OFF, REG_DOORBELL,
                            REG_ID, REG_IRQ_SEL, REG_SCRATCH, REG_STATUS)
from ..peers.faults import Fault, Faults
from ..peers.wire import pack
from .peers import DemoClient, PerConnection

C = spec.Command
RAM_SIZE = 2 << 20
ROM_ADDR, ROM_SIZE = 0xFFFC0000, 0x40000
# Seconds the late reply is held back: past QEMU's own 5 s x-msg-timeout, so `read` flags it with its default
# threshold too; the demo's proxy, with its 0.3 s threshold, flags it live while the request still waits.
LATE_BY = 5.5


@dataclass
class CleanReport:
    """What the client verified end to end in the clean session."""

    interrupts: list[str] = field(default_factory=list)  # the interrupts received through eventfds
    config_ok: bool = False
    dma_to_device_ok: bool = False
    dma_from_device_ok: bool = False
    regions: int = 0
    irq_types: int = 0

    @property
    def ok(self) -> bool:
        return len(self.interrupts) == 2 and self.config_ok and self.dma_to_device_ok and self.dma_from_device_ok

    def lines(self) -> list[str]:
        tick = {True: "ok", False: "FAILED"}
        return [
            f"device: {self.regions} regions, {self.irq_types} IRQ types; config space (vendor/device id, "
            f"capability list, command register): {tick[self.config_ok]}",
            "interrupts received through their eventfds: " + (", ".join(self.interrupts) or "none"),
            f"DMA guest memory -> BAR1 by DMA_READ messages, checksum verified: {tick[self.dma_to_device_ok]}",
            f"DMA BAR1 -> guest memory by DMA_WRITE messages, bytes verified: {tick[self.dma_from_device_ok]}",
        ]


def _eventfd_fired(fd: int, timeout: float = 2.0) -> bool:
    ready, _, _ = select.select([fd], [], [], timeout)
    return bool(ready) and os.eventfd_read(fd) > 0


def _program_dma(c: DemoClient, address: int, length: int, bar1_off: int) -> None:
    c.region_write(BAR0, REG_DMA_ADDR, struct.pack("<Q", address))
    c.write32(BAR0, REG_DMA_LEN, length)
    c.write32(BAR0, REG_DMA_OFF, bar1_off)


def clean_session(c: DemoClient) -> CleanReport:
    """A session shaped like QEMU's, every effect checked."""
    rep = CleanReport()
    c.version(QEMU_VERSION_JSON)
    ram = c.add_memory(0x0, RAM_SIZE, shared=True, name="memory-backend-memfd")
    rom = c.add_memory(ROM_ADDR, ROM_SIZE, shared=False)  # like QEMU's ROM ranges: mapped without an fd
    rom.mem[:16] = b"vfudissect-ROM\0\0"
    assert ram.fd is not None
    ids = c.send_pipelined([
        (C.DMA_MAP, pack("dma_map", argsz=32, flags=3, address=0, size=RAM_SIZE), (ram.fd,)),
        (C.DMA_MAP, pack("dma_map", argsz=32, flags=1, address=ROM_ADDR, size=ROM_SIZE), ())])
    for mid in ids:
        m = c.wait(mid)
        if m.is_error:
            raise VfuError("DMA_MAP", m.error)
    info = c.get_info()
    rep.regions, rep.irq_types = info["num_regions"], info["num_irqs"]
    regions = {i: c.region_info(i) for i in range(info["num_regions"])}
    for i in range(info["num_irqs"]):
        c.irq_info(i)
    intx = os.eventfd(0, os.EFD_CLOEXEC)
    msi = [os.eventfd(0, os.EFD_CLOEXEC) for _ in range(2)]
    try:
        c.set_irqs(0, 0, [intx])
        c.set_irqs(1, 0, msi)
        # config space like QEMU: all of it, the capability list, then enable memory and bus mastering
        cfg = c.region_read(CONFIG, 0, 256)
        cap, caps = cfg[0x34], []
        while cap and cap not in caps and len(caps) < 8:
            caps.append(cap)
            cap = c.region_read(CONFIG, cap + 1, 1)[0]
        c.region_write(CONFIG, 0x04, b"\x06\x00")
        rep.config_ok = (cfg[:4] == struct.pack("<HH", 0x1AF4, 0x10F0) and len(caps) == 2
                         and c.region_read(CONFIG, 0x04, 2) == b"\x06\x00")
        # BAR0 registers
        if c.read32(BAR0, REG_ID) != DEVICE_ID_VALUE:
            raise VfuError("BAR0 ID register", 0)
        c.write32(BAR0, REG_SCRATCH, 0xC0FFEE)
        if c.read32(BAR0, REG_SCRATCH) != 0xC0FFEE:
            raise VfuError("BAR0 scratch register", 0)
        # interrupts: INTx, then MSI vector 1, each one really arriving on its eventfd
        for sel, fd, name in ((0, intx, "INTx"), (2, msi[1], "MSI vector 1")):
            c.write32(BAR0, REG_IRQ_SEL, sel)
            c.write32(BAR0, REG_DOORBELL, DB_IRQ)
            if _eventfd_fired(fd):
                rep.interrupts.append(name)
        # DMA round trip: guest memory -> BAR1 by DMA_READ messages, BAR1 -> guest memory by DMA_WRITE
        a = pattern(1, 4096)
        ram.mem[0x10000:0x11000] = a
        _program_dma(c, 0x10000, 4096, 0x2000)
        c.write32(BAR0, REG_DOORBELL, DB_DMA_TO_DEVICE | DB_FORCE_MESSAGES)
        rep.dma_to_device_ok = (c.read32(BAR0, REG_STATUS) == 0 and c.read32(BAR0, REG_CHECKSUM) == zlib.crc32(a)
                                and c.region_read(BAR1, 0x2000, 4096) == a)
        _program_dma(c, 0x20000, 4096, 0x2000)
        c.write32(BAR0, REG_DOORBELL, DB_DMA_FROM_DEVICE | DB_FORCE_MESSAGES)
        rep.dma_from_device_ok = c.read32(BAR0, REG_STATUS) == 0 and ram.mem[0x20000:0x21000] == a
        c.reset()
        c.disable_irqs(0)
        c.disable_irqs(1)
        c.dma_unmap(ROM_ADDR, ROM_SIZE)
        c.dma_unmap(0, 0, flags=2)  # unmap all, as QEMU does at teardown
    finally:
        for fd in (intx, *msi):
            os.close(fd)
        for r in regions.values():
            if r.fd is not None:
                os.close(r.fd)
    return rep


# ------------------------------------------------------------------ the faulty session
@dataclass(frozen=True, slots=True)
class Injected:
    """A fault the server injects, the finding it must get, and in words where."""

    label: str
    code: str
    on: str  # the message it is about, in words


FAULTS = (
    Injected("late reply", "REPLY_TIMEOUT", f"the REGION_READ whose reply comes {LATE_BY:g} s late"),
    Injected("wrong command", "REPLY_COMMAND_MISMATCH", "the REGION_READ reply that says DEVICE_GET_INFO"),
    Injected("wrong id", "UNMATCHED_REPLY", "the REGION_WRITE reply with another msg_id"),
    Injected("incompatible major", "VERSION_MAJOR_MISMATCH", "the second connection's VERSION reply (major 1)"),
    Injected("malformed capabilities", "CAPS_MALFORMED", "the same VERSION reply (JSON cut short)"),
)
# What the faults lead to besides: the client drops the connection on the reply it did not ask for, so
# its REGION_WRITE never gets an answer.
CONSEQUENCES = (("NO_REPLY", "the REGION_WRITE whose reply came with a wrong id"),)


def fault_schedules(late_by: float = LATE_BY) -> PerConnection:
    """Connection 1: a late, a wrong-command and a wrong-id reply; connection 2: an incompatible VERSION."""
    return PerConnection(
        Faults(Fault("delay", command=C.REGION_READ, kind="reply", nth=1, delay=late_by),
               Fault("wrong_command", command=C.REGION_READ, kind="reply", nth=2),
               Fault("wrong_id", command=C.REGION_WRITE, kind="reply", nth=1)),
        Faults(Fault("bad_version", command=C.VERSION, kind="reply"),
               Fault("caps_malformed", command=C.VERSION, kind="reply")))


def faulty_session(c: DemoClient) -> list[str]:
    """Connection 1 of the faulty run; returns what the client noticed."""
    seen: list[str] = []
    c.version(QEMU_VERSION_JSON)
    ram = c.add_memory(0x0, RAM_SIZE, shared=True, name="memory-backend-memfd")
    c.wait(c.dma_map_send(ram, flags=3))
    c.get_info()
    c.region_info(BAR0)
    t0 = time.monotonic()
    ident = c.read32(BAR0, REG_ID)  # its reply is held back
    seen.append(f"REGION_READ BAR0 ID: answer {ident:#x} arrived after {time.monotonic() - t0:.1f} s")
    mid = c.send(C.REGION_READ, struct.pack("<QII", REG_SCRATCH, BAR0, 4))
    m = c.wait(mid)
    seen.append(f"REGION_READ BAR0 SCRATCH id={mid}: the reply says {spec.command_name(m.command)}")
    mid = c.send(C.REGION_WRITE, struct.pack("<QII", REG_SCRATCH, BAR0, 4) + struct.pack("<I", 0xC0FFEE))
    c.pump(2.0)
    if c.unexpected:
        u = c.unexpected[0]
        seen.append(f"REGION_WRITE id={mid}: a reply with id={u.msg_id} came instead; the client drops the "
                    "connection")
    return seen


def version_refused(c: DemoClient) -> str:
    """Connection 2: VERSION, and what the client makes of the server's answer."""
    mid = c.send(C.VERSION, struct.pack("<HH", 0, 0) + QEMU_VERSION_JSON)
    m = c.wait(mid)
    major, minor = struct.unpack_from("<HH", m.payload) if len(m.payload) >= 4 else (-1, -1)
    return (f"VERSION: the server answered {major}.{minor} with unparseable capabilities; the client "
            "refuses and hangs up")


# ------------------------------------------------------------------ where each fault must be flagged
def fault_frames(events: list[Event]) -> dict[str, tuple[int, ...]]:
    """For each FAULTS label (and each consequence code), the frames its finding must carry, from raw messages.

    LookupError when the capture is not one of the faulty session's.
    """
    msgs = [e for e in events if isinstance(e, MessageIn) and len(e.data) >= spec.HEADER_SIZE]

    def hdr(e: MessageIn) -> tuple[int, int, bool]:
        mid, cmd, _size, flags, _err = spec.HEADER.unpack_from(e.data)
        return mid, cmd, flags & spec.FLAG_TYPE_MASK == spec.MSG_TYPE_REPLY

    def requests(conn: int, cmd: int) -> list[MessageIn]:
        return [e for e in msgs if e.conn == conn and e.dir == spec.C2S and hdr(e)[1] == cmd and not hdr(e)[2]]

    def reply_to(req: MessageIn) -> MessageIn:
        mid = hdr(req)[0]
        return next(e for e in msgs if e.conn == req.conn and e.dir == spec.S2C and hdr(e)[2] and hdr(e)[0] == mid)

    try:
        reads, writes = requests(1, C.REGION_READ), requests(1, C.REGION_WRITE)
        client_ids = {hdr(e)[0] for e in msgs if e.conn == 1 and e.dir == spec.C2S}
        stray = next(e for e in msgs
                     if e.conn == 1 and e.dir == spec.S2C and hdr(e)[2] and hdr(e)[0] not in client_ids)
        v_req = requests(2, C.VERSION)[0]
        v_rep = reply_to(v_req)
        wrong_cmd = reply_to(reads[1])
        write = writes[0]
    except (StopIteration, IndexError):
        raise LookupError("the capture does not hold the messages the demo's faults are injected into") from None
    return {
        "late reply": (reads[0].frame,),
        "wrong command": (wrong_cmd.frame, reads[1].frame),
        "wrong id": (stray.frame,),
        "incompatible major": (v_rep.frame, v_req.frame),
        "malformed capabilities": (v_rep.frame,),
        "NO_REPLY": (write.frame,),
    }
