"""Every finding code, end to end: scripted peers talk through the real recording proxy, and the proxy's live
findings, `vfudissect read --json` on the capture it wrote, and the sans-io Playbook run of the same exchange
agree on every code and frame; the code the scenario is about points at the message that caused it.

Each scenario is in vfudissect/demo/catalogue.py (one per code).  Most run through the proxy in this process;
FDS_TRUNCATED runs through `vfudissect record` as a child process, whose descriptor limit is lowered while the
memfd is passed (the kernel then drops the fd and reports MSG_CTRUNC), and its live findings are read back
from the live view it prints.

Codes no traffic through a proxy can produce (asserted exactly below, so a new code cannot be skipped silently):
  CAPTURE_CORRUPT  only the capture reader raises it, for a record it cannot decode; the proxy writes every
                   record itself from what it relayed, so no traffic makes one undecodable (damaged files are
                   covered by tests/capture and tests/test_cli.py).

Codes a one-connection script cannot produce, produced through the real proxy elsewhere:
  WRONG_CHANNEL    needs a twin socket (a second connection); tests/proxy/test_relay.py runs the emulated peers
                   with the server's fault wrong_channel through the proxy, live and `read` agreeing.
  FAULT_INJECTED   raised on records only `record --fault` writes: tests/proxy/test_inject.py injects each fault kind
                   between the emulated peers through the real proxy.
  REPLAY_*         raised by `vfudissect replay`'s comparison, not by the engine from traffic alone:
                   REPLAY_DIFFERS, REPLAY_MISSING, REPLAY_NO_REPLY, REPLAY_EXTRA, REPLAY_CLOSED (tests/replay/
                   test_client.py, against the emulated server with each fault kind), REPLAY_INEXACT and
                   REPLAY_UNMATCHED (tests/replay/test_server.py, the emulated client against the replay server).
"""

from __future__ import annotations

import pytest

from vfudissect.demo.catalogue import ELSEWHERE, EXCLUDED, SCENARIOS
from vfudissect.demo.scripted import expected, findings_key, step_frames

from .conftest import Outcome, model_shape, run_as_process, run_in_process
from vfudissect.core import findings

IN_PROCESS = sorted(code for code, scn in SCENARIOS.items() if not scn.needs_fd_starving)
AS_PROCESS = sorted(code for code, scn in SCENARIOS.items() if scn.needs_fd_starving)


def test_every_code_has_a_scenario_except_the_ones_a_proxy_cannot_produce() -> None:
    assert sorted(EXCLUDED) == ["CAPTURE_CORRUPT"]
    assert sorted(ELSEWHERE) == sorted(["WRONG_CHANNEL", "FAULT_INJECTED"] + [
        c for c in findings.CATALOGUE if c.startswith("REPLAY_")])
    assert sorted(set(findings.CATALOGUE) - set(SCENARIOS)) == sorted({**EXCLUDED, **ELSEWHERE})
    assert set(SCENARIOS) <= set(findings.CATALOGUE)
    for code in {**EXCLUDED, **ELSEWHERE}:
        assert code in (__doc__ or ""), f"{code} is excluded but the module docstring does not say why"
    assert AS_PROCESS == ["FDS_TRUNCATED"]


def _check(code: str, out: Outcome) -> None:
    scn = SCENARIOS[code]
    pb = expected(scn)
    want = findings_key(pb.findings())
    # the proxy recorded exactly the records the model says, in order
    assert out.shape == model_shape(scn)
    assert out.live == want, "live findings differ from the Playbook"
    assert out.read == want, "`read --json` findings differ from the Playbook"
    frames = step_frames(scn)
    flagged = [(i, st.flag) for i, st in enumerate(scn.steps) if st.flag]
    assert [f for _, f in flagged] == [code]
    for i, flag in flagged:
        firsts = [fr[0] for c, fr in want if c == flag]
        assert firsts, f"{flag} not reported"
        assert any(f in frames[i] for f in firsts), f"{flag} on frames {firsts}, the step's frames are {frames[i]}"


@pytest.mark.parametrize("code", IN_PROCESS)
def test_the_live_proxy_and_read_flag_it_on_the_right_frames(code: str, sockdir: str) -> None:
    _check(code, run_in_process(SCENARIOS[code], sockdir))


@pytest.mark.parametrize("code", AS_PROCESS)
def test_through_vfudissect_record_as_a_process(code: str, sockdir: str) -> None:
    _check(code, run_as_process(SCENARIOS[code], sockdir))
