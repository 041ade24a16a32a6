"""Command-line entry point: argparse subcommands, exit codes, and the offline `read` / `stats` / `import`.

Exit status: 0 clean, 1 findings at or above --fail-on, 2 unusable input or usage error.
"""

from __future__ import annotations

import argparse
import io
import importlib
import json
import os
import sys
import time
from typing import BinaryIO, Iterator, TextIO

from . import __version__, batch, spec
from .analysis import PartResult, ViewOptions, read_part
from .inputs import CaptureSet, InputError, captures
from .stats import BY_CHOICES, Breakdown, Stats
from .core import findings

EXIT_OK, EXIT_FINDINGS, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3

# Subcommands living in their own modules: each exposes add_parser(subparsers).
SUBCOMMAND_MODULES = ["cli_annotate", "cli_record", "cli_serve", "cli_client", "cli_lua", "cli_demo", "cli_replay"]


class UsageError(Exception):
    pass


def use_color(choice: str, stream: TextIO) -> bool:
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    return stream.isatty() and os.environ.get("TERM") != "dumb"


class Progress:
    """A progress bar on stderr, shown only when stderr is a terminal and the file is big."""

    def __init__(self, path: str, enabled: bool) -> None:
        self.total = 0
        self.done = 0
        self.enabled = False
        self._last = 0.0
        self._t0 = time.monotonic()
        if enabled and path != "-" and sys.stderr.isatty():
            try:
                self.total = os.path.getsize(path)
            except OSError:
                self.total = 0
            self.enabled = self.total > 4 << 20

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self._last > 0.1:
            self._last = now
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            rate = self.done / max(now - self._t0, 1e-6) / 1e6
            sys.stderr.write(f"\r[{bar:<30}] {frac * 100:5.1f}% {self.done / 1e6:8.1f} MB {rate:6.1f} MB/s")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 72 + "\r")
            sys.stderr.flush()


