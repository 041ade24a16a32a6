"""The generated plugin in real tshark: every message decoded, no Lua error; links and response times as
`vfudissect read --json` has them; the findings as the capture stores them (FINDING records), frame for frame,
on the records and (second pass) on the frames they name; nothing judged by the plugin itself."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from vfudissect import spec
from vfudissect.capture import vfuc
from vfudissect.capture.reader import read_events
from vfudissect.capture.writer import CaptureWriter
from vfudissect.core import findings
from vfudissect.core.events import FindingIn, MessageIn, VerdictsIn
from vfudissect.export import lua
from tests.conftest import CAPTURES, LVU, QEMU
from tests.export import corpus
from tests.export.tshark_run import (NO_VERDICTS, PLUGIN, ROOT, expert_text, fields, judged, lines, parity,
                                     run_read_json, run_tshark, shown, stored, tshark_out)

pytestmark = pytest.mark.tshark
FIXTURES = sorted(CAPTURES.glob("*.pcapng"))


def message_frames(capture: Path) -> set[int]:
    with open(capture, "rb") as f:
        return {ev.frame for ev in read_events(f) if isinstance(ev, MessageIn)}


@pytest.fixture(scope="module")
def raw_catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return corpus.write_catalogue(tmp_path_factory.mktemp("lua") / "catalogue-raw.pcapng")


@pytest.fixture(scope="module")
def catalogue(raw_catalogue: Path) -> Path:
    return judged(raw_catalogue, raw_catalogue.with_name("catalogue.pcapng"))


# ---------------------------------------------------------------- parity: links as the engine pairs, stored findings
@pytest.mark.parametrize("capture", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_committed_captures_show_their_verdicts(capture):
    st = stored(capture)
    assert st.verdicts and st.findings, "the committed captures carry verdicts"
    assert parity(capture) == []
    frames = run_tshark(capture)
    msgs, _ = run_read_json(capture, st.timeout)
    assert set(msgs) == message_frames(capture) and msgs
    assert all(frames[n].command == m["command"] for n, m in msgs.items())
    linked = sum(m["response_frame"] is not None for m in msgs.values())
    assert sum(frames[n].response_in is not None for n in msgs) >= linked > 0  # links both ways with -2


def test_every_finding_code_on_the_frames_it_names(catalogue):
    st = stored(catalogue)
    engine_codes = {code for code, k in findings.CATALOGUE.items() if k.basis != "replay"}  # replay's: not here
    assert {f.code for f in st.findings} == engine_codes
    assert parity(catalogue) == []
    frames = run_tshark(catalogue)
    for fnd in st.findings[:50]:  # the record and (-2) every frame it names carry the same code
        assert frames[fnd.frame].findings[fnd.code] >= 1 and frames[fnd.frame].rec_type == spec.RecType.FINDING
        for fr in fnd.frames:
            if fr:
                assert frames[fr].findings[fnd.code] >= 1, (fnd, fr)


def test_every_catalogue_code_has_its_expert(tmp_path):
    """A FINDING record per code of the catalogue (its severity): each shows as vfio_user.finding.<code>."""
    path = corpus.write_every_code(tmp_path / "codes.pcapng", [(k.code, k.severity) for k in findings.CATALOGUE.values()])
    from tests.export.tshark_run import compare
    assert compare(path, True) == []
    names = [f"vfio_user.finding.{code.lower()}" for code in findings.CATALOGUE]
    rows = fields(path, ["frame.number"] + names + [f"vfio_user.finding.other.{s}" for s in findings.SEVERITIES])
    codes = list(findings.CATALOGUE)
    shown_as = {int(r[0][0]): [codes[i] for i, v in enumerate(r[1:len(codes) + 1]) if v] for r in rows}
    assert not any(any(r[len(codes) + 1:]) for r in rows)  # no "other": every code is the catalogue's
    assert [c for f in stored(path).findings for c in shown_as[f.frame]] == codes


def test_one_pass_shows_findings_on_their_records_only(catalogue):
    st = stored(catalogue)
    frames = run_tshark(catalogue, two_pass=False)
    records = {f.frame for f in st.findings}
    assert {n for n, f in frames.items() if f.experts} == records
    assert all(f.request_in is None or f.response_in is None for f in frames.values())


def test_a_capture_without_verdicts_says_so_on_frame_1_and_nothing_else(raw_catalogue):
    st = stored(raw_catalogue)
    assert not st.verdicts and not st.findings
    assert parity(raw_catalogue) == []  # links still as the engine pairs them
    for two_pass in (True, False):
        frames = run_tshark(raw_catalogue, two_pass=two_pass)
        assert {n: dict(f.experts) for n, f in frames.items() if f.experts} == {1: {NO_VERDICTS: 1}}
        assert not any(f.findings for f in frames.values())


@pytest.mark.parametrize("timeout", [0.5, 0.0])
def test_verdicts_judged_with_another_timeout(raw_catalogue, tmp_path, timeout):
    path = judged(raw_catalogue, tmp_path / "t.pcapng", timeout)
    assert parity(path) == []
    timeouts = sum(f.findings["REPLY_TIMEOUT"] for f in run_tshark(path).values())
    assert (timeouts > 0) == (timeout > 0)


@pytest.mark.parametrize("seed", [0, 1])
def test_random_exchanges(tmp_path, seed):
    assert parity(judged(corpus.write_random(tmp_path / "r.pcapng", seed), tmp_path / "j.pcapng")) == []


@pytest.mark.parametrize("source", [QEMU, LVU], ids=["qemu", "libvfio-user"])
@pytest.mark.parametrize("seed", [0, 1])
def test_fuzzed_messages(tmp_path, source, seed):
    path = corpus.write_fuzzed_messages(source, tmp_path / "m.pcapng", seed)
    assert parity(judged(path, tmp_path / "j.pcapng")) == []


@pytest.mark.parametrize("source", [QEMU, LVU], ids=["qemu", "libvfio-user"])
@pytest.mark.parametrize("seed", [0, 1])
def test_fuzzed_records(tmp_path, source, seed):
    path = judged(corpus.write_fuzzed_records(source, tmp_path / "r.pcapng", seed), tmp_path / "j.pcapng")
    assert any(f.code == "CAPTURE_CORRUPT" for f in stored(path).findings)  # the damage reached the VFUC headers
    assert parity(path) == []


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2, 8))
def test_more_random_and_fuzzed_captures(tmp_path, seed):
    assert parity(judged(corpus.write_random(tmp_path / "r.pcapng", seed, conns=60), tmp_path / "r1.pcapng")) == []
    for source in (QEMU, LVU):
        path = corpus.write_fuzzed_messages(source, tmp_path / "m.pcapng", seed, rate=0.5)
        assert parity(judged(path, tmp_path / "m1.pcapng")) == []
        path = corpus.write_fuzzed_records(source, tmp_path / "f.pcapng", seed, rate=0.3)
        assert parity(judged(path, tmp_path / "f1.pcapng")) == []
        from tests.export.tshark_run import compare
        damaged = corpus.damage_records(judged(source, tmp_path / "j.pcapng"), tmp_path / "d.pcapng", seed, rate=0.5)
        assert compare(damaged, True) == [] and compare(damaged, False) == []


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_damaged_verdicts_show_as_stored(tmp_path, seed):
    """FINDING records damaged too: the plugin shows what the reader reads of them (no re-judging)."""
    path = corpus.damage_records(judged(QEMU, tmp_path / "j.pcapng"), tmp_path / "d.pcapng", seed, rate=0.3)
    from tests.export.tshark_run import compare
    assert compare(path, True) == [] and compare(path, False) == []


def test_stored_oddities(tmp_path):
    """Hand-made FINDING records: a newer engine's code (vfio_user.finding.other.<severity>), an unknown severity
    (note), no code (a corrupt record), frames that do not exist, repeats, long texts, broken UTF-8."""
    path = corpus.write_stored_oddities(tmp_path / "odd.pcapng")
    from tests.export.tshark_run import compare
    assert compare(path, True) == [] and compare(path, False) == []
    st = stored(path)
    codes = [f.code for f in st.findings]
    assert "FUTURE_CODE" in codes and len(codes) == 8  # the two without a code are corrupt
    rows = fields(path, ["frame.number", "vfio_user.finding.other.error", "vfucap.corrupt"], "-2")
    other = [int(r[0][0]) for r in rows if r[1]]
    corrupt = [r[2][0] for r in rows if r[2]]
    odd = [f for f in st.findings if f.severity == "error" and (f.code not in findings.CATALOGUE or
                                                                findings.CATALOGUE[f.code].severity != "error")]
    assert {f.code for f in odd} == {"FUTURE_CODE", "UNKNOWN_ERRNO"}  # a newer code; a severity the catalogue
    assert other == sorted({fr for f in odd for fr in [f.frame, *f.frames]})  # does not give it
    assert corrupt == ["finding record without a code"] * 2
    long = next(f for f in st.findings if f.code == "ZERO_COUNT")
    text = fields(path, ["vfio_user.finding.text"], "-Y", f"frame.number == {long.frame}")[0][0][0]
    assert text == long.text and len(expert_text(long.text).encode()) <= 239


def test_snaplen_truncated_capture(tmp_path):
    path = tmp_path / "snap.pcapng"
    with open(QEMU, "rb") as fin, open(path, "wb") as fout:
        w = CaptureWriter(fout, snaplen=2, flush=False)
        for ev in read_events(fin):
            if not isinstance(ev, (FindingIn, VerdictsIn)):
                w.write(ev)
    path = judged(path, tmp_path / "j.pcapng")
    assert any(f.code == "CAPTURE_TRUNCATED" for f in stored(path).findings)
    assert parity(path) == []


@pytest.mark.parametrize("source", [QEMU, CAPTURES / "demo-faults.pcapng"], ids=["qemu", "demo-faults"])
def test_rotated_parts_each_decode_like_read(tmp_path, source):
    from vfudissect.capture.rotate import RotatingCaptureWriter
    from vfudissect.proxy.sinks import BufferedSink, open_sink

    def open_part(path: str) -> BufferedSink:
        return BufferedSink(open_sink(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)))

    w = RotatingCaptureWriter(str(tmp_path / "rot.pcapng"), source.stat().st_size // 3, open_part)
    with open(source, "rb") as fin:
        for ev in read_events(fin):
            if not isinstance(ev, (FindingIn, VerdictsIn)):
                w.write(ev)
    w.close()
    assert len(w.paths) >= 3
    for i, part in enumerate(w.paths):
        path = judged(Path(part), tmp_path / f"j{i}.pcapng")
        assert parity(path) == [], part
        with open(path, "rb") as f:
            context = {ev.frame for ev in read_events(f) if isinstance(ev, MessageIn) and ev.flags & spec.VF_CONTEXT}
        msgs, _ = run_read_json(path)
        assert all(msgs[n]["context"] for n in context)
    second = judged(Path(w.paths[1]), tmp_path / "second.pcapng")
    assert sum("[context]" in line for line in lines(second)) >= 2  # the VERSION exchange


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False, allow_infinity=False),
              st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=8)
cap_keys = st.sampled_from(list(spec.CAPABILITIES) + ["capabilities", "twin_socket", "frobnicate", "pgsize"])
caps_like = st.dictionaries(cap_keys, st.one_of(json_values, st.dictionaries(cap_keys, json_values, max_size=3)),
                            max_size=5).map(lambda d: {"capabilities": d})
version_data = st.one_of(
    st.builds(lambda doc, sep, ind: json.dumps(doc, separators=sep, indent=ind).encode() + b"\0",
              st.one_of(caps_like, json_values), st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")]),
              st.sampled_from([None, 0, 2])),
    st.builds(lambda doc, cut, flip: _damage(json.dumps(doc).encode() + b"\0", cut, flip), caps_like,
              st.integers(0, 200), st.integers(0, 2000)),
    st.binary(max_size=40))


def _damage(raw: bytes, cut: int, flip: int) -> bytes:
    b = bytearray(raw[:max(cut, len(raw) // 2)])
    if b:
        b[flip % len(b)] ^= 1 << (flip % 8)
    return bytes(b)


def _typed_caps(doc: object) -> Counter:
    """(path, value) of every integer and boolean the schema types, as the plugin's vfio_user.caps.<path> show them."""
    out: Counter = Counter()

    def walk(obj: object, prefix: str) -> None:
        if not isinstance(obj, dict):
            return
        for k, v in {k: obj[k] for k in dict.fromkeys(obj)}.items():
            path = prefix + k
            kind = spec.CAPABILITIES[path].kind if path in spec.CAPABILITIES else None
            if kind == "int" and type(v) is int and abs(v) < 2**53:
                out[(path, str(v))] += 1
            elif kind == "bool" and type(v) is bool:
                out[(path, "1" if v else "0")] += 1
            elif kind == "object" and isinstance(v, dict):
                walk(v, path + ".")
    if isinstance(doc, dict) and isinstance(doc.get("capabilities"), dict):
        walk(doc["capabilities"], "")
    return out


