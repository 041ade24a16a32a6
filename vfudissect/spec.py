"""The vfio-user protocol as data: the one source of truth for every other module.

Commands, header flag bits, payload layouts (field names from the spec),
enumerations, errno names, the capability schema, the finding catalogue and the
``VFUC`` capture constants all live here.  The fast decoder, the scapy layers,
the analysis engine, the CLI and the Lua generator derive from these tables;
nothing here does I/O or imports scapy.

References in comments: SPEC = QEMU docs/interop/vfio-user.rst, LVU =
libvfio-user, QEMU = hw/vfio-user/; section numbers refer to the fact sheet.
"""

from __future__ import annotations

import errno as _errno
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Mapping

# --------------------------------------------------------------------------
# Header (SPEC "Header"; fact sheet section 2)
# --------------------------------------------------------------------------

HEADER = struct.Struct("<HHIII")  # msg_id, command, size, flags, error
HEADER_SIZE = HEADER.size  # 16

FLAG_TYPE_MASK = 0x0000000F
FLAG_NO_REPLY = 0x00000010
FLAG_ERROR = 0x00000020
FLAG_RESERVED_MASK = 0xFFFFFFC0

MSG_TYPE_COMMAND = 0
MSG_TYPE_REPLY = 1
MSG_TYPE_NAMES: Mapping[int, str] = {MSG_TYPE_COMMAND: "command", MSG_TYPE_REPLY: "reply"}

HEADER_FLAG_BITS: Mapping[int, str] = {FLAG_NO_REPLY: "no_reply", FLAG_ERROR: "error"}

# Size limits (fact sheet 2.2, 6.2)
DEFAULT_MAX_DATA_XFER_SIZE = 1048576
DEFAULT_MAX_MSG_FDS = 1  # spec default when absent
QEMU_DEFAULT_MAX_MSG_FDS = 8  # what QEMU assumes when the server omits it
QEMU_MAX_MAX_MSG_FDS = 16
QEMU_MAX_MAX_DATA_XFER_SIZE = 64 * 1024 * 1024
LVU_MAX_MAX_MSG_FDS = 1024
LVU_SERVER_MAX_MSG_SIZE = 1048576 + 16 + 16  # 1048608
DEFAULT_MAX_DMA_MAPS = 65535
DEFAULT_PGSIZES = 4096
QEMU_MAX_BITMAP_SIZE = 256 * 1024 * 1024
DEFAULT_REPLY_TIMEOUT = 5.0  # seconds; QEMU's x-msg-timeout default (5000 ms)
NO_REPLY_KEPT = 64  # commands sent with No_reply kept per msg_id, to pair a stray reply to one with it
FRAMING_SLACK = 64  # bytes allowed above max_data_xfer_size + fixed parts when framing

# --------------------------------------------------------------------------
# Commands (SPEC "Commands"; fact sheet section 3)
# --------------------------------------------------------------------------


class Command(IntEnum):
    VERSION = 1
    DMA_MAP = 2
    DMA_UNMAP = 3
    DEVICE_GET_INFO = 4
    DEVICE_GET_REGION_INFO = 5
    DEVICE_GET_REGION_IO_FDS = 6
    DEVICE_GET_IRQ_INFO = 7
    DEVICE_SET_IRQS = 8
    REGION_READ = 9
    REGION_WRITE = 10
    DMA_READ = 11
    DMA_WRITE = 12
    DEVICE_RESET = 13
    DIRTY_PAGES = 14  # removed Sep 2023 (historic migration v1)
    REGION_WRITE_MULTI = 15
    DEVICE_FEATURE = 16
    MIG_DATA_READ = 17
    MIG_DATA_WRITE = 18


C2S = "c2s"
S2C = "s2c"
DIRECTIONS = (C2S, S2C)
DIR_CODES: Mapping[str, int] = {C2S: 0, S2C: 1}


