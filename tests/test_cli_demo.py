"""`vfudissect demo` on the command line: its help names what it writes; a bad option is one line, exit 2."""

from __future__ import annotations

import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vfudissect", *args], capture_output=True, text=True, timeout=60)


def test_help_names_the_captures_it_writes() -> None:
    p = run("demo", "--help")
    assert p.returncode == 0 and "demo-faults.pcapng" in p.stdout and "--out-dir" in p.stdout


def test_a_timeout_the_late_reply_would_not_exceed_is_refused_in_one_line() -> None:
    p = run("demo", "--timeout", "6")
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.count("\n") == 1 and "--timeout" in p.stderr and "Traceback" not in p.stderr


def test_an_unwritable_output_directory_is_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "file").write_text("x")
    p = run("demo", "-o", str(tmp_path / "file" / "sub"))
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert "vfudissect: error: demo:" in p.stderr and "file" in p.stderr
