"""Stats as `vfudissect stats` shows them: records and findings in, table rows and JSON figures out."""

from __future__ import annotations

import json
import math
from fractions import Fraction

from hypothesis import given, strategies as st

from vfudissect import spec
from vfudissect.capture.reader import open_capture
from vfudissect.core.analyzer import Analyzer, AnalyzerConfig
from vfudissect.core.records import Finding, Item, MessageRecord
from vfudissect.stats import Stats, nearest_rank
from tests.conftest import CAPTURES

DEMO_FAULTS = CAPTURES / "demo-faults.pcapng"


# ------------------------------------------------------------ helpers
def request(frame: int, name: str, conn: int = 1, msg_id: int = 0, no_reply: bool = False,
            context: bool = False) -> MessageRecord:
    """A client command as the engine reports it."""
    return MessageRecord(frame, 1.0 + frame * 1e-3, conn, spec.C2S, msg_id, spec.Command[name], name, "command",
                         16, 0x10 if no_reply else 0, 0, 16, no_reply=no_reply, context=context)


def reply(frame: int, name: str, request_frame: int | None, rtt: float | None, conn: int = 1,
          msg_id: int = 0, error: int = 0, answers: str | None = None) -> MessageRecord:
    """A server reply as the engine reports it: linked to its request (of command ``answers``, by default its own)
    when it matched one."""
    req_cmd = None if request_frame is None else spec.Command[answers or name]
    return MessageRecord(frame, 1.0 + frame * 1e-3, conn, spec.S2C, msg_id, spec.Command[name], name, "reply",
                         16, 1 | (0x20 if error else 0), error, 16, request_frame=request_frame, rtt=rtt,
                         request_command=req_cmd)


def pairs(name: str, rtts: list[float], conn: int = 1, first_frame: int = 1) -> list[MessageRecord]:
    """Request/reply pairs of one command, one per response time."""
    out: list[MessageRecord] = []
    for i, rtt in enumerate(rtts):
        f = first_frame + 2 * i
        out += [request(f, name, conn, msg_id=i), reply(f + 1, name, f, rtt, conn, msg_id=i)]
    return out


def stats_of(items: list[Item]) -> Stats:
    s = Stats()
    for it in items:
        s.add(it)
    return s


def stats_of_capture(path) -> Stats:
    """What `vfudissect stats PATH` accumulates (default 5 s timeout)."""
    an = Analyzer(AnalyzerConfig())
    s = Stats()
    last = 0.0
    for ev in open_capture(str(path)):
        last = ev.ts or last
        for it in an.feed(ev):
            s.add(it)
    for it in an.finish(last):
        s.add(it)
    return s


def row(text: str, name: str) -> list[str]:
    """The first table row of a command in a rendered summary, split into columns."""
    return next(line.split() for line in text.splitlines() if line.split()[:1] == [name])


def overall(text: str) -> str:
    return text[text.index("overall:"):]


# ------------------------------------------------------------ 1. percentiles: nearest rank
def test_nearest_rank_is_ceil_q_n():
    assert [nearest_rank(0.5, n) for n in (1, 2, 3, 4, 13)] == [1, 1, 2, 2, 7]
    assert [nearest_rank(0.99, n) for n in (1, 2, 13, 99, 100, 101, 1000)] == [1, 2, 13, 99, 99, 100, 990]
    assert [nearest_rank(0.1, 10), nearest_rank(0.0, 5), nearest_rank(1.0, 5)] == [1, 1, 5]  # 0.1 as written


def test_two_samples_p50_is_the_smaller_p99_the_larger():
    s = stats_of(pairs("VERSION", [0.0004, 0.0029]))
    assert row(s.render(), "VERSION") == ["VERSION", "2", "2", "400µs", "1.65ms", "400µs", "2.90ms", "2.90ms"]
    rt = s.to_json()["overall"]["response_times"]["VERSION"]
    assert rt["p50"] == 0.0004 and rt["p99"] == 0.0029 == rt["max"]


def test_one_slow_read_in_thirteen_is_the_p99():
    s = stats_of(pairs("REGION_READ", [40e-6 + i * 1e-6 for i in range(12)] + [1.000]))
    assert row(s.render(), "REGION_READ")[-2:] == ["1.000s", "1.000s"]  # p99, max


def test_demo_faults_version_p99_is_its_slower_sample():
    # two VERSION replies (one per connection): p50 is the faster one, p99 the slower, whatever `make demo` measured
    j = stats_of_capture(DEMO_FAULTS).to_json()["overall"]["response_times"]["VERSION"]
    assert j["count"] == 2 and j["p50"] == j["min"] < j["p99"] == j["max"]
    assert j["mean"] == (j["min"] + j["max"]) / 2
    text = overall(stats_of_capture(DEMO_FAULTS).render())
    assert row(text, "VERSION")[:3] == ["VERSION", "2", "2"]
    assert row(text, "VERSION")[3] == row(text, "VERSION")[5] and row(text, "VERSION")[6] == row(text, "VERSION")[7]


@given(st.lists(st.floats(min_value=1e-6, max_value=30.0), min_size=1, max_size=300),
       st.sampled_from([0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0]) | st.floats(0.0, 1.0))