@dataclass(frozen=True, slots=True)
class CommandInfo:
    """What the spec and the implementations say of one command code."""

    code: int
    name: str  # short name, e.g. "DMA_MAP"
    requester: str  # C2S or S2C: who sends the command
    status: str  # "current" or "removed"
    request_layout: str | None  # key into LAYOUTS; None = no payload
    reply_layout: str | None
    request_min: int  # fixed payload bytes of a request
    reply_min: int  # fixed payload bytes of a successful reply
    request_fds: tuple[int, int]  # (min, max) fds the request may carry; max -1 = count-dependent
    reply_fds: tuple[int, int]
    summary: str


COMMANDS: Mapping[int, CommandInfo] = {
    c.code: c
    for c in (
        CommandInfo(1, "VERSION", C2S, "current", "version", "version", 4, 4, (0, 0), (0, 1),
                    "negotiate protocol version and capabilities"),
        CommandInfo(2, "DMA_MAP", C2S, "current", "dma_map", None, 32, 0, (0, 1), (0, 0),
                    "add a DMA region, optionally backed by a passed fd"),
        CommandInfo(3, "DMA_UNMAP", C2S, "current", "dma_unmap", "dma_unmap", 24, 24, (0, 0), (0, 0),
                    "remove a DMA region"),
        CommandInfo(4, "DEVICE_GET_INFO", C2S, "current", "device_info", "device_info", 16, 16, (0, 0), (0, 0),
                    "device flags, number of regions and IRQ types"),
        CommandInfo(5, "DEVICE_GET_REGION_INFO", C2S, "current", "region_info", "region_info", 32, 32, (0, 0),
                    (0, 1), "one region's flags, size, mmap offset and capabilities"),
        CommandInfo(6, "DEVICE_GET_REGION_IO_FDS", C2S, "current", "region_io_fds", "region_io_fds", 16, 16,
                    (0, 0), (0, -1), "ioeventfds / ioregionfds of a region"),
        CommandInfo(7, "DEVICE_GET_IRQ_INFO", C2S, "current", "irq_info", "irq_info", 16, 16, (0, 0), (0, 0),
                    "one IRQ type's flags and count"),
        CommandInfo(8, "DEVICE_SET_IRQS", C2S, "current", "irq_set", None, 20, 0, (0, -1), (0, 0),
                    "set, mask, unmask or trigger interrupts (eventfds)"),
        CommandInfo(9, "REGION_READ", C2S, "current", "region_access", "region_access", 16, 16, (0, 0), (0, 0),
                    "read from a device region"),
        CommandInfo(10, "REGION_WRITE", C2S, "current", "region_access", "region_access", 16, 16, (0, 0), (0, 0),
                    "write to a device region"),
        CommandInfo(11, "DMA_READ", S2C, "current", "dma_access", "dma_access", 16, 16, (0, 0), (0, 0),
                    "server reads client memory"),
        CommandInfo(12, "DMA_WRITE", S2C, "current", "dma_access", "dma_access", 16, 0, (0, 0), (0, 0),
                    "server writes client memory"),
        CommandInfo(13, "DEVICE_RESET", C2S, "current", None, None, 0, 0, (0, 0), (0, 0),
                    "reset the device"),
        CommandInfo(14, "DIRTY_PAGES", C2S, "removed", "dirty_pages", "dirty_pages", 8, 0, (0, 0), (0, 0),
                    "historic dirty-page logging (removed 2023)"),
        CommandInfo(15, "REGION_WRITE_MULTI", C2S, "current", "write_multi", "write_multi_reply", 8, 8, (0, 0),
                    (0, 0), "several small posted region writes"),
        CommandInfo(16, "DEVICE_FEATURE", C2S, "current", "device_feature", "device_feature", 8, 8, (0, 0),
                    (0, 0), "get / set / probe a device feature (migration, DMA logging)"),
        CommandInfo(17, "MIG_DATA_READ", C2S, "current", "mig_data", "mig_data", 8, 8, (0, 0), (0, 0),
                    "read migration data"),
        CommandInfo(18, "MIG_DATA_WRITE", C2S, "current", "mig_data", None, 8, 0, (0, 0), (0, 0),
                    "write migration data"),
    )
}

