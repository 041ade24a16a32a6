"""Test helpers: run tshark with the generated plugin and `vfudissect read --json`, and line the two up."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "plugins" / "vfio_user.lua"
FIELDS = ("frame.number", "vfucap.rec_type", "vfio_user.msg_id", "vfio_user.command", "vfio_user.size",
          "vfio_user.request_in", "vfio_user.response_in", "vfio_user.time", "vfio_user.finding",
          "vfio_user.internal_error", "_ws.lua.error", "_ws.expert.message")
LUA_NOISE = ("Lua", "lua", "doesn't exist", "Error", "error")


def tshark() -> str:
    path = shutil.which("tshark")
    assert path, "tshark is required for the Wireshark plugin tests (make test installs it)"
    return path


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
    findings: Counter = field(default_factory=Counter)
    internal_error: str = ""
    lua_error: str = ""
    malformed: str = ""  # the expert messages: "Malformed Packet (Exception occurred)" is a dissector bug


def _int(v: str) -> int | None:
    return int(v) if v else None


def run_tshark(capture: Path, plugin: Path = PLUGIN, two_pass: bool = True, prefs: dict[str, str] | None = None,
               timeout: float = 300) -> dict[int, Frame]:
    """Frames as the plugin decodes them; fails on anything Lua says on stderr."""
    args = [tshark(), "-n", "-r", str(capture), "-X", f"lua_script:{plugin}", "-T", "fields",
            "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=,"]
    if two_pass:
        args.append("-2")
    for k, v in (prefs or {}).items():
        args += ["-o", f"{k}:{v}"]
    for f in FIELDS:
        args += ["-e", f]
    p = subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=timeout)
    stderr = [line for line in p.stderr.splitlines() if not line.startswith("Running as user")]
    assert p.returncode == 0 and not stderr, f"tshark failed ({p.returncode}): {' / '.join(stderr)[:2000]}"
    frames: dict[int, Frame] = {}
    for line in p.stdout.split("\n"):  # not splitlines(): texts may hold U+2028 and friends
        if not line:
            continue
        cols = line.split("\t")
        cols += [""] * (len(FIELDS) - len(cols))
        num, rt, mid, cmd, size, rq, rs, tm, fnd, ierr, lerr, mal = cols
        frames[int(num)] = Frame(int(num), _int(rt), _int(mid), _int(cmd), _int(size), _int(rq), _int(rs),
                                 float(tm) if tm else None, Counter(c for c in fnd.split(",") if c), ierr, lerr, mal)
    return frames


def run_read_json(capture: Path, timeout_s: float | None = None) -> tuple[dict[int, dict], dict[int, Counter]]:
    """The oracle: message objects by frame, and finding codes by the frame they are about."""
    args = [sys.executable, "-m", "vfudissect", "read", "--json", "--fail-on", "never", "--no-progress"]
    if timeout_s is not None:
        args += ["--timeout", str(timeout_s)]
    p = subprocess.run(args + [str(capture)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, f"vfudissect read failed: {p.stderr[-2000:]}"
    msgs: dict[int, dict] = {}
    codes: dict[int, Counter] = {}
    for line in p.stdout.splitlines():
        obj = json.loads(line)
        if "msg_id" in obj:
            msgs[obj["frame"]] = obj
        elif "finding" in obj and obj["frames"] and obj["frames"][0]:
            codes.setdefault(obj["frames"][0], Counter())[obj["finding"]] += 1
    return msgs, codes


LATE_CODES = frozenset({"REPLY_TIMEOUT", "NO_REPLY"})  # known only after the frame: need a second pass


Oracle = tuple[dict[int, dict], dict[int, Counter]]


def compare(capture: Path, two_pass: bool = True, timeout_s: float | None = None,
            oracle: Oracle | None = None) -> list[str]:
    """Every difference between the plugin and `vfudissect read --json`, as sentences (empty = parity)."""
    prefs = {"vfio_user.reply_timeout_ms": str(round(timeout_s * 1000))} if timeout_s is not None else None
    got = run_tshark(capture, two_pass=two_pass, prefs=prefs)
    msgs, codes = oracle if oracle is not None else run_read_json(capture, timeout_s)
    out: list[str] = []
    for num, fr in got.items():
        if fr.lua_error or fr.internal_error or "Exception occurred" in fr.malformed:
            out.append(f"frame {num}: Lua error {fr.lua_error or fr.internal_error or fr.malformed!r}")
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
    for num in sorted(set(codes) | {n for n, f in got.items() if f.findings}):
        want = codes.get(num, Counter())
        if not two_pass:
            want = Counter({c: k for c, k in want.items() if c not in LATE_CODES})
        have = got[num].findings if num in got else Counter()
        if want != have:
            out.append(f"frame {num}: findings {dict(have)} != {dict(want)}")
    return out


def parity(capture: Path, timeout_s: float | None = None) -> list[str]:
    """compare() in both modes (tshark -2 and one pass) against one run of the oracle."""
    oracle = run_read_json(capture, timeout_s)
    return ([f"-2: {d}" for d in compare(capture, True, timeout_s, oracle)]
            + [f"one pass: {d}" for d in compare(capture, False, timeout_s, oracle)])
