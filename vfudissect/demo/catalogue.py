"""One scripted scenario per finding code: the shortest exchange that makes a real proxy report it.

Each scenario starts like a real session (VERSION, device discovery, a DMA
mapping when it needs one) and then does the one thing the code is about;
the step marked ``flag=CODE`` is the message the finding must point at.
``EXCLUDED`` names the codes no traffic through a proxy can produce, and why;
``ELSEWHERE`` the codes produced through the real proxy by other tests,
because a scripted peer (one connection) cannot produce them.
"""

from __future__ import annotations

import struct

from .. import spec
from ..testing import (QEMU_CAPS, device_feature, device_reset, dma_map, dma_read, dma_read_reply, dma_unmap,
                       dma_write, get_info, get_info_reply, irq_info, irq_info_reply, layout, message, mig_data_read,
                       region_info, region_info_reply, region_read, region_read_reply, region_write,
                       region_write_reply, reply, set_irqs, version, version_reply)
from .scripted import Scenario, Step, c2s, s2c

C = spec.Command
EINVAL, EFAULT, ENOSYS = 22, 14, 38
# A client like QEMU without the legacy 'migration' key, a server like libvfio-user: no finding at all.
CLIENT_CAPS = {"capabilities": {"pgsizes": 4096, "max_msg_fds": 16, "max_dma_maps": 65535,
                                "max_data_xfer_size": 1048576}}
SERVER_CAPS = {"capabilities": {"max_msg_fds": 8, "max_data_xfer_size": 1048576}}
MAP_ADDR, MAP_SIZE = 0x100000, 0x10000

ELSEWHERE = {
    "WRONG_CHANNEL": "needs a twin socket, a second connection the proxy opens and the server and client "
                     "close at moments the one-connection script cannot order; produced through the real "
                     "proxy with the emulated peers (fault wrong_channel) by tests/proxy/test_relay.py, "
                     "live and `read` agreeing",
}
EXCLUDED = {
    "CAPTURE_CORRUPT": "only the capture reader raises it, for a record it cannot decode; the proxy writes "
                       "every record itself from what it relayed, so no traffic makes one undecodable "
                       "(damaged files are covered by tests/capture and tests/test_cli.py)",
}


def negotiate(caps: object = CLIENT_CAPS, reply_caps: object = SERVER_CAPS) -> list[Step]:
    """Frames 2-3: VERSION and its reply."""
    return [c2s(version(0, caps=caps)), s2c(version_reply(0, caps=reply_caps))]


def discover() -> list[Step]:
    """Frames 4-13 (ids 1-5): GET_INFO (9 regions, 5 IRQ types), BAR0, BAR1 and CONFIG region info, MSI info."""
    steps = [c2s(get_info(1)), s2c(get_info_reply(1, num_regions=9, num_irqs=5))]
    for mid, (idx, size) in enumerate(((0, 0x1000), (1, 0x10000), (7, 0x100)), start=2):
        steps += [c2s(region_info(mid, idx)), s2c(region_info_reply(mid, idx, size, flags=0x3))]
    return steps + [c2s(irq_info(5, 1)), s2c(irq_info_reply(5, 1, 4))]


def mapped() -> list[Step]:
    """Frames 14-15 (id 6): 64 KiB of guest memory at 0x100000, passed as a memfd."""
    return [c2s(dma_map(6, MAP_ADDR, MAP_SIZE), "memfd"), s2c(reply(dma_map(6, MAP_ADDR, MAP_SIZE)))]


READY = negotiate() + discover()


def _err(request: bytes, errno_: int = EINVAL) -> Step:
    return s2c(reply(request, error=errno_))


def _caps_in_reply(code: str, raw: bytes) -> list[Step]:
    return [c2s(version(0, caps=CLIENT_CAPS)), s2c(version_reply(0, raw=raw), flag=code)]


_SPARSE_BEYOND = struct.pack("<HHIII", 1, 1, 0, 1, 0) + struct.pack("<QQ", 0, 0x20000)  # area past the region
_GARBAGE = struct.pack("<HHIII", 0xBEEF, 0xDEAD, 3, 0xFFFFFFFF, 0xFFFFFFFF)  # size 3: cannot be framed