COMMAND_NAMES: Mapping[int, str] = {code: info.name for code, info in COMMANDS.items()}


def command_name(code: int) -> str:
    """Short name of a command code, ``CMD_<n>`` for unknown codes."""
    info = COMMANDS.get(code)
    return info.name if info is not None else f"CMD_{code}"


# --------------------------------------------------------------------------
# Enumerations and flag bits re-used from <linux/vfio.h> (fact sheet section 5)
# --------------------------------------------------------------------------

DMA_MAP_FLAGS: Mapping[int, str] = {0x1: "READ", 0x2: "WRITE", 0x4: "MMAP", 0x8: "FILE_IO"}
DMA_MAP_FLAGS_SPEC = 0x3  # bits the spec defines; 0x4/0x8 are libvfio-user's extension
DMA_MAP_FLAGS_LVU = 0xF
DMA_UNMAP_FLAGS: Mapping[int, str] = {0x1: "GET_DIRTY_BITMAP", 0x2: "ALL"}
QEMU_MAX_REGIONS, QEMU_MAX_IRQS = 100, 50  # QEMU refuses a device reporting more (hw/vfio-user/device.c)
PCI_MIN_REGIONS = 9  # BAR0-5, ROM, CONFIG, VGA: a PCI device has at least these indices
DEVICE_INFO_FLAGS: Mapping[int, str] = {
    0x1: "RESET", 0x2: "PCI", 0x4: "PLATFORM", 0x8: "AMBA", 0x10: "CCW", 0x20: "AP", 0x40: "FSL_MC", 0x80: "CAPS",
}
REGION_INFO_FLAGS: Mapping[int, str] = {0x1: "READ", 0x2: "WRITE", 0x4: "MMAP", 0x8: "CAPS"}
REGION_FLAG_READ, REGION_FLAG_WRITE, REGION_FLAG_MMAP, REGION_FLAG_CAPS = 0x1, 0x2, 0x4, 0x8
IRQ_INFO_FLAGS: Mapping[int, str] = {0x1: "EVENTFD", 0x2: "MASKABLE", 0x4: "AUTOMASKED", 0x8: "NORESIZE"}
IRQ_SET_FLAGS: Mapping[int, str] = {
    0x1: "DATA_NONE", 0x2: "DATA_BOOL", 0x4: "DATA_EVENTFD",
    0x8: "ACTION_MASK", 0x10: "ACTION_UNMASK", 0x20: "ACTION_TRIGGER",
}
IRQ_SET_DATA_NONE, IRQ_SET_DATA_BOOL, IRQ_SET_DATA_EVENTFD = 0x1, 0x2, 0x4
IRQ_SET_DATA_MASK = 0x07
IRQ_SET_ACTION_MASK_BIT, IRQ_SET_ACTION_UNMASK, IRQ_SET_ACTION_TRIGGER = 0x8, 0x10, 0x20
IRQ_SET_ACTION_MASK = 0x38
PCI_REGIONS: Mapping[int, str] = {
    0: "BAR0", 1: "BAR1", 2: "BAR2", 3: "BAR3", 4: "BAR4", 5: "BAR5", 6: "ROM", 7: "CONFIG", 8: "VGA",
}
PCI_NUM_REGIONS = 9
PCI_IRQS: Mapping[int, str] = {0: "INTX", 1: "MSI", 2: "MSIX", 3: "ERR", 4: "REQ"}
REGION_CAP_IDS: Mapping[int, str] = {
    1: "SPARSE_MMAP", 2: "TYPE", 3: "MSIX_MAPPABLE", 4: "NVLINK2_SSATGT", 5: "NVLINK2_LNKSPD",
}
REGION_CAP_SPARSE_MMAP, REGION_CAP_TYPE = 1, 2
REGION_TYPES: Mapping[int, str] = {1: "GFX", 2: "CCW", 3: "MIGRATION", 0x80000000: "PCI_VENDOR_TYPE"}
IO_FD_TYPES: Mapping[int, str] = {0: "IOEVENTFD", 1: "IOREGIONFD", 2: "IOEVENTFD_SHADOW"}
DIRTY_PAGES_FLAGS: Mapping[int, str] = {0x1: "START", 0x2: "STOP", 0x4: "GET_BITMAP"}

