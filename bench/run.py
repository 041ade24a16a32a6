#!/usr/bin/env python3
"""Run every benchmark in bench/ and print the tables bench/README.md shows, each under a heading.

    .venv/bin/python bench/run.py               # full run: the settings bench/README.md's figures come from
    .venv/bin/python bench/run.py --quick       # short run (under a minute): the same tables, small workloads
    .venv/bin/python bench/run.py stats lua     # only these (NAME as in bench/NAME_bench.py)

`make bench` runs the full one.  Every bench/*_bench.py is a benchmark.  The
ones this runner knows get the README's settings and their output reshaped
into the README's table (lines the table does not hold, ratios and notes,
follow it); any other is run with its own defaults (plus --quick when it
accepts one) and its output shown as it is.  A benchmark whose tool is
missing (tshark) is skipped with a line saying so; one that only loses a row
without it (the tshark baseline, the C relay) says which row.  Progress from
the benchmarks goes to stderr as they print it.  Exit status 1 when a
benchmark failed, else 0.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"  # where the benchmarks leave their generated captures


# ------------------------------------------------------------ what a benchmark is
@dataclass(frozen=True)
class Requirement:
    """A tool a benchmark (or one of its rows) needs, how to tell it is there, and what to say when not."""

    present: Callable[[], bool]
    missing: str


@dataclass(frozen=True)
class Run:
    """One invocation of a benchmark: its arguments for the full and the quick run, a subheading if several."""

    full: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()
    title: str = ""


@dataclass(frozen=True)
class Table:
    """A benchmark's output reshaped: the README table's lines, then the lines the table does not hold."""

    rows: tuple[str, ...]
    rest: tuple[str, ...]


@dataclass(frozen=True)
class Benchmark:
    """A bench/NAME_bench.py script: heading, runs, what it needs, and how its output becomes the README table."""

    name: str
    title: str
    runs: tuple[Run, ...]
    table: Callable[[str], Table]
    needs: tuple[Requirement, ...] = ()  # skipped without these
    wants: tuple[Requirement, ...] = ()  # runs without these, a row short

    @property
    def script(self) -> Path:
        return HERE / f"{self.name}_bench.py"


def have(*programs: str) -> Callable[[], bool]:
    return lambda: any(shutil.which(p) for p in programs)


TSHARK = Requirement(have("tshark"), "tshark is not installed (`make tshark` installs it)")
CC = Requirement(have("cc", "gcc"), "no C compiler (cc or gcc)")


# ------------------------------------------------------------ output -> README tables
def markdown(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> tuple[str, ...]:
    if not rows:
        return ()
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return tuple(lines + ["| " + " | ".join(r) + " |" for r in rows])


def reshape(out: str, parse: Callable[[str], tuple[str, ...] | None],
            head: tuple[str, ...]) -> Table:
    """Rows from the lines `parse` recognises, every other non-empty line kept as it is."""
    rows: list[tuple[str, ...]] = []
    rest: list[str] = []
    for line in out.splitlines():
        row = parse(line)
        if row is not None:
            rows.append(row)
        elif line.strip():
            rest.append(line)
    return Table(markdown(head, rows), tuple(rest))


def as_printed(out: str) -> Table:
    """A benchmark this runner knows nothing about, or one printing its table itself: its output as it is."""
    return Table((), tuple(line for line in out.splitlines() if line.strip()))


def capture_size(n: int) -> str:
    path = OUT / f"stats-{n}.pcapng"
    if not path.exists():
        return ""
    mb = path.stat().st_size / 1e6
    return f" ({mb:.0f} MB)" if mb >= 10 else f" ({mb:.1f} MB)"


def tshark_version() -> str:
    try:
        words = subprocess.run(["tshark", "--version"], capture_output=True, text=True).stdout.split()
    except OSError:
        return ""
    return words[2] if len(words) > 2 else ""


_STATS = re.compile(r"vfudissect stats\s+(\d+) msgs\s+([\d.]+) s\s+([\d,]+) msg/s\s+peak RSS (\d+) MB")
_STATS_TSHARK = re.compile(r"tshark \+ Lua plugin\s+(\d+) msgs\s+([\d.]+) s\s+([\d,]+) msg/s")


def stats_row(line: str) -> tuple[str, ...] | None:
    if m := _STATS.fullmatch(line.strip()):
        n = int(m[1])
        return (f"{n:,} messages{capture_size(n)}", "vfudissect stats", f"{m[2]} s", m[3], f"{m[4]} MB")
    if m := _STATS_TSHARK.fullmatch(line.strip()):
        n = int(m[1])
        return (f"{n:,} messages{capture_size(n)}",
                f"tshark {tshark_version()} + `plugins/vfio_user.lua` (`-T fields -e vfio_user.command`)",
                f"{m[2]} s", m[3], "—")
    return None


_RECORDER = re.compile(r"(.+?)\s+([\d.]+) µs/message")
RECORDER_LABELS = {"+ live view -q (findings only)": "+ live view `-q`"}


def recorder_row(line: str) -> tuple[str, ...] | None:
    if m := _RECORDER.fullmatch(line.strip()):
        return (RECORDER_LABELS.get(m[1], m[1]), f"{float(m[2]):.1f} µs")
    return None


_LUA = re.compile(r"(.+?)\s+([\d.]+) s\s+(\d+) messages/s")
LUA_LABELS = {
    "no plugin: -e frame.number": "`tshark -T fields -e frame.number`, no plugin (baseline)",
    "plugin, one pass: -e vfio_user.command":
        "`tshark -X lua_script:plugins/vfio_user.lua -T fields -e vfio_user.command`",
    "plugin, -2: -e vfio_user.command": "same with `-2` (links to later frames, REPLY_TIMEOUT/NO_REPLY on requests)",
    "plugin, -2, summary lines (Info column)": "`tshark -2 -X lua_script:…` summary lines (Info column, no `-T fields`)",
}


def lua_row(line: str) -> tuple[str, ...] | None:
    if m := _LUA.fullmatch(line.strip()):
        return (LUA_LABELS.get(m[1], m[1]), f"{float(m[2]):.2f} s", f"{int(m[3]):,}")
    return None


# ------------------------------------------------------------ the benchmarks, in bench/README.md's order
KNOWN = (
    Benchmark("stats", "`vfudissect stats` — `bench/stats_bench.py`",
              (Run(("-n", "1000000"), ("-n", "20000")),),
              lambda out: reshape(out, stats_row, ("capture", "tool", "time", "messages/s", "peak RSS")),
              wants=(Requirement(TSHARK.present, "tshark is not installed: no tshark + Lua baseline row"),
                     Requirement((ROOT / "plugins" / "vfio_user.lua").exists,
                                 "plugins/vfio_user.lua is missing (`make lua` writes it): no tshark + Lua "
                                 "baseline row"))),
    Benchmark("proxy", "`vfudissect record` — `bench/proxy_bench.py`",
              (Run(("--markdown",), ("--markdown", "--blocks", "4", "--scale", "0.1"),
                   "processes where the scheduler puts them"),
               Run(("--markdown", "--pin", "0"), ("--markdown", "--pin", "0", "--blocks", "4", "--scale", "0.1"),
                   "everything on one CPU (`--pin 0`)")),
              as_printed,  # it prints the README's table itself (--markdown)
              wants=(Requirement(CC.present, "no C compiler (cc or gcc): no C relay row"),)),
    Benchmark("recorder", "Recording cost — `bench/recorder_bench.py`",
              (Run(("--messages", "50000"), ("--messages", "5000")),
               Run(("--messages", "50000", "--base", "4836b6e"), ("--messages", "5000", "--base", "4836b6e", "--repeat",
                                                                   "1"),
                   "against the commit before the one-engine work (4836b6e), alternately")),
              lambda out: reshape(out, recorder_row, ("", "per message"))),
    Benchmark("lua", "Wireshark Lua plugin — `bench/lua_bench.py`",
              (Run(("-n", "200000", "--repeat", "2"), ("-n", "20000", "--repeat", "1")),),
              lambda out: reshape(out, lua_row, ("run", "time", "messages/s")),
              needs=(TSHARK,)),
)


def unknown(script: Path) -> Benchmark:
    """A benchmark added since: its own defaults, --quick if its source offers one, its output as printed."""
    quick = ("--quick",) if '"--quick"' in script.read_text() else ()
    return Benchmark(script.name.removesuffix("_bench.py"), f"`bench/{script.name}`", (Run((), quick),), as_printed)


def discover() -> list[Benchmark]:
    """Every bench/*_bench.py: the known ones in the README's order, then any other by name."""
    present = {p.name.removesuffix("_bench.py"): p for p in sorted(HERE.glob("*_bench.py"))}
    known = [b for b in KNOWN if b.name in present]
    return known + [unknown(p) for name, p in present.items() if name not in {b.name for b in KNOWN}]


# ------------------------------------------------------------ running
def say(*lines: str) -> None:
    for line in lines:
        print(line, flush=True)


def run_once(b: Benchmark, args: tuple[str, ...]) -> tuple[int, str, float]:
    """Exit status, stdout and wall seconds of one run; stderr (progress, errors) goes straight through."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))))
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, str(b.script), *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    return p.returncode, p.stdout, time.perf_counter() - t0


def show(t: Table) -> None:
    say(*t.rows)
    if t.rows and t.rest:
        say("")
    say(*t.rest)


def run_benchmark(b: Benchmark, quick: bool) -> bool:
    """Heading, then each run's table; False when a run failed."""
    say("", f"## {b.title}", "")
    missing = [r.missing for r in b.needs if not r.present()]
    if missing:
        say(f"skipped: {'; '.join(missing)}")
        return True
    notes = [f"note: {r.missing}" for r in b.wants if not r.present()]
    if notes:
        say(*notes, "")
    ok = True
    for r in b.runs:
        args = r.quick if quick else r.full
        if r.title:
            say(f"### {r.title}", "")
        say(f"`{Path(sys.executable).name} bench/{b.script.name}{''.join(' ' + a for a in args)}`", "")
        code, out, secs = run_once(b, args)
        show(b.table(out))
        if code:
            say(f"FAILED: bench/{b.script.name} exited with status {code} (its messages are above, on stderr)")
            ok = False
        say("", f"({secs:.0f} s)", "")
    return ok


def machine() -> str:
    load = f", load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    return f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}{load}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small workloads: a short run, the same tables")
    ap.add_argument("names", nargs="*", metavar="NAME", help="only these benchmarks (bench/NAME_bench.py)")
    a = ap.parse_args()
    benches = discover()
    chosen = [b for b in benches if not a.names or b.name in a.names]
    unknown_names = sorted(set(a.names) - {b.name for b in benches})
    if unknown_names:
        ap.error(f"no such benchmark: {', '.join(unknown_names)} (there are: {', '.join(b.name for b in benches)})")
    kind = "quick run (small workloads)" if a.quick else \
        "full run (the settings of bench/README.md's figures; this takes a while, --quick for a short run)"
    say(f"# Benchmarks: {kind}", "", machine())
    failed = [b.name for b in chosen if not run_benchmark(b, a.quick)]
    if failed:
        say(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
