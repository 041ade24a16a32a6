"""`vfudissect annotate` over many captures: -o DIR, names checked before anything is written, -j N the same lines."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from tests.conftest import CAPTURES, LVU, QEMU
from tests.test_batch import rotated


def run(*args: str, cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vfudissect", *args], capture_output=True, timeout=180, cwd=cwd)


@pytest.fixture
def runs(tmp_path: pathlib.Path) -> pathlib.Path:
    """A directory of captures: two hosts, a rotated capture, a copy cut mid-block, and a file that is no capture."""
    d = tmp_path / "runs"
    d.mkdir()
    shutil.copy(QEMU, d / "a.pcapng")
    shutil.copy(CAPTURES / "demo-faults.pcapng", d / "b.pcapng")
    rotated(d / "rot.pcapng")
    data = LVU.read_bytes()
    (d / "cut.pcapng").write_bytes(data[: len(data) // 2 + 7])
    (d / "zz.pcapng").write_text("not a capture\n")
    return d


def files(d: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_many_captures_are_written_to_a_directory_each_line_naming_its_file_and_j2_writes_the_same(runs, tmp_path):
    one = run("annotate", "runs", "-o", "judged", cwd=tmp_path)
    two = run("annotate", "runs", "-o", "judged2", "-j", "2", cwd=tmp_path)
    assert one.returncode == two.returncode == 2  # the cut copy and the text file
    assert files(tmp_path / "judged") == files(tmp_path / "judged2")  # the same bytes, whichever worker wrote them
    assert one.stderr.replace(b"judged/", b"OUT/") == two.stderr.replace(b"judged2/", b"OUT/")
    lines = one.stderr.decode().splitlines()
    parts = sorted((p.name for p in runs.glob("rot*.pcapng")), key=lambda n: (len(n), n))
    written = ["a.pcapng", "b.pcapng"] + parts
    assert [line.split(":")[0] for line in lines if not line.startswith("vfudissect:")] == [
        f"judged/{n}" for n in written]
    errors = [line for line in lines if line.startswith("vfudissect: error: ")]
    assert len(errors) == 2 and len(lines) == len(written) + 2
    assert errors[0].startswith("vfudissect: error: runs/cut.pcapng: record ") and errors[0].endswith(
        "records before it written to judged/cut.pcapng")
    assert errors[1].startswith("vfudissect: error: runs/zz.pcapng: file header: not a pcap")
    # what was a capture is written (the cut one up to its damage, 0600 like every capture); the text file is not
    assert sorted(files(tmp_path / "judged")) == sorted(written + ["cut.pcapng"])
    assert {oct(os.stat(p).st_mode & 0o777) for p in (tmp_path / "judged").iterdir()} == {"0o600"}
    # the written ones carry the engine's verdicts: their stored findings are what read judges afresh
    for name in ("a.pcapng", "b.pcapng"):
        out = str(tmp_path / "judged" / name)
        stored = [json.loads(x) for x in run("read", "--json", "--stored", out).stdout.splitlines()]
        fresh = [json.loads(x) for x in run("read", "--json", str(runs / name)).stdout.splitlines()]
        assert [(f["finding"], f["conn"]) for f in stored if "finding" in f] == [
            (f["finding"], f["conn"]) for f in fresh if "finding" in f]
        assert sum("msg_id" in r for r in stored) == sum("msg_id" in r for r in fresh)


def test_the_names_are_checked_before_anything_is_written(runs, tmp_path):
    before = files(runs)
    p = run("annotate", "runs", "-o", "runs", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.decode().splitlines() == [
        "vfudissect: error: runs/a.pcapng is the capture being read: annotate never overwrites its input; "
        "-o another directory"]
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(QEMU, other / "a.pcapng")
    p = run("annotate", "runs/a.pcapng", "other/a.pcapng", "-o", "out", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr == (b"vfudissect: error: runs/a.pcapng and other/a.pcapng would both be "
                                              b"written as out/a.pcapng: annotate them into different directories\n")
    assert not (tmp_path / "out").exists()  # nothing written, not even the directory
    assert files(runs) == before


@pytest.mark.parametrize("args, says", [
    (["a.pcapng", "b.pcapng", "-w", "x.pcapng"],
     "2 captures and one -w OUT: -w writes one capture; -o DIR writes each of them as DIR/its name"),
    (["-", "a.pcapng", "-o", "out"], "standard input (-) has no file name to write under DIR"),
    (["a.pcapng", "-o", "b.pcapng"], "-o b.pcapng: not a directory"),
    (["a.pcapng", "-o", "out", "-j", "0"], "-j 0: the number of worker processes must be 1 or more"),
    (["a.pcapng", "-w", "x.pcapng", "-j", "many"], "-j many: not a number of worker processes"),
    (["nothing-*.pcapng", "-o", "out"], "nothing-*.pcapng: no capture matches"),
])
def test_what_cannot_be_done_is_one_line(runs, args, says):
    p = run("annotate", *args, cwd=runs)
    err = p.stderr.decode()
    assert p.returncode == 2 and err.count("\n") == 1 and err.startswith("vfudissect: error: ") and says in err, err
    assert not (runs / "out").exists() and not (runs / "x.pcapng").exists()


def test_without_dask_annotate_j2_says_how_to_install_it(runs, monkeypatch, capsys):
    from vfudissect import cli

    monkeypatch.setitem(sys.modules, "distributed", None)
    assert cli.main(["annotate", str(runs / "a.pcapng"), str(runs / "b.pcapng"), "-o", str(runs / "o"),
                     "-j", "2"]) == 2
    assert capsys.readouterr().err == ("vfudissect: error: -j N (N above 1) and --scheduler need Dask, which is not "
                                       "installed: pip install 'vfudissect[dask]'\n")
    assert not (runs / "o").exists()


def test_help_explains_many_inputs():
    text = " ".join(run("annotate", "--help").stdout.decode().split())
    for words in ("-o DIR", "DIR/its file name", "-j N", "--scheduler ADDRESS", "never overwritten",
                  "two inputs of one name, or an output that would be an input, are refused"):
        assert words in text, words