FEATURE_MASK = 0xFFFF
FEATURE_GET, FEATURE_SET, FEATURE_PROBE = 0x10000, 0x20000, 0x40000
DEVICE_FEATURE_FLAGS: Mapping[int, str] = {FEATURE_GET: "GET", FEATURE_SET: "SET", FEATURE_PROBE: "PROBE"}
FEATURES: Mapping[int, str] = {
    0: "PCI_VF_TOKEN", 1: "MIGRATION", 2: "MIG_DEVICE_STATE", 3: "LOW_POWER_ENTRY",
    4: "LOW_POWER_ENTRY_WITH_WAKEUP", 5: "LOW_POWER_EXIT", 6: "DMA_LOGGING_START",
    7: "DMA_LOGGING_STOP", 8: "DMA_LOGGING_REPORT",
}
VFIO_USER_FEATURES = frozenset({1, 2, 6, 7, 8})
FEATURE_MIGRATION, FEATURE_MIG_DEVICE_STATE = 1, 2
FEATURE_DMA_LOGGING_START, FEATURE_DMA_LOGGING_STOP, FEATURE_DMA_LOGGING_REPORT = 6, 7, 8
MIGRATION_FLAGS: Mapping[int, str] = {0x1: "STOP_COPY", 0x2: "P2P", 0x4: "PRE_COPY"}
MIG_STATES: Mapping[int, str] = {
    0: "ERROR", 1: "STOP", 2: "RUNNING", 3: "STOP_COPY", 4: "RESUMING", 5: "RUNNING_P2P", 6: "PRE_COPY",
    7: "PRE_COPY_P2P",
}
MIG_STATE_STOP, MIG_STATE_RUNNING, MIG_STATE_STOP_COPY, MIG_STATE_RESUMING, MIG_STATE_PRE_COPY = 1, 2, 3, 4, 6
MIG_STATES_SETTABLE = frozenset({1, 2, 3, 4, 6})
MIG_V1_STATE_BITS: Mapping[int, str] = {0x1: "RUNNING", 0x2: "SAVING", 0x4: "RESUMING"}
# Legacy migration v1: region of type 3 / subtype 1 (libvfio-user: index PCI_NUM_REGIONS) starts with
# vfio_device_migration_info (fact sheet 10.2), driven by REGION_READ/WRITE.
MIG_V1_INFO = struct.Struct("<IIQQQ")  # device_state, reserved, pending_bytes, data_offset, data_size (32)

# --------------------------------------------------------------------------
# Payload layouts (fact sheet section 4).  Every fixed part is a run of
# little-endian integers at natural alignment; the variable tail is named.
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    """One fixed-width little-endian integer of a payload."""

    name: str  # the spec's field name
    size: int  # 1, 2, 4 or 8 bytes
    hex: bool = False  # show in hex
    values: Mapping[int, str] | None = None  # enumeration names
    bits: Mapping[int, str] | None = None  # flag-bit names (mask -> name)
    desc: str = ""


@dataclass(frozen=True, slots=True)
class Layout:
    """A payload: fixed fields at consecutive offsets, then a named variable tail."""

    key: str  # abbreviation prefix: vfio_user.<key>.<field>
    title: str
    fields: tuple[Field, ...]
    tail: str | None = None  # json | data | caps | io_fds | irq_data | multi | feature_data | bitmap | dirty
    fmt: str = field(init=False)
    size: int = field(init=False)

    def __post_init__(self) -> None:
        codes = {1: "B", 2: "H", 4: "I", 8: "Q"}
        object.__setattr__(self, "fmt", "<" + "".join(codes[f.size] for f in self.fields))
        object.__setattr__(self, "size", sum(f.size for f in self.fields))

    def offset_of(self, name: str) -> int:
        off = 0
        for f in self.fields:
            if f.name == name:
                return off
            off += f.size
        raise KeyError(name)


