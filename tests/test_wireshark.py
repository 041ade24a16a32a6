"""pyshark through the plugin: real captures in, vfio_user layers out with the same messages as `vfudissect read`."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import pytest

from vfudissect import spec, wireshark
from tests.conftest import LVU, QEMU
from tests.export.tshark_run import expected_codes, run_read_json, stored, tshark

pytestmark = pytest.mark.tshark


@pytest.fixture(autouse=True)
def _tshark_present() -> None:
    tshark()  # fails loudly when tshark is missing


@pytest.mark.parametrize("capture", [QEMU, LVU], ids=["qemu", "libvfio-user"])
def test_real_captures_have_vfio_user_layers_matching_read(capture):
    msgs = wireshark.messages(capture)
    oracle, _ = run_read_json(capture)
    codes = expected_codes(stored(capture), two_pass=True)  # the findings stored in the capture, on their frames
    assert sum(map(len, codes.values())) > 0
    assert [m.frame for m in msgs] == sorted(oracle)
    for m in msgs:
        o = oracle[m.frame]
        assert (m.msg_id, m.command, m.command_name, m.size, m.msg_type) == \
            (o["msg_id"], o["command"], o["command_name"], o["size"], 1 if o["msg_type"] == "reply" else 0)
        assert m.request_in == o["request_frame"]
        assert m.response_in == o["response_frame"]
        assert Counter(m.findings) == codes.get(m.frame, Counter())
        assert "msg_id" in m.layer.field_names and "flags_tree" in m.layer.field_names


def test_layer_fields_carry_the_decoded_payload():
    msgs = wireshark.messages(QEMU)
    version = msgs[0]
    assert version.command_name == "VERSION" and version.response_in == msgs[1].frame
    caps = version.layer.get_field("version").get_field("caps")
    assert "caps" in caps.field_names  # Version data > Capabilities
    dma_map = next(m for m in msgs if m.command == spec.Command.DMA_MAP)
    fields = dma_map.layer.get_field("dma_map")
    assert int(fields.get_field("argsz")) == 32 and "address" in fields.field_names
    reply = next(m for m in msgs if m.request_in == dma_map.frame)
    assert reply.time is not None and 0 < reply.time < 1


def test_layers_in_one_pass_have_no_forward_links():
    layers = wireshark.layers(LVU, two_pass=False)
    assert len(layers) == 216
    assert not any("response_in" in layer.field_names for layer in layers)
    assert sum("request_in" in layer.field_names for layer in layers) == 108


def test_preferences_and_display_filter_pass_through():
    msgs = wireshark.messages(LVU, display_filter="vfio_user.flags.type == 1 && vfio_user.flags.error == 1")
    assert [m.findings for m in msgs] == [("ERROR_REPLY",)]
    shown = wireshark.layers(LVU, display_filter="vfio_user.data")
    hidden = wireshark.layers(LVU, prefs={"vfio_user.show_payload": "FALSE"}, display_filter="vfio_user.data")
    assert shown and not hidden


def test_inside_a_running_event_loop_and_from_threads():
    async def main() -> tuple[int, int]:
        a = await wireshark.messages_async(LVU)
        b = wireshark.messages(LVU)  # the sync API from a coroutine: runs on its own loop in a thread
        return len(a), len(b)

    assert asyncio.run(main()) == (216, 216)
    out: list[int] = []
    t = threading.Thread(target=lambda: out.append(len(wireshark.messages(LVU))))
    t.start()
    t.join()
    assert out == [216]


def test_a_broken_plugin_is_a_clear_error(tmp_path):
    broken = tmp_path / "broken.lua"
    broken.write_text('local p = Proto("vfucap", "x")\nfunction p.dissector(t, pinfo, tree) error("boom") end\n')
    with pytest.raises(wireshark.WiresharkError, match="no vfio_user layer.*boom"):
        wireshark.messages(LVU, plugin=broken)
    syntax = tmp_path / "syntax.lua"
    syntax.write_text('local p = Proto("vfucap" "x")\n')
    with pytest.raises(wireshark.WiresharkError, match="syntax error"):
        wireshark.messages(LVU, plugin=syntax)


def test_missing_inputs_are_clear_errors(tmp_path):
    with pytest.raises(wireshark.WiresharkError, match="no such capture"):
        wireshark.messages(tmp_path / "nope.pcapng")
    with pytest.raises(wireshark.WiresharkError, match="no such Lua plugin"):
        wireshark.messages(LVU, plugin=tmp_path / "nope.lua")
    with pytest.raises(wireshark.WiresharkError, match="tshark not found"):
        wireshark.messages(LVU, tshark_path=str(tmp_path / "no-tshark-here"))
