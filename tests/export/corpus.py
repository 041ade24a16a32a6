"""Captures for the plugin tests: every finding code on its own connection, random exchanges, fuzzed fixtures.

Everything is written with the project's own writer (``PcapngWriter`` +
``vfuc.encode``) so records are exactly what the recorder produces; the fuzzers
then damage messages (before encoding) or records (after encoding).  The
captures carry no verdicts: the tests add them with ``annotate`` (or keep
their absence), except ``write_stored_oddities``, whose FINDING records are
made by hand (codes a newer engine would write, damaged ones).
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path
from typing import Any, Callable, Iterable

from vfudissect import spec
from vfudissect.capture import vfuc
from vfudissect.capture.reader import read_events
from vfudissect.capture.writer import PcapngWriter
from vfudissect.core import findings
from vfudissect.core.events import ConnClosed, ConnOpened, Cred, FdInfo, FindingIn, MessageIn, NoteIn, RawIn, VerdictsIn
from vfudissect.testing import (EVENTFD, LVU_CAPS, MEMFD, QEMU_CAPS, handshake_steps, device_feature, device_reset, dma_map,
                                dma_read, dma_read_reply, dma_unmap, dma_write, get_info, get_info_reply, irq_info,
                                irq_info_reply, layout, message, mig_data_read, mig_data_write, region_info,
                                region_info_reply, region_read, region_read_reply, region_write,
                                region_write_reply, reply, set_irqs, version, version_reply)

C2S, S2C = spec.C2S, spec.S2C
SOCKET = FdInfo("socket", 0, 77, 2, "socket:[77]")


class Builder:
    """Writes events as VFUC records, numbering frames like the reader does."""

    def __init__(self, path: Path, max_record: int = spec.VFUC_MAX_RECORD) -> None:
        self.f = open(path, "wb")
        self.w = PcapngWriter(self.f, comment="vfudissect plugin test corpus", flush=False)
        self.ts = 1_700_000_000.0
        self.seq: dict[tuple[int, str], int] = {}
        self.max_record = max_record
        self.conn = 0

    def records(self, ev: Any) -> list[bytes]:
        seq = 0
        if isinstance(ev, (MessageIn, RawIn)):
            key = (ev.conn, ev.dir)
            seq = self.seq.get(key, 0)
            self.seq[key] = seq + 1
        return vfuc.encode(ev, seq, self.max_record)

    def write_records(self, recs: Iterable[bytes], direction: str | None = None) -> int:
        frame = 0
        for rec in recs:
            frame = self.w.write_record(int(round(self.ts * 1e9)), rec, direction)
        return frame

    def event(self, ev: Any) -> int:
        d = ev.dir if isinstance(ev, (MessageIn, RawIn)) else None
        return self.write_records(self.records(ev), d)

    def open(self, twin_of: int | None = None, path: str = "/run/test.sock") -> int:
        self.conn += 1
        self.ts += 0.001
        self.event(ConnOpened(self.ts, self.conn, path, Cred(100, 0, 0), Cred(200, 0, 0), twin_of))
        return self.conn

    def send(self, d: str, data: bytes, fds: Iterable[FdInfo] = (), dt: float = 0.001, conn: int | None = None,
             msg_len: int = -1, flags: int = 0) -> int:
        self.ts += dt
        return self.event(MessageIn(self.ts, self.conn if conn is None else conn, d, data, tuple(fds), 0, msg_len,
                                    flags))

    def c2s(self, data: bytes, fds: Iterable[FdInfo] = (), **kw: Any) -> int:
        return self.send(C2S, data, fds, **kw)

    def s2c(self, data: bytes, fds: Iterable[FdInfo] = (), **kw: Any) -> int:
        return self.send(S2C, data, fds, **kw)

    def raw(self, d: str, data: bytes, note: str = "") -> int:
        self.ts += 0.001
        return self.event(RawIn(self.ts, self.conn, d, data, (), 0, note))

    def note(self, text: str, d: str | None = None) -> int:
        self.ts += 0.001
        return self.event(NoteIn(self.ts, self.conn, text, d))

    def close(self, d: str | None = None, conn: int | None = None) -> int:
        self.ts += 0.001
        return self.event(ConnClosed(self.ts, self.conn if conn is None else conn, d))

    def record(self, rec_type: int, payload: bytes = b"", *, d: str | None = C2S, flags: int = 0, msg_len: int = 0,
               frag_off: int = 0, msg_seq: int = 0, version: int = spec.VFUC_VERSION, tlvs: bytes = b"",
               vfuc_dir: int | None = None, conn: int | None = None) -> int:
        """One hand-made record (for what the writer never produces: odd fragments, newer versions, new types)."""
        self.ts += 0.001
        prefix = vfuc.EXP_PREFIX_DIR[d] if d is not None else vfuc.EXP_PREFIX_DIR[C2S][:12] + b"\0\0\0\0"
        dcode = vfuc_dir if vfuc_dir is not None else (spec.DIR_CODES[d] if d is not None else spec.VFUC_DIR_NONE)
        hdr = spec.VFUC_FIXED.pack(spec.VFUC_MAGIC, version, rec_type, spec.VFUC_FIXED_SIZE + len(tlvs),
                                   self.conn if conn is None else conn, dcode, flags, 0, msg_len, frag_off, msg_seq,
                                   spec.VFUC_FD_ENTRY_SIZE, 0)
        return self.write_records([prefix + hdr + tlvs + payload], d)

    def wait(self, seconds: float) -> None:
        self.ts += seconds

    def handshake(self, caps: Any = QEMU_CAPS, reply_caps: Any = LVU_CAPS, device: bool = True) -> None:
        for d, data in handshake_steps(caps, reply_caps, device):
            (self.c2s if d == C2S else self.s2c)(data)

    def close_file(self) -> None:
        self.f.close()


# ---------------------------------------------------------------- the catalogue: one scenario per connection
def _ready(b: Builder) -> None:
    b.open()
    b.handshake()


def sc_clean(b: Builder) -> None:
    _ready(b)
    b.c2s(dma_map(10, 0x0, 0x10000), [MEMFD])
    b.s2c(reply(dma_map(10, 0, 0x10000)))
    b.c2s(region_read(11, 7, 0, 4))
    b.s2c(region_read_reply(11, 7, 0, 4))
    b.c2s(region_write(12, 0, 8, b"\1\2\3\4", no_reply=True))
    b.c2s(dma_unmap(13, 0x0, 0x10000))
    b.s2c(reply(dma_unmap(13, 0, 0x10000), layout("dma_unmap", argsz=24, address=0, size=0x10000)))


def sc_pairing(b: Builder) -> None:
    _ready(b)
    b.s2c(region_read_reply(77, 7))                                       # UNMATCHED_REPLY
    b.c2s(region_read(20, 7))
    b.s2c(reply(region_read(20, 7), layout("region_access", region=7, count=4), command=10))  # MISMATCH
    b.c2s(region_read(30, 7, 0))
    b.c2s(region_read(30, 7, 4))                                          # DUPLICATE_PENDING_ID
    b.s2c(region_read_reply(30, 7, 0))
    b.s2c(region_read_reply(30, 7, 4))
    b.c2s(region_write(40, 0, 0, b"\0" * 4, no_reply=True))
    b.s2c(region_write_reply(40, 0))                                      # REPLY_TO_NO_REPLY
    b.c2s(region_read(70, 7, 0))
    b.c2s(region_read(71, 7, 4))
    b.s2c(region_read_reply(71, 7, 4))                                    # OUT_OF_ORDER_REPLY
    b.s2c(region_read_reply(70, 7, 0))


def sc_timeout(b: Builder) -> None:
    _ready(b)
    b.c2s(device_reset(50))
    b.wait(6.0)
    b.s2c(reply(device_reset(50)))                                        # late: REPLY_TIMEOUT, still paired
    b.c2s(get_info(51))
    b.wait(4.0)
    b.s2c(get_info_reply(51))


def sc_no_reply_close(b: Builder) -> None:
    _ready(b)
    b.c2s(region_read(60, 7))
    b.c2s(region_write(61, 0, no_reply=True))
    b.close(C2S)
    b.close(S2C)                                                          # NO_REPLY for frame of 60


def sc_directions(b: Builder) -> None:
    _ready(b)
    b.c2s(dma_map(80, 0x100000, 0x10000), [MEMFD])
    b.s2c(reply(dma_map(80, 0, 0)))
    b.c2s(region_read(5, 7))
    b.s2c(dma_read(5, 0x100000, 16))
    b.c2s(dma_read_reply(5, 0x100000, 16))
    b.s2c(region_read_reply(5, 7))
    b.c2s(dma_read(90, 0, 4))                                             # WRONG_DIRECTION
    b.s2c(get_info(91))
    b.c2s(message(92, 33, b"\0" * 8))                                     # UNKNOWN_COMMAND
    b.c2s(message(93, 14, struct.pack("<II", 8, 1)))                      # REMOVED_COMMAND
    b.c2s(message(94, 0, b"", flags=0), [EVENTFD])                       # unknown command with fds


def sc_no_reply_flood(b: Builder) -> None:
    """A command, then more no_reply commands with its id than the engine keeps: the reply pairs with one of
    those (the command fell out of the queue), as in core/state.py."""
    _ready(b)
    b.c2s(region_read(77, 7))
    for _ in range(66):
        b.c2s(region_write(77, 0, 0, b"\0" * 4, no_reply=True))
    b.s2c(region_read_reply(77, 7))
    b.s2c(region_read_reply(77, 7))
    b.c2s(region_read(78, 7))
    b.close(C2S)
    b.s2c(region_read_reply(78, 7))                                       # one direction closed: still pairs
    b.c2s(region_read(79, 7))
    b.close(S2C)
    b.s2c(region_read_reply(79, 7))                                       # both closed: nothing waits


def sc_faults_irqs(b: Builder) -> None:
    """Records of record --fault and --watch-irqs: a withheld reply (ORIGINAL) and the injected one, interrupts."""
    _ready(b)
    b.c2s(region_read(90, 7))
    orig = region_read_reply(90, 7)
    b.note("fault: reply changed")
    b.record(spec.RecType.ORIGINAL, orig, d=S2C, msg_len=len(orig))          # withheld: shown, not paired
    b.s2c(region_read_reply(90, 7, data=b"\xde\xad\xbe\xef"), flags=spec.VF_INJECTED)  # pairs with frame of 90
    b.record(spec.RecType.IRQ, spec.IRQ_RECORD.pack(2, 1, 1), d=S2C)
    b.record(spec.RecType.IRQ, spec.IRQ_RECORD.pack(9, 0, 3), d=S2C)
    b.record(spec.RecType.IRQ, b"\1\0", d=S2C)                              # too short: corrupt


def sc_dma_collision(b: Builder) -> None:
    _ready(b)
    b.c2s(dma_map(1, 0x200000, 0x10000), [MEMFD])
    b.s2c(reply(dma_map(1, 0, 0)))
    b.s2c(dma_read(9, 0x200000, 8))
    b.c2s(region_read(12, 7))                                             # DMA_COLLISION


def sc_negotiation(b: Builder) -> None:
    b.open()
    b.c2s(get_info(1))                                                    # VERSION_NOT_FIRST
    b.open()
    b.c2s(version(0))
    b.c2s(get_info(1))                                                    # TRAFFIC_BEFORE_VERSION_REPLY
    _ready(b)
    b.c2s(version(40))                                                    # VERSION_REPEATED
    b.open()
    b.c2s(version(0))
    b.s2c(version_reply(0, major=1))                                      # MAJOR_MISMATCH
    b.open()
    b.c2s(version(0, minor=0))
    b.s2c(version_reply(0, minor=2))                                      # MINOR_TOO_HIGH
    b.open()
    b.c2s(version(0, major=3))
    b.s2c(reply(version(0), error=22))                                    # VERSION_REFUSED
    b.open()
    b.c2s(version(0, caps={"capabilities": {"max_msg_fds": 4}}))
    b.s2c(version_reply(0, caps={"capabilities": {"max_msg_fds": 8, "migration": {"pgsize": 4096}}}))


BAD_CAPS = [
    b'{"capabilities": {}\0', b'{"capabilities": {}}', b'23\0', b'{"capabilities": [1]}\0',
    b'{"capabilities": {"max_msg_fds": 8, "frobnicate": 1}}\0', b'{"capabilities": {"max_msg_fds": "8"}}\0',
    b'{"capabilities": {"max_msg_fds": 2000}}\0', b'{"capabilities": {"pgsizes": 4097}}\0',
    b'{"capabilities": {"max_data_xfer_size": 1.0}}\0', b'{"capabilities": {"write_multiple": 1}}\0',
    b'{"capabilities": {}}\0\0', b'\xff\xfe{}\0', b"\0", b" \0", b"", b"\t{ }\r\n\0", b'{"a":1,}\0',
    b'{"capabilit\\u0069es": {"max_msg_fds": 3, "max_msg_fds": 9000}}\0', b'{"x": "\\ud83d\\ude00"}\0',
    b'{"x": "\\ud83d"}\0', b'{"x": "\\uzzzz"}\0', b'{"x": "a\tb"}\0', b'{"x": "\xc3\xa9"}\0', b'{"x": "\xed\xa0\x80"}\0',
    b'{"capabilities": {"max_dma_maps": -0, "pgsizes": 1e3, "twin_socket": {"supported": true, "fd_index": 0}}}\0',
    b'{"capabilities": {"pgsizes": 18446744073709551616000}}\0', b'[1, 2, {"a": null}]\0', b'NaN\0',
    b'{"capabilities": {"migration": {"pgsize": 4096, "max_bitmap_size": 268435457, "x": true}}}\0',
    b'{"capabilities": {"migration": 5, "twin_socket": []}}\0', b'-\0', b'01\0', b'1.\0', b'"\\u00"\0',
    b'{"capabilities": {"max_msg_fds": 99999999999999999999999}}\0', b'{} {}\0', b'{"a" 1}\0',
    b'{"twin_socket.supported": true, "capabilities": {"twin_socket.supported": 1}}\0',
    b"[" * 3000 + b"]" * 3000 + b"\0",  # nested beyond Python's recursion limit: CAPS_MALFORMED, no crash
]


def sc_bad_caps(b: Builder) -> None:
    for raw in BAD_CAPS:
        b.open()
        b.c2s(version(0, raw=raw))
        b.s2c(version_reply(0, raw=raw))


def sc_twin(b: Builder) -> None:
    main = b.open()
    b.c2s(version(0, caps={"capabilities": {"twin_socket": {"supported": True}}}))
    good = {"capabilities": {"max_msg_fds": 8, "twin_socket": {"supported": True, "fd_index": 0}}}
    b.s2c(version_reply(0, caps=good), [SOCKET])
    b.c2s(dma_map(1, 0x100000, 0x10000), [MEMFD])
    b.s2c(reply(dma_map(1, 0, 0)))
    twin = b.open(twin_of=main)
    b.s2c(dma_read(3, 0x100000, 8), conn=twin)
    b.c2s(region_read(4, 7), conn=main)                                   # no DMA_COLLISION: twin exists
    b.c2s(dma_read_reply(3, 0x100000, 8), conn=twin)
    b.s2c(dma_write(4, 0x900000, b"abcd"), conn=twin)                     # unmapped on the shared table
    b.s2c(region_read_reply(4, 7), conn=main)
    b.c2s(version(9), conn=twin)                                 # VERSION on the twin: WRONG_CHANNEL, no REPEATED
    b.s2c(dma_read(5, 0x100000, 8), conn=main)                            # WRONG_CHANNEL: server command on main
    b.c2s(dma_read_reply(5, 0x100000, 8), conn=main)
    b.open()
    b.c2s(version(0, caps={"capabilities": {"twin_socket": {"supported": True}}}))
    b.s2c(version_reply(0, caps=good))                                    # TWIN_SOCKET_BAD: no fd
    b.open()
    b.c2s(version(0, caps={"capabilities": {"twin_socket": {"supported": True}}}))
    b.s2c(version_reply(0, caps=good), [EVENTFD])                         # TWIN_SOCKET_BAD: not a socket
    b.open()
    b.c2s(version(0))
    b.s2c(version_reply(0, caps=good), [SOCKET])                          # not asked
    b.open()
    b.c2s(version(0))
    b.s2c(version_reply(0), [SOCKET])                                     # FDS_UNEXPECTED


def sc_header(b: Builder) -> None:
    _ready(b)
    b.c2s(spec.HEADER.pack(1, 9, 8, 0, 0) + b"\0" * 16)                    # BAD_SIZE
    b.c2s(spec.HEADER.pack(2, 9, 64, 0, 0) + b"\0" * 16)                   # MESSAGE_INCOMPLETE
    b.c2s(b"\1\2\3")                                                      # BAD_SIZE (tiny)
    b.c2s(message(3, spec.Command.DMA_MAP, b"\0" * 8))                   # PAYLOAD_TOO_SHORT
    b.c2s(message(1, 4, layout("device_info", argsz=16), flags=0x3))      # BAD_TYPE
    b.c2s(message(2, 4, layout("device_info", argsz=16), flags=0x100))    # RESERVED_FLAGS
    b.c2s(message(3, 4, layout("device_info", argsz=16), flags=0x20, error=5))
    b.s2c(message(3, 4, layout("device_info", argsz=16), flags=0x11))     # No_reply on a reply
    b.c2s(get_info(21), flags=spec.VF_FDS_CTRUNC)
    b.c2s(get_info(22), flags=spec.VF_FDS_NOT_AT_MSG_START)
    b.c2s(region_write(23, 1, 0, b"\0" * 4)[:20], msg_len=36, flags=spec.VF_TRUNCATED)
    b.c2s(device_reset(24)[:8] + struct.pack("<II", 0, 0), msg_len=16)
    b.c2s(spec.HEADER.pack(0xBAD1, 8, 15, 0, 0), flags=spec.VF_FRAMING_ERROR)  # FRAMING_LOST, answered:
    b.s2c(message(0xBAD1, 8, reply=True, error=22))                      # paired, as libvfio-user does
    b.raw(C2S, b"garbage", "size 3 below 16")
    b.raw(C2S, b"more garbage")
    b.s2c(spec.HEADER.pack(30, 9, 1 << 30, 1, 0), flags=spec.VF_FRAMING_ERROR)  # TOO_LARGE; FRAMING_LOST
    b.raw(S2C, b"")
    b.note("proxy: peer stalled", C2S)
    b.note("corrupt record: made up by the test")                         # CAPTURE_CORRUPT


def sc_big(b: Builder) -> None:
    _ready(b)
    b.c2s(region_write(9, 1, 0, b"\xab" * spec.LVU_SERVER_MAX_MSG_SIZE))   # fragments; TOO_LARGE
    b.c2s(region_read(10, 1, 0, 200000))
    b.s2c(region_read_reply(10, 1, 0, 200000, data=bytes(range(256)) * 781 + b"\0" * 64))
    b.raw(S2C, b"\x55" * 150000, "lost framing on a big blob")


def sc_errors(b: Builder) -> None:
    _ready(b)
    b.c2s(region_read(1, 7))
    b.s2c(reply(region_read(1, 7), error=22))
    b.c2s(region_read(2, 7))
    b.s2c(message(2, 9, layout("region_access", region=7, count=4), reply=True, error=14))
    b.c2s(region_read(3, 7))
    b.s2c(message(3, 9, reply=True, error_flag=True))
    b.c2s(region_read(4, 7))
    b.s2c(message(4, 9, reply=True, error=9999))
    b.c2s(region_read(5, 7))
    b.s2c(message(5, 9, reply=True, error=41))                            # no errno name for 41


def sc_fds(b: Builder) -> None:
    _ready(b)
    b.c2s(get_info(1), [EVENTFD])
    b.c2s(set_irqs(2, 1, 0, 2, flags=0x24), [EVENTFD])
    b.c2s(set_irqs(3, 1, 0, 1, flags=0x21), [EVENTFD])
    b.c2s(dma_map(4, 0x300000, 0x1000, flags=0x7))
    b.c2s(dma_map(5, 0x400000, 0x1000), [MEMFD, MEMFD])
    b.c2s(set_irqs(6, 1, 0, 4, flags=0x24), [EVENTFD] * 4)
    b.c2s(set_irqs(7, 1, 0, 2, flags=0x24), [EVENTFD] * 9)
    b.c2s(region_info(9, 1))
    b.s2c(region_info_reply(9, 1, 0x10000, flags=0x7))                    # FDS_MISSING
    b.c2s(region_info(10, 1))
    b.s2c(region_info_reply(10, 1, 0x10000, flags=0x3), [MEMFD, MEMFD])
    b.c2s(region_read(11, 7))
    b.s2c(region_read_reply(11, 7), [EVENTFD])
    b.c2s(get_info(12))
    b.s2c(get_info_reply(12), [EVENTFD])
    b.c2s(message(13, 6, layout("region_io_fds", argsz=16 + 40, index=1)))
    io = layout("region_io_fds", argsz=16 + 40, index=1, count=1) + struct.pack("<QQIIIIQ", 0, 4, 0, 0, 1, 0, 7)
    b.s2c(message(13, 6, io, reply=True))                                 # FDS_MISSING (count 1, no fds)
    b.c2s(message(14, 6, layout("region_io_fds", argsz=16, index=1)))
    b.s2c(message(14, 6, io, reply=True), [EVENTFD])                      # REPLY_TRUNCATED
    b.c2s(message(15, 6, layout("region_io_fds", argsz=200, index=1)))
    lvu = layout("region_io_fds", argsz=16 + 96, index=1, count=2) + struct.pack("<QQIIIIQQ", 0, 4, 0, 0, 1, 0, 0, 7) \
        + struct.pack("<QQIIIIQQ", 8, 4, 0, 2, 1, 1, 0x100, 9)
    b.s2c(message(15, 6, lvu, reply=True), [EVENTFD, MEMFD])


def sc_data(b: Builder) -> None:
    b.open()
    b.handshake(reply_caps={"capabilities": {"max_msg_fds": 8, "max_data_xfer_size": 4096}})
    b.c2s(region_read(20, 1, 0, 8192))                                    # DATA_BEYOND_MAX_XFER
    b.c2s(region_read(21, 7, 0xFE, 4))                                    # OUT_OF_RANGE
    b.c2s(region_read(22, 12, 0, 4))                                      # INDEX_INVALID
    b.c2s(region_info(9, 2))
    b.s2c(region_info_reply(9, 2, 0x100, flags=0x1))
    b.c2s(region_write(23, 2, 0, b"\0\0"))                                # NOT_PERMITTED
    b.c2s(region_read(24, 7, 0, 0))                                       # ZERO_COUNT
    b.s2c(message(24, 9, b"", reply=True))                                # empty reply to count 0
    b.c2s(region_read(30, 7, 0, 4))
    b.s2c(region_read_reply(30, 7, 0, 8))
    b.c2s(region_read(31, 7, 0, 4))
    b.s2c(region_read_reply(31, 7, 4, 4))
    b.c2s(region_read(32, 7, 0, 4))
    b.s2c(region_read_reply(32, 7, 0, 4, data=b"\0\0"))
    b.c2s(region_write(33, 0, 0, b"\0" * 4, count=8))
    b.c2s(region_write(34, 0, 0, b"\0" * 4))
    b.s2c(region_write_reply(34, 0, 0, 6))                                # write echo count mismatch
    b.c2s(region_read(35, 7, 0, 4))
    b.s2c(message(35, 9, b"\0" * 8, reply=True))                          # reply payload too short
    b.c2s(region_read(36, 0, (1 << 64) - 2, 4))                           # huge offset: out of range


def sc_dma(b: Builder) -> None:
    _ready(b)
    b.c2s(dma_map(1, 0x100000, 0x2000, flags=1), [MEMFD])
    b.s2c(reply(dma_map(1, 0, 0)))
    b.s2c(dma_read(7, 0x900000, 16))                                      # UNMAPPED
    b.c2s(dma_read_reply(7, 0x900000, 16))
    b.s2c(dma_write(8, 0x100000, b"x" * 8))                               # READ_ONLY
    b.c2s(reply(dma_write(8, 0x100000, b"")))                             # LAYOUT_VARIANT (QEMU)
    b.s2c(dma_write(9, 0x100000, b"y" * 8))
    b.c2s(message(9, 12, layout("dma_access", address=0x100000, count=8), reply=True))  # 16 bytes (lvu)
    b.s2c(dma_write(10, 0x100000, b"y" * 8))
    b.c2s(message(10, 12, b"\0" * 12, reply=True))                        # 12: spec
    b.s2c(dma_write(11, 0x100000, b"y" * 8))
    b.c2s(message(11, 12, b"\0" * 5, reply=True))                         # DATA_LENGTH_MISMATCH
    b.s2c(dma_read(12, 0x100000, 8))
    b.c2s(message(12, 11, struct.pack("<QI", 0x100000, 8) + b"ABCDEFGH" + b"\0" * 4, reply=True))  # QEMU layout
    b.s2c(dma_read(13, 0x100000, 8))
    b.c2s(dma_read_reply(13, 0x100008, 8))                                # ECHO_MISMATCH
    b.s2c(dma_read(14, 0x100000, 8))
    b.c2s(dma_read_reply(14, 0x100000, 8, data=b"\0" * 3))                # LENGTH_MISMATCH
    b.s2c(dma_read(15, 0x100000, 0))                                      # ZERO_COUNT
    b.s2c(dma_write(16, 0x100000, b"z" * 4)[:36] + b"\0" * 4)            # count vs payload
    b.s2c(dma_read(17, 0x100000, 1 << 40))                                # beyond max xfer


def sc_dma_table(b: Builder) -> None:
    _ready(b)
    b.c2s(dma_map(1, 0x10000, 0x10000), [MEMFD])
    b.c2s(dma_map(2, 0x10000, 0x10000), [MEMFD])                          # exact duplicate
    b.c2s(dma_map(3, 0x18000, 0x10000), [MEMFD])                          # OVERLAP
    b.c2s(dma_map(4, 0x8000, 0x10000), [MEMFD])                           # OVERLAP from below
    b.c2s(dma_map(5, 0x40000, 0x10000), [MEMFD])
    b.s2c(reply(dma_map(5, 0, 0), error=22))                              # failed: no mapping
    b.c2s(dma_map(6, 0x40000, 0x1000), [MEMFD])
    b.c2s(dma_unmap(7, 0x10000, 0x8000))                                  # UNKNOWN
    b.c2s(dma_unmap(8, 0, 0, flags=2))                                    # unmap all
    b.c2s(dma_unmap(9, 0x10000, 0x10000))                                 # UNKNOWN now
    b.s2c(reply(dma_unmap(9, 0, 0), layout("dma_unmap", argsz=24, address=0x20000, size=1 << 40)))  # echo mismatch
    b.c2s(dma_unmap(10, 0x10000, 0x10000, flags=5))
    b.c2s(dma_map(11, 0x10000, 0x1000, argsz=40), [MEMFD])
    b.c2s(dma_map(12, 0x20000, 0x1000, flags=0x13), [MEMFD])
    b.c2s(dma_map(13, 0x30000, 0), [MEMFD])
    b.c2s(dma_map(14, 0x40000, 0x1000, offset=0x1000))
    b.c2s(dma_map(15, 0x50001, 0x1000), [MEMFD])
    hi = (1 << 64) - (1 << 32)
    b.c2s(dma_map(16, hi, 1 << 32), [MEMFD])                              # ends exactly at 2^64
    b.c2s(dma_map(17, hi + 0x1000, 0x1000), [MEMFD])                      # overlaps it
    b.c2s(dma_map(18, hi, (1 << 32) + 0x1000), [MEMFD])                   # wraps
    b.s2c(dma_read(19, hi + 0x10, 0x10))
    b.s2c(dma_read(20, hi + (1 << 32) - 8, 0x10))                         # runs past the mapping
    b.c2s(dma_unmap(21, hi, 1 << 32))
    b.c2s(dma_map(22, (1 << 53) + 4096, 4096), [MEMFD])
    b.c2s(dma_map(23, (1 << 53) + 8192, 4096), [MEMFD])
    b.c2s(dma_map(24, (1 << 53) + 4096 * 3 - 1, 4096), [MEMFD])
    b.open()
    b.handshake(reply_caps={"capabilities": {"max_msg_fds": 8, "max_dma_maps": 2,
                                             "pgsizes": 18446744073709551616}}, device=False)
    b.c2s(dma_map(1, 0x1000, 0x1000), [MEMFD])
    b.c2s(dma_map(2, 0x2000, 0x1000), [MEMFD])
    b.c2s(dma_map(3, 0x3000, 0x1000), [MEMFD])                            # EXCEEDED
    b.open()
    b.handshake(reply_caps={"capabilities": {"pgsizes": 1 << 70 | 1 << 13}}, device=False)
    b.c2s(dma_map(1, 0x1000, 0x2000), [MEMFD])


def sc_irqs_queries(b: Builder) -> None:
    _ready(b)
    b.c2s(set_irqs(1, 1, 0, 1, flags=0x25 | 0x10))
    b.c2s(set_irqs(2, 1, 2, 4), [EVENTFD] * 4)
    b.c2s(set_irqs(3, 9, 0, 1, flags=0x21))
    b.c2s(set_irqs(4, 1, 0, 2, flags=0x22, data=b"\1"))
    b.c2s(set_irqs(5, 1, 1, 0, flags=0x21))
    b.c2s(set_irqs(6, 1, 0, 0, flags=0x21))
    b.c2s(set_irqs(7, 1, 0, 2, flags=0x122))
    b.c2s(irq_info(8, 7))
    b.c2s(set_irqs(33, 4, 0, 1, flags=0x9))                             # IRQ_NOT_MASKABLE: REQ
    b.c2s(message(36, 8, layout("irq_set", argsz=3, flags=0x21, index=1, start=0, count=1)))  # SET_IRQS_BAD_ARGSZ
    b.c2s(irq_info(34, 2))
    b.s2c(irq_info_reply(34, 2, 8, flags=0x1))
    b.c2s(set_irqs(35, 2, 0, 1, flags=0x11))                            # IRQ_NOT_MASKABLE: MSIX lacks MASKABLE
    b.c2s(message(9, 4, layout("device_info", argsz=8)))
    b.c2s(message(30, 5, layout("region_info", argsz=32, index=1, size=1 << 40, cap_offset=4)))  # INPUT_NOT_ZERO
    b.c2s(message(31, 7, layout("irq_info", argsz=16, index=1, count=3, flags=1)))               # INPUT_NOT_ZERO
    b.c2s(get_info(32))
    b.s2c(get_info_reply(32, num_regions=120, num_irqs=60, flags=1))      # DEVICE_INFO_UNUSUAL
    b.c2s(region_info(10, 1, argsz=32))
    b.s2c(region_info_reply(10, 1, 0x3000, flags=0x7, argsz=80))
    b.c2s(region_info(11, 15))
    b.s2c(region_info_reply(11, 3, 0x100))                                # echo mismatch
    sparse = struct.pack("<HHIII", 1, 1, 0, 1, 0) + struct.pack("<QQ", 0, 0x20000)
    b.c2s(region_info(12, 1, argsz=80))
    b.s2c(region_info_reply(12, 1, 0x10000, flags=0xF, argsz=56, caps=sparse, cap_offset=32), [MEMFD])
    ok = struct.pack("<HHIII", 1, 1, 80, 2, 0) + struct.pack("<QQQQ", 0, 0x1000, 0x2000, 0x1000) \
        + struct.pack("<HHIII", 2, 1, 0, 3, 1)
    b.c2s(region_info(13, 1, argsz=200))
    b.s2c(region_info_reply(13, 1, 0x10000, flags=0xF, argsz=32 + len(ok), caps=ok, cap_offset=32), [MEMFD])
    loop = struct.pack("<HHIII", 1, 1, 32, 0, 0)
    b.c2s(region_info(14, 1, argsz=200))
    b.s2c(region_info_reply(14, 1, 0x10000, flags=0xF, argsz=48, caps=loop, cap_offset=32), [MEMFD])
    b.c2s(region_info(15, 1, argsz=200))
    b.s2c(region_info_reply(15, 1, 0x10000, flags=0xF, argsz=48, caps=struct.pack("<HHIII", 9, 1, 0, 0, 0),
                            cap_offset=32), [MEMFD])
    b.c2s(region_info(16, 1, argsz=200))
    b.s2c(region_info_reply(16, 1, 0x10000, flags=0xF, argsz=48, caps=b"", cap_offset=8), [MEMFD])
    b.c2s(region_info(17, 1, argsz=200))
    b.s2c(region_info_reply(17, 1, 0x10000, flags=0xF, argsz=48, caps=struct.pack("<HHIII", 1, 1, 0, 9, 0),
                            cap_offset=32), [MEMFD])
    big = struct.pack("<HHIII", 1, 1, 0, 1, 0) + struct.pack("<QQ", (1 << 64) - 1, 2)
    b.c2s(region_info(18, 1, argsz=200))
    b.s2c(region_info_reply(18, 1, (1 << 64) - 1, flags=0xF, argsz=56, caps=big, cap_offset=32), [MEMFD])
    b.c2s(region_read(19, 1, (1 << 64) - 4, 4))                           # inside a region of size 2^64-1?
    b.c2s(message(20, 15, struct.pack("<Q", 2) + struct.pack("<QII8s", 0, 1, 4, b"abcd") * 2, no_reply=True))
    b.c2s(message(21, 15, struct.pack("<Q", 3) + struct.pack("<QII8s", 0, 1, 4, b"abcd")))
    b.s2c(message(21, 15, struct.pack("<Q", 1), reply=True))
    b.c2s(message(22, 15, struct.pack("<Q", 1 << 60)))


def sc_features(b: Builder) -> None:
    _ready(b)
    b.c2s(device_feature(1, 1, spec.FEATURE_GET | spec.FEATURE_SET))
    b.c2s(device_feature(2, 3, spec.FEATURE_PROBE))
    b.c2s(device_feature(3, 2, spec.FEATURE_SET, struct.pack("<II", 5, 0)))
    b.c2s(mig_data_read(4, 64))
    b.c2s(device_feature(5, 2, spec.FEATURE_SET, struct.pack("<II", 4, 0)))
    b.s2c(reply(device_feature(5, 2, spec.FEATURE_SET, struct.pack("<II", 4, 0)),
                layout("device_feature", argsz=16, flags=2 | spec.FEATURE_SET) + struct.pack("<II", 4, 0)))
    b.c2s(mig_data_read(6, 64))                                           # WRONG_STATE
    b.c2s(mig_data_write(7, b"m" * 32))
    b.s2c(reply(mig_data_write(7, b"")))
    b.c2s(message(8, 18, layout("mig_data", argsz=8, size=64) + b"x" * 10))
    b.c2s(device_feature(9, 2, spec.FEATURE_SET, struct.pack("<II", 3, 0)))
    b.s2c(reply(device_feature(9, 2, spec.FEATURE_SET)))
    b.c2s(device_feature(10, 2, spec.FEATURE_SET, struct.pack("<II", 6, 0)))  # STOP_COPY -> PRE_COPY
    b.c2s(mig_data_read(11, 1 << 30))
    b.s2c(message(11, 17, layout("mig_data", argsz=8, size=(1 << 30) + 1), reply=True))
    b.c2s(device_feature(12, 1, spec.FEATURE_GET))
    b.s2c(reply(device_feature(12, 1, spec.FEATURE_GET), layout("device_feature", argsz=16, flags=1 | spec.FEATURE_GET)
                + struct.pack("<Q", 5)))
    b.c2s(device_feature(13, 6, spec.FEATURE_SET, struct.pack("<QII", 4096, 2, 0) + struct.pack("<QQ", 0, 1 << 20) * 2))
    b.c2s(device_feature(14, 8, spec.FEATURE_GET, struct.pack("<QQQ", 0, 1 << 20, 4096)))
    b.s2c(reply(device_feature(14, 8, spec.FEATURE_GET), layout("device_feature", argsz=64, flags=8 | spec.FEATURE_GET)
                + struct.pack("<QQQ", 0, 1 << 20, 4096) + b"\xff" * 32))
    b.c2s(device_feature(15, 0, 0x80000))
    b.c2s(message(16, 16, b"\0\0\0"))


def sc_records(b: Builder) -> None:
    """Records only a damaged or newer writer makes: the reader's rules, followed by the plugin."""
    _ready(b)
    MSG, MORE = spec.RecType.MSG, spec.VF_MORE_FRAGMENTS
    b.record(MSG, b"", flags=MORE, msg_seq=100)                           # empty fragments: an empty message
    b.record(MSG, b"", msg_seq=100, frag_off=0)
    b.record(MSG, b"abc", frag_off=8, msg_seq=101)                        # fragment without its start
    part = region_read(60, 7)
    b.record(MSG, part[:10], flags=MORE, msg_seq=102, msg_len=len(part))
    b.record(MSG, part[12:], frag_off=12, msg_seq=102, msg_len=len(part))  # offset mismatch
    b.record(MSG, part[:10], flags=MORE, msg_seq=103, msg_len=len(part))
    b.record(MSG, part[10:], frag_off=10, msg_seq=103, msg_len=len(part))  # a good pair: a whole message
    b.s2c(region_read_reply(60, 7))
    tlv = spec.VFUC_TLV.pack(99, 3) + b"new\0"                             # unknown TLV, newer version
    b.record(MSG, get_info(61), version=2, tlvs=tlv)
    b.record(MSG, get_info(62), version=0)                                # version 0 on the fast path: read
    b.record(MSG, get_info(63), version=0, tlvs=tlv)                      # general path: corrupt
    b.record(MSG, get_info(64), vfuc_dir=7, tlvs=tlv)                     # no direction: corrupt
    b.record(9, b"future record type")                                    # skipped, no event
    b.record(spec.RecType.CONN_CLOSE, d=None, vfuc_dir=9)                 # close without direction
    b.record(spec.RecType.RAW, b"x" * 5, flags=MORE, msg_seq=104)
    b.record(spec.RecType.RAW, b"y" * 5, frag_off=5, msg_seq=104)         # reassembled raw bytes
    b.record(MSG, region_read(65, 7)[:12], flags=MORE, msg_seq=105, msg_len=32)  # never completed


