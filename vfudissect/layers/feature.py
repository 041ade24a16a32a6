"""Migration v2 payload layers: DEVICE_FEATURE (16) with its feature data (MIGRATION, MIG_DEVICE_STATE,
DMA_LOGGING_START/STOP/REPORT) and MIG_DATA_READ/WRITE (17/18)."""

from __future__ import annotations

from typing import Any

from scapy.config import conf
from scapy.fields import FlagValue, StrField
from scapy.packet import Packet
from scapy.volatile import VolatileValue

from .. import spec
from ..render import format_value
from .base import VfuPacket
from .fields import DataField, DerivedField, EntryListField, LEFlagsField, flag_value, layout_fields, named_struct_fields

_FLAGS_FIELD = next(f for f in spec.LAYOUTS["device_feature"].fields if f.name == "flags")
_FEATURE_CODES = {name: code for code, name in spec.FEATURES.items()}
_OP_CODES = {name: bit for bit, name in spec.DEVICE_FEATURE_FLAGS.items()}


def feature_name(index: int) -> str:
    return spec.FEATURES.get(index, f"feature{index}")


class FeatureFlags(FlagValue):
    """DEVICE_FEATURE flags: ``.feature`` (bits 0-15, the index) and the GET / SET / PROBE op bits."""

    # no __slots__ here: FlagValue.__setattr__ looks its own slot names up on self.__slots__

    @property
    def feature(self) -> int:
        return self.value & spec.FEATURE_MASK

    @property
    def ops(self) -> int:
        return self.value & ~spec.FEATURE_MASK

    def _fixvalue(self, value: Any) -> int:
        if isinstance(value, str):
            out = 0
            for tok in value.replace("|", "+").split("+"):
                tok = tok.strip()
                if tok in _FEATURE_CODES:
                    out |= _FEATURE_CODES[tok]
                elif tok in _OP_CODES:
                    out |= _OP_CODES[tok]
                elif tok.startswith("feature") and tok[7:].isdigit():
                    out |= int(tok[7:]) & spec.FEATURE_MASK
                elif tok:
                    out |= int(tok, 0)
            return out
        return super()._fixvalue(value)

    def __str__(self) -> str:
        ops = [n for bit, n in spec.DEVICE_FEATURE_FLAGS.items() if self.value & bit]
        rest = self.ops & ~sum(spec.DEVICE_FEATURE_FLAGS)
        if rest:
            ops.append(f"0x{rest:x}")
        return "+".join([feature_name(self.feature)] + ops)


class FeatureFlagsField(LEFlagsField):
    def __init__(self, name: str, default: int) -> None:
        super().__init__(name, default, _FLAGS_FIELD.size, dict(_FLAGS_FIELD.bits or {}))

    def _fixup_val(self, x: Any) -> Any:
        if x is None or isinstance(x, (FeatureFlags, VolatileValue)):
            return x
        return FeatureFlags(int(x) if isinstance(x, FlagValue) else x, self.names)


class VfuFeatureMigration(VfuPacket):
    """MIGRATION (1) GET reply data: the migration flags (STOP_COPY, P2P, PRE_COPY)."""

    name = "feature MIGRATION"
    fields_desc = [LEFlagsField("migration_flags", 0, 8, spec.MIGRATION_FLAGS)]


class VfuFeatureMigState(VfuPacket):
    """MIG_DEVICE_STATE (2) SET request / GET reply data: device_state, data_fd."""

    name = "feature MIG_DEVICE_STATE"
    fields_desc = named_struct_fields("mig_state")


class VfuLoggingRange(VfuPacket):
    name = "DMA logging range"
    fields_desc = named_struct_fields("dma_logging_range")


class VfuFeatureLogging(VfuPacket):
    """DMA_LOGGING_START / STOP (6/7) data: page_size, num_ranges, ranges."""

    name = "feature DMA_LOGGING_START/STOP"
    fields_desc = named_struct_fields("dma_logging") + [
        EntryListField("ranges", VfuLoggingRange, count_from=lambda p: p.getfieldval("num_ranges") or 0),
    ]


class VfuFeatureLoggingReport(VfuPacket):
    """DMA_LOGGING_REPORT (8) data: iova, length, page_size; in the reply the bitmap (u64 words) follows."""

    name = "feature DMA_LOGGING_REPORT"
    fields_desc = named_struct_fields("dma_logging_report") + [StrField("bitmap", b"")]


FEATURE_CLASSES: dict[int, type[Packet]] = {
    spec.FEATURE_MIGRATION: VfuFeatureMigration,
    spec.FEATURE_MIG_DEVICE_STATE: VfuFeatureMigState,
    spec.FEATURE_DMA_LOGGING_START: VfuFeatureLogging,
    spec.FEATURE_DMA_LOGGING_STOP: VfuFeatureLogging,
    spec.FEATURE_DMA_LOGGING_REPORT: VfuFeatureLoggingReport,
}


class VfuDeviceFeature(VfuPacket):
    """DEVICE_FEATURE request and reply: argsz, flags (feature index + GET/SET/PROBE); the feature's data
    is the next layer."""

    name = "vfio-user DEVICE_FEATURE"
    layout_key = "device_feature"
    fields_desc = layout_fields("device_feature", replace={"flags": FeatureFlagsField("flags", 0)}) + [
        DerivedField("feature", lambda p: feature_name(flag_value(p.getfieldval("flags")) & spec.FEATURE_MASK), str),
    ]

    def next_layer(self, payload: bytes) -> type[Packet]:
        cls = FEATURE_CLASSES.get(flag_value(self.getfieldval("flags")) & spec.FEATURE_MASK)
        return cls if cls is not None else conf.raw_layer

    def key_fields(self) -> list[str]:
        if self.cut_at is not None:
            return super().key_fields()
        flags = flag_value(self.getfieldval("flags"))
        out = [f"feature={spec.FEATURES.get(flags & spec.FEATURE_MASK, flags & spec.FEATURE_MASK)}",
               f"flags={format_value(_FLAGS_FIELD, flags & ~spec.FEATURE_MASK)}"]
        data = self.payload
        if isinstance(data, VfuFeatureMigState) and "device_state" in data.fields:
            state = data.getfieldval("device_state")
            out.append(f"device_state={spec.MIG_STATES.get(state, state)}")
        return out


class VfuMigData(VfuPacket):
    """MIG_DATA_READ / MIG_DATA_WRITE: argsz, size, then ``size`` data bytes (READ reply, WRITE request);
    libvfio-user pads READ replies, so bytes beyond ``size`` stay undecoded."""

    name = "vfio-user migration data"
    layout_key = "mig_data"
    fields_desc = layout_fields("mig_data") + [
        DataField("data", b"", length_from=lambda p: p.getfieldval("size") or 0),
    ]


__all__ = ["FeatureFlags", "FEATURE_CLASSES", "VfuDeviceFeature", "VfuFeatureLogging", "VfuFeatureLoggingReport",
           "VfuFeatureMigState", "VfuFeatureMigration", "VfuLoggingRange", "VfuMigData", "feature_name"]