# each example is a tshark run: a few batches of 20 payloads, no shrinking (a failure prints its payloads)
@settings(max_examples=5, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(st.lists(version_data, min_size=20, max_size=20))
def test_version_json_tree_matches_python_json(tmp_path, payloads):
    """The VERSION tree's typed capabilities are what Python's json reads; malformed data is text, no error."""
    path = judged(corpus.write_json_versions(tmp_path / "v.pcapng", payloads), tmp_path / "j.pcapng")
    assert parity(path) == []
    names = ["vfio_user.caps." + p for p, k in spec.CAPABILITIES.items() if k.kind in ("int", "bool")]
    rows = fields(path, ["frame.number", "vfio_user.command", "vfio_user.version.data"] + names)
    versions = [r for r in rows if r[1] == ["1"]]
    assert len(versions) == 2 * len(payloads)
    for raw, row in zip([p for p in payloads for _ in (0, 1)], versions):
        try:
            doc = json.loads(raw.split(b"\0")[0].decode())
        except (ValueError, UnicodeDecodeError, RecursionError):
            doc = None
        got = Counter((n[len("vfio_user.caps."):], v) for n, vals in zip(names, row[3:]) for v in vals)
        assert got == _typed_caps(doc), (raw, row)


# ---------------------------------------------------------------- what Wireshark users look for
def test_stock_wireshark_shows_the_findings_as_packet_comments(catalogue):
    st = stored(catalogue)
    rows = fields(catalogue, ["frame.number", "frame.comment"], plugin=None)
    comments = {int(r[0][0]): r[1] for r in rows if r[1]}
    for fnd in st.findings:
        assert comments[fnd.frame] == [vfuc.finding_comment(fnd.code, fnd.severity, fnd.text, fnd.frames)]
    assert comments[1] == [vfuc.verdicts_text(*_engine(catalogue))]


def _engine(capture: Path) -> tuple[str, float]:
    with open(capture, "rb") as f:
        ev = next(iter(read_events(f)))
    assert isinstance(ev, VerdictsIn)
    return ev.engine, ev.timeout or 0.0


def _expert_listing(text: str) -> Counter:
    """(severity, summary) -> count from `tshark -q -z expert`, comments left out."""
    out: Counter = Counter()
    section = None
    for line in text.splitlines():
        m = re.match(r"^(Errors|Warns|Notes|Chats|Comments) \(\d+\)$", line)
        if m:
            section = {"Errors": "error", "Warns": "warning", "Notes": "note"}.get(m.group(1))
            continue
        m = re.match(r"^\s+(\d+)\s+\S+\s+\S+\s+(.*)$", line)
        if m and section and not line.strip().startswith("Frequency"):
            out[(section, m.group(2))] += int(m.group(1))
    return out


@pytest.mark.parametrize("two_pass", [False, True], ids=["one pass", "-2"])
def test_tshark_expert_statistics_list_the_findings(catalogue, two_pass):
    """`tshark -q -z expert`, no -V, no filter: every finding, on its record (and -2: on the frames it names)."""
    st = stored(catalogue)
    listing = _expert_listing(tshark_out(catalogue, "-q", "-z", "expert", *(["-2"] if two_pass else [])))
    want: Counter = Counter()
    for fnd in st.findings:
        named = len({fr for fr in fnd.frames if fr}) if two_pass else 0
        want[(fnd.severity, expert_text(fnd.text))] += 1 + named
    assert listing == want


def test_expert_filters_select_the_frames_of_each_code(catalogue):
    st = stored(catalogue)
    for code in ("DMA_MAP_OVERLAP", "REPLY_TIMEOUT", "CAPS_MALFORMED", "FRAMING_LOST", "NO_REPLY"):
        want = sorted({fr for f in st.findings if f.code == code for fr in [f.frame, *f.frames] if fr})
        got = [int(x) for x in lines(catalogue, "-2", "-Y", f"vfio_user.finding.{code.lower()}", "-T", "fields", "-e",
                                     "frame.number")]
        assert got == want and want, code


def test_colour_filter_selects_frames_with_error_findings(catalogue):
    """The GUI colours `vfio_user.finding.severity == 2` (temporary rule 1): it selects exactly those frames."""
    st = stored(catalogue)
    want = sorted({fr for f in st.findings if f.severity == "error" for fr in [f.frame, *f.frames] if fr})
    got = [int(x) for x in lines(catalogue, "-2", "-Y", "vfio_user.finding.severity == 2", "-T", "fields", "-e",
                                 "frame.number")]
    assert got == want and want
    assert "vfio_user.finding.severity == 2" in PLUGIN.read_text(encoding="utf-8")


def test_response_time_statistics(catalogue):
    """`tshark -q -z vfio_user,srt`: count, min, mean, max per command, as read --json's response times say."""
    msgs, _ = run_read_json(catalogue)
    want: dict[str, list[float]] = {}
    for m in msgs.values():
        if m["rtt"] is not None and not m["context"]:
            want.setdefault(msgs[m["request_frame"]]["command_name"], []).append(m["rtt"] * 1e3)
    for two_pass in ([], ["-2"]):
        out = tshark_out(catalogue, "-q", "-z", "vfio_user,srt", *two_pass)
        rows = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 5 and parts[1].isdigit():
                rows[parts[0]] = (int(parts[1]), *map(float, parts[2:]))
        assert set(rows) == set(want), out
        for name, rtts in want.items():
            n, lo, mean, hi = rows[name]
            assert n == len(rtts)
            assert (lo, mean, hi) == pytest.approx((min(rtts), sum(rtts) / n, max(rtts)), abs=1.5e-3)
    assert "vfio_user,srt" not in tshark_out(catalogue, "-q")  # only when asked


def test_the_plugin_loads_once_given_both_ways(tmp_path, catalogue):
    env = {"HOME": str(tmp_path), "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    lua.install(tmp_path / ".local" / "lib" / "wireshark" / "plugins")
    both = fields(catalogue, ["frame.number", "vfio_user.command"], "-2", env=env)  # installed + -X lua_script
    alone = fields(catalogue, ["frame.number", "vfio_user.command"], "-2")
    assert both == alone and sum(bool(r[1]) for r in both) > 100
    installed_only = fields(catalogue, ["frame.number", "vfio_user.command"], "-2", plugin=None, env=env)
    assert installed_only == alone
    # an older copy without the guard installed: it stays, this one steps aside without an error
    older = tmp_path / ".local" / "lib" / "wireshark" / "plugins" / "vfio_user.lua"
    older.write_text('local p = Proto("vfucap", "an older vfudissect plugin")\n'
                     'function p.dissector(tvb, pinfo, tree) tree:add(p, tvb()) end\n')
    rows = fields(catalogue, ["frame.number", "frame.protocols"], "-c", "5", env=env)
    assert [r[1] for r in rows] == [["exported_pdu:vfucap"]] * 5


def glossary() -> set[str]:
    """The plugin's field names (tshark -G fields)."""
    p = subprocess.run([shutil.which("tshark") or "tshark", "-G", "fields", "-X", f"lua_script:{PLUGIN}"],
                       capture_output=True, text=True, timeout=60)
    return {line.split("\t")[2] for line in p.stdout.splitlines()
            if line.startswith("F\t") and line.split("\t")[2].split(".")[0] in ("vfio_user", "vfucap")}


def test_fields_only_runs_give_the_same_values_as_the_whole_tree(catalogue):
    """tshark -T fields builds only the fields it names: every field's values equal the whole tree's."""
    names = sorted(glossary() - {"vfio_user.internal_error"})
    full = fields(catalogue, ["frame.number"] + names, "-2", "-o", "vfio_user.fields_only:FALSE")
    rnd = random.Random(0)
    for group in [names[i:i + 7] for i in range(0, len(names), 7)] + [rnd.sample(names, 3) for _ in range(5)]:
        got = fields(catalogue, ["frame.number"] + group, "-2")  # frame.number: no line is empty
        want = [[row[0]] + [row[1 + names.index(n)] for n in group] for row in full]
        assert got == want, group
    filtered = fields(catalogue, ["frame.number"], "-Y", "vfio_user.region_access.count == 4 && vfucap.dir == 1")
    assert filtered and filtered == fields(catalogue, ["frame.number"], "-Y",
                                           "vfio_user.region_access.count == 4 && vfucap.dir == 1",
                                           "-o", "vfio_user.fields_only:FALSE")


def version_reply(capture: Path) -> int:
    msgs, _ = run_read_json(capture)
    return next(n for n, m in sorted(msgs.items()) if m["command"] == 1 and m["msg_type"] == "reply")


def test_summary_lines_in_one_pass_and_two(catalogue):
    msgs, _ = run_read_json(catalogue)
    info = next(n for n, m in sorted(msgs.items()) if m["command"] == 4 and m["msg_type"] == "command")
    for args in ((), ("-2",)):
        out = lines(catalogue, *args)
        assert "vfudissect" in out[0] and "verdicts: vfio-user findings by vfudissect" in out[0]
        assert "client#1 → server#1" in out[2] and "vfio-user" in out[2]
        assert "#1 C→S VERSION command id=0 214B major=0 minor=0 caps={\"pgsizes\":4096" in out[2]
        assert any(f"DEVICE_GET_INFO reply id=1 32B flags=RESET|PCI num_regions=9 num_irqs=5 ← {info}" in x
                   for x in out)
        assert any("[fragment at offset 0 of 1048640]" in x for x in out)
        assert any("#1 conn-open /run/test.sock (client pid 100)" in x for x in out)
        assert any(re.search(r"#\d+ finding warning REPLY_TIMEOUT: DEVICE_RESET id=50 unanswered after 5 s \[frame "
                             r"\d+\]", x) for x in out)
    two = lines(catalogue, "-2")
    assert f"→ {version_reply(catalogue)}" in two[2] and "reassembled in" in "".join(two)


def test_detail_tree(catalogue):
    st = stored(catalogue)
    fnd = next(f for f in st.findings if f.code == "REGION_CAPS_BAD")
    reply = version_reply(catalogue)
    text = "\n".join(lines(catalogue, "-2", "-V", "-Y", f"frame.number <= {reply} || vfio_user.region_cap || "
                                                        f"frame.number == {fnd.frame}"))
    for label in ("vfudissect capture record (VFUC), CONN_OPEN", "Socket path: /run/test.sock", "client pid: 100",
                  "vfudissect capture record (VFUC), VERDICTS", "Judged by: vfudissect",
                  "vfio-user, VERSION command id=0", "Capabilities", "max_msg_fds: 16", "write_multiple: True",
                  "migration.max_bitmap_size: 268435456", f"[Response in: {reply}]", "[Request in: 3]",
                  "[Response time: 0.00", "Capability SPARSE_MMAP at 32", "nr_areas: 2", "Capability TYPE at 80",
                  "subtype: 1", f"[Finding record: {fnd.frame}]", "vfio-user finding REGION_CAPS_BAD (warning)",
                  f"Frame: {fnd.frames[0]}", "Severity: warning (1)",
                  "[Expert Info (Warning/Malformed): sparse area 0 (0x0+0x20000) lies outside the region (0x10000)]"):
        assert label in text, label
    assert NO_VERDICTS[1] not in text  # the capture carries verdicts


def test_show_payload_preference(catalogue):
    def data_frames(show: str) -> int:
        return len(lines(catalogue, "-o", f"vfio_user.show_payload:{show}", "-Y", "vfio_user.data", "-T", "fields",
                         "-e", "frame.number"))
    assert data_frames("TRUE") > 5 and data_frames("FALSE") == 0


def test_fd_and_fragment_fields(catalogue):
    rows = fields(catalogue, ["frame.number", "vfucap.fd.kind", "vfucap.fd.path", "vfucap.reassembled_in",
                              "vfucap.fragment"], "-2")
    memfd = [r for r in rows if set(r[1]) == {"2"}]
    assert memfd and all(set(r[2]) == {"/memfd:memory-backend-memfd (deleted)"} for r in memfd)
    reassembled_in = {int(r[0][0]): int(r[3][0]) for r in rows if r[3]}
    whole = {int(r[0][0]): [int(x) for x in r[4]] for r in rows if r[4]}
    # a 1 MiB write, a 200 kB read reply, a 150 kB raw blob and the hand-made pairs of sc_records (and the big
    # messages of the declared examples), each ending in the frame that lists its fragments
    assert len(whole) >= 5 and len(reassembled_in) == sum(len(v) - 1 for v in whole.values())
    assert max(len(v) for v in whole.values()) >= 17
    for last, frames in whole.items():
        assert frames[-1] == last and all(reassembled_in[f] == last for f in frames[:-1])
        assert frames == sorted(frames)


def test_texts_are_shown_as_read(tmp_path):
    """Finding texts with quotes, backslashes, bars, tabs and non-ASCII: the record's text field is the text
    (control characters escaped), the expert its first 239 bytes."""
    path = corpus.write_stored_oddities(tmp_path / "odd.pcapng")
    st = stored(path)
    rows = {int(r[0][0]): r[1] for r in fields(path, ["frame.number", "vfio_user.finding.text"])}
    for fnd in st.findings:
        assert rows[fnd.frame] == ([shown(fnd.text)] if fnd.text else []), fnd


@settings(max_examples=4, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.one_of(st.binary(max_size=300), st.text(max_size=120).map(str.encode),
                          st.lists(st.sampled_from([b"\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80", b"\xed\xa0\x80",
                                                    b"\xc0\xaf", b"\xe0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xff",
                                                    b"a", b"\x00", b"\t", b"\\", b'"']), max_size=100).map(b"".join)),
                min_size=30, max_size=30))
def test_any_text_is_shown_as_the_reader_decodes_it(tmp_path, texts):
    """The plugin's UTF-8 repair is Python's decode("utf-8", "replace"); the expert keeps 239 bytes of it."""
    path = corpus.write_texts(tmp_path / "t.pcapng", texts)
    st_ = stored(path)
    assert len(st_.findings) == len(texts)
    rows = {int(r[0][0]): r for r in fields(path, ["frame.number", "vfio_user.finding.text", "_ws.expert.message"])}
    for fnd in st_.findings:
        got_text, got_expert = rows[fnd.frame][1], [m for m in rows[fnd.frame][2] if not m.startswith("vfio-user ")]
        assert got_text == ([shown(fnd.text)] if fnd.text else []), fnd.text
        assert got_expert == [expert_text(fnd.text)] or (not fnd.text and got_expert == []), fnd.text


def test_vfio_user_alone_decodes_a_bare_message(tmp_path):
    """`text2pcap -P vfio_user` (exported PDU naming the message protocol itself): decoded, no state."""
    from vfudissect.testing import region_read_reply

    text2pcap = shutil.which("text2pcap")
    assert text2pcap, "text2pcap (Wireshark) is required"
    hexdump = tmp_path / "m.txt"
    hexdump.write_text("0000 " + " ".join(f"{b:02x}" for b in region_read_reply(5, 7, 0, 4, data=b"abcd")) + "\n")
    pcap = tmp_path / "m.pcap"
    subprocess.run([text2pcap, "-q", "-P", "vfio_user", str(hexdump), str(pcap)], check=True, timeout=60)
    out = lines(pcap)
    assert out[0].endswith("REGION_READ reply id=5 36B offset=0x0 region=CONFIG count=4")
    text = "\n".join(lines(pcap, "-V"))
    assert "Data: 61626364" in text and "Finding" not in text


PROBE = ('local p = package.loaded.vfudissect_vfio_user\n'
         'print("PROBE " .. tostring(p.tshark) .. " " .. table.concat(p.asked, ","))\n')


@pytest.mark.parametrize("args, asked", [
    (["-T", "fields", "-e", "vfio_user.command"], "vfio_user.command"),
    (["-T", "fields", "-e", "frame.number", "-e", "vfucap.conn", "-Y", "vfio_user.region_access.count > 1"],
     "vfio_user.region_access.count,vfucap.conn"),
    (["-Tfields", "-evfio_user.time", "-2", "-o", "vfio_user.show_payload:FALSE"], "vfio_user.time"),
    (["-T", "fields", "-e", "vfio_user"], ""),  # the protocol: the whole tree
    (["-T", "fields", "-e", "_ws.col.Info"], ""),  # a column
    (["-T", "fields", "-e", "vfio_user.command", "-V"], ""),  # the tree printed too
    (["-T", "fields", "-e", "vfio_user.command", "-z", "vfio_user,srt"], ""),  # a tap
    (["-T", "fields", "-e", "vfio_user.no_such_field"], ""),
    (["-T", "json", "-e", "vfio_user.command"], ""),
    ([], ""),
])
def test_a_fields_only_run_is_recognised(tmp_path, args, asked):
    """The plugin learns from tshark's command line which fields a -T fields run needs (its own path, which
    names vfio_user.lua, and the preferences do not count); anything else builds the whole tree."""
    probe = tmp_path / "probe.lua"
    probe.write_text(PROBE)
    p = subprocess.run([shutil.which("tshark") or "tshark", "-r", str(LVU), "-c", "1", "-X", f"lua_script:{PLUGIN}",
                        "-X", f"lua_script:{probe}", *args], capture_output=True, text=True, timeout=60)
    line = next(x for x in p.stdout.splitlines() if x.startswith("PROBE "))
    assert line.rstrip() == f"PROBE true {asked}".rstrip(), (line, p.stderr)


def test_links_read_back_from_sealed_chunks(tmp_path):
    """A capture longer than the links kept in tables: requests answered thousands of frames later, time going
    backwards, a reply days late; -2 reads every link back as the engine made it."""
    path = judged(corpus.write_long(tmp_path / "long.pcapng"), tmp_path / "j.pcapng")
    msgs, _ = run_read_json(path)
    assert len(msgs) > 20000 and any(m["rtt"] is not None and m["rtt"] < 0 for m in msgs.values())
    assert any(m["rtt"] is not None and m["rtt"] > 3 * 86400 for m in msgs.values())
    assert any(m["request_frame"] and n - m["request_frame"] > 9000 for n, m in msgs.items())
    assert parity(path) == []


FAKE_GUI = '''-- what the GUI offers a plugin, recorded: loaded before the plugin
local G = getmetatable(_ENV).__index
G.gui_enabled = function() return true end
G.set_color_filter_slot = function(row, filter) print("COLOUR " .. row .. " " .. filter) end
G.register_menu = function(name, action, group)
  print("MENU " .. name .. " " .. tostring(group == MENU_STAT_GENERIC))
  G.vfu_menu_action = action
end
G.TextWindow = {new = function(title)
  print("WINDOW " .. title)
  return {set = function(self, text) print("TEXT\\n" .. text) end, set_atclose = function(self, f) end}
end}
G.retap_packets = function() print("RETAP") end
'''
OPEN_MENU = "getmetatable(_ENV).__index.vfu_menu_action()\n"  # loaded after it: the user opens the menu


def test_the_gui_parts(tmp_path, catalogue):
    """With a GUI (simulated): the error colouring is set once, Statistics > vfio-user > Response times opens a
    window whose text is the response-time table, filled as the frames are tapped."""
    (tmp_path / "gui.lua").write_text(FAKE_GUI)
    (tmp_path / "menu.lua").write_text(OPEN_MENU)
    p = subprocess.run([shutil.which("tshark") or "tshark", "-n", "-q", "-r", str(catalogue),
                        "-X", f"lua_script:{tmp_path / 'gui.lua'}", "-X", f"lua_script:{PLUGIN}",
                        "-X", f"lua_script:{tmp_path / 'menu.lua'}"], capture_output=True, text=True, timeout=120)
    assert "Lua" not in p.stderr, p.stderr
    out = p.stdout
    assert "MENU vfio-user/Response times true" in out and "WINDOW vfio-user response times" in out
    assert "RETAP" in out and out.count("COLOUR 1 vfio_user.finding.severity == 2") == 1
    table = out[out.rindex("TEXT\n") + 5:]
    assert table.strip() == tshark_out(catalogue, "-q", "-z", "vfio_user,srt").strip()