def sc_declared_examples(b: Builder) -> None:
    """Every code's declared example (core/findings.py) on a connection of its own, whole messages as the proxy
    records them: a code added with its declaration is in the catalogue without a scenario written here.  (An
    example that needs its own REPLY_TIMEOUT threshold or snaplen shows its code only in the scenarios above.)"""
    fd_of = {"memfd": MEMFD, "eventfd": EVENTFD, "socket": SOCKET}
    for kind in findings.CATALOGUE.values():
        scn = kind.scenario
        if scn is None or scn.timeout != spec.DEFAULT_REPLY_TIMEOUT or scn.snaplen is not None:
            continue
        b.open()
        for step in scn.steps:
            b.wait(step.delay)
            b.send(step.dir, step.data, () if step.starve_fds else [fd_of[k] for k in step.fds])
        b.close()


CATALOGUE: list[Callable[[Builder], None]] = [
    sc_clean, sc_pairing, sc_timeout, sc_no_reply_close, sc_no_reply_flood, sc_faults_irqs, sc_directions,
    sc_dma_collision, sc_negotiation,
    sc_bad_caps, sc_twin, sc_header, sc_big, sc_errors, sc_fds, sc_data, sc_dma, sc_dma_table, sc_irqs_queries,
    sc_features, sc_records, sc_declared_examples,
]


