"""The generated plugin in real tshark: every message decoded, no Lua error, and message by message the same
command, id, size, links and finding codes as `vfudissect read --json` (one pass and -2)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from vfudissect import spec
from vfudissect.capture.reader import read_events
from vfudissect.capture.writer import CaptureWriter
from vfudissect.core.events import MessageIn
from tests.conftest import CAPTURES, LVU, QEMU
from tests.export import corpus
from tests.export.tshark_run import PLUGIN, parity, run_read_json, run_tshark, tshark
from vfudissect.core import findings

pytestmark = pytest.mark.tshark
FIXTURES = sorted(CAPTURES.glob("*.pcapng"))


def tshark_lines(capture: Path, *args: str) -> list[str]:
    p = subprocess.run([tshark(), "-n", "-r", str(capture), "-X", f"lua_script:{PLUGIN}", *args],
                       capture_output=True, text=True, errors="replace", timeout=300)
    said = [line for line in p.stderr.splitlines() if not line.startswith("Running as user")]
    assert p.returncode == 0 and not said, said
    assert "Lua Error" not in p.stdout and "Malformed Packet" not in p.stdout
    return [line for line in p.stdout.split("\n") if line]


def message_frames(capture: Path) -> set[int]:
    with open(capture, "rb") as f:
        return {ev.frame for ev in read_events(f) if isinstance(ev, MessageIn)}


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return corpus.write_catalogue(tmp_path_factory.mktemp("lua") / "catalogue.pcapng")


# ---------------------------------------------------------------- parity with `vfudissect read --json`
@pytest.mark.parametrize("capture", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_real_traffic_decodes_like_vfudissect_read(capture):
    assert parity(capture) == []
    frames = run_tshark(capture)
    msgs, _ = run_read_json(capture)
    assert set(msgs) == message_frames(capture) and msgs
    assert all(frames[n].command == m["command"] for n, m in msgs.items())
    linked = sum(m["response_frame"] is not None for m in msgs.values())
    assert sum(frames[n].response_in is not None for n in msgs) >= linked > 0  # links both ways with -2


def test_every_finding_code_on_the_same_frames(catalogue):
    _, codes = run_read_json(catalogue)
    seen = {c for counter in codes.values() for c in counter}
    assert seen == set(findings.CATALOGUE), f"catalogue misses {sorted(set(findings.CATALOGUE) - seen)}"
    assert parity(catalogue) == []


@pytest.mark.parametrize("timeout", [0.5, 0.0])
def test_timeout_preference_matches_read_timeout(catalogue, timeout):
    assert parity(catalogue, timeout_s=timeout) == []
    frames = run_tshark(catalogue, prefs={"vfio_user.reply_timeout_ms": str(round(timeout * 1000))})
    timeouts = sum(f.findings["REPLY_TIMEOUT"] for f in frames.values())
    assert (timeouts > 0) == (timeout > 0)


@pytest.mark.parametrize("seed", [0, 1])
def test_random_exchanges(tmp_path, seed):
    assert parity(corpus.write_random(tmp_path / "r.pcapng", seed)) == []


@pytest.mark.parametrize("source", [QEMU, LVU], ids=["qemu", "libvfio-user"])
@pytest.mark.parametrize("seed", [0, 1])
def test_fuzzed_messages(tmp_path, source, seed):
    assert parity(corpus.write_fuzzed_messages(source, tmp_path / "m.pcapng", seed)) == []


@pytest.mark.parametrize("source", [QEMU, LVU], ids=["qemu", "libvfio-user"])
@pytest.mark.parametrize("seed", [0, 1])
def test_fuzzed_records(tmp_path, source, seed):
    path = corpus.write_fuzzed_records(source, tmp_path / "r.pcapng", seed)
    _, codes = run_read_json(path)
    assert any("CAPTURE_CORRUPT" in c for c in codes.values())  # the damage reached the VFUC headers
    assert parity(path) == []


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2, 8))
def test_more_random_and_fuzzed_captures(tmp_path, seed):
    assert parity(corpus.write_random(tmp_path / "r.pcapng", seed, conns=60)) == []
    for source in (QEMU, LVU):
        assert parity(corpus.write_fuzzed_messages(source, tmp_path / "m.pcapng", seed, rate=0.5)) == []
        assert parity(corpus.write_fuzzed_records(source, tmp_path / "f.pcapng", seed, rate=0.3)) == []


def test_snaplen_truncated_capture(tmp_path):
    path = tmp_path / "snap.pcapng"
    with open(QEMU, "rb") as fin, open(path, "wb") as fout:
        w = CaptureWriter(fout, snaplen=2, flush=False)
        for ev in read_events(fin):
            if not isinstance(ev, type(None)) and hasattr(ev, "frame"):
                w.write(ev)
    _, codes = run_read_json(path)
    assert any("CAPTURE_TRUNCATED" in c for c in codes.values())
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
            w.write(ev)
    w.close()
    assert len(w.paths) >= 3
    for path in w.paths:
        assert parity(Path(path)) == [], path
        with open(path, "rb") as f:
            context = {ev.frame for ev in read_events(f) if isinstance(ev, MessageIn) and ev.flags & spec.VF_CONTEXT}
        msgs, codes = run_read_json(Path(path))
        # copies draw no findings of their own, in read and (parity) the plugin: only a NO_REPLY when the
        # connection closes before a copied request's reply comes
        assert all(set(codes.get(n, ())) <= {"NO_REPLY"} for n in context)
        assert all(msgs[n]["context"] for n in context)
    assert sum("[context]" in line for line in tshark_lines(Path(w.paths[1]))) >= 2  # the VERSION exchange


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


# each example is a tshark run: a few batches of 20 payloads, no shrinking (a failure prints its payloads)
@settings(max_examples=5, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(st.lists(version_data, min_size=20, max_size=20))
def test_version_json_is_judged_like_python(tmp_path, payloads):
    assert parity(corpus.write_json_versions(tmp_path / "v.pcapng", payloads)) == []


# ---------------------------------------------------------------- what users see
def test_summary_lines_in_one_pass_and_two(catalogue):
    for args in ((), ("-2",)):
        lines = tshark_lines(catalogue, *args)
        assert "client#1 → server#1" in lines[1]
        assert "#1 C→S VERSION command id=0 214B major=0 minor=0 caps={\"pgsizes\":4096" in lines[1]
        assert any("DEVICE_GET_INFO reply id=1 32B flags=RESET|PCI num_regions=9 num_irqs=5 ← 4" in x for x in lines)
        assert any("[fragment at offset 0 of 1048640]" in x for x in lines)
        assert any("#1 conn-open /run/test.sock (client pid 100)" in x for x in lines)
    two = tshark_lines(catalogue, "-2")
    assert "→ 3" in two[1] and "reassembled in" in "".join(two)


def test_detail_tree(catalogue):
    text = "\n".join(tshark_lines(catalogue, "-2", "-V", "-Y", "frame.number <= 3 || vfio_user.region_cap"))
    for label in ("vfudissect capture record (VFUC), CONN_OPEN", "Socket path: /run/test.sock", "client pid: 100",
                  "vfio-user, VERSION command id=0", "Capabilities", "max_msg_fds: 16", "write_multiple: True",
                  "migration.max_bitmap_size: 268435456", "[Response in: 3]", "[Request in: 2]",
                  "[Response time: 0.00", "Capability SPARSE_MMAP at 32", "nr_areas: 2", "Capability TYPE at 80", "subtype: 1",
                  "[Expert Info (Warning/Malformed): sparse area 0 (0x0+0x20000) lies outside the region (0x10000)]"):
        assert label in text, label


def test_expert_filters_select_the_frames_of_each_code(catalogue):
    _, codes = run_read_json(catalogue)
    for code in ("DMA_MAP_OVERLAP", "REPLY_TIMEOUT", "CAPS_MALFORMED", "FRAMING_LOST", "NO_REPLY"):
        want = sorted(n for n, c in codes.items() if code in c)
        got = [int(x) for x in tshark_lines(catalogue, "-2", "-Y", f"vfio_user.finding.{code.lower()}", "-T",
                                             "fields", "-e", "frame.number")]
        assert got == want and want, code
    errors = [int(x) for x in tshark_lines(catalogue, "-Y", "vfio_user.flags.error == 1 && vfio_user.flags.type == 1", "-T", "fields", "-e",
                                           "frame.number")]
    assert errors and all("ERROR_REPLY" in codes.get(n, {}) or "ERROR_REPLY_NO_ERRNO" in codes.get(n, {})
                          or "VERSION_REFUSED" in codes.get(n, {}) for n in errors)


def test_show_payload_preference(catalogue):
    def data_frames(show: str) -> int:
        return len(tshark_lines(catalogue, "-o", f"vfio_user.show_payload:{show}", "-Y", "vfio_user.data", "-T",
                                "fields", "-e", "frame.number"))
    assert data_frames("TRUE") > 5 and data_frames("FALSE") == 0


def test_fd_and_fragment_fields(catalogue):
    rows = [x.split("\t") for x in tshark_lines(catalogue, "-2", "-T", "fields", "-E", "occurrence=a", "-e",
                                                "frame.number", "-e", "vfucap.fd.kind", "-e", "vfucap.fd.path", "-e",
                                                "vfucap.reassembled_in", "-e", "vfucap.fragment")]
    memfd = [r for r in rows if set(r[1].split(",")) == {"2"}]
    assert memfd and all(set(r[2].split(",")) == {"/memfd:memory-backend-memfd (deleted)"} for r in memfd)
    reassembled_in = {int(r[0]): int(r[3]) for r in rows if r[3]}
    whole = {int(r[0]): [int(x) for x in r[4].split(",")] for r in rows if r[4]}
    # a 1 MiB write, a 200 kB read reply, a 150 kB raw blob and the hand-made pairs of sc_records, each ending
    # in the frame that lists its fragments
    assert len(whole) == 5 and len(reassembled_in) == sum(len(v) - 1 for v in whole.values())
    assert max(len(v) for v in whole.values()) == 17
    for last, frames in whole.items():
        assert frames[-1] == last and all(reassembled_in[f] == last for f in frames[:-1])
        assert frames == sorted(frames)


def test_vfio_user_alone_decodes_a_bare_message(tmp_path):
    """`text2pcap -P vfio_user` (exported PDU naming the message protocol itself): decoded, no analysis."""
    from vfudissect.testing import region_read_reply

    text2pcap = shutil.which("text2pcap")
    assert text2pcap, "text2pcap (Wireshark) is required"
    hexdump = tmp_path / "m.txt"
    hexdump.write_text("0000 " + " ".join(f"{b:02x}" for b in region_read_reply(5, 7, 0, 4, data=b"abcd")) + "\n")
    pcap = tmp_path / "m.pcap"
    subprocess.run([text2pcap, "-q", "-P", "vfio_user", str(hexdump), str(pcap)], check=True, timeout=60)
    lines = tshark_lines(pcap)
    assert lines[0].endswith("REGION_READ reply id=5 36B offset=0x0 region=CONFIG count=4")
    text = "\n".join(tshark_lines(pcap, "-V"))
    assert "Data: 61626364" in text and "Finding" not in text