_argsz = Field("argsz", 4, desc="request: largest reply payload accepted; reply: size the full reply needs")

LAYOUTS: Mapping[str, Layout] = {
    lay.key: lay
    for lay in (
        Layout("version", "Version", (Field("major", 2), Field("minor", 2)), "json"),
        Layout("dma_map", "DMA map", (
            Field("argsz", 4, desc="size of this struct (32)"),
            Field("flags", 4, hex=True, bits=DMA_MAP_FLAGS),
            Field("offset", 8, hex=True, desc="offset within the passed fd"),
            Field("address", 8, hex=True, desc="DMA (IOVA) base"),
            Field("size", 8, hex=True))),
        Layout("dma_unmap", "DMA unmap", (
            _argsz, Field("flags", 4, hex=True, bits=DMA_UNMAP_FLAGS),
            Field("address", 8, hex=True), Field("size", 8, hex=True)), "bitmap"),
        Layout("device_info", "Device info", (
            _argsz, Field("flags", 4, hex=True, bits=DEVICE_INFO_FLAGS),
            Field("num_regions", 4), Field("num_irqs", 4))),
        Layout("region_info", "Region info", (
            _argsz, Field("flags", 4, hex=True, bits=REGION_INFO_FLAGS),
            Field("index", 4, values=PCI_REGIONS), Field("cap_offset", 4),
            Field("size", 8, hex=True), Field("offset", 8, hex=True, desc="offset to pass to mmap()")), "caps"),
        Layout("region_io_fds", "Region I/O fds", (
            _argsz, Field("flags", 4, hex=True), Field("index", 4, values=PCI_REGIONS),
            Field("count", 4)), "io_fds"),
        Layout("irq_info", "IRQ info", (
            _argsz, Field("flags", 4, hex=True, bits=IRQ_INFO_FLAGS),
            Field("index", 4, values=PCI_IRQS), Field("count", 4))),
        Layout("irq_set", "IRQ set", (
            Field("argsz", 4, desc="size of the request payload including data"),
            Field("flags", 4, hex=True, bits=IRQ_SET_FLAGS),
            Field("index", 4, values=PCI_IRQS), Field("start", 4), Field("count", 4)), "irq_data"),
        Layout("region_access", "Region access", (
            Field("offset", 8, hex=True), Field("region", 4, values=PCI_REGIONS), Field("count", 4)), "data"),
        Layout("dma_access", "DMA access", (Field("address", 8, hex=True), Field("count", 8)), "data"),
        Layout("dirty_pages", "Dirty pages (historic)", (
            _argsz, Field("flags", 4, hex=True, bits=DIRTY_PAGES_FLAGS)), "dirty"),
        Layout("write_multi", "Region write multi", (Field("wr_cnt", 8),), "multi"),
        Layout("write_multi_reply", "Region write multi reply", (Field("wr_cnt", 8),)),
        Layout("device_feature", "Device feature", (
            _argsz, Field("flags", 4, hex=True, bits=DEVICE_FEATURE_FLAGS)), "feature_data"),
        Layout("mig_data", "Migration data", (_argsz, Field("size", 4)), "data"),
    )
}