def write_catalogue(path: Path) -> Path:
    b = Builder(path)
    for sc in CATALOGUE:
        sc(b)
    # a request left waiting at the end of the capture: NO_REPLY
    b.c2s(region_read(99, 7), conn=1)
    b.close_file()
    return path


# ---------------------------------------------------------------- random exchanges
def random_message(rnd: random.Random, d: str, mid: int) -> tuple[bytes, list[FdInfo]]:
    """A plausible message with random fields in small ranges (so that states collide)."""
    r = rnd.random
    region = rnd.choice([0, 1, 2, 7, 9, 12])
    addr = rnd.choice([0, 0x1000, 0x10000, 0x18000, 0x100000, (1 << 64) - 0x2000])
    size = rnd.choice([0, 0x1000, 0x8000, 0x10000, 0x2000])
    fds = [rnd.choice([MEMFD, EVENTFD, SOCKET]) for _ in range(rnd.choice([0, 0, 0, 1, 1, 2]))]
    kind = rnd.randrange(24)
    if kind == 0:
        data = version(mid, rnd.choice([0, 1]), rnd.choice([0, 1, 2]),
                       rnd.choice([QEMU_CAPS, LVU_CAPS, None, {"capabilities": {"max_data_xfer_size": 16}}]),
                       reply_=d == S2C)
    elif kind == 1:
        data = dma_map(mid, addr, size, flags=rnd.choice([1, 3, 7, 0x13]), offset=rnd.choice([0, 0x1000]))
    elif kind == 2:
        data = dma_unmap(mid, addr, size, flags=rnd.choice([0, 0, 2]))
    elif kind == 3:
        data = get_info(mid) if d == C2S else get_info_reply(mid, rnd.choice([9, 3]), rnd.choice([5, 1]))
    elif kind == 4:
        data = region_info(mid, region) if d == C2S else region_info_reply(
            mid, region, rnd.choice([0x100, 0x1000, 0]), flags=rnd.choice([1, 2, 3, 7, 0xF]),
            argsz=rnd.choice([32, 80]))
    elif kind == 5:
        data = irq_info(mid, rnd.randrange(6)) if d == C2S else irq_info_reply(mid, rnd.randrange(6), rnd.randrange(5))
    elif kind == 6:
        data = set_irqs(mid, rnd.randrange(6), rnd.randrange(3), rnd.randrange(4),
                        flags=rnd.choice([0x24, 0x21, 0x22, 0x29, 0x3]))
    elif kind in (7, 8, 9):
        off = rnd.choice([0, 4, 0xFC, 0x1000])
        cnt = rnd.choice([0, 4, 8])
        if d == C2S:
            data = region_read(mid, region, off, cnt) if kind == 7 else region_write(mid, region, off, b"\0" * cnt,
                                                                                     no_reply=r() < 0.3)
        else:
            data = region_read_reply(mid, region, off, cnt) if kind == 7 else region_write_reply(mid, region, off, cnt)
    elif kind == 10:
        cnt = rnd.choice([0, 8, 16])
        data = dma_read(mid, addr, cnt) if d == S2C else dma_read_reply(mid, addr, cnt)
    elif kind == 11:
        data = dma_write(mid, addr, b"w" * rnd.choice([0, 8])) if d == S2C else reply(dma_write(mid, addr, b""))
    elif kind == 12:
        data = device_reset(mid) if d == C2S else reply(device_reset(mid), error=rnd.choice([0, 22]))
    elif kind == 13:
        data = device_feature(mid, rnd.choice([1, 2, 3, 8]), rnd.choice([spec.FEATURE_GET, spec.FEATURE_SET,
                                                                          spec.FEATURE_PROBE, 0]),
                              struct.pack("<II", rnd.randrange(8), 0))
    elif kind == 14:
        data = mig_data_read(mid, rnd.choice([8, 64])) if d == C2S else message(
            mid, 17, layout("mig_data", argsz=16, size=rnd.choice([8, 100])) + b"\0" * 8, reply=True)
    elif kind == 15:
        data = message(mid, rnd.choice([0, 14, 15, 19, 200]), rnd.randbytes(rnd.choice([0, 8, 24])),
                       reply=d == S2C and r() < 0.5)
    elif kind == 16:
        data = message(mid, rnd.randrange(1, 19), b"", reply=True, error=rnd.choice([0, 1, 22, 5000]),
                       error_flag=True)
    else:
        # a reply to whatever may be pending: same id, common commands
        cmd = rnd.choice([2, 4, 9, 10, 13, 3])
        body = {2: b"", 4: layout("device_info", argsz=16, flags=3, num_regions=9, num_irqs=5),
                9: layout("region_access", region=region, count=4) + b"\0" * 4,
                10: layout("region_access", region=region, count=4), 13: b"",
                3: layout("dma_unmap", argsz=24, address=addr, size=size)}[cmd]
        data = message(mid, cmd, body, reply=True)
    if r() < 0.05:
        data = data[:rnd.randrange(len(data) + 1)]
    return data, fds