def test_percentile_matches_a_direct_nearest_rank_within_one_percent(samples, q):
    s = stats_of(pairs("REGION_READ", samples))
    got = s._total().rtt["REGION_READ"].quantile(q)
    ordered = sorted(samples)
    k = max(1, math.ceil(Fraction(str(q)) * len(samples)))  # the ceil(q*n)-th smallest, q as written
    want = ordered[k - 1]
    assert abs(got - want) <= 0.01 * want
    if k == len(samples):
        assert got == max(samples)
    if k == 1:
        assert got == min(samples)


# ------------------------------------------------------------ 2. stable order
def test_rows_with_equal_counts_come_in_name_order_whatever_the_arrival_order():
    a = pairs("REGION_WRITE", [1e-4]) + pairs("DMA_MAP", [2e-4], first_frame=3) + pairs("REGION_READ", [3e-4, 4e-4], first_frame=5)
    b = pairs("REGION_READ", [3e-4, 4e-4], first_frame=5) + pairs("DMA_MAP", [2e-4], first_frame=3) + pairs("REGION_WRITE", [1e-4])
    sa, sb = stats_of(a), stats_of(b)
    names = [line.split()[0] for line in sa.render().splitlines()[3:6]]
    assert names == ["REGION_READ", "DMA_MAP", "REGION_WRITE"]  # count descending, then name
    assert sa.render() == sb.render()
    assert json.dumps(sa.to_json()) == json.dumps(sb.to_json())  # dict orders included
    assert list(sa.to_json()["overall"]["requests"]) == names
    assert list(sa.to_json()["overall"]["response_times"]) == names


def test_errors_fds_and_severities_are_ordered_too():
    def feed(order: list[int]) -> Stats:
        items: list[Item] = [request(1, "REGION_READ"), reply(2, "REGION_READ", 1, 1e-4, error=22),
                             request(3, "REGION_READ", msg_id=1), reply(4, "REGION_READ", 3, 1e-4, msg_id=1, error=1),
                             Finding("NO_REPLY", "warning", 1, (9,), "x"), Finding("UNMATCHED_REPLY", "error", 1, (8,), "y")]
        return stats_of([items[i] for i in order])
    sa, sb = feed([0, 1, 2, 3, 4, 5]), feed([2, 3, 0, 1, 5, 4])
    assert sa.render() == sb.render() and json.dumps(sa.to_json()) == json.dumps(sb.to_json())
    assert "errors: EINVAL 1, EPERM 1" in sa.render() and "errors: EINVAL 1, EPERM 1" in sb.render()
    assert list(sa.to_json()["severities"]) == ["error", "warning"]


# ------------------------------------------------------------ 3. replies under their request's command
def test_a_reply_with_the_wrong_command_counts_under_its_request():
    s = stats_of([request(1, "REGION_READ"), reply(2, "DEVICE_GET_INFO", 1, 82e-6, answers="REGION_READ")])
    text = s.render()
    assert row(text, "REGION_READ")[:4] == ["REGION_READ", "1", "1", "82µs"]
    assert "DEVICE_GET_INFO" not in text
    assert "  replies whose command differs from their request's: 1" in text
    assert s.to_json()["overall"]["mismatched_replies"] == 1


def test_demo_faults_get_info_has_one_reply_and_region_read_two():
    s = stats_of_capture(DEMO_FAULTS)
    text = s.render()
    conn1 = text[:text.index("connection #2")]
    assert row(conn1, "DEVICE_GET_INFO")[:3] == ["DEVICE_GET_INFO", "1", "1"]
    read = row(conn1, "REGION_READ")  # the late reply (5.5 s) and a quick one, whatever `make demo` measured
    assert read[:3] == ["REGION_READ", "2", "2"] and read[3] == read[5] and read[6] == read[7]
    assert read[3].endswith("µs") and read[7].startswith("5.5") and read[7].endswith("s")
    assert "replies whose command differs from their request's: 1" in conn1
    j = s.to_json()
    assert j["overall"]["response_times"]["DEVICE_GET_INFO"]["count"] == 1
    assert j["overall"]["response_times"]["REGION_READ"]["count"] == 2
    assert j["per_connection"]["1"]["mismatched_replies"] == 1 and j["per_connection"]["2"]["mismatched_replies"] == 0


def test_a_reply_to_a_context_copy_counts_under_the_copied_request():
    # a rotated capture's part: the request is a copy from the earlier file, counted there; its reply is new
    s = stats_of([request(1, "DMA_READ", context=True), reply(2, "DMA_READ", 1, 0.002)])
    assert row(s.render(), "DMA_READ")[:3] == ["DMA_READ", "0", "1"]


def test_stats_keep_no_per_request_state():
    # the engine says in each reply's record which request it answers: nothing is remembered between records
    s = Stats()
    for i in range(10_000):
        for it in pairs("REGION_READ", [1e-5], first_frame=1 + 2 * i):
            s.add(it)
    assert set(vars(s)) == {"_conns", "first_ts", "last_ts", "severities", "connections", "_labels"}