# ----------------------------------------------------------------- filters
class Filter:
    """Selection by command, connection, direction, finding code and severity."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.commands = _parse_commands(args.command) if args.command else None
        self.conns = set(args.conn) if args.conn else None
        self.dir = args.dir
        self.codes = {c.upper() for c in args.finding} if args.finding else None
        if self.codes:
            bad = self.codes - set(findings.CATALOGUE)
            if bad:
                raise UsageError(f"unknown finding code(s): {', '.join(sorted(bad))} (see `vfudissect codes`)")
        self.min_sev = findings.SEVERITY_RANK[args.severity] if args.severity else None

    @property
    def active(self) -> bool:
        return any(x is not None for x in (self.commands, self.conns, self.dir, self.codes, self.min_sev))


def _parse_commands(values: list[str]) -> set[int]:
    out: set[int] = set()
    by_name = {info.name: code for code, info in spec.COMMANDS.items()}
    for v in values:
        for part in v.split(","):
            p = part.strip().upper().removeprefix("VFIO_USER_")
            if not p:
                continue
            if p.isdigit():
                out.add(int(p))
            elif p in by_name:
                out.add(by_name[p])
            else:
                matches = [code for name, code in by_name.items() if p in name]
                if not matches:
                    raise UsageError(f"unknown command {part!r}; known: {', '.join(by_name)}")
                out.update(matches)
    return out


# ----------------------------------------------------------------- read
def view_options(args: argparse.Namespace, stream: bool = False) -> ViewOptions:
    flt = Filter(args)
    return ViewOptions(json=args.json, verbose=args.verbose, color=use_color(args.color, sys.stdout),
                       timeout=args.timeout, stored=args.stored,
                       commands=frozenset(flt.commands) if flt.commands is not None else None,
                       conns=frozenset(flt.conns) if flt.conns is not None else None, dir=flt.dir,
                       codes=frozenset(flt.codes) if flt.codes is not None else None, min_severity=flt.min_sev,
                       stream=stream)


def _sets(args: argparse.Namespace) -> list[CaptureSet]:
    try:
        return captures(args.files)
    except InputError as exc:
        raise UsageError(str(exc)) from None


def _label(path: str) -> str:
    return "<stdin>" if path == "-" else path


def _buffered_stdout() -> None:
    """Text to stdout in 8 KiB writes, not one write(2) per line as with PYTHONUNBUFFERED=1 (set in many container
    images): a line view of a million messages made a million system calls.  Where a line must go out at once
    (``read -`` on a live pipe, a terminal), the view flushes it."""
    if isinstance(sys.stdout, io.TextIOWrapper) and sys.stdout.write_through and not sys.stdout.isatty():
        sys.stdout.reconfigure(write_through=False)


def cmd_read(args: argparse.Namespace) -> int:
    sets = _sets(args)
    parts = [(cs, p) for cs in sets for p in cs.parts]
    opts = view_options(args, stream=any(p == "-" for _cs, p in parts))
    _buffered_stdout()
    out = sys.stdout
    write = out.write
    color = opts.color
    merged = Stats()
    usable = False
    worst, shown = -1, 0
    conns: set[int] = set()
    errors: list[str] = []
    notes: list[str] = []
    try:
        with _pool(args, [p for _cs, p in parts]) as pool:
            for cs, res in _read_results(args, parts, opts, pool):
                if res.error:
                    errors.append(res.error)
                if res.unusable:
                    continue
                usable = True
                merged.merge(res.stats, cs.name if len(sets) > 1 else None)
                worst, shown = max(worst, res.worst), shown + res.shown
                conns |= res.conns
                notes += res.notes
        missing = sorted(set(opts.conns) - conns) if opts.conns is not None and usable else []
        if usable and not opts.json and not args.quiet_summary and not missing:  # a --conn that is not there: the
            write("\n" + merged.render(color) + "\n")  # error alone, no summary of what was not asked for
            if opts.filtering:
                write(f"  ({shown} of {merged.messages} messages shown)\n")
        out.flush()
    except BrokenPipeError:
        return _broken_pipe()
    for n in notes:
        _note_line(n)
    if missing:
        have = ", ".join(f"#{c}" for c in sorted(conns)) or "none"
        errors.append(f"no connection {', '.join(f'#{c}' for c in missing)} in "
                      f"{', '.join(_label(p) for _cs, p in parts)} (its connections: {have})")
    for e in errors:
        _err_line(e)
    if errors:
        return EXIT_BAD_INPUT
    fail_rank = None if args.fail_on == "never" else findings.SEVERITY_RANK[args.fail_on]
    if fail_rank is not None and worst >= fail_rank:
        return EXIT_FINDINGS
    return EXIT_OK


def _read_results(args: argparse.Namespace, parts: list[tuple[CaptureSet, str]], opts: ViewOptions,
                  pool: batch.Pool) -> Iterator[tuple[CaptureSet, PartResult]]:
    """Each part read and shown, in order: here as it is read, or as each worker's text comes back in turn."""
    out = sys.stdout
    write = out.write
    heading = len(parts) > 1 and not opts.json
    if pool.local:
        for cs, path in parts:
            if heading:
                write(_heading(path, opts.color) + "\n")
            progress = Progress(path, not args.no_progress)
            try:
                res = read_part(path, opts, write, label=_label(path), progress=progress, flush=out.flush)
            finally:
                progress.close()
            yield cs, res
        return
    full = [batch.absolute(p) for _cs, p in parts]
    calls = [(f, opts, None, _label(p)) for f, (_cs, p) in zip(full, parts)]
    done = batch.FilesDone("read", len(parts), not args.no_progress)
    try:
        for f, (cs, path), r in zip(full, parts, pool.map(read_part, calls, [p for _cs, p in parts], done)):
            res = batch.lost_part(r) if isinstance(r, batch.Lost) else batch.relabel(r, f, path)
            done.close()
            if heading:
                write(_heading(path, opts.color) + "\n")
            for line in res.output:
                write(line)
            res.output.clear()
            yield cs, res
    finally:
        done.close()


class _pool:
    """The batch pool of `read`/`stats` -j and --scheduler as a context manager; its refusals are usage errors."""

    def __init__(self, args: argparse.Namespace, paths: list[str]) -> None:
        try:
            self.pool = batch.Pool(args.jobs, args.scheduler, len(paths))
        except batch.BatchError as exc:
            raise UsageError(str(exc)) from None
        if self.pool.remote and "-" in paths:
            raise UsageError("standard input (-) cannot be handed to Dask workers: give capture files with "
                             "-j/--scheduler, or read stdin without them")

    def __enter__(self) -> batch.Pool:
        try:
            return self.pool.__enter__()
        except batch.BatchError as exc:
            raise UsageError(str(exc)) from None

    def __exit__(self, *exc: object) -> None:
        self.pool.__exit__()


def _heading(path: str, color: bool) -> str:
    text = f"━━ {_label(path)}"
    return f"\033[1m{text}\033[0m" if color else text


def _note_line(msg: str) -> None:
    sys.stderr.write(f"vfudissect: note: {msg}\n")


def _broken_pipe() -> int:
    try:
        sys.stdout = open(os.devnull, "w")
    except OSError:
        pass
    return EXIT_OK


