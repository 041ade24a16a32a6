"""Text and JSON views of records and findings: the one-line decode shared by `read` and the live proxy."""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping

from . import spec
from .core.events import FdInfo
from .core.records import ConnRecord, Finding, Item, MessageRecord

_RESET = "\033[0m"
_STYLE = {
    "frame": "\033[2m", "time": "\033[2m", "conn": "\033[35m", "cmd": "\033[1;36m", "reply": "\033[36m",
    "error": "\033[1;31m", "warning": "\033[33m", "note": "\033[34m", "link": "\033[2m", "event": "\033[32m",
}
_ARROW = {spec.C2S: "C→S", spec.S2C: "S→C", None: "   "}
_SEV_MARK = {"error": "✗", "warning": "!", "note": "·"}

# (command, is_reply) -> fields of its layout, for formatting decoded values
_FIELDS: dict[tuple[int, bool], dict[str, spec.Field]] = {}
for _code, _info in spec.COMMANDS.items():
    for _is_reply, _key in ((False, _info.request_layout), (True, _info.reply_layout)):
        if _key:
            _FIELDS[(_code, _is_reply)] = {f.name: f for f in spec.LAYOUTS[_key].fields}

_SKIP = frozenset({"argsz"})


def _bits(value: int, names: Mapping[int, str]) -> str:
    parts = [n for bit, n in names.items() if value & bit]
    rest = value & ~sum(names)
    if rest:
        parts.append(f"0x{rest:x}")
    return "|".join(parts) if parts else "0"


def format_value(f: spec.Field | None, value: Any) -> str:
    if not isinstance(value, int) or f is None:
        return str(value)
    if f.bits:
        return _bits(value, f.bits)
    if f.values and value in f.values:
        return f.values[value]
    return f"0x{value:x}" if f.hex else str(value)


