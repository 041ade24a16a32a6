"""The sequencer: requests wait for their reply, timeout or end, then come out in frame order with links."""

from __future__ import annotations

from vfudissect.core.records import ConnRecord, Finding, MessageRecord
from vfudissect.core.sequencer import Sequencer
from vfudissect.testing import Playbook, region_read, region_read_reply, region_write


def run(pb: Playbook) -> list:
    seq = Sequencer()
    out = seq.push(pb.items)
    return out + seq.flush()


def test_request_waits_for_its_reply_and_gets_response_frame():
    pb = Playbook()
    pb.handshake(device=False)
    req = pb.c2s(region_read(1, 7))
    w = pb.c2s(region_write(2, 0, no_reply=True))
    rep = pb.s2c(region_read_reply(1, 7))
    seq = Sequencer()
    first = seq.push(pb.items[:-1])
    assert all(not (isinstance(i, MessageRecord) and i.frame >= req) for i in first)  # held behind the request
    out = first + seq.push(pb.items[-1:]) + seq.flush()
    recs = [i for i in out if isinstance(i, MessageRecord)]
    assert [r.frame for r in recs] == sorted(r.frame for r in recs)
    by = {r.frame: r for r in recs}
    assert by[req].response_frame == rep and by[rep].request_frame == req and by[w].response_frame is None


def test_later_findings_join_their_request_and_follow_it():
    pb = Playbook()
    pb.handshake(device=False)
    req = pb.c2s(region_read(1, 7))
    pb.finish()
    out = run(pb)
    rec = next(i for i in out if isinstance(i, MessageRecord) and i.frame == req)
    assert rec.findings == ("NO_REPLY",)
    idx = out.index(rec)
    assert isinstance(out[idx + 1], Finding) and out[idx + 1].code == "NO_REPLY"


def test_connection_records_keep_their_place():
    pb = Playbook()
    pb.handshake(device=False)
    pb.close()
    out = run(pb)
    assert isinstance(out[0], ConnRecord) and out[0].kind == "open"
    assert isinstance(out[-1], ConnRecord) and out[-1].kind == "close"
