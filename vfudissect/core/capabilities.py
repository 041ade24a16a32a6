"""VERSION payload checks: NUL termination, JSON, and the capability schema of spec.CAPABILITIES.

Rule 1: nothing here raises on peer input; every problem is a (code, text) pair.
Rule 2: a value a real implementation sends is not an error (the legacy
``migration`` object is a note, not CAPS_UNKNOWN_KEY).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .. import spec

Problem = tuple[str, str]


@dataclass(frozen=True, slots=True)
class VersionData:
    """The decoded version data of a VERSION request or reply."""

    raw: bytes
    text: str | None  # JSON text up to the first NUL (None if absent)
    document: Any  # parsed JSON (None if absent or malformed)
    capabilities: dict[str, Any] | None  # the "capabilities" object, if usable


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def parse_version_data(raw: bytes) -> tuple[VersionData, list[Problem]]:
    """Check the bytes after major/minor: NUL, UTF-8, JSON, object shape, schema."""
    problems: list[Problem] = []
    if not raw:
        return VersionData(raw, None, None, None), problems
    if raw[-1] != 0:
        problems.append(("CAPS_NOT_NUL_TERMINATED",
                         f"version data of {len(raw)} bytes does not end with NUL (last byte 0x{raw[-1]:02x})"))
        body = raw
    else:
        body = raw[:-1]
    nul = body.find(b"\0")
    if nul >= 0:
        problems.append(("CAPS_EMBEDDED_NUL", f"NUL at byte {nul} of the version data; "
                         "implementations parse only up to it"))
        body = body[:nul]
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(("CAPS_MALFORMED", f"version data is not UTF-8 ({exc.reason} at byte {exc.start})"))
        return VersionData(raw, None, None, None), problems
    if not text.strip():
        if raw != b"\0":
            problems.append(("CAPS_MALFORMED", "version data holds no JSON"))
        return VersionData(raw, text, None, None), problems
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        where = f" at char {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
        problems.append(("CAPS_MALFORMED", f"capabilities JSON does not parse: {msg}{where}"))
        return VersionData(raw, text, None, None), problems
    if not isinstance(doc, dict):
        problems.append(("CAPS_NOT_OBJECT", f"JSON top level is {_jtype(doc)}, not an object "
                         "(QEMU rejects it; libvfio-user ignores it)"))
        return VersionData(raw, text, doc, None), problems
    caps: dict[str, Any] | None = None
    for key, value in doc.items():
        if key == "capabilities":
            if isinstance(value, dict):
                caps = value
            else:
                problems.append(("CAPS_NOT_OBJECT", f"'capabilities' is {_jtype(value)}, not an object"))
        else:
            problems.append(("CAPS_UNKNOWN_KEY", f"unknown top-level key {key!r}"))
    if caps is not None:
        problems.extend(_check_object(caps, ""))
    return VersionData(raw, text, doc, caps), problems


def _jtype(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object"


def _check_object(obj: dict[str, Any], prefix: str) -> list[Problem]:
    out: list[Problem] = []
    for key, value in obj.items():
        path = f"{prefix}{key}"
        schema = spec.CAPABILITIES.get(path)
        if schema is None:
            out.append(("CAPS_UNKNOWN_KEY", f"unknown capability {path!r} (QEMU warns 'spurious capabilities')"))
            continue
        if schema.legacy and "." not in path:
            out.append(("CAPS_LEGACY_KEY", f"legacy capability {path!r} (not in the final spec; "
                        "QEMU and libvfio-user still send it)"))
        problem = _check_value(schema, value)
        if problem:
            out.append(("CAPS_BAD_VALUE", f"{path} = {json.dumps(value)[:60]}: {problem}"))
        elif schema.kind == "object":
            out.extend(_check_object(value, path + "."))
    return out


def _check_value(schema: spec.CapKey, value: Any) -> str | None:
    if schema.kind == "object":
        return None if isinstance(value, dict) else f"must be an object, not {_jtype(value)}"
    if schema.kind == "bool":
        return None if isinstance(value, bool) else f"must be a boolean, not {_jtype(value)}"
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an integer, not {_jtype(value)}"
    if schema.minimum is not None and value < schema.minimum:
        return f"below the minimum {schema.minimum}"
    if schema.maximum is not None and value > schema.maximum:
        return f"above the maximum {schema.maximum}"
    if schema.page_aligned and value & 0xFFF:
        return "low 12 bits must be clear (page sizes of at least 4 KiB)"
    return None


def cap(caps: dict[str, Any] | None, path: str, default: Any) -> Any:
    """A capability value by dotted path if present and well-typed, else ``default``."""
    cur: Any = caps
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return default
        cur = cur[part]
    schema = spec.CAPABILITIES.get(path)
    if schema is not None and _check_value(schema, cur) is not None:
        return default
    return cur
