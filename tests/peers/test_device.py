"""The emulated device model: config space, BAR0 registers, migration arcs, DMA table."""

from __future__ import annotations

import errno
import itertools
import struct

import pytest

from vfudissect import spec
from vfudissect.peers.device import (
    BAR0, BAR1, CONFIG, MIG_ARCS, REG_ID, REG_SCRATCH, REG_STATUS, Device, DeviceError, migration_path,
)

S = spec


def test_every_direct_arc_is_one_step_and_stop_copy_never_goes_back_to_pre_copy() -> None:
    for a, b in MIG_ARCS:
        assert migration_path(a, b) == [b]
    assert migration_path(S.MIG_STATE_STOP_COPY, S.MIG_STATE_PRE_COPY) is None
    # RUNNING -> STOP_COPY must not pass through PRE_COPY (a saving state) on the way
    assert migration_path(S.MIG_STATE_RUNNING, S.MIG_STATE_STOP_COPY) == [S.MIG_STATE_STOP, S.MIG_STATE_STOP_COPY]
    for a, b in itertools.product(S.MIG_STATES_SETTABLE, repeat=2):
        path = migration_path(a, b)
        if path:
            assert not {S.MIG_STATE_PRE_COPY, S.MIG_STATE_STOP_COPY} & set(path[:-1])


def test_config_space_has_a_capability_list_and_bar_sizing() -> None:
    d = Device()
    try:
        cfg = d.read(CONFIG, 0, 256)
        assert cfg[6] & 0x10 and cfg[0x34] == 0x40
        chain, off = [], cfg[0x34]
        while off:
            chain.append(cfg[off])
            off = cfg[off + 1]
        assert chain == [0x05, 0x01]  # MSI, power management
        d.write(CONFIG, 0x14, b"\xff\xff\xff\xff")
        assert struct.unpack("<I", d.read(CONFIG, 0x14, 4))[0] == (~(0x10000 - 1) & 0xFFFFFFFF) | 0x8
        d.write(CONFIG, 0x00, b"\0\0\0\0")  # vendor/device are read-only
        assert d.read(CONFIG, 0, 2) == b"\xf4\x1a"
    finally:
        d.close()


def test_bar0_read_only_registers_keep_their_value() -> None:
    d = Device()
    try:
        d.write(BAR0, 0, b"\0" * 0x30)
        assert d.reg(REG_ID) == 0x56465544 and d.reg(REG_STATUS) == 0
        d.write(BAR0, REG_SCRATCH, b"\x01\x02\x03\x04")
        assert d.read(BAR0, REG_SCRATCH, 4) == b"\x01\x02\x03\x04"
        with pytest.raises(DeviceError) as e:
            d.read(BAR0, 0xFFE, 4)
        assert e.value.errno == errno.EINVAL
        with pytest.raises(DeviceError):
            d.read(9, 0, 1)
        d.write(BAR1, 0x100, b"memory")
        assert bytes(d.bar1[0x100:0x106]) == b"memory"
    finally:
        d.close()


def test_dma_table_refuses_overlaps_and_unknown_unmaps() -> None:
    d = Device()
    try:
        d.add_dma(0x1000, 0x1000, 3, 0, None)
        with pytest.raises(DeviceError) as e:
            d.add_dma(0x1800, 0x1000, 3, 0, None)
        assert e.value.errno == errno.EEXIST
        assert d.find_dma(0x1800, 0x800) is not None and d.find_dma(0x1800, 0x801) is None
        with pytest.raises(DeviceError) as e:
            d.remove_dma(0x1000, 0x800)
        assert e.value.errno == errno.ENOENT
        d.remove_dma(0x1000, 0x1000)
        assert d.dma == []
    finally:
        d.close()
