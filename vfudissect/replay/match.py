"""Which recorded message a live one answers, what differs between them, and the rules that normalise a run.

A message is compared as the dissector decodes it (``fields_of``: every
field of its scapy layers, sub-structures and capabilities flattened to
dotted names), its header (command, message type, error, size) and its fds
(count, kind, and size where a size is the file's).  What legitimately
changes from one run to the next is normalised by the rules of ``RULES``,
each with the reason it is not a divergence; nothing else is ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from .. import spec
from ..core.events import FdInfo

C = spec.Command
COMMAND, REPLY = "command", "reply"


@dataclass(frozen=True, slots=True)
class Rule:
    """One normalisation: in which messages (command, type; None = any), which field, and why it may change."""

    field: str
    command: int | None
    msg_type: str | None
    why: str
    when_fds: bool = False  # only when the message carries fds (the field is about them)


RULES: tuple[Rule, ...] = (
    Rule("offset", C.DEVICE_GET_REGION_INFO, REPLY, when_fds=True,
         why="the offset into the region's fd at which the client mmaps it: the server's choice for the file it "
             "made in this run"),
    Rule("entries.*.offset", C.DEVICE_GET_REGION_IO_FDS, REPLY, when_fds=True,
         why="an ioeventfd's offset into the fd the server made in this run"),
    Rule("msg_id", None, COMMAND,
         why="the id a server gives its own commands is its own counter (libvfio-user and vfudissect's emulated "
             "server count on across connections): compared as the distance from the run's first server command, "
             "so a repeated or skipped id still shows"),
)
FD_RULE = ("an fd is compared by kind and, for files and memfds, size; its inode, path (memfd and temporary-file "
           "names are made up per run) and status flags are the run's own")


def _ruled(rule: Rule, name: str) -> bool:
    if rule.field == name:
        return True
    if "*" in rule.field:
        head, _, tail = rule.field.partition(".*.")
        if name.startswith(head + "[") and name.endswith("]." + tail):
            return True
    return False


def msg_type(data: bytes) -> str:
    flags = spec.HEADER.unpack_from(data)[3]
    return REPLY if flags & spec.FLAG_TYPE_MASK == spec.MSG_TYPE_REPLY else COMMAND


def name_of(data: bytes) -> str:
    """A message as the replay's findings name it: ``REGION_READ reply``."""
    return f"{spec.command_name(spec.HEADER.unpack_from(data)[1])} {msg_type(data)}"


def normalised(command: int, mtype: str, name: str, has_fds: bool) -> Rule | None:
    """The rule that exempts field ``name`` of such a message from the comparison, None when it is compared."""
    for r in RULES:
        if (r.command is None or r.command == command) and (r.msg_type is None or r.msg_type == mtype) \
                and (not r.when_fds or has_fds) and _ruled(r, name):
            return r
    return None


# ------------------------------------------------------------------ decoding
def _plain(v: Any) -> Any:
    from scapy.packet import Packet

    if isinstance(v, Packet):
        return v
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    if isinstance(v, (int, str, float)) or v is None:
        return int(v) if type(v).__name__ == "FlagValue" else v
    try:
        return int(v)
    except (TypeError, ValueError):
        return str(v)


def _walk(pkt: Any, prefix: str, out: dict[str, Any]) -> None:
    from scapy.fields import ConditionalField
    from scapy.packet import NoPayload, Packet, Padding, Raw

    layer = pkt
    first = True
    while layer is not None and not isinstance(layer, NoPayload):
        if isinstance(layer, (Raw, Padding)):
            out[prefix + ("trailing" if not first else "bytes")] = bytes(layer.load)
            break
        for f in layer.fields_desc:
            if type(f).__name__ == "DerivedField":
                continue
            if isinstance(f, ConditionalField) and not f._evalcond(layer):
                continue
            v = layer.getfieldval(f.name)
            key = prefix + f.name
            if isinstance(v, Packet):
                _walk(v, key + ".", out)
            elif isinstance(v, list) and v and all(isinstance(x, Packet) for x in v):
                for i, x in enumerate(v):
                    _walk(x, f"{key}[{i}].", out)
            elif isinstance(v, list):
                out[key] = tuple(_plain(x) for x in v)
            else:
                out[key] = _plain(v)
        layer = layer.payload
        first = False


