"""Test helpers: tshark with the generated plugin, the oracles (`vfudissect read --json`, the capture's own FINDING
records), and the comparison of the two, frame by frame."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from vfudissect.capture.annotate import annotate
from vfudissect.capture.reader import read_events
from vfudissect.core.events import FindingIn, VerdictsIn

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "plugins" / "vfio_user.lua"
AGG = "\x1f"  # -E aggregator: finding texts hold commas and bars
FIELDS = ("frame.number", "vfucap.rec_type", "vfio_user.msg_id", "vfio_user.command", "vfio_user.size",
          "vfio_user.request_in", "vfio_user.response_in", "vfio_user.time", "vfio_user.finding",
          "vfio_user.internal_error", "_ws.lua.error", "_ws.expert.message", "_ws.expert.severity", "_ws.expert.group")
SEVERITY = {"4194304": "note", "6291456": "warning", "8388608": "error"}  # _ws.expert.severity (PI_NOTE ...)
COMMENT = "1048576"  # PI_COMMENT: the packet comments stock Wireshark shows as experts
NO_VERDICTS = ("note", "no vfio-user findings stored in this capture (its first record is not a VERDICTS record): "
               "add them with `vfudissect annotate IN -w OUT`")


def tshark() -> str:
    path = shutil.which("tshark")
    assert path, "tshark is required for the Wireshark plugin tests (make test installs it)"
    return path


def tshark_out(capture: Path, *args: str, plugin: Path | None = PLUGIN, env: dict[str, str] | None = None,
               timeout: float = 300) -> str:
    """tshark's stdout; fails on a non-zero exit or anything on stderr (Lua errors, bad options)."""
    cmd = [tshark(), "-n", "-r", str(capture)] + (["-X", f"lua_script:{plugin}"] if plugin else []) + list(args)
    p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout, env=env)
    said = [line for line in p.stderr.splitlines() if not line.startswith("Running as user")]
    assert p.returncode == 0 and not said, f"tshark failed ({p.returncode}): {' / '.join(said)[:2000]}"
    return p.stdout


def lines(capture: Path, *args: str, **kw) -> list[str]:
    out = tshark_out(capture, *args, **kw)
    assert "Lua Error" not in out and "Malformed Packet" not in out
    return [line for line in out.split("\n") if line]  # not splitlines(): texts may hold U+2028 and friends


def fields(capture: Path, names: list[str] | tuple[str, ...], *args: str, **kw) -> list[list[list[str]]]:
    """One row per frame: every occurrence of each field (``-E occurrence=a``)."""
    out = tshark_out(capture, "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a", "-E", f"aggregator={AGG}",
                     *[a for n in names for a in ("-e", n)], *args, **kw)
    rows = []
    for line in out.split("\n"):
        if line:
            cols = line.split("\t") + [""] * len(names)
            rows.append([c.split(AGG) if c else [] for c in cols[:len(names)]])
    return rows


@dataclass
class Frame:
    number: int
    rec_type: int | None
    msg_id: int | None
    command: int | None
    size: int | None
    request_in: int | None
    response_in: int | None
    time: float | None
    findings: Counter = field(default_factory=Counter)  # vfio_user.finding codes
    experts: Counter = field(default_factory=Counter)  # (severity, message), comments left out
    errors: list[str] = field(default_factory=list)  # Lua errors, plugin errors, "Malformed" exceptions


def _one(v: list[str]) -> int | None:
    return int(v[0]) if v else None


def run_tshark(capture: Path, two_pass: bool = True, args: tuple[str, ...] = (), **kw) -> dict[int, Frame]:
    """Frames as the plugin shows them."""
    frames: dict[int, Frame] = {}
    for row in fields(capture, FIELDS, *(("-2",) if two_pass else ()), *args, **kw):
        num, rt, mid, cmd, size, rq, rs, tm, fnd, ierr, lerr, msg, sev, grp = row
        msg = msg + [""] * (len(sev) - len(msg))  # an empty message is an empty column
        experts = Counter((SEVERITY.get(s, s), m) for m, s in zip(msg, sev) if s != COMMENT)
        errors = ierr + lerr + [m for m in msg if "Malformed" in m or "Exception" in m]
        frames[int(num[0])] = Frame(int(num[0]), _one(rt), _one(mid), _one(cmd), _one(size), _one(rq), _one(rs),
                                    float(tm[0]) if tm else None, Counter(fnd), experts, errors)
    return frames


