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


def test_the_hint_runs_vfudissect_the_way_it_can_be_run_from_here(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import os

    from vfudissect.demo.runner import command_hint

    here = os.path.join(os.path.dirname(sys.executable), "vfudissect")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # not activated: the script's own path, and how to activate
    cmd, how = command_hint()
    assert os.path.samefile(cmd, here) and "bin/activate` first to have `vfudissect` on PATH" in how
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + ":/usr/bin")  # activated: plain vfudissect
    assert command_hint() == ("vfudissect", "")


def test_outside_a_checkout_the_demo_names_no_plugin_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = subprocess.run([sys.executable, "-m", "vfudissect", "demo", "-o", str(tmp_path / "caps")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    tail = p.stdout[p.stdout.index("Decode them here"):]
    assert "plugins/vfio_user.lua" not in tail and "lua --install), then `wireshark FILE`" in tail