# Variable-tail sub-structures (used by the decoders and the Lua generator).
REGION_CAP_HEADER = struct.Struct("<HHI")  # id, version, next
SPARSE_MMAP_HEAD = struct.Struct("<II")  # nr_areas, reserved
SPARSE_AREA = struct.Struct("<QQ")  # offset, size
REGION_TYPE_CAP = struct.Struct("<II")  # type, subtype
IO_FD_ENTRY_SPEC = struct.Struct("<QQIIIIQ")  # offset, size, fd_index, type, flags, padding, datamatch (40)
IO_FD_ENTRY_LVU = struct.Struct("<QQIIIIQQ")  # gpa_offset, size, fd_index, type, flags, shadow_fd, shadow_off, datamatch (48)
WRITE_MULTI_ENTRY = struct.Struct("<QII8s")  # offset, region, count, data (24)
UNMAP_BITMAP = struct.Struct("<QQ")  # pgsize, size
DIRTY_BITMAP_RANGE = struct.Struct("<QQQQ")  # iova, size, pgsize, bitmap size
QEMU_DMA_ACCESS = struct.Struct("<QI")  # address, count (u32); data at +12 (QEMU's VFIOUserDMARW)
MIG_STATE_DATA = struct.Struct("<II")  # device_state, data_fd
LOGGING_HEAD = struct.Struct("<QII")  # page_size, num_ranges, reserved
LOGGING_RANGE = struct.Struct("<QQ")  # iova, length
LOGGING_REPORT = struct.Struct("<QQQ")  # iova, length, page_size
WRITE_MULTI_MAX = 200  # QEMU's limit

# Variable-tail sub-structures: py gives their struct formats; these are
# the field names (from the spec / kernel headers), display base and value names.
# key -> (struct, ((name, hex, enum name or None), ...)); each becomes vfio_user.<key>.<name>
SUB_STRUCTS: Mapping[str, tuple[struct.Struct, tuple[tuple[str, bool, str | None], ...]]] = {
    "region_cap": (REGION_CAP_HEADER, (("id", False, "REGION_CAP_IDS"), ("version", False, None),
                                            ("next", False, None))),
    "sparse_mmap": (SPARSE_MMAP_HEAD, (("nr_areas", False, None), ("reserved", True, None))),
    "sparse_area": (SPARSE_AREA, (("offset", True, None), ("size", True, None))),
    "region_type": (REGION_TYPE_CAP, (("type", True, "REGION_TYPES"), ("subtype", False, None))),
    "io_fd": (IO_FD_ENTRY_SPEC, (("offset", True, None), ("size", True, None), ("fd_index", False, None),
                                      ("type", False, "IO_FD_TYPES"), ("flags", True, None),
                                      ("padding", True, None), ("datamatch", True, None))),
    "io_fd_lvu": (IO_FD_ENTRY_LVU, (("gpa_offset", True, None), ("size", True, None),
                                         ("fd_index", False, None), ("type", False, "IO_FD_TYPES"),
                                         ("flags", True, None), ("shadow_fd_index", False, None),
                                         ("shadow_offset", True, None), ("datamatch", True, None))),
    "write_multi_entry": (WRITE_MULTI_ENTRY, (("offset", True, None), ("region", False, "PCI_REGIONS"),
                                                   ("count", False, None), ("data", False, None))),
    "unmap_bitmap": (UNMAP_BITMAP, (("pgsize", True, None), ("size", False, None))),
    "dirty_bitmap": (DIRTY_BITMAP_RANGE, (("iova", True, None), ("size", True, None), ("pgsize", True, None),
                                               ("bitmap_size", False, None))),
    "qemu_dma_access": (QEMU_DMA_ACCESS, (("address", True, None), ("count", False, None))),
    "mig_state": (MIG_STATE_DATA, (("device_state", False, "MIG_STATES"), ("data_fd", False, None))),
    "dma_logging": (LOGGING_HEAD, (("page_size", True, None), ("num_ranges", False, None),
                                        ("reserved", True, None))),
    "dma_logging_range": (LOGGING_RANGE, (("iova", True, None), ("length", True, None))),
    "dma_logging_report": (LOGGING_REPORT, (("iova", True, None), ("length", True, None),
                                                 ("page_size", True, None))),
}

# --------------------------------------------------------------------------
# Errno names (Linux): error replies carry a UNIX errno (SPEC "Header").
# --------------------------------------------------------------------------

ERRNO_NAMES: Mapping[int, str] = dict(sorted(_errno.errorcode.items()))
MAX_ERRNO = 4096  # LVU SERVER_MAX_ERROR_NO


def errno_name(value: int) -> str:
    return ERRNO_NAMES.get(value, f"errno {value}")