def _flatten_json(v: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(v, dict) and v:
        for k in sorted(v):
            _flatten_json(v[k], f"{prefix}.{k}", out)
    else:
        out[prefix] = v


def fields_of(data: bytes) -> dict[str, Any]:
    """Every payload field of one message as the dissector decodes it (the header's five are left out)."""
    from ..layers import VfioUser

    out: dict[str, Any] = {}
    try:
        pkt = VfioUser(data)
    except Exception as exc:  # noqa: BLE001 - an undecodable message is compared byte for byte
        return {"payload": bytes(data[spec.HEADER_SIZE:]), "decode_error": type(exc).__name__}
    _walk(pkt.payload, "", out)
    vd = out.pop("version_data", None)
    if vd is not None:  # VERSION: the capabilities as JSON values, whatever their spacing and key order
        text = vd.rstrip(b"\0")
        try:
            _flatten_json(json.loads(text.decode("utf-8")) if text else {}, "json", out)
        except (UnicodeDecodeError, ValueError):
            out["version_data"] = vd
        out["json_nul_terminated"] = vd.endswith(b"\0")
    return out


# ------------------------------------------------------------------ comparing
@dataclass(frozen=True, slots=True)
class Difference:
    """One way a live message differs from the recorded one."""

    field: str
    recorded: Any
    live: Any

    def text(self) -> str:
        hexed = self.field.rsplit(".", 1)[-1] in HEX_FIELDS
        return f"{self.field} {show(self.recorded, hexed)} recorded, {show(self.live, hexed)} now"


# fields the spec shows in hex (addresses, offsets, sizes), and the header's size
HEX_FIELDS = frozenset({f.name for lay in spec.LAYOUTS.values() for f in lay.fields if f.hex} | {"size"})


def show(v: Any, hexed: bool = False) -> str:
    if v is _ABSENT:
        return "absent"
    if isinstance(v, bytes):
        if len(v) <= 8:
            return "0x" + v.hex() if v else "b''"
        return f"{len(v)} bytes {v[:8].hex()}…"
    if isinstance(v, int) and not isinstance(v, bool) and hexed and v > 9:
        return hex(v)
    return json.dumps(v) if isinstance(v, (str, bool)) or v is None else str(v)


class _Absent:
    def __repr__(self) -> str:
        return "absent"


_ABSENT = _Absent()


def _bytes_diff(name: str, a: bytes, b: bytes) -> Difference:
    n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    if len(a) != len(b) and n == min(len(a), len(b)):
        return Difference(f"{name} length", len(a), len(b))
    return Difference(f"{name}[{n:#x}]", a[n:n + 8], b[n:n + 8])


def header_diffs(rec: bytes, live: bytes, ignore_size: bool = False) -> list[Difference]:
    r_id, r_cmd, r_size, r_flags, r_err = spec.HEADER.unpack_from(rec)
    l_id, l_cmd, l_size, l_flags, l_err = spec.HEADER.unpack_from(live)
    out = []
    if r_cmd != l_cmd:
        out.append(Difference("command", spec.command_name(r_cmd), spec.command_name(l_cmd)))
    if r_flags & spec.FLAG_TYPE_MASK != l_flags & spec.FLAG_TYPE_MASK:
        out.append(Difference("type", msg_type(rec), msg_type(live)))
    if bool(r_flags & spec.FLAG_ERROR) != bool(l_flags & spec.FLAG_ERROR) or r_err != l_err:
        out.append(Difference("error", spec.errno_name(r_err) if r_flags & spec.FLAG_ERROR else "none",
                              spec.errno_name(l_err) if l_flags & spec.FLAG_ERROR else "none"))
    if bool(r_flags & spec.FLAG_NO_REPLY) != bool(l_flags & spec.FLAG_NO_REPLY):
        out.append(Difference("no_reply", bool(r_flags & spec.FLAG_NO_REPLY), bool(l_flags & spec.FLAG_NO_REPLY)))
    if r_size != l_size and not ignore_size:
        out.append(Difference("size", r_size, l_size))
    return out


def fd_diffs(rec: Iterable[FdInfo], live: Iterable[FdInfo]) -> list[Difference]:
    r, lv = list(rec), list(live)
    if len(r) != len(lv):
        return [Difference("fds", len(r), len(lv))]
    out = []
    for i, (a, b) in enumerate(zip(r, lv)):
        if a.kind != b.kind:
            out.append(Difference(f"fd[{i}] kind", a.kind, b.kind))
        elif a.kind in ("memfd", "regular") and a.size != b.size:
            out.append(Difference(f"fd[{i}] size", a.size, b.size))
    return out


def field_diffs(rec: bytes, live: bytes, has_fds: bool) -> list[Difference]:
    """The payload fields that differ, after the normalisation rules."""
    if rec[spec.HEADER_SIZE:] == live[spec.HEADER_SIZE:]:
        return []
    command = spec.HEADER.unpack_from(rec)[1]
    mtype = msg_type(rec)
    a, b = fields_of(rec), fields_of(live)
    out = []
    for name in list(a) + [k for k in b if k not in a]:
        x, y = a.get(name, _ABSENT), b.get(name, _ABSENT)
        if x == y or normalised(command, mtype, name, has_fds):
            continue
        if isinstance(x, bytes) and isinstance(y, bytes):
            out.append(_bytes_diff(name, x, y))
        else:
            out.append(Difference(name, x, y))
    return out


def differences(rec: bytes, rec_fds: tuple[FdInfo, ...], live: bytes, live_fds: tuple[FdInfo, ...],
                id_offset: int | None = None) -> list[Difference]:
    """Everything that differs between a recorded message and the live one that answers it.

    ``id_offset``: for a server's own command, the live id minus the recorded one of the run's first server
    command (the msg_id rule); None compares no id (a reply carries its request's)."""
    out = header_diffs(rec, live)
    if id_offset is not None:
        r_id, l_id = spec.HEADER.unpack_from(rec)[0], spec.HEADER.unpack_from(live)[0]
        if (r_id + id_offset) & 0xFFFF != l_id:
            out.append(Difference("msg_id (counted from the first server command)", (r_id + id_offset) & 0xFFFF,
                                  l_id))
    if not any(d.field == "command" for d in out):
        out += field_diffs(rec, live, bool(rec_fds or live_fds))
    out += fd_diffs(rec_fds, live_fds)
    return out


def request_key(data: bytes) -> tuple[Any, ...]:
    """What makes two requests the same request for replay server matching: command, type, no_reply, and every
    payload field after the normalisation rules."""
    _id, command, _size, flags, _err = spec.HEADER.unpack_from(data)
    if len(data) == spec.HEADER_SIZE:
        return (command, flags & (spec.FLAG_TYPE_MASK | spec.FLAG_NO_REPLY))
    mtype = msg_type(data)
    fs = fields_of(data)
    return (command, flags & (spec.FLAG_TYPE_MASK | spec.FLAG_NO_REPLY),
            tuple(sorted((k, repr(v)) for k, v in fs.items() if not normalised(command, mtype, k, False))))


def summary(diffs: list[Difference], limit: int = 4) -> str:
    parts = [d.text() for d in diffs[:limit]]
    if len(diffs) > limit:
        parts.append(f"and {len(diffs) - limit} more")
    return "; ".join(parts)
