"""Features and migration (fact sheet 7.8 F1-F4): DEVICE_FEATURE, the device state it sets, migration data."""

from __future__ import annotations

from ... import spec
from .base import PAIRED, REQUEST, Code, Msg, on, updates

C = spec.Command
_OPS = spec.FEATURE_GET | spec.FEATURE_SET | spec.FEATURE_PROBE


@on(REQUEST, C.DEVICE_FEATURE, emits=(Code.FEATURE_BAD_OPS, Code.FEATURE_UNKNOWN, Code.MIG_STATE_INVALID))
def device_feature(m: Msg) -> None:
    f, c = m.fields, m.c
    if not f:
        return
    flags = f["flags"]
    feature = flags & spec.FEATURE_MASK
    ops = flags & _OPS
    if not ops or (ops & spec.FEATURE_GET and ops & spec.FEATURE_SET and not ops & spec.FEATURE_PROBE) \
            or flags & ~(spec.FEATURE_MASK | 0x70000):
        m.add(Code.FEATURE_BAD_OPS, f"flags 0x{flags:x}: GET, SET and PROBE bits are inconsistent")
    if feature not in spec.VFIO_USER_FEATURES:
        m.add(Code.FEATURE_UNKNOWN, f"feature {spec.FEATURES.get(feature, feature)} is not used by vfio-user")
    target = f.get("device_state")
    if target is not None:
        if target not in spec.MIG_STATES_SETTABLE:
            m.add(Code.MIG_STATE_INVALID, f"device state {spec.MIG_STATES.get(target, target)} cannot be requested")
        elif c.mig_state == spec.MIG_STATE_STOP_COPY and target == spec.MIG_STATE_PRE_COPY:
            m.add(Code.MIG_STATE_INVALID, "STOP_COPY -> PRE_COPY is forbidden")


@updates(PAIRED, C.DEVICE_FEATURE)
def _device_state(m: Msg) -> None:
    """The device moved to the state its (answered) SET asked for."""
    req = m.req
    if m.fields and req is not None and req.fields.get("device_state") is not None:
        m.c.mig_state = req.fields["device_state"]


@on(REQUEST, C.MIG_DATA_READ, C.MIG_DATA_WRITE,
    emits=(Code.DATA_BEYOND_MAX_XFER, Code.DATA_LENGTH_MISMATCH, Code.MIG_DATA_WRONG_STATE))
def migration_data(m: Msg) -> None:
    f, c = m.fields, m.c
    if not f:
        return
    if f["size"] > c.client_max_xfer:
        m.add(Code.DATA_BEYOND_MAX_XFER, f"size {f['size']} exceeds max_data_xfer_size {c.client_max_xfer}")
    if m.cmd == C.MIG_DATA_WRITE and m.plen != 8 + f["size"]:
        m.add(Code.DATA_LENGTH_MISMATCH, f"payload {m.plen} bytes, 8 + size would be {8 + f['size']}")
    st = c.mig_state
    if st is not None:
        ok = (st in (spec.MIG_STATE_PRE_COPY, spec.MIG_STATE_STOP_COPY)) if m.cmd == C.MIG_DATA_READ \
            else st == spec.MIG_STATE_RESUMING
        if not ok:
            m.add(Code.MIG_DATA_WRONG_STATE, f"{m.name} in device state {spec.MIG_STATES.get(st, st)}")


@on(PAIRED, C.MIG_DATA_READ, emits=(Code.REPLY_COUNT_TOO_BIG,))
def migration_data_reply(m: Msg) -> None:
    f, req = m.fields, m.req
    assert req is not None
    want = req.fields.get("size", 0)
    if f and f["size"] > want:
        m.add(Code.REPLY_COUNT_TOO_BIG, f"MIG_DATA_READ reply size {f['size']} above the requested {want}", req.frame)


@on(REQUEST, C.REGION_WRITE_MULTI, emits=(Code.DATA_LENGTH_MISMATCH,))
def write_multiple(m: Msg) -> None:
    f = m.fields
    if f and m.plen != 8 + 24 * f["wr_cnt"]:
        m.add(Code.DATA_LENGTH_MISMATCH, f"payload {m.plen} bytes for wr_cnt {f['wr_cnt']} (8 + 24 x wr_cnt = "
                                         f"{8 + 24 * f['wr_cnt']})")