def write_random(path: Path, seed: int, conns: int = 40, per_conn: int = 40) -> Path:
    rnd = random.Random(seed)
    b = Builder(path, max_record=rnd.choice([spec.VFUC_MAX_RECORD, 300]))
    for _ in range(conns):
        b.open()
        if rnd.random() < 0.8:
            b.handshake(device=rnd.random() < 0.7)
        for _ in range(per_conn):
            d = C2S if rnd.random() < 0.55 else S2C
            data, fds = random_message(rnd, d, rnd.randrange(6))
            dt = rnd.choice([0.0, 0.001, 0.01, 0.5, 2.0, 6.0]) if rnd.random() < 0.2 else 0.0005
            flags = rnd.choice([0, 0, 0, 0, spec.VF_FDS_CTRUNC, spec.VF_FDS_NOT_AT_MSG_START, spec.VF_INJECTED])
            b.send(d, data, fds, dt=dt, flags=flags)
        if rnd.random() < 0.3:
            b.close(rnd.choice([None, C2S, S2C]))
    b.close_file()
    return path


# ---------------------------------------------------------------- fuzzed fixtures
def _flip(rnd: random.Random, data: bytes, start: int = 0) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.choice([1, 1, 2, 3, 8])):
        if len(b) <= start:
            break
        i = rnd.randrange(start, len(b))
        b[i] ^= 1 << rnd.randrange(8)
    return bytes(b)


