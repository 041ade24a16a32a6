"""Interrupts (fact sheet 7.6 Q1-Q8): SET_IRQS against the IRQ types and counts GET_IRQ_INFO reported."""

from __future__ import annotations

from ... import spec
from .base import PAIRED, REQUEST, Code, Msg, bits_text, on, updates

C = spec.Command
_IRQ_MASKABLE = next(bit for bit, name in spec.IRQ_INFO_FLAGS.items() if name == "MASKABLE")
_UNMASKABLE_IRQS = frozenset(i for i, name in spec.PCI_IRQS.items() if name in ("ERR", "REQ"))


def irq_name(index: int) -> str | int:
    return spec.PCI_IRQS.get(index, index)


@on(REQUEST, C.DEVICE_GET_IRQ_INFO, emits=(Code.IRQ_OUT_OF_RANGE,))
def irq_info_index(m: Msg) -> None:
    f, c = m.fields, m.c
    if f and c.num_irqs is not None and f["index"] >= c.num_irqs:
        m.add(Code.IRQ_OUT_OF_RANGE, f"IRQ index {f['index']} but the device has {c.num_irqs}")


@on(REQUEST, C.DEVICE_SET_IRQS, emits=(Code.IRQ_ERR_REQ_COUNT,))
def err_req_count(m: Msg) -> None:
    """Q6's count part: ERR and REQ have one interrupt each, asked or not (once GET_IRQ_INFO said their count,
    IRQ_OUT_OF_RANGE judges the range against it instead)."""
    f, c = m.fields, m.c
    if not f or f["index"] not in _UNMASKABLE_IRQS or f["index"] in c.irqs:
        return
    if (c.num_irqs is None or f["index"] < c.num_irqs) and f["start"] + f["count"] > 1:
        m.add(Code.IRQ_ERR_REQ_COUNT, f"{irq_name(f['index'])} start {f['start']} + count {f['count']}: the ERR and "
                                      "REQ interrupts are one each")


@updates(PAIRED, C.DEVICE_GET_IRQ_INFO)
def _irq_type(m: Msg) -> None:
    f = m.fields
    if f:
        m.c.irqs[f["index"]] = (f["count"], f["flags"])


@on(REQUEST, C.DEVICE_SET_IRQS,
    emits=(Code.SET_IRQS_BAD_ARGSZ, Code.SET_IRQS_BAD_FLAGS, Code.FDS_MISSING, Code.FDS_UNEXPECTED,
           Code.DATA_LENGTH_MISMATCH, Code.IRQ_NOT_MASKABLE, Code.IRQ_OUT_OF_RANGE))
def set_irqs(m: Msg) -> None:
    f, c, nfds, plen = m.fields, m.c, m.nfds, m.plen
    if not f:
        return
    flags, index, start, count = f["flags"], f["index"], f["start"], f["count"]
    if f["argsz"] != plen:
        m.add(Code.SET_IRQS_BAD_ARGSZ, f"argsz {f['argsz']} but the payload is {plen} bytes"
                                       + (" (below the 20-byte fixed part)" if f["argsz"] < 20 else ""))
    data_bits = flags & spec.IRQ_SET_DATA_MASK
    act_bits = flags & spec.IRQ_SET_ACTION_MASK
    if bin(data_bits).count("1") != 1 or bin(act_bits).count("1") != 1 or flags & ~0x3F:
        m.add(Code.SET_IRQS_BAD_FLAGS, f"flags 0x{flags:x} ({bits_text(flags, spec.IRQ_SET_FLAGS)}) need exactly one "
                                       "DATA and one ACTION bit")
    if data_bits == spec.IRQ_SET_DATA_EVENTFD:
        if nfds and nfds != count:
            code = Code.FDS_MISSING if nfds < count else Code.FDS_UNEXPECTED
            m.add(code, f"{nfds} eventfds for count {count} (0 de-assigns, else one per interrupt)")
        if nfds > c.server_max_fds:
            m.add(Code.FDS_UNEXPECTED, f"{nfds} fds exceed the server's max_msg_fds {c.server_max_fds}")
    elif nfds:
        m.add(Code.FDS_UNEXPECTED, f"{nfds} fds with {bits_text(data_bits, spec.IRQ_SET_FLAGS)}")
    if data_bits == spec.IRQ_SET_DATA_BOOL and plen != 20 + count:
        m.add(Code.DATA_LENGTH_MISMATCH, f"DATA_BOOL payload {plen} bytes, 20 + count = {20 + count}")
    if act_bits in (spec.IRQ_SET_ACTION_MASK_BIT, spec.IRQ_SET_ACTION_UNMASK):
        what = f"{spec.IRQ_SET_FLAGS[act_bits]} on {irq_name(index)}"
        info = c.irqs.get(index)
        if index in _UNMASKABLE_IRQS:
            m.add(Code.IRQ_NOT_MASKABLE, f"{what}: ERR and REQ interrupts cannot be masked")
        elif info is not None and not info[1] & _IRQ_MASKABLE:
            m.add(Code.IRQ_NOT_MASKABLE, f"{what}, whose IRQ_INFO flags 0x{info[1]:x} lack MASKABLE")
    if c.num_irqs is not None and index >= c.num_irqs:
        m.add(Code.IRQ_OUT_OF_RANGE, f"IRQ index {index} but the device has {c.num_irqs}")
        return
    if count == 0:
        if start != 0 or flags != (spec.IRQ_SET_DATA_NONE | spec.IRQ_SET_ACTION_TRIGGER):
            m.add(Code.IRQ_OUT_OF_RANGE, "count 0 is only valid with start 0 and DATA_NONE|ACTION_TRIGGER")
        return
    info = c.irqs.get(index)
    if info is not None and start + count > info[0]:
        m.add(Code.IRQ_OUT_OF_RANGE, f"{irq_name(index)} start {start} + count {count} beyond its {info[0]} "
                                     "interrupts")
