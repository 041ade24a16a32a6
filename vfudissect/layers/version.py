"""VERSION (1) payload layer: major/minor plus the NUL-terminated JSON version data, raw and decoded."""

from __future__ import annotations

import json
from typing import Any

from scapy.fields import StrField
from scapy.packet import Packet

from ..core.capabilities import parse_version_data
from .base import VfuPacket
from .fields import DerivedField, layout_fields

# problem codes that mean "the JSON could not be used" (the others are notes for the analyzer)
_PARSE_ERRORS = frozenset({"CAPS_MALFORMED", "CAPS_NOT_OBJECT"})


def version_data_bytes(document: Any) -> bytes:
    """The wire form of a version JSON document: compact UTF-8 JSON plus the terminating NUL."""
    return json.dumps(document, separators=(",", ":")).encode() + b"\0"


def _raw(pkt: Packet) -> bytes:
    return bytes(pkt.getfieldval("version_data") or b"")


def _document(pkt: Packet) -> Any:
    return parse_version_data(_raw(pkt))[0].document


def _capabilities(pkt: Packet) -> dict[str, Any] | None:
    return parse_version_data(_raw(pkt))[0].capabilities


def _json_error(pkt: Packet) -> str | None:
    problems = [text for code, text in parse_version_data(_raw(pkt))[1] if code in _PARSE_ERRORS]
    return "; ".join(problems) if problems else None


def _nul_terminated(pkt: Packet) -> bool | None:
    raw = _raw(pkt)
    return raw.endswith(b"\0") if raw else None


def _compact(value: Any) -> str:
    return "None" if value is None else json.dumps(value, separators=(",", ":"))


class VfuVersion(VfuPacket):
    """VERSION request and reply: ``version_data`` is the raw text (JSON + NUL); ``capabilities`` the
    decoded object, ``version_json`` the whole document, ``json_error`` why it is unusable (else None),
    ``nul_terminated`` whether the terminating NUL is there (None without version data)."""

    name = "vfio-user VERSION"
    layout_key = "version"
    fields_desc = layout_fields("version") + [
        StrField("version_data", b""),
        DerivedField("version_json", _document, _compact),
        DerivedField("capabilities", _capabilities, _compact),
        DerivedField("json_error", _json_error, lambda v: "None" if v is None else str(v)),
        DerivedField("nul_terminated", _nul_terminated, str),
    ]

    def key_fields(self) -> list[str]:
        out = super().key_fields()
        caps = _capabilities(self)
        raw = _raw(self)
        if caps:
            out.append("caps=" + json.dumps(caps, separators=(",", ":")))
        elif raw and caps is None:
            out.append(f"version_data={raw.decode('utf-8', 'replace')[:40]!r}")
        return out