def _events(source: Path) -> list[Any]:
    """The fixture's traffic (its stored verdicts left out: the copy is judged afresh)."""
    with open(source, "rb") as f:
        return [ev for ev in read_events(f, str(source)) if not isinstance(ev, (FindingIn, VerdictsIn))]


def write_fuzzed_messages(source: Path, path: Path, seed: int, rate: float = 0.3) -> Path:
    """The fixture's events with damaged messages (bit flips, truncations, wrong lengths), re-recorded."""
    rnd = random.Random(seed)
    b = Builder(path, max_record=rnd.choice([spec.VFUC_MAX_RECORD, 256]))
    for ev in _events(source):
        if isinstance(ev, MessageIn) and rnd.random() < rate:
            what = rnd.random()
            data = ev.data
            if what < 0.6:
                data = _flip(rnd, data)
            elif what < 0.8:
                data = data[:rnd.randrange(len(data) + 1)]
            elif what < 0.9:
                data = data + rnd.randbytes(rnd.randrange(1, 40))
            fds = ev.fds if rnd.random() < 0.8 else ev.fds + (EVENTFD,)
            msg_len = -1 if rnd.random() < 0.9 else len(data) + rnd.randrange(0, 64)
            ev = MessageIn(ev.ts, ev.conn, ev.dir, data, fds, 0, msg_len, ev.flags)
        b.ts = ev.ts
        b.event(ev)
    b.close_file()
    return path


