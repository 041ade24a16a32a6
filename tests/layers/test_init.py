"""The package as a whole on the real captures: link type 252 registered, every message of both fixtures
dissected by its command's layer, Info text equal to `vfudissect read`'s line, and scapy's own
PacketList.sr() pairing exactly the requests and replies the analysis engine pairs."""

from __future__ import annotations

import re

import pytest
from scapy.config import conf
from scapy.packet import Raw

import vfudissect.layers as L
from vfudissect import spec
from vfudissect.capture.reader import open_capture
from vfudissect.core.analyzer import Analyzer, AnalyzerConfig
from vfudissect.core.records import MessageRecord
from vfudissect.render import Renderer

from tests.layers.strategies import scapy_capture


def _records(path) -> dict[int, MessageRecord]:
    an = Analyzer(AnalyzerConfig(timeout=5.0))
    out: dict[int, MessageRecord] = {}
    for ev in open_capture(path):
        out.update((it.frame, it) for it in an.feed(ev) if isinstance(it, MessageRecord))
    out.update((it.frame, it) for it in an.finish(0.0) if isinstance(it, MessageRecord))
    return out


def test_link_type_252_is_registered() -> None:
    assert conf.l2types[spec.LINKTYPE_WIRESHARK_UPPER_PDU] is L.ExportedPdu


def test_every_message_of_the_fixtures_dissects_with_its_layer(real_capture) -> None:
    old, conf.debug_dissector = conf.debug_dissector, True
    try:
        pkts = [type(p)(bytes(p)) for p in scapy_capture(real_capture)]  # dissect again, strictly
    finally:
        conf.debug_dissector = old
    records = _records(real_capture)
    msgs = {i + 1: p[L.VfioUser] for i, p in enumerate(pkts) if L.VfioUser in p}
    assert set(msgs) == set(records)
    for frame, m in msgs.items():
        code = m.getfieldval("command")
        assert code in spec.COMMANDS, f"frame {frame}: unknown command {code}"
        info = spec.COMMANDS[code]
        key = info.reply_layout if m.is_reply else info.request_layout
        if len(m.payload) == 0:
            continue
        assert isinstance(m.payload, L.VfuPacket), f"frame {frame}: {m.summary()}"
        assert m.payload.layout_key == key and m.payload.cut_at is None
        raw = m.payload.getlayer(Raw)
        if raw is not None:  # only libvfio-user's zero-padded MIG_DATA_READ replies carry undecoded bytes
            assert code == spec.Command.MIG_DATA_READ and m.is_reply and not raw.load.strip(b"\0"), frame
        assert len(bytes(m)) == records[frame].size


def _cli_text(rec: MessageRecord) -> str:
    line = Renderer(False).message_line(rec)
    line = line.split(" C→S ", 1)[-1].split(" S→C ", 1)[-1]
    return re.sub(r" [←→] \d+( \([^)]*\))?", "", line).rstrip()


def test_info_text_matches_the_read_command(real_capture) -> None:
    records = _records(real_capture)
    pkts = scapy_capture(real_capture)
    for frame, rec in records.items():
        mine = pkts[frame - 1][L.VfioUser].info_text()
        cli = _cli_text(rec)
        # the engine shows a SET device state as a number, the layers by name
        state = re.search(r" device_state=(\d+)$", cli)
        if state:
            cli = cli[:state.start()] + f" device_state={spec.MIG_STATES[int(state.group(1))]}"
        elif "feature=MIG_DEVICE_STATE" in mine and "device_state=" in mine and "device_state=" not in cli:
            mine = mine[:mine.index(" device_state=")]
        assert mine == cli, f"frame {frame}"


@pytest.mark.parametrize("lookahead", [None, 8])
def test_scapy_sr_pairs_like_the_engine(real_capture, lookahead) -> None:
    from scapy.plist import PacketList

    pkts = PacketList(list(scapy_capture(real_capture)))
    index = {id(p): i + 1 for i, p in enumerate(pkts)}
    answered, unanswered = pkts.sr(lookahead=lookahead)
    pairs = {(index[id(q)], index[id(a)]) for q, a in answered}
    engine = {(rec.request_frame, frame) for frame, rec in _records(real_capture).items()
              if rec.request_frame is not None}
    if lookahead is None:
        assert pairs == engine
        assert all(L.VfioUser not in p for p in unanswered)  # only connection events are left
    else:
        assert pairs <= engine
    for q, a in answered:
        assert q.hashret() == a.hashret()
