"""The common base of every vfudissect layer: dissection that never raises on short input, Info-column text."""

from __future__ import annotations

from typing import Any, ClassVar

from scapy.config import conf
from scapy.packet import Packet

from .. import spec
from ..render import format_value


class VfuPacket(Packet):
    """A layer that tolerates truncation: the first field that does not fit ends the decode.

    The fields read so far keep their values, the undecodable rest becomes a Raw payload and
    ``cut_at`` names the field where decoding stopped; the bytes still round-trip.  ``layout_key``
    names the spec layout whose fields the Info text shows.
    """

    __slots__ = ["cut_at"]
    layout_key: ClassVar[str | None] = None
    show_summary = False

    def init_fields(self, for_dissect_only: bool = False) -> None:
        object.__setattr__(self, "cut_at", None)
        super().init_fields(for_dissect_only)

    def do_dissect(self, s: bytes) -> bytes:
        raw = s
        self.raw_packet_cache_fields = {}
        for f in self.fields_desc:
            try:
                rest, fval = f.getfield(self, s)
            except Exception:  # too short (or inconsistent) for this field: stop here
                object.__setattr__(self, "cut_at", f.name)
                break
            s = rest
            if f.isconditional and fval is None:
                continue
            if (f.islist or f.holds_packets or f.ismutable) and fval is not None:
                self.raw_packet_cache_fields[f.name] = self._raw_packet_cache_field_value(f, fval, copy=True)
            self.fields[f.name] = fval
        self.raw_packet_cache = raw[:-len(s)] if s else raw
        self.explicit = 1
        return s

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        if self.cut_at is not None:
            return conf.raw_layer  # type: ignore[no-any-return]
        return self.next_layer(payload)

    def next_layer(self, payload: bytes) -> type[Packet]:
        """The class of the bytes after this layer (bindings, else Raw); overridden for dispatch."""
        return super().guess_payload_class(payload)

    def key_fields(self) -> list[str]:
        """``name=value`` items for the Info text: the layout's fields except argsz."""
        if self.layout_key is None:
            return []
        out = []
        for f in spec.LAYOUTS[self.layout_key].fields:
            if f.name == "argsz" or (f.name not in self.fields and self.cut_at is not None):
                continue
            out.append(f"{f.name}={format_value(f, plain(self.getfieldval(f.name)))}")
        if self.cut_at is not None:
            out.append(f"[cut at {self.cut_at}]")
        return out


def plain(value: Any) -> Any:
    """A field value as a plain Python value (flag words -> int)."""
    if isinstance(value, bool):
        return value
    if hasattr(value, "value") and hasattr(value, "names"):  # FlagValue
        return int(value)
    return value