def _err_line(msg: str) -> None:
    prog = "vfudissect"
    sys.stderr.write(f"{prog}: error: {msg}\n")


# ----------------------------------------------------------------- stats
def cmd_stats(args: argparse.Namespace) -> int:
    sets = _sets(args)
    parts = [(cs, p) for cs in sets for p in cs.parts]
    merged = Stats()
    per_capture: dict[str, Stats] = {}  # --by file|connection: each capture on its own, in input order
    usable = False
    errors: list[str] = []
    with _pool(args, [p for _cs, p in parts]) as pool:
        table = None
        if args.parquet:
            try:
                from .rows import ParquetOut

                table = ParquetOut(args.parquet)
            except batch.BatchError as exc:
                raise UsageError(str(exc)) from None
        try:
            results = batch.stats_results([p for _cs, p in parts], pool, args.timeout, rows=table is not None,
                                          progress=lambda path: Progress(path, not args.no_progress),
                                          done=batch.FilesDone("stats", len(parts), not args.no_progress))
            for (cs, _path), outcome in zip(parts, results):
                res = outcome.result
                if res.error:
                    errors.append(res.error)
                if table is not None:
                    table.add(outcome.rows)
                if not res.unusable:
                    usable = True
                    merged.merge(res.stats, cs.name if len(sets) > 1 else None)
                    if args.by in ("file", "connection"):
                        per_capture.setdefault(cs.name, Stats()).merge(res.stats)
        except BaseException:
            if table is not None:
                table.abandon()
            raise
        if table is not None:
            if usable:
                try:
                    table.close()
                except batch.BatchError as exc:
                    raise UsageError(str(exc)) from None
                sys.stderr.write(f"{args.parquet}: {table.rows} messages\n")
            else:
                table.abandon()
    try:
        if usable:
            color = use_color(args.color, sys.stdout)
            if args.by:
                bd = Breakdown(args.by, [(_label(name), st) for name, st in per_capture.items()], merged)
                text = json.dumps(bd.to_json(), indent=2) if args.json else bd.render(color)
            else:
                text = json.dumps(merged.to_json(), indent=2) if args.json else merged.render(color)
            sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        return _broken_pipe()
    for e in errors:
        _err_line(e)
    if errors:
        return EXIT_BAD_INPUT
    fail_rank = None if args.fail_on == "never" else findings.SEVERITY_RANK[args.fail_on]
    worst = max((findings.SEVERITY_RANK[s] for s, n in merged.severities.items() if n), default=-1)
    return EXIT_FINDINGS if fail_rank is not None and worst >= fail_rank else EXIT_OK


# ----------------------------------------------------------------- import
def cmd_import(args: argparse.Namespace) -> int:
    """A transcript (or a sockdump pcap) into a capture, all or nothing: the capture appears only when complete."""
    from .capture.transcript import TranscriptError, write_judged

    if (args.sockdump is None) == (args.transcript is None):
        raise UsageError("import takes a transcript (.jsonl) or --sockdump FILE, one of them")
    if args.sockdump is not None:
        return _import_sockdump(args)
    src, dst = args.transcript, args.write
    try:
        fin = sys.stdin if src == "-" else open(src, encoding="utf-8")
    except IsADirectoryError:
        raise UsageError(f"cannot read {src}: it is a directory, not a transcript") from None
    except OSError as exc:
        raise UsageError(f"cannot read {src}: {exc.strerror}") from None
    with _all_or_nothing(dst, getattr(args, "group_read", False)) as out:
        try:
            n = write_judged(fin, out, src, flush=dst == "-", timeout=args.timeout)
        except TranscriptError as exc:
            raise UsageError(str(exc)) from None
    if dst != "-":
        sys.stderr.write(f"{dst}: {n} records\n")
    return EXIT_OK


def _import_sockdump(args: argparse.Namespace) -> int:
    """`import --sockdump FILE`: a sockdump --format pcap capture as a judged capture, all or nothing."""
    from .capture.reader import CaptureError
    from .capture.sockdump import write_judged as write_sockdump

    src, dst = args.sockdump, args.write
    try:
        fin = sys.stdin.buffer if src == "-" else open(src, "rb")
    except IsADirectoryError:
        raise UsageError(f"cannot read {src}: it is a directory, not a capture") from None
    except OSError as exc:
        raise UsageError(f"cannot read {src}: {exc.strerror}") from None
    try:
        with _all_or_nothing(dst, args.group_read) as out:
            try:
                n = write_sockdump(fin, out, src, flush=dst == "-", timeout=args.timeout)
            except CaptureError as exc:
                raise UsageError(str(exc)) from None
    finally:
        if fin is not sys.stdin.buffer:
            fin.close()
    if dst != "-":
        sys.stderr.write(f"{dst}: {n} records\n")
    return EXIT_OK


