"""Many captures as one job: -j N on a local Dask cluster, --scheduler on a real one, --by tables and --parquet.

Each test reads like a session: a set of captures (the project's fixtures, a
rotated capture, a damaged copy, a file that is not a capture), the command a
user types, and what must come out: the same bytes and exit status as the
sequential run, whatever the workers and the order they finish in.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
from typing import Iterator

import pytest

from vfudissect import batch, cli
from tests.conftest import CAPTURES, LVU, QEMU

VENV_BIN = pathlib.Path(sys.executable).parent
DEMO, FAULTS = CAPTURES / "demo.pcapng", CAPTURES / "demo-faults.pcapng"


def run(*args: str, cwd: str | os.PathLike | None = None, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vfudissect", *args], capture_output=True, timeout=180, cwd=cwd,
                          env=None if env is None else {**os.environ, **env})


def same(a: subprocess.CompletedProcess, b: subprocess.CompletedProcess) -> None:
    """Byte for byte: stdout, stderr and exit status."""
    assert a.stdout == b.stdout
    assert a.stderr == b.stderr
    assert a.returncode == b.returncode


def rotated(path: pathlib.Path, limit: int = 8192) -> list[str]:
    """The QEMU fixture recorded again as a rotated capture (path, path-2, ...) the way `record` writes one."""
    from vfudissect.capture.judge import JudgingWriter
    from vfudissect.capture.reader import read_events
    from vfudissect.capture.rotate import RotatingCaptureWriter
    from vfudissect.proxy.sinks import BufferedSink, FileSink

    def part(p: str):  # type: ignore[no-untyped-def]
        return BufferedSink(FileSink(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)))

    w = RotatingCaptureWriter(str(path), limit, part, judged=5.0)
    judge = JudgingWriter(w, timeout=5.0)
    last = 0.0
    for ev in read_events(io.BytesIO(QEMU.read_bytes())):
        if type(ev).__name__ not in ("FindingIn", "VerdictsIn"):
            judge.write(ev)
            last = ev.ts
    judge.finish(last)
    w.close()
    return list(w.paths)


def in_order(d: pathlib.Path) -> list[str]:
    """The fleet's files in the order a job takes them: hosts by name, the rotated capture's parts in part order."""
    rot = [str(d / "rot.pcapng")] + sorted((str(p) for p in d.glob("rot-*.pcapng")),
                                           key=lambda p: int(p.rsplit("-", 1)[1].split(".")[0]))
    return [str(d / f"host{i}.pcapng") for i in range(6)] + rot


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A directory of captures as a fleet leaves them: several hosts' files and a rotated capture."""
    d = tmp_path_factory.mktemp("fleet")
    for i, src in enumerate((QEMU, LVU, DEMO, FAULTS, QEMU, LVU)):
        shutil.copy(src, d / f"host{i}.pcapng")
    assert len(rotated(d / "rot.pcapng")) >= 3
    return d


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Good captures, a copy cut in the middle of a block, and a file that is not a capture at all."""
    d = tmp_path_factory.mktemp("damaged")
    shutil.copy(QEMU, d / "a-good.pcapng")
    data = LVU.read_bytes()
    (d / "b-cut.pcapng").write_bytes(data[: len(data) // 2 + 7])  # mid-block, whatever the block sizes
    (d / "c-notes.pcapng").write_text("this is a text file someone named .pcapng\n")
    shutil.copy(DEMO, d / "d-good.pcapng")
    return d


@pytest.fixture(scope="module")
def cluster() -> Iterator[batch.Pool]:
    """One local Dask cluster of two worker processes for the in-process tests; a task that kills its worker is
    not retried on another (so a death is seen at once)."""
    import dask
    import distributed  # noqa: F401 - its defaults must be in dask.config before we set one of them

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with batch.Pool(2, None, 10) as pool:
            yield pool


# ------------------------------------------------------------ the pool: input order whatever the finishing order
def _slow_upper(text: str, delay: float) -> str:
    time.sleep(delay)
    return text.upper()


def test_results_come_back_in_input_order_whatever_order_the_workers_finish(cluster):
    words = [f"part{i}" for i in range(8)]
    delays = [0.6, 0.0, 0.4, 0.0, 0.2, 0.0, 0.0, 0.1]  # part0 finishes last on its worker
    finished: list[int] = []
    out = list(cluster.map(_slow_upper, list(zip(words, delays)), words, finished.append))
    assert out == [w.upper() for w in words]
    assert finished == list(range(0, 9))  # the done callback: 0 at the start, then every part as it finishes


def test_a_worker_that_dies_is_one_lost_part_and_the_others_complete(cluster):
    def crash_on(path: str) -> str:  # pickled by value: the workers need not import this test module
        if "crash" in path:
            os._exit(1)
        return path

    paths = ["a.pcapng", "crash.pcapng", "c.pcapng"]
    out = list(cluster.map(crash_on, [(p,) for p in paths], paths))
    assert out[0] == "a.pcapng" and out[2] == "c.pcapng"
    lost = out[1]
    assert isinstance(lost, batch.Lost) and lost.path == "crash.pcapng"
    assert lost.line.startswith("crash.pcapng: the Dask worker analysing it died")
    assert "\n" not in lost.line
    # the cluster recovers: the nanny restarts the worker, the next job runs on both
    assert list(cluster.map(str.upper, [("x",), ("y",)], ["x", "y"])) == ["X", "Y"]


def test_stats_j2_names_a_file_whose_worker_died_in_one_line_and_counts_the_others(monkeypatch, capsys, tmp_path):
    import dask
    import distributed  # noqa: F401 - its defaults must be in dask.config before we set one of them

    real = batch.stats_task

    def dies_on_crash(path, *rest):  # type: ignore[no-untyped-def]  # a local function: pickled by value
        if "crash" in path:
            os._exit(1)  # the worker process dies as if killed (out of memory, a signal)
        return real(path, *rest)

    monkeypatch.setattr(batch, "stats_task", dies_on_crash)
    crash = tmp_path / "crash.pcapng"
    shutil.copy(DEMO, crash)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        code = cli.main(["stats", "--json", "--no-progress", "-j", "2", str(QEMU), str(crash), str(LVU)])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_BAD_INPUT
    assert err == (f"vfudissect: error: {crash}: the Dask worker analysing it died (tried once: killed, out of "
                   "memory or crashed; the worker's log says why); the other captures were analysed\n")
    got = json.loads(out)
    assert set(got["per_connection"]) == {f"{QEMU}#1", f"{LVU}#1"}
    assert got["overall"]["messages"] == 398 + 216


def test_stats_on_the_cluster_merges_to_the_sequential_figures(cluster, fleet):
    from vfudissect.stats import Stats

    parts = sorted(str(p) for p in fleet.glob("*.pcapng"))
    local = batch.Pool(1, None, len(parts))

    def merged(pool: batch.Pool) -> dict:
        s = Stats()
        for o in batch.stats_results(parts, pool, 5.0):
            s.merge(o.result.stats, o.result.path)
        return s.to_json()

    assert merged(cluster) == merged(local)


# ------------------------------------------------------------ the CLI: -j 2 prints what -j 1 prints
def test_stats_and_read_json_with_j2_equal_j1_byte_for_byte_over_many_captures_and_a_rotated_one(fleet):
    args = [str(fleet)]  # a directory: six hosts' files and a rotated capture of three or more parts
    for cmd in (["stats", "--json"], ["stats", "--color", "never"], ["read", "--json"],
                ["read", "--color", "never"]):
        one = run(*cmd, "--no-progress", *args)
        two = run(*cmd, "--no-progress", "-j", "2", *args)
        same(one, two)
        assert one.returncode == 1  # demo-faults carries errors: exit 1 either way
    s = json.loads(run("stats", "--json", "-j", "2", str(fleet)).stdout)
    assert s["connections"] == 8  # host0..5, the demo-faults capture's two, the rotated one once
    assert f"{fleet / 'rot.pcapng'}#1" in s["per_connection"]
    rows = [json.loads(line) for line in run("read", "--json", "-j", "2", str(fleet)).stdout.splitlines()]
    assert list(dict.fromkeys(r["file"] for r in rows)) == in_order(fleet)  # each file's lines together, in order


def test_relative_paths_run_on_workers_and_are_named_as_given(fleet):
    one = run("stats", "--json", "--no-progress", "host0.pcapng", "rot.pcapng", cwd=fleet)
    two = run("stats", "--json", "--no-progress", "-j", "2", "host0.pcapng", "rot.pcapng", cwd=fleet)
    same(one, two)
    assert "rot.pcapng#1" in json.loads(two.stdout)["per_connection"]


def test_a_damaged_file_and_a_non_capture_are_named_in_one_line_each_and_the_others_count(damaged):
    one = run("stats", "--json", "--no-progress", str(damaged))
    two = run("stats", "--json", "--no-progress", "-j", "2", str(damaged))
    same(one, two)
    assert two.returncode == 2
    err = two.stderr.decode().splitlines()
    assert len(err) == 2 and b"Traceback" not in two.stderr
    assert err[0].startswith(f"vfudissect: error: {damaged / 'b-cut.pcapng'}: record ")
    assert err[1].startswith(f"vfudissect: error: {damaged / 'c-notes.pcapng'}: file header: not a pcap")
    s = json.loads(two.stdout)
    good = sum(json.loads(run("stats", "--json", str(p)).stdout)["overall"]["messages"]
               for p in (damaged / "a-good.pcapng", damaged / "d-good.pcapng"))
    assert good < s["overall"]["messages"]  # the good ones, and what the cut one held before its damage
    assert f"{damaged / 'c-notes.pcapng'}#1" not in s["per_connection"]
    r1 = run("read", "--json", "--no-progress", str(damaged))
    r2 = run("read", "--json", "--no-progress", "-j", "2", str(damaged))
    same(r1, r2)


def test_stats_on_a_real_dask_scheduler_and_two_worker_processes(fleet, tmp_path):
    """`dask scheduler` and `dask worker` as an operator starts them, on loopback, bounded in time."""
    sfile = tmp_path / "scheduler.json"
    procs: list[subprocess.Popen] = []
    logs = [open(tmp_path / "scheduler.log", "wb"), open(tmp_path / "worker.log", "wb")]
    try:
        procs.append(subprocess.Popen(
            ["timeout", "120", str(VENV_BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
             "--scheduler-file", str(sfile), "--no-dashboard"], stdout=logs[0], stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 30
        while not sfile.exists() or not sfile.read_text().strip().endswith("}"):
            assert time.monotonic() < deadline, (tmp_path / "scheduler.log").read_text()
            time.sleep(0.1)
        address = json.loads(sfile.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        procs.append(subprocess.Popen(
            ["timeout", "120", str(VENV_BIN / "dask"), "worker", "--scheduler-file", str(sfile), "--nworkers", "2",
             "--nthreads", "1", "--no-dashboard"], stdout=logs[1], stderr=subprocess.STDOUT, cwd=tmp_path))
        _wait_for_workers(address, 2, deadline=time.monotonic() + 60)
        seq = run("stats", "--json", "--no-progress", str(fleet))
        on_cluster = run("stats", "--json", "--no-progress", "--scheduler", address, str(fleet))
        same(seq, on_cluster)
        # relative paths from here: the workers (started elsewhere) get them absolute, the output names them as given
        same(run("stats", "--no-progress", "--color", "never", "host1.pcapng", "rot.pcapng", cwd=fleet),
             run("stats", "--no-progress", "--color", "never", "--scheduler", address, "host1.pcapng", "rot.pcapng",
                 cwd=fleet))
        same(run("read", "--json", "--no-progress", str(fleet)),
             run("read", "--json", "--no-progress", "--scheduler", address, str(fleet)))
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in logs:
            f.close()


def _wait_for_workers(address: str, n: int, deadline: float) -> None:
    import distributed

    with distributed.Client(address, timeout="20s", set_as_default=False) as client:
        client.wait_for_workers(n, timeout=max(deadline - time.monotonic(), 1))


def test_an_unreachable_scheduler_is_one_line():
    t0 = time.monotonic()
    p = run("stats", "--no-progress", "--scheduler", "tcp://127.0.0.1:9", str(QEMU), str(LVU),
            env={batch.CONNECT_TIMEOUT_ENV: "1s"})  # Dask's own setting: given up after 1 s, not 10
    assert time.monotonic() - t0 < 8
    assert p.returncode == 2 and p.stdout == b""
    assert p.stderr.decode().splitlines() == [p.stderr.decode().strip()]
    assert p.stderr.startswith(b"vfudissect: error: cannot reach the Dask scheduler at tcp://127.0.0.1:9: ")


# ------------------------------------------------------------ what the user gets wrong, and what is missing
@pytest.mark.parametrize("value, says", [("0", "must be 1 or more"), ("-3", "must be 1 or more"),
                                         ("two", "not a number of worker processes")])
def test_a_bad_j_value_is_one_line(value, says, capsys):
    for cmd in ("stats", "read"):
        assert cli.main([cmd, "--no-progress", "-j", value, str(QEMU)]) == cli.EXIT_BAD_INPUT
        err = capsys.readouterr().err
        assert err == f"vfudissect: error: -j {value}: {err.split(': ', 3)[-1]}" and says in err
        assert err.count("\n") == 1


def test_without_dask_j2_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` now fails as if not installed
    for args in (["stats", "-j", "2", str(QEMU), str(LVU)], ["read", "--json", "-j", "2", str(QEMU)],
                 ["stats", "--scheduler", "tcp://127.0.0.1:8786", str(QEMU)]):
        assert cli.main(args) == cli.EXIT_BAD_INPUT
        out, err = capsys.readouterr()
        assert out == ""
        assert err == ("vfudissect: error: -j N (N above 1) and --scheduler need Dask, which is not installed: "
                       "pip install 'vfudissect[dask]'\n")
    assert cli.main(["stats", "--json", "-j", "1", str(QEMU)]) == 0  # -j 1 needs no Dask
    assert json.loads(capsys.readouterr().out)["overall"]["messages"] == 398


def test_dask_is_not_imported_without_j():
    code = ("import sys; from vfudissect import cli; "
            "rc = cli.main(['stats', '--no-progress', '--json', sys.argv[1]]); "
            "print(rc, 'distributed' in sys.modules, 'dask' in sys.modules, file=sys.stderr)")
    p = subprocess.run([sys.executable, "-c", code, str(QEMU)], capture_output=True, timeout=60)
    assert p.stderr.split() == [b"0", b"False", b"False"]


def test_stdin_is_not_handed_to_workers():
    p = run("stats", "-j", "2", "-", str(QEMU))
    assert p.returncode == 2 and b"standard input (-) cannot be handed to Dask workers" in p.stderr
    assert run("stats", "-j", "2", "--scheduler", "tcp://127.0.0.1:9", str(QEMU)).stderr == (
        b"vfudissect: error: -j and --scheduler do not go together: -j starts a local cluster, --scheduler uses an "
        b"existing one\n")


# ------------------------------------------------------------ stats --by
def test_stats_by_file_one_row_per_capture_a_rotated_one_once_and_a_totals_row(fleet):
    p = run("stats", "--by", "file", "--json", str(fleet))
    by = json.loads(p.stdout)
    whole = json.loads(run("stats", "--json", str(fleet)).stdout)
    names = [r["file"] for r in by["rows"]]
    assert names == [str(fleet / f"host{i}.pcapng") for i in range(6)] + [str(fleet / "rot.pcapng")]
    single = json.loads(run("stats", "--json", str(QEMU)).stdout)["overall"]
    rot = by["rows"][-1]
    assert rot["messages"] == single["messages"] == 398 and rot["connections"] == 1  # three parts, one capture
    assert by["rows"][0]["messages"] == 398 and by["rows"][3]["connections"] == 2  # demo-faults: two connections
    tot = by["total"]
    assert tot["messages"] == sum(r["messages"] for r in by["rows"]) == whole["overall"]["messages"]
    assert tot["connections"] == whole["connections"] == 8
    assert tot["findings"] == whole["severities"] | {s: 0 for s in ("error", "warning", "note")
                                                     if s not in whole["severities"]}
    assert tot["replies"] == sum(v["count"] for v in whole["overall"]["response_times"].values())
    assert tot["response_time"]["max"] == max(v["max"] for v in whole["overall"]["response_times"].values())
    assert by["rows"][3]["findings"] == {"error": 4, "warning": 2, "note": 2}
    assert p.returncode == 1  # the findings' exit status, as without --by

    text = run("stats", "--by", "file", "--color", "never", str(fleet)).stdout.decode().splitlines()
    assert text[0].split() == ["file", "conns", "messages", "bytes", "requests", "replies", "errno", "p50", "p99",
                               "max", "errors", "warnings", "notes"]
    assert [line.split()[0] for line in text[1:]] == names + ["total"]
    assert text[-1].split()[1:3] == ["8", str(tot["messages"])]
    assert text[4].split()[-3:] == ["4", "2", "2"]


def test_stats_by_connection_and_by_command(fleet):
    conns = json.loads(run("stats", "--by", "connection", "--json", str(fleet)).stdout)
    names = [r["connection"] for r in conns["rows"]]
    assert len(names) == 8 and f"{fleet / 'host3.pcapng'}#2" in names and f"{fleet / 'rot.pcapng'}#1" in names
    assert all(r["connections"] == 1 and "duration" not in r for r in conns["rows"])
    assert conns["total"]["messages"] == sum(r["messages"] for r in conns["rows"])

    cmds = json.loads(run("stats", "--by", "command", "--json", str(fleet)).stdout)
    whole = json.loads(run("stats", "--json", str(fleet)).stdout)["overall"]
    assert {r["command"]: r["requests"] for r in cmds["rows"] if r["requests"]} == whole["requests"]
    assert cmds["total"]["requests"] == sum(whole["requests"].values())
    assert cmds["rows"][0]["response_time"] == whole["response_times"][cmds["rows"][0]["command"]]
    text = run("stats", "--by", "command", "--color", "never", str(fleet)).stdout.decode().splitlines()
    assert text[0].split()[:3] == ["command", "requests", "replies"] and text[-1].split()[:2] == [
        "total", str(cmds["total"]["requests"])]
    for by in ("file", "connection", "command"):
        same(run("stats", "--by", by, "--json", str(fleet)), run("stats", "--by", by, "--json", "-j", "2", str(fleet)))


# ------------------------------------------------------------ stats --parquet
def test_parquet_has_one_row_per_message_with_its_file_frame_and_findings(fleet, tmp_path):
    import pyarrow.parquet as pq

    out1, out2 = tmp_path / "one.parquet", tmp_path / "two.parquet"
    p1 = run("stats", "--json", "--parquet", str(out1), str(fleet))
    p2 = run("stats", "--json", "--parquet", str(out2), "-j", "2", str(fleet))
    assert p1.stdout == p2.stdout and p1.returncode == p2.returncode == 1
    assert p1.stderr == f"{out1}: ".encode() + p1.stderr.split(b": ", 1)[1] and p1.stderr.endswith(b" messages\n")
    t1, t2 = pq.read_table(out1), pq.read_table(out2)
    assert t1.equals(t2)  # the same rows in the same order, whichever worker made them
    assert t1.column_names == ["file", "connection", "frame", "time", "direction", "type", "command", "msg_id",
                               "size", "error", "response_time", "findings"]
    whole = json.loads(p1.stdout)["overall"]
    assert t1.num_rows == whole["messages"] and p1.stderr == f"{out1}: {t1.num_rows} messages\n".encode()
    rows = t1.to_pylist()
    assert list(dict.fromkeys(r["file"] for r in rows)) == in_order(fleet)  # rows name the part they are in
    # the rows agree with `read --json`: same frames, commands, ids, response times and findings
    host3 = [r for r in rows if r["file"] == str(fleet / "host3.pcapng")]
    msgs = [json.loads(line) for line in run("read", "--json", str(fleet / "host3.pcapng")).stdout.splitlines()]
    msgs = [m for m in msgs if "msg_id" in m]
    assert [(r["frame"], r["connection"], r["command"], r["msg_id"], r["findings"]) for r in host3] == [
        (m["frame"], m["conn"], m["command_name"], m["msg_id"], m["findings"]) for m in msgs]
    assert [None if r["response_time"] is None else round(r["response_time"], 9) for r in host3] == [
        m["rtt"] for m in msgs]
    late = next(r for r in host3 if "REPLY_TIMEOUT" in r["findings"])
    assert late["type"] == "command" and late["command"] == "REGION_READ"
    errs = [r for r in rows if r["error"] is not None]
    assert errs and all(r["type"] == "reply" for r in errs)  # the libvfio-user sample's error reply
    assert sum(1 for r in rows if r["response_time"] is not None) == sum(
        v["count"] for v in whole["response_times"].values())


def test_without_pyarrow_parquet_says_how_to_install_it_and_writes_nothing(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    out = tmp_path / "m.parquet"
    assert cli.main(["stats", "--parquet", str(out), str(QEMU)]) == cli.EXIT_BAD_INPUT
    o, err = capsys.readouterr()
    assert o == "" and err == ("vfudissect: error: --parquet needs pyarrow, which is not installed: "
                               "pip install 'vfudissect[parquet]'\n")
    assert list(tmp_path.iterdir()) == []


def test_parquet_of_unusable_input_is_not_written(tmp_path):
    bad = tmp_path / "bad.pcapng"
    bad.write_text("not a capture")
    p = run("stats", "--parquet", str(tmp_path / "m.parquet"), str(bad))
    assert p.returncode == 2 and sorted(x.name for x in tmp_path.iterdir()) == ["bad.pcapng"]


def test_help_explains_j_scheduler_by_and_parquet():
    text = " ".join(run("stats", "--help").stdout.decode().split())
    for word in ("-j N", "--scheduler ADDRESS", "--by {file,connection,command}", "--parquet OUT",
                 "pip install 'vfudissect[dask]'", "pip install 'vfudissect[parquet]'", "byte for byte"):
        assert word in text, word
    assert "-j N" in run("read", "--help").stdout.decode()


def test_the_files_done_counter_is_shown_on_a_terminal_only(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    now = [100.0]
    monkeypatch.setattr(batch.time, "monotonic", lambda: now[0])
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    bar = batch.FilesDone("stats", 200, enabled=True)
    for done, later in ((0, 0.0), (36, 0.01), (37, 0.5), (200, 0.01)):  # at most ten a second, and the last
        now[0] += later
        bar(done)
    bar.close()
    assert term.getvalue().split("\r")[1:4] == ["stats: 0/200 files", "stats: 37/200 files", "stats: 200/200 files"]
    assert term.getvalue().endswith("\r" + " " * 29 + "\r")  # cleared at the end
    for quiet in (batch.FilesDone("stats", 200, enabled=False), batch.FilesDone("stats", 1, enabled=True)):
        before = term.getvalue()
        quiet(1)
        quiet.close()
        assert term.getvalue() == before  # --no-progress, or a single file: nothing
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal: nothing either
    bar = batch.FilesDone("read", 5, enabled=True)
    bar(3)
    assert sys.stderr.getvalue() == ""