def human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n}{unit}" if unit == "B" else f"{n:.4g}{unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def fd_text(fd: FdInfo) -> str:
    s = fd.kind
    if fd.size:
        s += f" {human_size(fd.size)}"
    return s


def key_fields(rec: MessageRecord) -> str:
    """The decoded payload fields worth a glance, ``name=value`` separated by spaces."""
    names = _FIELDS.get((rec.command, rec.msg_type == "reply"), {})
    parts = []
    for name, value in rec.fields.items():
        if name in _SKIP:
            continue
        if name == "capabilities":
            if value:
                parts.append("caps=" + json.dumps(value, separators=(",", ":"), sort_keys=False))
            continue
        if name == "version_data":
            parts.append(f"version_data={value[:40]!r}")
            continue
        if name == "value":  # a register's data, as the number it holds
            parts.append(f"value=0x{value:x}")
            continue
        if rec.command == 16 and name == "flags":
            value &= ~spec.FEATURE_MASK  # the low 16 bits are the feature index, shown first
        parts.append(f"{name}={format_value(names.get(name), value)}")
    if rec.command == 16 and rec.fields:
        fl = rec.fields.get("flags", 0)
        parts.insert(0, f"feature={spec.FEATURES.get(fl & spec.FEATURE_MASK, fl & spec.FEATURE_MASK)}")
    return " ".join(parts)


def rtt_text(rtt: float) -> str:
    if rtt < 1e-3:
        return f"{rtt * 1e6:.0f}µs"
    if rtt < 1:
        return f"{rtt * 1e3:.2f}ms"
    return f"{rtt:.3f}s"


class Renderer:
    """Formats records as tshark-like lines; colour only when asked (a terminal)."""

    def __init__(self, color: bool = False, base_ts: float | None = None) -> None:
        self.color = color
        self.base_ts = base_ts
        # how a frame number is shown: as it is, or (a rotated capture's live view) as its part file numbers it
        self.frame: Callable[[int], str] = str

    def _c(self, style: str, text: str) -> str:
        return f"{_STYLE[style]}{text}{_RESET}" if self.color else text

    def _rel(self, ts: float) -> float:
        if self.base_ts is None:
            self.base_ts = ts
        return ts - self.base_ts

    def message_line(self, rec: MessageRecord) -> str:
        fr = self.frame
        head = (f"{self._c('frame', f'{fr(rec.frame):>6}')} {self._c('time', f'{self._rel(rec.ts):>11.6f}')} "
                f"{self._c('conn', f'#{rec.conn}')} {_ARROW.get(rec.dir, rec.dir)} ")
        is_reply = rec.msg_type == "reply"
        name = self._c("reply" if is_reply else "cmd", rec.command_name)
        kind = rec.msg_type if not is_reply else ("error reply" if rec.flags & spec.FLAG_ERROR else "reply")
        if rec.msg_type == "command" and rec.no_reply:
            kind = "command (no_reply)"
        parts = [f"{name} {kind} id={rec.msg_id} {rec.size}B"]
        if rec.flags & spec.FLAG_ERROR and is_reply:
            parts.append(self._c("error", f"{spec.errno_name(rec.error)}({rec.error})"))
        if rec.fds:
            parts.append("fds=[" + ", ".join(fd_text(fd) for fd in rec.fds) + "]")
        kf = key_fields(rec)
        if kf:
            parts.append(kf)
        if rec.truncated:
            parts.append("[truncated]")
        if rec.context:
            parts.append("[context]")
        if rec.fault:
            parts.append(self._c("error", f"[{rec.fault} by the proxy]"))
        if rec.request_frame is not None:
            t = f"← {fr(rec.request_frame)}"
            if rec.rtt is not None:
                t += f" ({rtt_text(rec.rtt)})"
            parts.append(self._c("link", t))
        if rec.response_frame is not None:
            parts.append(self._c("link", f"→ {fr(rec.response_frame)}"))
        return head + " ".join(parts)

    def conn_line(self, rec: ConnRecord) -> str:
        rel = self._rel(rec.ts) if rec.ts else 0.0
        frame = f"{self.frame(rec.frame):>6}" if rec.frame else "      "
        return (f"{self._c('frame', frame)} {self._c('time', f'{rel:>11.6f}')} {self._c('conn', f'#{rec.conn}')} "
                f"{_ARROW.get(rec.dir, '   ')} {self._c('event', rec.kind)} {rec.text}")

    def finding_line(self, f: Finding, standalone: bool = False) -> str:
        mark = _SEV_MARK.get(f.severity, "?")
        where = ""
        if standalone or len(f.frames) > 1:
            where = f" [frame{'s' if len(f.frames) > 1 else ''} {', '.join(map(self.frame, f.frames))}]"
        text = f"{mark} {f.severity} {f.code}: {f.text}{where}"
        return " " * 8 + self._c(f.severity, text)

    def item_lines(self, it: Item, standalone: bool = False) -> str:
        if isinstance(it, MessageRecord):
            return self.message_line(it)
        if isinstance(it, Finding):
            return self.finding_line(it, standalone)
        return self.conn_line(it)


def _json_line() -> Callable[[Any], str]:
    """json.dumps(obj) with the default settings, its C encoder made once instead of once per call (read --json
    writes one object per message: a quarter of its encoding time was json.dumps making its encoder)."""
    from json.encoder import JSONEncoder, c_make_encoder, encode_basestring_ascii

    if c_make_encoder is None:  # a Python without the C accelerator: json.dumps as it is
        return json.dumps
    # the arguments JSONEncoder.iterencode gives it for json.dumps(obj), less the circular-reference check (a
    # record or finding holds no cycle)
    encode = c_make_encoder(None, JSONEncoder().default, encode_basestring_ascii, None, ": ", ", ", False, False, True)
    join = "".join
    return lambda obj: join(encode(obj, 0))


json_line = _json_line()


def message_json(rec: MessageRecord) -> dict[str, Any]:
    fields = {k: v for k, v in rec.fields.items()}
    return {
        "frame": rec.frame, "ts": rec.ts, "conn": rec.conn, "dir": rec.dir, "msg_id": rec.msg_id,
        "command": rec.command, "command_name": rec.command_name, "msg_type": rec.msg_type, "size": rec.size,
        "flags": rec.flags, "error": rec.error,
        "error_name": spec.errno_name(rec.error) if rec.flags & spec.FLAG_ERROR and rec.error else None,
        "fds": [{"kind": fd.kind, "size": fd.size, "ino": fd.ino, **({"path": fd.path} if fd.path else {})}
                for fd in rec.fds],
        "request_frame": rec.request_frame, "response_frame": rec.response_frame,
        "rtt": None if rec.rtt is None else round(rec.rtt, 9), "findings": list(rec.findings),
        "fields": fields, "truncated": rec.truncated, "context": rec.context,
        **({"fault": rec.fault} if rec.fault else {}),
    }


def conn_json(rec: ConnRecord) -> dict[str, Any]:
    """A connection event, raw bytes or a note, as `read --json` prints it (``event``: open | close | raw | note)."""
    return {"frame": rec.frame, "ts": rec.ts, "conn": rec.conn, "dir": rec.dir, "event": rec.kind, "text": rec.text,
            "findings": list(rec.findings)}


def finding_json(f: Finding) -> dict[str, Any]:
    return {"finding": f.code, "severity": f.severity, "conn": f.conn, "frames": list(f.frames), "text": f.text,
            "ts": f.ts}