class _all_or_nothing:
    """A capture that appears in its place only once complete (capture/files.py's StagedOutput), errors as usage
    errors."""

    def __init__(self, path: str, group_read: bool = False) -> None:
        from .capture.files import StagedOutput

        self.staged = StagedOutput(path, group_read)

    def __enter__(self) -> BinaryIO:
        try:
            return self.staged.open()
        except OSError as exc:
            raise UsageError(f"cannot write {self.staged.path}: {exc.strerror or exc}") from None

    def __exit__(self, kind, exc, tb) -> None:  # type: ignore[no-untyped-def]
        if kind is not None:
            self.staged.discard()
            return
        try:
            self.staged.commit()
        except OSError as e:
            raise UsageError(f"cannot write {self.staged.path}: {e.strerror or e}") from None


def cmd_codes(args: argparse.Namespace) -> int:
    if args.json:
        for f in findings.CATALOGUE.values():
            print(json.dumps({"finding": f.code, "severity": f.severity, "group": f.group, "title": f.title,
                              "basis": f.basis, "doc": f.doc}))
        return EXIT_OK
    for f in findings.CATALOGUE.values():
        print(f"{f.code:<30} {f.severity:<8} {f.title}")
    return EXIT_OK


# ----------------------------------------------------------------- parser
def seconds(text: str) -> float:
    """A duration in seconds: 0 or more (argparse type)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= v < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: must be 0 (off) or a positive number of seconds")
    return v


def _common_analysis(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="CAPTURE",
                   help="captures (pcapng or pcap written by vfudissect; - for stdin), globs or directories; a "
                        "rotated capture (FILE, FILE-2, ...) is read as one, in order")
    p.add_argument("--timeout", type=seconds, default=spec.DEFAULT_REPLY_TIMEOUT, metavar="SECONDS",
                   help="REPLY_TIMEOUT threshold (default %(default)s s, QEMU's x-msg-timeout; 0 disables)")
    p.add_argument("--fail-on", choices=["note", "warning", "error", "never"], default="error",
                   help="exit 1 when findings of this severity or worse exist (default %(default)s)")
    p.add_argument("--color", choices=["auto", "always", "never"], default="auto",
                   help="colour the output (default: when it is a terminal)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _parallel(p: argparse.ArgumentParser) -> None:
    p.add_argument("-j", "--jobs", default="1", metavar="N", help=batch.JOBS_HELP)
    p.add_argument("--scheduler", metavar="ADDRESS", help=batch.SCHEDULER_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vfudissect",
        description="Dissect, record and analyze vfio-user traffic (QEMU vfio-user-pci <-> device servers).",
        epilog="Exit status: 0 clean, 1 findings at or above --fail-on, 2 unusable input or usage error,\n"
               "3 an internal error (a bug: said in one line; please report it).\n"
               "Examples:\n"
               "  vfudissect read captures/qemu-10.2-gpio-pci-idio-16.pcapng\n"
               "  vfudissect read --json --finding ERROR_REPLY capture.pcapng | jq .\n"
               "  vfudissect stats capture.pcapng\n"
               "  vfudissect record --listen /tmp/proxy.sock --connect /run/dev.sock -w dev.pcapng\n"
               "  vfudissect lua --install",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"vfudissect {__version__}")
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND")

    p = sub.add_parser("read", help="decode a capture, one line per message, findings inline",
                       description="Decode a capture like tshark: one line per message (frame, time, connection, "
                                   "direction, command, id, size, fds, key fields, links to the request/reply "
                                   "and response time) with findings on the lines they concern and a summary.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _common_analysis(p)
    p.add_argument("-V", "--verbose", action="store_true", help="print the full decode tree of each message")
    p.add_argument("--json", action="store_true",
                   help="JSON Lines: one object per message and one per finding (keys documented in README)")
    p.add_argument("-c", "--command", action="append", metavar="CMD",
                   help="only these commands (name, substring or number; repeat or comma-separate)")
    p.add_argument("--conn", action="append", type=int, metavar="N", help="only connection N (repeatable)")
    p.add_argument("--dir", choices=["c2s", "s2c"], help="only one direction")
    p.add_argument("-f", "--finding", action="append", metavar="CODE",
                   help="only messages with this finding code (repeatable)")
    p.add_argument("-s", "--severity", choices=["note", "warning", "error"],
                   help="only messages/findings of this severity or worse")
    p.add_argument("--quiet-summary", action="store_true", help="no summary at the end")
    p.add_argument("--stored", action="store_true",
                   help="show the findings stored in the capture (what its writer's engine said) instead of "
                        "judging it afresh; without it, a line on stderr says when the two differ")
    _parallel(p)
    p.set_defaults(func=cmd_read)

    p = sub.add_parser("stats", help="response-time table, errors, fds and findings per connection",
                       description="Per-command response times (count, min, mean, p50, p99, max; p50 and p99 "
                                   "are nearest-rank percentiles, to 1 percent), errors by errno, fds by kind and "
                                   "findings by code, per connection and overall, over one capture or many. "
                                   "Each part of each capture is analysed on its own and the figures merge "
                                   "exactly, so -j N (or --scheduler) prints what one process prints.",
                       epilog="Exit status: 0 clean, 1 findings at or above --fail-on, 2 unusable input (each\n"
                              "file that could not be read, or whose worker died, is named in one line; the\n"
                              "others still count) or a usage error.\n"
                              "Examples:\n"
                              "  vfudissect stats runs/                         # every capture under runs/, merged\n"
                              "  vfudissect stats -j 2 'host-*.pcapng'          # two worker processes\n"
                              "  vfudissect stats --by file runs/               # one row per capture, and totals\n"
                              "  vfudissect stats --scheduler tcp://scheduler.example:8786 /shared/runs/\n"
                              "  vfudissect stats --parquet msgs.parquet runs/  # one row per message, for pandas/DuckDB",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _common_analysis(p)
    p.add_argument("--json", action="store_true", help="print the statistics (or the --by table) as one JSON "
                                                      "document")
    p.add_argument("--by", choices=BY_CHOICES,
                   help="instead of the full report, one row per capture (file: a rotated capture is one row), "
                        "per connection (CAPTURE#N) or per command, then a totals row: connections, messages, "
                        "bytes, requests, replies, errno replies, p50/p99/max response time, findings by "
                        "severity (per command: the response-time table)")
    p.add_argument("--parquet", metavar="OUT",
                   help="also write one row per message to the Parquet file OUT (file, connection, frame, time, "
                        "direction, type, command, msg_id, size, error, response_time, findings), for pandas "
                        "or DuckDB; it appears only once complete (needs the parquet extra: "
                        f"{batch.PARQUET_HINT})")
    _parallel(p)
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("import", help="turn a relay transcript (JSON Lines) into a pcapng capture",
                       description="Convert a transcript as in shared/captures (one JSON object per message: "
                                   "t, conn, dir, data hex, fds) into a VFUC pcapng capture.")
    p.add_argument("transcript", nargs="?", help="the .jsonl transcript (- for stdin)")
    p.add_argument("--sockdump", metavar="FILE",
                   help="a capture of sockdump (github.com/mechpen/sockdump, --format pcap; - for stdin) to import "
                        "instead of a transcript: it sees bytes, not fds or closes, and says so in the capture")
    p.add_argument("-w", "--write", required=True, metavar="FILE", help="capture to write (- for stdout)")
    p.add_argument("--timeout", type=seconds, default=spec.DEFAULT_REPLY_TIMEOUT, metavar="SECONDS",
                   help="REPLY_TIMEOUT threshold of the verdicts recorded in the capture (default %(default)s s)")
    from .capture.files import GROUP_READ_HELP

    p.add_argument("-g", "--group-read", action="store_true", help=GROUP_READ_HELP)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("codes", help="list the finding codes with their severity",
                       description="Every finding code the analysis can raise: severity, Wireshark expert group "
                                   "and one line (docs/findings.md documents each, with an example).")
    p.add_argument("--json", action="store_true",
                   help="JSON Lines: one object per code (finding, severity, group, title, basis, doc)")
    p.set_defaults(func=cmd_codes)

    for name in SUBCOMMAND_MODULES:
        try:
            mod = importlib.import_module(f".{name}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(name):
                continue
            raise
        mod.add_parser(sub)
    return parser


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # said by the subcommand that was given them: "vfudissect stats: error: unrecognized arguments: ..."
        chosen = _subparsers(parser).get(getattr(args, "cmd", None) or "", parser)
        chosen.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        _err_line(str(exc))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _broken_pipe()
    except Exception as exc:  # noqa: BLE001 - a bug: one line, not a traceback, after all output so far
        sys.stdout.flush()
        _err_line(f"internal error ({type(exc).__name__}: {exc}); everything above stands; please report it "
                  "with the input that caused it (VFUDISSECT_TRACEBACK=1 shows where)")
        if os.environ.get("VFUDISSECT_TRACEBACK"):
            raise
        return EXIT_INTERNAL