def _scenarios() -> dict[str, Scenario]:
    s: dict[str, tuple[list[Step], dict[str, object]]] = {}
    mig_set = device_feature(5, spec.FEATURE_MIG_DEVICE_STATE, spec.FEATURE_SET,
                             struct.pack("<II", spec.MIG_STATE_RESUMING, 0))
    s["UNMATCHED_REPLY"] = (READY + [s2c(region_read_reply(77, 7), flag="UNMATCHED_REPLY")], {})
    s["REPLY_COMMAND_MISMATCH"] = (READY + [
        c2s(region_read(20, 7)),
        s2c(reply(region_read(20, 7), layout("region_access", region=7, count=4), command=C.REGION_WRITE),
            flag="REPLY_COMMAND_MISMATCH")], {})
    s["DUPLICATE_PENDING_ID"] = (READY + [
        c2s(region_read(30, 7, 0)), c2s(region_read(30, 7, 4), flag="DUPLICATE_PENDING_ID"),
        s2c(region_read_reply(30, 7, 0)), s2c(region_read_reply(30, 7, 4))], {})
    s["REPLY_TO_NO_REPLY"] = (READY + [
        c2s(region_write(40, 0, 4, b"\1\2\3\4", no_reply=True)),
        s2c(region_write_reply(40, 0, 4), flag="REPLY_TO_NO_REPLY")], {})
    s["REPLY_TIMEOUT"] = (READY + [
        c2s(device_reset(50), flag="REPLY_TIMEOUT"), s2c(reply(device_reset(50)), delay=1.0)], {"timeout": 0.3})
    s["NO_REPLY"] = (READY + [c2s(region_read(60, 7), flag="NO_REPLY")], {})
    s["OUT_OF_ORDER_REPLY"] = (READY + [
        c2s(region_read(70, 7, 0)), c2s(region_read(71, 7, 4)),
        s2c(region_read_reply(71, 7, 4), flag="OUT_OF_ORDER_REPLY"), s2c(region_read_reply(70, 7, 0))], {})
    s["WRONG_DIRECTION"] = (READY + mapped() + [
        c2s(dma_read(90, MAP_ADDR, 4), flag="WRONG_DIRECTION"), _err(dma_read(90, MAP_ADDR, 4))], {})
    s["UNKNOWN_COMMAND"] = (READY + [
        c2s(message(92, 33, b"\0" * 8), flag="UNKNOWN_COMMAND"), _err(message(92, 33), ENOSYS)], {})
    s["REMOVED_COMMAND"] = (READY + [
        c2s(message(93, 14, struct.pack("<II", 8, 1)), flag="REMOVED_COMMAND"), _err(message(93, 14), ENOSYS)], {})
    s["DMA_COLLISION"] = (READY + mapped() + [
        s2c(dma_read(9, MAP_ADDR, 8)), c2s(region_read(12, 7), flag="DMA_COLLISION"),
        c2s(dma_read_reply(9, MAP_ADDR, 8)), s2c(region_read_reply(12, 7))], {})
    s["VERSION_NOT_FIRST"] = ([c2s(get_info(1), flag="VERSION_NOT_FIRST"), _err(get_info(1))], {})
    s["TRAFFIC_BEFORE_VERSION_REPLY"] = ([
        c2s(version(0, caps=CLIENT_CAPS)), c2s(get_info(1), flag="TRAFFIC_BEFORE_VERSION_REPLY"),
        s2c(version_reply(0, caps=SERVER_CAPS)), s2c(get_info_reply(1))], {})
    s["VERSION_REPEATED"] = (READY + [
        c2s(version(40, caps=CLIENT_CAPS), flag="VERSION_REPEATED"), _err(version(40))], {})
    s["VERSION_MAJOR_MISMATCH"] = ([
        c2s(version(0, caps=CLIENT_CAPS)), s2c(version_reply(0, major=1), flag="VERSION_MAJOR_MISMATCH")], {})
    s["VERSION_MINOR_TOO_HIGH"] = ([
        c2s(version(0, caps=CLIENT_CAPS)), s2c(version_reply(0, minor=2), flag="VERSION_MINOR_TOO_HIGH")], {})
    s["VERSION_REFUSED"] = ([
        c2s(version(0, caps=CLIENT_CAPS)), s2c(reply(version(0), error=EINVAL), flag="VERSION_REFUSED")], {})
    s["CAPS_NOT_NUL_TERMINATED"] = (_caps_in_reply("CAPS_NOT_NUL_TERMINATED", b'{"capabilities": {}}'), {})
    s["CAPS_EMBEDDED_NUL"] = (_caps_in_reply("CAPS_EMBEDDED_NUL", b'{"capabilities": {}}\0\0'), {})
    s["CAPS_MALFORMED"] = (_caps_in_reply("CAPS_MALFORMED", b'{ "capabilities": { "max_msg_fds": 8, \0'), {})
    s["CAPS_NOT_OBJECT"] = (_caps_in_reply("CAPS_NOT_OBJECT", b'[ "capabilities" ]\0'), {})
    s["CAPS_UNKNOWN_KEY"] = (_caps_in_reply(
        "CAPS_UNKNOWN_KEY", b'{"capabilities": {"max_msg_fds": 8, "frobnicate": 1}}\0'), {})
    s["CAPS_BAD_VALUE"] = (_caps_in_reply("CAPS_BAD_VALUE", b'{"capabilities": {"max_msg_fds": -1}}\0'), {})
    s["CAPS_REPLY_NOT_SUBSET"] = ([
        c2s(version(0, caps={"capabilities": {"max_msg_fds": 4}})),
        s2c(version_reply(0, caps=SERVER_CAPS), flag="CAPS_REPLY_NOT_SUBSET")], {})
    s["CAPS_LEGACY_KEY"] = ([c2s(version(0, caps=QEMU_CAPS), flag="CAPS_LEGACY_KEY"),
                             s2c(version_reply(0, caps=SERVER_CAPS))], {})
    s["TWIN_SOCKET_BAD"] = ([
        c2s(version(0, caps=CLIENT_CAPS)),
        s2c(version_reply(0, caps={"capabilities": {"max_msg_fds": 8, "twin_socket": {"supported": True,
                                                                                       "fd_index": 0}}}),
            flag="TWIN_SOCKET_BAD")], {})
    s["BAD_SIZE"] = (READY + [c2s(spec.HEADER.pack(1, C.REGION_READ, 8, 0, 0), flag="BAD_SIZE")], {})
    big = region_write(9, 1, 0, bytes(spec.LVU_SERVER_MAX_MSG_SIZE - 31))  # one byte over libvfio-user's limit
    s["MESSAGE_TOO_LARGE"] = (READY + [c2s(big, flag="MESSAGE_TOO_LARGE"), _err(big)], {})
    s["BAD_TYPE"] = (READY + [c2s(message(1, C.DEVICE_GET_INFO, layout("device_info", argsz=16), flags=0x3),
                                  flag="BAD_TYPE")], {})
    s["RESERVED_FLAGS"] = (READY + [
        c2s(message(2, C.DEVICE_GET_INFO, layout("device_info", argsz=16), flags=0x100), flag="RESERVED_FLAGS"),
        s2c(get_info_reply(2))], {})
    s["MISPLACED_FLAG"] = (READY + [
        c2s(message(3, C.DEVICE_GET_INFO, layout("device_info", argsz=16), flags=0x20), flag="MISPLACED_FLAG"),
        s2c(get_info_reply(3))], {})
    s["ERROR_IN_COMMAND"] = (READY + [
        c2s(message(3, C.DEVICE_GET_INFO, layout("device_info", argsz=16), error=5, error_flag=False),
            flag="ERROR_IN_COMMAND"), s2c(get_info_reply(3))], {})
    s["ERROR_REPLY"] = (READY + [c2s(region_read(1, 7)),
                                 s2c(reply(region_read(1, 7), error=EINVAL), flag="ERROR_REPLY")], {})
    s["ERROR_REPLY_NO_ERRNO"] = (READY + [
        c2s(region_read(3, 7)), s2c(message(3, C.REGION_READ, reply=True, error_flag=True),
                                    flag="ERROR_REPLY_NO_ERRNO")], {})
    s["ERROR_REPLY_WITH_PAYLOAD"] = (READY + [
        c2s(region_read(2, 7)),
        s2c(message(2, C.REGION_READ, layout("region_access", region=7, count=4), reply=True, error=EFAULT),
            flag="ERROR_REPLY_WITH_PAYLOAD")], {})
    s["UNKNOWN_ERRNO"] = (READY + [
        c2s(region_read(4, 7)), s2c(message(4, C.REGION_READ, reply=True, error=9999), flag="UNKNOWN_ERRNO")], {})
    s["PAYLOAD_TOO_SHORT"] = (READY + [
        c2s(message(3, C.DMA_MAP, b"\0" * 8), flag="PAYLOAD_TOO_SHORT"), _err(message(3, C.DMA_MAP))], {})
    s["MESSAGE_INCOMPLETE"] = (READY + [
        Step(spec.C2S, region_write(9, 1, 0, b"x" * 64)[:40], how="cut", flag="MESSAGE_INCOMPLETE")], {})
    s["FRAMING_LOST"] = (READY + [c2s(_GARBAGE + b"not a vfio-user message", flag="FRAMING_LOST")], {})
    s["FDS_UNEXPECTED"] = (READY + [c2s(get_info(1), "eventfd", flag="FDS_UNEXPECTED"), s2c(get_info_reply(1))], {})
    s["FDS_MISSING"] = (READY + [c2s(set_irqs(2, 1, 0, 2), "eventfd", flag="FDS_MISSING"),
                                 _err(set_irqs(2, 1, 0, 2))], {})
    s["FDS_TRUNCATED"] = (READY + [
        c2s(dma_map(6, MAP_ADDR, MAP_SIZE), "memfd", starve_fds=True, flag="FDS_TRUNCATED"),
        s2c(reply(dma_map(6, MAP_ADDR, MAP_SIZE)))], {})
    s["FDS_NOT_AT_MSG_START"] = (READY + [
        c2s(dma_map(6, MAP_ADDR, MAP_SIZE), "memfd", how="split", flag="FDS_NOT_AT_MSG_START"),
        s2c(reply(dma_map(6, MAP_ADDR, MAP_SIZE)))], {})
    s["CAPTURE_TRUNCATED"] = (READY + [
        c2s(region_write(9, 1, 0, bytes(range(256)) * 2), flag="CAPTURE_TRUNCATED"),
        s2c(region_write_reply(9, 1, 0, 512))], {"snaplen": 128})
    s["DATA_BEYOND_MAX_XFER"] = (negotiate(reply_caps={"capabilities": {"max_msg_fds": 8,
                                                                         "max_data_xfer_size": 4096}})
                                 + discover() + [c2s(region_read(20, 1, 0, 8192), flag="DATA_BEYOND_MAX_XFER"),
                                                 _err(region_read(20, 1, 0, 8192))], {})
    s["DATA_LENGTH_MISMATCH"] = (READY + [
        c2s(region_write(33, 0, 4, b"\0" * 4, count=8), flag="DATA_LENGTH_MISMATCH"),
        _err(region_write(33, 0, 4, b""))], {})
    s["REPLY_COUNT_TOO_BIG"] = (READY + [
        c2s(region_read(30, 7, 0, 4)), s2c(region_read_reply(30, 7, 0, 8), flag="REPLY_COUNT_TOO_BIG")], {})
    s["REPLY_ECHO_MISMATCH"] = (READY + [
        c2s(region_read(31, 7, 0, 4)), s2c(region_read_reply(31, 7, 4, 4), flag="REPLY_ECHO_MISMATCH")], {})
    s["REGION_INDEX_INVALID"] = (READY + [c2s(region_read(22, 12), flag="REGION_INDEX_INVALID"),
                                          _err(region_read(22, 12))], {})
    s["REGION_ACCESS_OUT_OF_RANGE"] = (READY + [
        c2s(region_read(21, 7, 0xFE, 4), flag="REGION_ACCESS_OUT_OF_RANGE"), _err(region_read(21, 7))], {})
    s["REGION_ACCESS_NOT_PERMITTED"] = (READY + [
        c2s(region_info(9, 2)), s2c(region_info_reply(9, 2, 0x100, flags=0x1)),
        c2s(region_write(23, 2, 0, b"\0\0"), flag="REGION_ACCESS_NOT_PERMITTED"), _err(region_write(23, 2))], {})
    s["ZERO_COUNT"] = (READY + [c2s(region_read(24, 7, 0, 0), flag="ZERO_COUNT"),
                                s2c(reply(region_read(24, 7, 0, 0)))], {})
    s["DMA_ACCESS_UNMAPPED"] = (READY + mapped() + [
        s2c(dma_read(7, 0x900000, 16), flag="DMA_ACCESS_UNMAPPED"),
        Step(spec.C2S, reply(dma_read(7, 0x900000, 16), error=EFAULT))], {})
    s["DMA_WRITE_READ_ONLY"] = (READY + [
        c2s(dma_map(6, MAP_ADDR, 0x2000, flags=0x1), "memfd"), s2c(reply(dma_map(6, MAP_ADDR, 0x2000))),
        s2c(dma_write(8, MAP_ADDR, b"x" * 8), flag="DMA_WRITE_READ_ONLY"),
        c2s(reply(dma_write(8, MAP_ADDR, b""), struct.pack("<QI", MAP_ADDR, 8)))], {})
    s["DMA_LAYOUT_VARIANT"] = (READY + mapped() + [
        s2c(dma_write(8, MAP_ADDR, b"x" * 8)), c2s(reply(dma_write(8, MAP_ADDR, b"")), flag="DMA_LAYOUT_VARIANT")],
        {})
    s["DMA_MAP_OVERLAP"] = (READY + mapped() + [
        c2s(dma_map(7, MAP_ADDR + 0x8000, MAP_SIZE), "memfd", flag="DMA_MAP_OVERLAP"),
        _err(dma_map(7, 0, 0))], {})
    s["DMA_MAP_BAD_ARGSZ"] = (READY + [
        c2s(dma_map(7, 0x200000, 0x1000, argsz=40), "memfd", flag="DMA_MAP_BAD_ARGSZ"),
        s2c(reply(dma_map(7, 0, 0)))], {})
    s["DMA_MAP_FLAGS"] = (READY + [c2s(dma_map(7, 0x200000, 0x1000, flags=0x13), "memfd", flag="DMA_MAP_FLAGS"),
                                   _err(dma_map(7, 0, 0))], {})
    s["DMA_MAP_DEGENERATE"] = (READY + [c2s(dma_map(7, 0x200000, 0), "memfd", flag="DMA_MAP_DEGENERATE"),
                                        _err(dma_map(7, 0, 0))], {})
    s["DMA_MAP_MISALIGNED"] = (READY + [
        c2s(dma_map(7, 0x200001, 0x1000), "memfd", flag="DMA_MAP_MISALIGNED"), _err(dma_map(7, 0, 0))], {})
    s["DMA_MAPS_EXCEEDED"] = (negotiate(reply_caps={"capabilities": {"max_msg_fds": 8, "max_dma_maps": 2}}) + [
        c2s(dma_map(1, 0x1000, 0x1000), "memfd"), s2c(reply(dma_map(1, 0, 0))),
        c2s(dma_map(2, 0x2000, 0x1000), "memfd"), s2c(reply(dma_map(2, 0, 0))),
        c2s(dma_map(3, 0x3000, 0x1000), "memfd", flag="DMA_MAPS_EXCEEDED"), _err(dma_map(3, 0, 0))], {})
    s["DMA_UNMAP_UNKNOWN"] = (READY + mapped() + [
        c2s(dma_unmap(7, MAP_ADDR, 0x8000), flag="DMA_UNMAP_UNKNOWN"), _err(dma_unmap(7, 0, 0))], {})
    s["DMA_UNMAP_FLAGS"] = (READY + mapped() + [
        c2s(dma_unmap(7, 0, 0, flags=2), flag="DMA_UNMAP_FLAGS"),
        s2c(reply(dma_unmap(7, 0, 0, flags=2), layout("dma_unmap", argsz=24, flags=2)))], {})
    s["SET_IRQS_BAD_FLAGS"] = (READY + [
        c2s(set_irqs(1, 1, 0, 1, flags=0x35), flag="SET_IRQS_BAD_FLAGS"), _err(set_irqs(1, 1, 0, 1))], {})
    s["IRQ_OUT_OF_RANGE"] = (READY + [
        c2s(set_irqs(2, 1, 2, 4), "eventfd", "eventfd", "eventfd", "eventfd", flag="IRQ_OUT_OF_RANGE"),
        _err(set_irqs(2, 1, 2, 4))], {})
    s["ARGSZ_TOO_SMALL"] = (READY + [
        c2s(message(1, C.DEVICE_GET_INFO, layout("device_info", argsz=8)), flag="ARGSZ_TOO_SMALL"),
        _err(get_info(1))], {})
    s["SET_IRQS_BAD_ARGSZ"] = (READY + [
        c2s(message(6, C.DEVICE_SET_IRQS, layout("irq_set", argsz=16, flags=0x21, index=1, start=0, count=1)),
            flag="SET_IRQS_BAD_ARGSZ"),
        _err(set_irqs(6, 1, 0, 1))], {})
    s["IRQ_NOT_MASKABLE"] = (READY + [
        c2s(set_irqs(6, 1, 0, 1, flags=spec.IRQ_SET_DATA_NONE | spec.IRQ_SET_ACTION_MASK_BIT), flag="IRQ_NOT_MASKABLE"),
        _err(set_irqs(6, 1, 0, 1))], {})
    s["INPUT_NOT_ZERO"] = (READY + [
        c2s(message(6, C.DEVICE_GET_REGION_INFO, layout("region_info", argsz=32, index=0, size=0x1000)),
            flag="INPUT_NOT_ZERO"),
        s2c(region_info_reply(6, 0, 0x1000, flags=0x3))], {})
    s["DEVICE_INFO_UNUSUAL"] = (negotiate() + [
        c2s(get_info(1)), s2c(get_info_reply(1, num_regions=4, num_irqs=5), flag="DEVICE_INFO_UNUSUAL")], {})
    s["REPLY_TRUNCATED"] = (READY + [
        c2s(region_info(2, 1, argsz=32)),
        s2c(region_info_reply(2, 1, 0x10000, flags=0x7, argsz=80), flag="REPLY_TRUNCATED")], {})
    s["REGION_CAPS_BAD"] = (READY + [
        c2s(region_info(3, 1, argsz=80)),
        s2c(region_info_reply(3, 1, 0x10000, flags=0xF, argsz=56, caps=_SPARSE_BEYOND, cap_offset=32), "memfd",
            flag="REGION_CAPS_BAD")], {})
    s["FEATURE_BAD_OPS"] = (READY + [
        c2s(device_feature(1, spec.FEATURE_MIGRATION, spec.FEATURE_GET | spec.FEATURE_SET), flag="FEATURE_BAD_OPS"),
        _err(device_feature(1, 1, 0))], {})
    s["FEATURE_UNKNOWN"] = (READY + [
        c2s(device_feature(2, 3, spec.FEATURE_PROBE), flag="FEATURE_UNKNOWN"), _err(device_feature(2, 3, 0))], {})
    s["MIG_STATE_INVALID"] = (READY + [
        c2s(device_feature(3, spec.FEATURE_MIG_DEVICE_STATE, spec.FEATURE_SET, struct.pack("<II", 5, 0)),
            flag="MIG_STATE_INVALID"), _err(device_feature(3, 2, 0))], {})
    s["MIG_DATA_WRONG_STATE"] = (READY + [
        c2s(mig_set), s2c(reply(mig_set, layout("device_feature", argsz=16, flags=2 | spec.FEATURE_SET)
                                + struct.pack("<II", spec.MIG_STATE_RESUMING, 0))),
        c2s(mig_data_read(6, 64), flag="MIG_DATA_WRONG_STATE"), _err(mig_data_read(6, 64))], {})
    return {code: Scenario(code, tuple(steps), **kw) for code, (steps, kw) in s.items()}  # type: ignore[arg-type]


SCENARIOS: dict[str, Scenario] = _scenarios()