# --------------------------------------------------------------------------
# Capabilities (SPEC "VFIO_USER_VERSION"; fact sheet 6.2)
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CapKey:
    """One capability key: JSON type, default, and the limits implementations enforce."""

    path: str  # dotted path below "capabilities"
    kind: str  # "int" | "bool" | "object"
    default: object
    minimum: int | None = None
    maximum: int | None = None
    page_aligned: bool = False  # low 12 bits clear
    legacy: bool = False  # not in the final spec
    desc: str = ""


CAPABILITIES: Mapping[str, CapKey] = {
    k.path: k
    for k in (
        CapKey("max_msg_fds", "int", DEFAULT_MAX_MSG_FDS, 0, LVU_MAX_MAX_MSG_FDS,
               desc="most fds the sender of this JSON can receive in one message"),
        CapKey("max_data_xfer_size", "int", DEFAULT_MAX_DATA_XFER_SIZE, 1, QEMU_MAX_MAX_DATA_XFER_SIZE,
               desc="largest count of REGION/DMA READ/WRITE"),
        CapKey("max_dma_maps", "int", DEFAULT_MAX_DMA_MAPS, 0, DEFAULT_MAX_DMA_MAPS,
               desc="most simultaneously valid DMA mappings"),
        CapKey("pgsizes", "int", DEFAULT_PGSIZES, 1, None, page_aligned=True,
               desc="bitmask of page sizes usable in DMA_MAP"),
        CapKey("twin_socket", "object", None, desc="server-to-client commands on a separate socket"),
        CapKey("twin_socket.supported", "bool", False),
        CapKey("twin_socket.fd_index", "int", None, 0, None, desc="index of the twin socket in the reply's fds"),
        CapKey("write_multiple", "bool", False, desc="REGION_WRITE_MULTI supported"),
        CapKey("migration", "object", None, legacy=True, desc="legacy dirty-bitmap parameters"),
        CapKey("migration.pgsize", "int", None, 0, None, page_aligned=True, legacy=True),
        CapKey("migration.max_bitmap_size", "int", None, 0, QEMU_MAX_BITMAP_SIZE, legacy=True),
    )
}

# --------------------------------------------------------------------------
# Capture format VFUC v1 (docs/capture-format.md)
# --------------------------------------------------------------------------

LINKTYPE_WIRESHARK_UPPER_PDU = 252
EXPORTED_PDU_DISSECTOR_NAME = "vfucap"
EXP_PDU_TAG_END = 0
EXP_PDU_TAG_DISSECTOR_NAME = 12
EXP_PDU_TAG_P2P_DIRECTION = 35

VFUC_MAGIC = b"VFUC"
PCAPNG_MAX_BLOCK = 16 << 20  # the largest pcapng block (or pcap record) a reader takes: larger is damage
VFUC_VERSION = 1
VFUC_FIXED = struct.Struct("<4sBBHIBBHIIIHH")  # 32 bytes, little-endian
VFUC_FIXED_SIZE = VFUC_FIXED.size
VFUC_FD_ENTRY = struct.Struct("<BBHIQQ")  # kind, reserved, reserved, status flags, size, ino (24)
VFUC_FD_ENTRY_SIZE = VFUC_FD_ENTRY.size
VFUC_TLV = struct.Struct("<HH")
VFUC_DIR_NONE = 0xFF
VFUC_MAX_RECORD = 65535


class RecType(IntEnum):
    MSG = 0
    CONN_OPEN = 1
    CONN_CLOSE = 2
    NOTE = 3
    RAW = 4
    FINDING = 5  # one verdict of the engine: code, severity, text, the frames it concerns (TLVs 8-10, 4)
    VERDICTS = 6  # the capture carries the engine's verdicts (its first record): engine, REPLY_TIMEOUT threshold
    ORIGINAL = 7  # a message as a peer sent it, withheld by the proxy (record --fault): like MSG, not traffic
    IRQ = 8  # an interrupt the server raised through a SET_IRQS eventfd (record --watch-irqs): IRQ_RECORD payload


REC_TYPE_NAMES: Mapping[int, str] = {r.value: r.name for r in RecType}

