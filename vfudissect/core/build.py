"""Message builders: raw vfio-user messages from the spec's layouts, for examples, tests, peers and users.

    version(0)                          # QEMU's VERSION proposal
    region_read(5, region=7, count=4)   # a 4-byte config-space read
    reply(dma_map(1, 0, 0x1000))        # its success reply
"""

from __future__ import annotations

import json
import struct
from typing import Any

from .. import spec
from .events import FdInfo

QEMU_CAPS: dict[str, Any] = {"capabilities": {
    "pgsizes": 4096, "max_msg_fds": 16, "max_dma_maps": 65535, "max_data_xfer_size": 1048576,
    "migration": {"max_bitmap_size": 268435456, "pgsize": 4096}, "write_multiple": True}}
LVU_CAPS: dict[str, Any] = {"capabilities": {"max_msg_fds": 8, "max_data_xfer_size": 1048576}}

MEMFD = FdInfo("memfd", 1 << 28, 4242, 2, "/memfd:memory-backend-memfd (deleted)")
EVENTFD = FdInfo("eventfd", 0, 11, 2, "anon_inode:[eventfd]")


def message(msg_id: int, command: int, payload: bytes = b"", *, reply: bool = False, no_reply: bool = False,
            error: int = 0, error_flag: bool | None = None, flags: int | None = None, size: int | None = None) -> bytes:
    """A raw message: 16-byte header + payload. ``size`` overrides the header's size field."""
    if flags is None:
        flags = (spec.MSG_TYPE_REPLY if reply else spec.MSG_TYPE_COMMAND) | (spec.FLAG_NO_REPLY if no_reply else 0)
        if error_flag or (error_flag is None and error):
            flags |= spec.FLAG_ERROR
    return spec.HEADER.pack(msg_id, command, 16 + len(payload) if size is None else size, flags, error) + payload


def layout(key: str, **values: int) -> bytes:
    """Pack the fixed fields of spec.LAYOUTS[key]; missing fields are 0."""
    lay = spec.LAYOUTS[key]
    return struct.pack(lay.fmt, *(values.get(f.name, 0) for f in lay.fields))


def reply(request: bytes, payload: bytes | None = None, *, error: int = 0, msg_id: int | None = None,
          command: int | None = None) -> bytes:
    """A reply to ``request``: same id and command, payload given (default: none)."""
    rid, rcmd, _size, _flags, _err = spec.HEADER.unpack_from(request)
    return message(rid if msg_id is None else msg_id, rcmd if command is None else command,
                   payload or b"", reply=True, error=error)


def version(msg_id: int = 0, major: int = 0, minor: int = 0, caps: Any = QEMU_CAPS, *, reply_: bool = False,
            raw: bytes | None = None) -> bytes:
    data = raw if raw is not None else (json.dumps(caps).encode() + b"\0" if caps is not None else b"")
    return message(msg_id, spec.Command.VERSION, struct.pack("<HH", major, minor) + data, reply=reply_)


def version_reply(msg_id: int = 0, major: int = 0, minor: int = 0, caps: Any = LVU_CAPS,
                  raw: bytes | None = None) -> bytes:
    return version(msg_id, major, minor, caps, reply_=True, raw=raw)


def dma_map(msg_id: int, address: int, size: int, flags: int = 3, offset: int = 0, argsz: int = 32) -> bytes:
    return message(msg_id, spec.Command.DMA_MAP,
                   layout("dma_map", argsz=argsz, flags=flags, offset=offset, address=address, size=size))


def dma_unmap(msg_id: int, address: int, size: int, flags: int = 0) -> bytes:
    return message(msg_id, spec.Command.DMA_UNMAP, layout("dma_unmap", argsz=24, flags=flags, address=address,
                                                          size=size))


def get_info(msg_id: int) -> bytes:
    return message(msg_id, spec.Command.DEVICE_GET_INFO, layout("device_info", argsz=16))


def get_info_reply(msg_id: int, num_regions: int = 9, num_irqs: int = 5, flags: int = 3) -> bytes:
    return message(msg_id, spec.Command.DEVICE_GET_INFO,
                   layout("device_info", argsz=16, flags=flags, num_regions=num_regions, num_irqs=num_irqs),
                   reply=True)


def region_info(msg_id: int, index: int, argsz: int = 32) -> bytes:
    return message(msg_id, spec.Command.DEVICE_GET_REGION_INFO, layout("region_info", argsz=argsz, index=index))