def run_read_json(capture: Path, timeout_s: float | None = None) -> tuple[dict[int, dict], list[dict]]:
    """The engine's oracle: message objects by frame, and the finding objects."""
    args = [sys.executable, "-m", "vfudissect", "read", "--json", "--fail-on", "never", "--no-progress"]
    if timeout_s is not None:
        args += ["--timeout", str(timeout_s)]
    p = subprocess.run(args + [str(capture)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, f"vfudissect read failed: {p.stderr[-2000:]}"
    msgs: dict[int, dict] = {}
    found: list[dict] = []
    for line in p.stdout.splitlines():
        obj = json.loads(line)
        if "msg_id" in obj:
            msgs[obj["frame"]] = obj
        elif "finding" in obj:
            found.append(obj)
    return msgs, found


def judged(capture: Path, out: Path, timeout_s: float | None = None) -> Path:
    """The capture with the engine's verdicts (`vfudissect annotate`)."""
    with open(capture, "rb") as fin, open(out, "wb") as fout:
        res = annotate(fin, fout, str(capture), **({"timeout": timeout_s} if timeout_s is not None else {}))
    assert res.error is None or "truncated" in str(res.error) or res.copied, res.error
    return out


@dataclass
class Stored:
    """The verdicts a capture carries: its FINDING records (each with its own frame), and whether it says so."""

    verdicts: bool
    findings: list[FindingIn]
    frames: int
    timeout: float | None = None  # the REPLY_TIMEOUT threshold they were judged with


def stored(capture: Path) -> Stored:
    found: list[FindingIn] = []
    first = None
    last = 0
    with open(capture, "rb") as f:
        for ev in read_events(f, str(capture)):
            if first is None and ev.frame:
                first = ev
            last = max(last, ev.frame)
            if isinstance(ev, FindingIn):
                found.append(ev)
    verdicts = isinstance(first, VerdictsIn) and first.frame == 1
    return Stored(verdicts, found, last, first.timeout if verdicts else None)  # type: ignore[union-attr]


def shown(text: str) -> str:
    """A text as the plugin labels it: control characters escaped (the plugin's safe())."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", text)


def expert_text(text: str) -> str:
    """An expert item's text: Wireshark keeps 239 bytes; the plugin cuts longer ones at a character, with "…"."""
    b = shown(text).encode()
    if len(b) <= 239:
        return b.decode()
    cut = 236
    while cut > 0 and b[cut] & 0xC0 == 0x80:
        cut -= 1
    return b[:cut].decode() + "…"


def expected_experts(st: Stored, two_pass: bool) -> dict[int, Counter]:
    """(severity, text) per frame: each FINDING record's own, and (second pass) the same on every frame it names."""
    out: dict[int, Counter] = {}
    for fnd in st.findings:
        item = (fnd.severity, expert_text(fnd.text))
        out.setdefault(fnd.frame, Counter())[item] += 1
        if two_pass:
            for fr in dict.fromkeys(fnd.frames):
                if 0 < fr <= st.frames:
                    out.setdefault(fr, Counter())[item] += 1
    if not st.verdicts:
        out.setdefault(1, Counter())[NO_VERDICTS] += 1
    return out


def expected_codes(st: Stored, two_pass: bool) -> dict[int, Counter]:
    out: dict[int, Counter] = {}
    for fnd in st.findings:
        code = shown(fnd.code)
        out.setdefault(fnd.frame, Counter())[code] += 1
        if two_pass:
            for fr in dict.fromkeys(fnd.frames):
                if 0 < fr <= st.frames:
                    out.setdefault(fr, Counter())[code] += 1
    return out


Oracle = tuple[dict[int, dict], list[dict]]


def compare(capture: Path, two_pass: bool = True, oracle: Oracle | None = None, st: Stored | None = None) -> list[str]:
    """Every difference between the plugin and the oracles, as sentences (empty = parity): links and response
    times as `vfudissect read --json` has them, findings as the capture stores them."""
    got = run_tshark(capture, two_pass=two_pass)
    msgs, _ = oracle if oracle is not None else run_read_json(capture)
    st = st or stored(capture)
    out: list[str] = []
    for num, fr in got.items():
        if fr.errors:
            out.append(f"frame {num}: plugin error {fr.errors[:3]!r}")
    for num, m in msgs.items():
        fr = got.get(num)
        if fr is None:
            out.append(f"frame {num}: missing from tshark's output")
            continue
        if fr.size is None and m["size"] == 0 and m["command"] == 0 and "BAD_SIZE" in m["findings"]:
            pass  # shorter than a header: the plugin shows no header fields
        elif (fr.msg_id, fr.command, fr.size) != (m["msg_id"], m["command"], m["size"]):
            out.append(f"frame {num}: id/command/size {(fr.msg_id, fr.command, fr.size)} != "
                       f"{(m['msg_id'], m['command'], m['size'])}")
        if fr.request_in != m["request_frame"]:
            out.append(f"frame {num}: request_in {fr.request_in} != {m['request_frame']}")
        if two_pass:
            # the oracle streams: a request it already printed keeps response_frame None, the plugin links it
            if m["response_frame"] is not None and fr.response_in != m["response_frame"]:
                out.append(f"frame {num}: response_in {fr.response_in} != {m['response_frame']}")
            if m["response_frame"] is None and fr.response_in is not None and \
                    msgs.get(fr.response_in, {}).get("request_frame") != num:
                out.append(f"frame {num}: response_in {fr.response_in} is not a reply to it")
        elif fr.response_in is not None:
            out.append(f"frame {num}: response_in {fr.response_in} in one pass")
        if (m["rtt"] is None) != (fr.time is None) or (m["rtt"] is not None and abs(m["rtt"] - fr.time) > 2e-6):
            out.append(f"frame {num}: time {fr.time} != rtt {m['rtt']}")
    want_experts, want_codes = expected_experts(st, two_pass), expected_codes(st, two_pass)
    for num in sorted(set(want_experts) | {n for n, f in got.items() if f.experts}):
        have = got[num].experts if num in got else Counter()
        if have != want_experts.get(num, Counter()):
            out.append(f"frame {num}: experts {dict(have)} != {dict(want_experts.get(num, {}))}")
    for num in sorted(set(want_codes) | {n for n, f in got.items() if f.findings}):
        have = got[num].findings if num in got else Counter()
        if have != want_codes.get(num, Counter()):
            out.append(f"frame {num}: findings {dict(have)} != {dict(want_codes.get(num, {}))}")
    return out


def same_verdicts(capture: Path, oracle: Oracle, st: Stored) -> list[str]:
    """The capture's FINDING records are the engine's findings (`read --json`): code, severity, frames, text."""
    def key(code: str, sev: str, frames, text: str) -> tuple:
        return code, sev, tuple(frames), text
    want = Counter(key(f["finding"], f["severity"], f["frames"], f["text"]) for f in oracle[1])
    have = Counter(key(f.code, f.severity, f.frames, f.text) for f in st.findings)
    return [f"stored {dict(have - want)} / engine {dict(want - have)}"] if want != have else []


def parity(capture: Path) -> list[str]:
    """compare() in both modes (tshark -2 and one pass), and the stored verdicts against the engine's."""
    st = stored(capture)
    oracle = run_read_json(capture, st.timeout)
    diffs = [f"verdicts: {d}" for d in same_verdicts(capture, oracle, st)] if st.verdicts else []
    return (diffs + [f"-2: {d}" for d in compare(capture, True, oracle, st)]
            + [f"one pass: {d}" for d in compare(capture, False, oracle, st)])