def write_fuzzed_records(source: Path, path: Path, seed: int, rate: float = 0.2) -> Path:
    """The fixture re-recorded, then records damaged after the exported-PDU tags (VFUC header, TLVs, bytes)."""
    rnd = random.Random(seed)
    b = Builder(path, max_record=rnd.choice([spec.VFUC_MAX_RECORD, 256]))
    prefix = len(vfuc.EXP_PREFIX_DIR[C2S])
    for ev in _events(source):
        b.ts = ev.ts
        d = ev.dir if isinstance(ev, (MessageIn, RawIn)) else None
        out = []
        for rec in b.records(ev):
            start = prefix if rec[:prefix] in vfuc.EXP_PREFIX_DIR.values() else 16
            if rnd.random() < rate:
                if rnd.random() < 0.75:
                    bad = _flip(rnd, rec, start)
                else:
                    bad = rec[:rnd.randrange(start, len(rec) + 1)]
                rec = bad
            out.append(rec)
        b.write_records(out, d)
    b.close_file()
    return path


def write_long(path: Path, pairs: int = 11000) -> Path:
    """More request/reply pairs than the plugin keeps links for in tables (it seals older frames): a request
    answered ~9,500 frames later, replies whose time goes backwards, one days late."""
    b = Builder(path)
    _ready(b)
    early = b.c2s(region_read(60000, 7))
    for i in range(pairs):
        mid = i % 50000
        b.c2s(region_read(mid, 7, 4 * (i % 8)))
        if i % 997 == 5:
            b.ts -= 0.25                                                  # backwards: a negative response time
        if i % 3001 == 7:
            b.ts += 4 * 86400.0                                           # days: a response time beyond 2^48 ns
        b.s2c(region_read_reply(mid, 7, 4 * (i % 8)))
        if i == 4800:
            b.s2c(region_read_reply(60000, 7))                            # the early request's reply
    assert early
    b.close_file()
    return path