def region_info_reply(msg_id: int, index: int, size: int, flags: int = 3, argsz: int = 32,
                      caps: bytes = b"", cap_offset: int = 0) -> bytes:
    return message(msg_id, spec.Command.DEVICE_GET_REGION_INFO,
                   layout("region_info", argsz=argsz, flags=flags, index=index, cap_offset=cap_offset, size=size)
                   + caps, reply=True)


def irq_info(msg_id: int, index: int) -> bytes:
    return message(msg_id, spec.Command.DEVICE_GET_IRQ_INFO, layout("irq_info", argsz=16, index=index))


def irq_info_reply(msg_id: int, index: int, count: int, flags: int = 1) -> bytes:
    return message(msg_id, spec.Command.DEVICE_GET_IRQ_INFO,
                   layout("irq_info", argsz=16, flags=flags, index=index, count=count), reply=True)


def set_irqs(msg_id: int, index: int, start: int, count: int, flags: int = 0x24, data: bytes = b"") -> bytes:
    return message(msg_id, spec.Command.DEVICE_SET_IRQS,
                   layout("irq_set", argsz=20 + len(data), flags=flags, index=index, start=start, count=count) + data)


def region_read(msg_id: int, region: int, offset: int = 0, count: int = 4) -> bytes:
    return message(msg_id, spec.Command.REGION_READ, layout("region_access", offset=offset, region=region,
                                                            count=count))


def region_read_reply(msg_id: int, region: int, offset: int = 0, count: int = 4, data: bytes | None = None) -> bytes:
    body = data if data is not None else bytes(count)
    return message(msg_id, spec.Command.REGION_READ,
                   layout("region_access", offset=offset, region=region, count=count) + body, reply=True)


def region_write(msg_id: int, region: int, offset: int = 0, data: bytes = b"\0\0\0\0", no_reply: bool = False,
                 count: int | None = None) -> bytes:
    return message(msg_id, spec.Command.REGION_WRITE,
                   layout("region_access", offset=offset, region=region,
                          count=len(data) if count is None else count) + data, no_reply=no_reply)


def region_write_reply(msg_id: int, region: int, offset: int = 0, count: int = 4) -> bytes:
    return message(msg_id, spec.Command.REGION_WRITE,
                   layout("region_access", offset=offset, region=region, count=count), reply=True)


def dma_read(msg_id: int, address: int, count: int) -> bytes:
    return message(msg_id, spec.Command.DMA_READ, layout("dma_access", address=address, count=count))


def dma_read_reply(msg_id: int, address: int, count: int, data: bytes | None = None) -> bytes:
    return message(msg_id, spec.Command.DMA_READ,
                   layout("dma_access", address=address, count=count) + (data or bytes(count)), reply=True)


def dma_write(msg_id: int, address: int, data: bytes) -> bytes:
    return message(msg_id, spec.Command.DMA_WRITE, layout("dma_access", address=address, count=len(data)) + data)


def device_reset(msg_id: int) -> bytes:
    return message(msg_id, spec.Command.DEVICE_RESET)


def device_feature(msg_id: int, feature: int, ops: int, data: bytes = b"", argsz: int | None = None) -> bytes:
    return message(msg_id, spec.Command.DEVICE_FEATURE,
                   layout("device_feature", argsz=8 + len(data) if argsz is None else argsz,
                          flags=feature | ops) + data)


def mig_data_read(msg_id: int, size: int) -> bytes:
    return message(msg_id, spec.Command.MIG_DATA_READ, layout("mig_data", argsz=8 + size, size=size))


def mig_data_write(msg_id: int, data: bytes) -> bytes:
    return message(msg_id, spec.Command.MIG_DATA_WRITE, layout("mig_data", argsz=8 + len(data), size=len(data))
                   + data)


def handshake_steps(caps: Any = QEMU_CAPS, reply_caps: Any = LVU_CAPS,
                    device: bool = True) -> list[tuple[str, bytes]]:
    """A clean start as (direction, message): VERSION exchange and, with ``device``, GET_INFO plus region and
    IRQ info for BAR0 (4 KiB), BAR1 (64 KiB), CONFIG (256 B) and MSI (4 vectors)."""
    steps = [(spec.C2S, version(0, caps=caps)), (spec.S2C, version_reply(0, caps=reply_caps))]
    if device:
        steps += [(spec.C2S, get_info(1)), (spec.S2C, get_info_reply(1))]
        for i, (idx, size) in enumerate(((0, 0x1000), (1, 0x10000), (7, 0x100))):
            steps += [(spec.C2S, region_info(2 + i, idx)), (spec.S2C, region_info_reply(2 + i, idx, size))]
        steps += [(spec.C2S, irq_info(5, 1)), (spec.S2C, irq_info_reply(5, 1, 4))]
    return steps
