"""Command-line entry point: argparse subcommands, exit codes, and the offline `read` / `stats` / `import`.

Exit status: 0 clean, 1 findings at or above --fail-on, 2 unusable input or usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import sys
import time
from typing import Callable, Iterator, TextIO

from . import __version__, spec
from .capture.reader import CaptureError, open_capture
from .core.analyzer import Analyzer, AnalyzerConfig
from .core.events import Event, FindingIn, MessageIn, VerdictsIn
from .core.verdicts import VerdictDiff, stored_finding
from .core.records import ConnRecord, Finding, Item, MessageRecord
from .core.sequencer import Sequencer
from .render import Renderer, finding_json, message_json
from .stats import Stats
from .core import findings

EXIT_OK, EXIT_FINDINGS, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3

# Subcommands living in their own modules: each exposes add_parser(subparsers).
SUBCOMMAND_MODULES = ["cli_annotate", "cli_record", "cli_serve", "cli_lua", "cli_demo"]


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


def analyze_batches(events: Iterator[Event], config: AnalyzerConfig) -> Iterator[list[Item]]:
    """Drive the engine over events: one list of records and findings per event, then the end-of-capture ones."""
    an = Analyzer(config)
    feed = an.feed
    last = 0.0
    for ev in events:
        if ev.ts:
            last = ev.ts
        yield feed(ev)
    yield an.finish(last)


def analyze(events: Iterator[Event], config: AnalyzerConfig) -> Iterator[Item]:
    """Every record and finding of the events, flattened."""
    for batch in analyze_batches(events, config):
        yield from batch


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

    def finding_ok(self, f: Finding) -> bool:
        if self.conns is not None and f.conn not in self.conns:
            return False
        if self.codes is not None and f.code not in self.codes:
            return False
        if self.min_sev is not None and findings.SEVERITY_RANK[f.severity] < self.min_sev:
            return False
        return True

    def record_ok(self, r: MessageRecord) -> bool:
        if self.commands is not None and r.command not in self.commands:
            return False
        if self.conns is not None and r.conn not in self.conns:
            return False
        if self.dir is not None and r.dir != self.dir:
            return False
        if self.codes is not None and not self.codes.intersection(r.findings):
            return False
        if self.min_sev is not None and not any(
                findings.SEVERITY_RANK[findings.CATALOGUE[c].severity] >= self.min_sev for c in r.findings):
            return False
        return True


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
def cmd_read(args: argparse.Namespace) -> int:
    flt = Filter(args)
    out = sys.stdout
    color = use_color(args.color, out)
    r = Renderer(color)
    stats = Stats()
    seq = Sequencer(hold=args.stored)
    progress = Progress(args.file, not args.no_progress)
    fail_rank = None if args.fail_on == "never" else findings.SEVERITY_RANK[args.fail_on]
    worst = -1
    shown = 0
    last_line = [-1]  # frame of the last record line printed: a finding about another frame says which
    raw: dict[tuple[int, int], bytes] = {}  # (conn, frame) -> message bytes, for -V, until printed
    pending_conn: dict[int, bool] = {}
    events: Iterator[Event] = open_capture(args.file, progress)
    if args.verbose:
        events = _stash_messages(events, raw)
    diff = VerdictDiff()
    stored: list[Finding] = []  # stored verdicts read with the last event (--stored shows them)
    events = _tap_verdicts(events, diff, stored if args.stored else None)
    error: CaptureError | None = None
    write = out.write

    def emit(items: list[Item]) -> None:
        nonlocal worst, shown
        for it in items:
            if isinstance(it, MessageRecord):
                ok = flt.record_ok(it)
                pending_conn[it.frame] = ok
                if not ok:
                    continue
                shown += 1
                last_line[0] = it.frame
                if args.json:
                    write(json.dumps(message_json(it)) + "\n")
                else:
                    write(r.message_line(it) + "\n")
                    if args.verbose:
                        write(decode_tree(raw.pop((it.conn, it.frame), b""), it) + "\n")
            elif isinstance(it, Finding):
                # shown when it passes the finding filters and the message it is about was shown
                if not flt.finding_ok(it) or not pending_conn.get(it.frame, True):
                    continue
                rank = findings.SEVERITY_RANK[it.severity]
                worst = max(worst, rank)
                if args.json:
                    write(json.dumps(finding_json(it)) + "\n")
                else:
                    write(r.finding_line(it, standalone=it.frame != last_line[0]) + "\n")
            elif isinstance(it, ConnRecord) and not args.json and not flt.active:
                last_line[0] = it.frame
                write(r.conn_line(it) + "\n")

    try:
        for batch in analyze_batches(_guard(events, _set_error), AnalyzerConfig(timeout=args.timeout)):
            if args.stored:  # the verdicts the capture carries instead of the engine's
                batch = [_without_codes(it) if type(it) is MessageRecord and it.findings else it
                         for it in batch if type(it) is not Finding] + stored
                stored.clear()
            else:
                for it in batch:
                    if type(it) is Finding:
                        diff.add_fresh(it)
            for it in batch:
                stats.add(it)
                if r.base_ts is None and it.ts:
                    r.base_ts = it.ts  # times are relative to the capture's first record, filtered or not
            emit(seq.push(batch))
            if len(pending_conn) > 100000:
                pending_conn.clear()
        emit(seq.flush())
    except BrokenPipeError:
        return _broken_pipe()
    finally:
        progress.close()
    error = _ERRORS.pop() if _ERRORS else None
    if not args.json and not args.quiet_summary:
        write("\n" + stats.render(color) + "\n")
        if flt.active:
            write(f"  ({shown} of {stats.messages} messages shown)\n")
    out.flush()
    if args.stored and not diff.judged and error is None:
        _note_line(f"{args.file}: the capture carries no stored findings (written before vfudissect 0.2 or by "
                   "another tool); `vfudissect annotate` adds them")
    elif not args.stored and diff.judged and diff.differs() and error is None:
        _note_line(diff.sentence(args.file, args.timeout))
    if error is not None:
        _err_line(str(error))
        return EXIT_BAD_INPUT
    if fail_rank is not None and worst >= fail_rank:
        return EXIT_FINDINGS
    return EXIT_OK


def _tap_verdicts(events: Iterator[Event], diff: VerdictDiff, stored: list[Finding] | None) -> Iterator[Event]:
    """Pass every event on; the stored verdicts go to ``diff`` (and, with --stored, to ``stored``)."""
    for ev in events:
        t = type(ev)
        if t is FindingIn:
            diff.add_stored(ev)  # type: ignore[arg-type]
            if stored is not None:
                stored.append(stored_finding(ev))  # type: ignore[arg-type]
        elif t is VerdictsIn:
            diff.add_header(ev)  # type: ignore[arg-type]
        yield ev


def _without_codes(rec: MessageRecord) -> MessageRecord:
    return rec._replace(findings=())


def _note_line(msg: str) -> None:
    sys.stderr.write(f"vfudissect: note: {msg}\n")


_ERRORS: list[CaptureError] = []


def _set_error(e: CaptureError) -> None:
    _ERRORS.append(e)


def _guard(events: Iterator[Event], on_error: Callable[[CaptureError], None]) -> Iterator[Event]:
    """Stop cleanly at a damaged capture, keeping everything read before it."""
    try:
        yield from events
    except CaptureError as e:
        on_error(e)


def _stash_messages(events: Iterator[Event], raw: dict[tuple[int, int], bytes]) -> Iterator[Event]:
    for ev in events:
        if isinstance(ev, MessageIn):
            raw[(ev.conn, ev.frame)] = ev.data
        yield ev


def decode_tree(data: bytes, rec: MessageRecord) -> str:
    """The full decode tree of one message: scapy's show() of the VfioUser layer, plus its fds."""
    lines = []
    try:
        from .layers import VfioUser

        lines.append(VfioUser(data).show(dump=True).rstrip())
    except Exception as exc:  # a decode tree must never stop the listing
        lines.append(f"    [decode tree unavailable: {type(exc).__name__}: {exc}]")
    for i, fd in enumerate(rec.fds):
        lines.append(f"    fd[{i}]: {fd.kind} size={fd.size} ino={fd.ino}" + (f" {fd.path}" if fd.path else ""))
    return "\n".join("    " + line for line in "\n".join(lines).splitlines())


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
    stats = Stats()
    progress = Progress(args.file, not args.no_progress)
    fail_rank = None if args.fail_on == "never" else findings.SEVERITY_RANK[args.fail_on]
    add = stats.add
    try:
        for it in analyze(_guard(open_capture(args.file, progress), _set_error), AnalyzerConfig(timeout=args.timeout)):
            add(it)
    finally:
        progress.close()
    error = _ERRORS.pop() if _ERRORS else None
    try:
        if args.json:
            sys.stdout.write(json.dumps(stats.to_json(), indent=2) + "\n")
        else:
            sys.stdout.write(stats.render(use_color(args.color, sys.stdout)) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        return _broken_pipe()
    if error is not None:
        _err_line(str(error))
        return EXIT_BAD_INPUT
    worst = max((findings.SEVERITY_RANK[s] for s, n in stats.severities.items() if n), default=-1)
    return EXIT_FINDINGS if fail_rank is not None and worst >= fail_rank else EXIT_OK


# ----------------------------------------------------------------- import
def cmd_import(args: argparse.Namespace) -> int:
    from .capture.transcript import TranscriptError, write_judged

    try:
        fin = sys.stdin if args.transcript == "-" else open(args.transcript)
    except OSError as exc:
        raise UsageError(f"{args.transcript}: {exc.strerror}") from None
    out = sys.stdout.buffer if args.write == "-" else open(args.write, "wb")
    try:
        n = write_judged(fin, out, args.transcript, flush=args.write == "-", timeout=args.timeout)
    except TranscriptError as exc:
        out.close()
        _err_line(str(exc))
        return EXIT_BAD_INPUT
    out.close()
    if args.write != "-":
        sys.stderr.write(f"{args.write}: {n} records\n")
    return EXIT_OK


def cmd_codes(args: argparse.Namespace) -> int:
    if args.json:
        for f in findings.CATALOGUE.values():
            print(json.dumps({"finding": f.code, "severity": f.severity, "group": f.group, "title": f.title,
                              "basis": f.basis}))
        return EXIT_OK
    for f in findings.CATALOGUE.values():
        print(f"{f.code:<30} {f.severity:<8} {f.title}")
    return EXIT_OK


# ----------------------------------------------------------------- parser
def _common_analysis(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="capture file (pcapng or pcap written by vfudissect; - for stdin)")
    p.add_argument("--timeout", type=float, default=spec.DEFAULT_REPLY_TIMEOUT, metavar="SECONDS",
                   help="REPLY_TIMEOUT threshold (default %(default)s s, QEMU's x-msg-timeout; 0 disables)")
    p.add_argument("--fail-on", choices=["note", "warning", "error", "never"], default="error",
                   help="exit 1 when findings of this severity or worse exist (default %(default)s)")
    p.add_argument("--color", choices=["auto", "always", "never"], default="auto",
                   help="colour the output (default: when it is a terminal)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vfudissect",
        description="Dissect, record and analyze vfio-user traffic (QEMU vfio-user-pci <-> device servers).",
        epilog="Exit status: 0 clean, 1 findings at or above --fail-on, 2 unusable input or usage error.\n"
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
    p.set_defaults(func=cmd_read)

    p = sub.add_parser("stats", help="response-time table, errors, fds and findings per connection",
                       description="Per-command response times (count, min, mean, p50, p99, max; percentiles "
                                   "to 1%%), errors by errno, fds by kind and findings by code, per connection "
                                   "and overall.")
    _common_analysis(p)
    p.add_argument("--json", action="store_true", help="print the statistics as one JSON document")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("import", help="turn a relay transcript (JSON Lines) into a pcapng capture",
                       description="Convert a transcript as in shared/captures (one JSON object per message: "
                                   "t, conn, dir, data hex, fds) into a VFUC pcapng capture.")
    p.add_argument("transcript", help="the .jsonl transcript (- for stdin)")
    p.add_argument("-w", "--write", required=True, metavar="FILE", help="capture to write (- for stdout)")
    p.add_argument("--timeout", type=float, default=spec.DEFAULT_REPLY_TIMEOUT, metavar="SECONDS",
                   help="REPLY_TIMEOUT threshold of the verdicts recorded in the capture (default %(default)s s)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("codes", help="list the finding codes with their severity")
    p.add_argument("--json", action="store_true")
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