def write_json_versions(path: Path, payloads: list[bytes]) -> Path:
    """One connection per version data: the request carries it, the reply echoes it."""
    b = Builder(path)
    for raw in payloads:
        b.open()
        b.c2s(version(0, raw=raw))
        b.s2c(version_reply(0, raw=raw))
        b.c2s(dma_map(1, 0x3000, 0x3000), [MEMFD])
    b.close_file()
    return path


def qemu_like(n_pairs: int) -> Iterable[bytes]:
    """Valid JSON documents shaped like the capabilities real peers send."""
    yield json.dumps(QEMU_CAPS).encode() + b"\0"
    yield json.dumps(LVU_CAPS, indent=1).encode() + b"\0"


def damage_records(source: Path, path: Path, seed: int, rate: float = 0.2) -> Path:
    """A judged capture with records damaged after their exported-PDU tags, its FINDING records too (block for
    block, the blocks' lengths kept)."""
    from vfudissect.capture.reader import iter_blocks

    rnd = random.Random(seed)
    plen = len(vfuc.EXP_PREFIX_DIR[C2S])
    with open(source, "rb") as fin, open(path, "wb") as fout:
        for block, rec in iter_blocks(fin, str(source)):
            if rec is not None and rec.number > 1 and rnd.random() < rate:
                at = block.index(rec.data)
                start = at + (plen if rec.data[:plen] in vfuc.EXP_PREFIX_DIR.values() else plen - 8)
                end = at + len(rec.data)
                b = bytearray(block)
                for _ in range(rnd.choice([1, 2, 8])):
                    b[rnd.randrange(start, end)] ^= 1 << rnd.randrange(8)
                block = bytes(b)
            fout.write(block)  # type: ignore[arg-type]
    return path