VFUC_FLAGS: Mapping[int, str] = {
    0x01: "TRUNCATED", 0x02: "MORE_FRAGMENTS", 0x04: "FDS_CTRUNC", 0x08: "INJECTED",
    0x10: "FRAMING_ERROR", 0x20: "FDS_NOT_AT_MSG_START", 0x40: "CONTEXT", 0x80: "BEYOND_LIMIT",
}
VF_TRUNCATED, VF_MORE_FRAGMENTS, VF_FDS_CTRUNC, VF_INJECTED, VF_FRAMING_ERROR, VF_FDS_NOT_AT_MSG_START = (
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20)
# CONTEXT: a message copied from an earlier file of a rotated capture (record --rotate-size) so that this file
# can be read on its own (VERSION, device/region/IRQ info, live DMA mappings, requests awaiting replies); it is
# not traffic at this point, keeps its original timestamp, and draws no findings or statistics.
VF_CONTEXT = 0x40
# BEYOND_LIMIT: a message larger than its receiver accepts (its negotiated max_data_xfer_size, capped at 64 MiB) is
# never held by the recorder: its header is recorded as the message (msg_len the size it claims), its body as RAW
# records flagged BEYOND_LIMIT as it arrives, forwarded the same way; framing resumes after it.
VF_BEYOND_LIMIT = 0x80
# INJECTED: a message the proxy forwarded in place of, or besides, what a peer sent, because a fault was asked for
# (record --fault): the peers saw it, so it is judged, and its findings say the proxy made it.
# WITHHELD (in memory only: the record type ORIGINAL on disk): a message as a peer sent it that the proxy did not
# forward as it was (it dropped, delayed, changed or replaced it); kept for the record, not judged, not counted.
VF_WITHHELD = 0x100
# NOTE records the analysis acts on: a record the reader could not decode (CAPTURE_CORRUPT), and the last record
# of a rotated capture's part, naming the next file (the traffic goes on: no NO_REPLY at this file's end).
# IRQ records (dir server->client): which interrupt (the SET_IRQS index and vector: its start + the fd's place) and
# how many signals the eventfd counted since the last one.
IRQ_RECORD = struct.Struct("<IIQ")  # index, vector, count
NOTE_CORRUPT_PREFIX = "corrupt record: "
NOTE_CONTINUED_PREFIX = "capture continues in "
# A capture that cannot see fds (sockdump: sendmsg bytes only) says so once per connection; the fd checks are off
# there (FDS_MISSING, an offset without an fd, a twin socket's fd_index).
NOTE_FDS_UNSEEN_PREFIX = "fds not captured: "


class Tlv(IntEnum):
    SOCKET_PATH = 1
    CLIENT_CRED = 2
    SERVER_CRED = 3
    NOTE = 4
    FD_PATH = 5
    PROXY_ERRNO = 6
    TWIN_OF = 7
    FINDING_CODE = 8  # ascii finding code (core/findings.py)
    SEVERITY = 9  # u8: 0 note, 1 warning, 2 error
    FRAMES = 10  # u32 frame numbers the finding concerns, the one it is about first
    ENGINE = 11  # utf-8: the engine that judged ("vfudissect 0.2.0")
    TIMEOUT = 12  # utf-8 decimal seconds: the REPLY_TIMEOUT threshold it judged with ("5", "0.3"; "0" = off)


TLV_NAMES: Mapping[int, str] = {t.value: t.name for t in Tlv}

FD_KINDS: Mapping[int, str] = {
    0: "unknown", 1: "regular", 2: "memfd", 3: "eventfd", 4: "socket", 5: "fifo", 6: "chardev",
    7: "blockdev", 8: "directory", 9: "anon_inode",
}
FD_KIND_CODES: Mapping[str, int] = {v: k for k, v in FD_KINDS.items()}

# pcapng EPB flags direction bits: the file is seen from the client.
EPB_DIR_OUTBOUND = 2  # client -> server
EPB_DIR_INBOUND = 1  # server -> client