def _finding_record(code: bytes | None, severity: int | None, frames: list[int], text: bytes, conn: int = 1) -> bytes:
    tl = b""
    if code is not None:
        tl += spec.VFUC_TLV.pack(spec.Tlv.FINDING_CODE, len(code)) + code + b"\0" * (-len(code) % 4)
    if severity is not None:
        tl += spec.VFUC_TLV.pack(spec.Tlv.SEVERITY, 1) + bytes((severity, 0, 0, 0))
    raw = struct.pack(f"<{len(frames)}I", *frames)
    tl += spec.VFUC_TLV.pack(spec.Tlv.FRAMES, len(raw)) + raw
    tl += spec.VFUC_TLV.pack(spec.Tlv.NOTE, len(text)) + text + b"\0" * (-len(text) % 4)
    hdr = spec.VFUC_FIXED.pack(spec.VFUC_MAGIC, spec.VFUC_VERSION, spec.RecType.FINDING, spec.VFUC_FIXED_SIZE + len(tl),
                               conn, spec.VFUC_DIR_NONE, 0, 0, 0, 0, 0, spec.VFUC_FD_ENTRY_SIZE, 0)
    return vfuc.EXP_PREFIX_DIR[C2S][:12] + b"\0\0\0\0" + hdr + tl


def write_texts(path: Path, texts: list[bytes]) -> Path:
    """One FINDING record per text (any bytes: the plugin must show what the reader decodes)."""
    b = Builder(path)
    b.write_records([vfuc.encode_verdicts("vfudissect test", 5.0)])
    for i, text in enumerate(texts):
        b.write_records([_finding_record(b"ZERO_COUNT", 1, [1 + i % 2], text[:16000])])
    b.close_file()
    return path


def write_every_code(path: Path, codes: list[tuple[str, str]]) -> Path:
    """A FINDING record per (code, severity) after one request."""
    b = Builder(path)
    b.write_records([vfuc.encode_verdicts("vfudissect test", 5.0)])
    _ready(b)
    req = b.c2s(region_read(1, 7))
    rank = {"note": 0, "warning": 1, "error": 2}
    for code, sev in codes:
        b.write_records([_finding_record(code.encode(), rank[sev], [req], f"{code} as stored".encode())])
    b.close_file()
    return path


def write_stored_oddities(path: Path) -> Path:
    """Stored verdicts the engine would not write: a newer engine's code, an unknown severity, no code (corrupt),
    frames 0 and beyond the capture, repeated frames, a long text, control characters and broken UTF-8."""
    b = Builder(path)
    b.write_records([vfuc.encode_verdicts("vfudissect 9.9", 5.0)])
    _ready(b)
    req = b.c2s(region_read(1, 7))
    rep = b.s2c(region_read_reply(1, 7))
    long = ("é" * 150 + " the end").encode()
    for code, sev, frames, text in [
            (b"FUTURE_CODE", 2, [rep], b"a newer engine's verdict"), (b"ERROR_REPLY", 7, [rep], b"severity 7"),
            (b"ERROR_REPLY", 1, [rep, req, rep], b"frames repeated"), (b"NO_REPLY", 1, [0, 999999], b"no such frames"),
            (b"ZERO_COUNT", 0, [req], long), (b"UNKNOWN_ERRNO", 2, [req], b"tab\there, nul\0, bad \xff\xe0\x80 utf-8"),
            (b"C\xc3\xa9DE", 0, [req], b"non-ascii code"), (None, 1, [req], b"no code: a corrupt record"),
            (b"", 1, [req], b"empty code: corrupt too"), (b"ERROR_REPLY", None, [], b"")]:
        b.write_records([_finding_record(code, sev, frames, text)])
    b.close_file()
    return path
