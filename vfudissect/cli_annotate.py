"""The `vfudissect annotate` subcommand: rewrite a capture's stored verdicts with the engine's current ones."""

from __future__ import annotations

import argparse
import os
import sys

from . import batch, spec
from .capture.files import GROUP_READ_HELP
from .capture.reader import CaptureError
from .inputs import InputError, captures

EXIT_OK, EXIT_BAD_INPUT = 0, 2


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "annotate", help="re-judge a capture: its stored findings replaced by the engine's, records unchanged",
        description="Read a capture (an older one, one recorded with another --timeout, one written by another "
                    "tool), judge it with the engine, and write it to OUT with the engine's findings as records of "
                    "their own (what Wireshark shows, with or without the vfio-user plugin) in place of the ones it "
                    "carried. Every other record is copied byte for byte; frame numbers in the findings are OUT's. "
                    "IN is never overwritten. OUT is created 0600 (-g: 0640): a capture holds guest memory and the "
                    "peers' credentials. On a damaged capture every record before the damage is written, one "
                    "line says where reading stopped, and the exit status is 2.",
        epilog="Many captures: -o DIR writes each file as DIR/its name (a rotated capture's parts stay parts, each\n"
               "judged on its own as written); the names are checked before anything is written: two inputs of\n"
               "one name, or an output that would be an input, are refused. -j N judges them in N worker\n"
               "processes (a local Dask cluster), --scheduler on an existing one; the lines are the same.\n"
               "Exit status: 0 written, 2 unusable input (damaged, not a capture, IN and OUT the same file; with\n"
               "several, each is named in one line and the others are written) or a usage error.\n"
               "Examples:\n"
               "  vfudissect annotate old.pcapng -w old-judged.pcapng\n"
               "  vfudissect annotate live.pcapng -w - --timeout 0.5 | tshark -r - -q -z expert\n"
               "  vfudissect annotate runs/ -o judged/ -j 2",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="IN",
                   help="capture to judge (- for stdin); with -o DIR, any number of captures, globs and "
                        "directories")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("-w", "--write", metavar="OUT", help="capture to write (- for stdout), for one IN")
    where.add_argument("-o", "--output-dir", metavar="DIR",
                       help="write each IN as DIR/its file name (DIR is created if missing; never an input's "
                            "own place)")
    p.add_argument("--timeout", type=_seconds, default=spec.DEFAULT_REPLY_TIMEOUT, metavar="SECONDS",
                   help="REPLY_TIMEOUT threshold (default %(default)s s, QEMU's x-msg-timeout; 0 disables)")
    p.add_argument("-g", "--group-read", action="store_true", help=GROUP_READ_HELP)
    p.add_argument("-j", "--jobs", default="1", metavar="N",
                   help="with -o DIR: " + batch.JOBS_HELP + " (with -w the one capture is judged here)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="with -o DIR: " + batch.SCHEDULER_HELP + "; the workers write DIR, so it must be theirs too")
    p.set_defaults(func=cmd_annotate)
    return p


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: the timeout must be 0 (off) or a positive number of seconds")
    return v


def _err(msg: str) -> int:
    sys.stderr.write(f"vfudissect: error: {msg}\n")
    return EXIT_BAD_INPUT


def cmd_annotate(args: argparse.Namespace) -> int:
    if args.output_dir is not None:
        return _annotate_many(args)
    if len(args.files) > 1:
        return _err(f"{len(args.files)} captures and one -w OUT: -w writes one capture; -o DIR writes each of "
                    "them as DIR/its name")
    try:
        batch.Pool(args.jobs, args.scheduler, 1)  # its refusals hold here too; one capture runs in this process
    except batch.BatchError as exc:
        return _err(str(exc))
    return _annotate_one(args, args.files[0], args.write)


def _annotate_many(args: argparse.Namespace) -> int:
    """Each part of each capture named to DIR/its name, the names checked first, then judged here or on Dask."""
    out_dir = args.output_dir
    try:
        sets = captures(args.files)
    except InputError as exc:
        return _err(str(exc))
    srcs = [p for cs in sets for p in cs.parts]
    if "-" in srcs:
        return _err("standard input (-) has no file name to write under DIR: annotate it alone with -w OUT")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        return _err(f"-o {out_dir}: not a directory (-w OUT writes one capture)")
    pairs = [(src, os.path.join(out_dir, os.path.basename(src))) for src in srcs]
    seen: dict[str, str] = {}
    for src, dst in pairs:
        if dst in seen:
            return _err(f"{seen[dst]} and {src} would both be written as {dst}: annotate them into different "
                        "directories")
        seen[dst] = src
        if os.path.exists(dst) and os.path.exists(src) and os.path.samefile(src, dst):
            return _err(f"{dst} is the capture being read: annotate never overwrites its input; -o another "
                        "directory")
    try:
        pool = batch.Pool(args.jobs, args.scheduler, len(pairs))
    except batch.BatchError as exc:
        return _err(str(exc))
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        return _err(f"cannot create {out_dir}: {exc.strerror or exc}")
    failed = False
    try:
        with pool:
            for res in batch.annotate_results(pairs, pool, args.timeout, args.group_read):
                if res.error:
                    failed = True
                    _err(res.line)
                else:
                    sys.stderr.write(res.line + "\n")
    except batch.BatchError as exc:
        return _err(str(exc))
    return EXIT_BAD_INPUT if failed else EXIT_OK


def _annotate_one(args: argparse.Namespace, src: str, dst: str) -> int:
    if src != "-" and dst != "-":
        if os.path.exists(dst) and os.path.exists(src) and os.path.samefile(src, dst):
            return _err(f"{dst} is the capture being read: annotate never overwrites its input; write elsewhere")
    try:
        res = batch.annotate_task(src, dst, args.timeout, args.group_read)
    except BrokenPipeError:
        return EXIT_OK
    if res.error:
        return _err(res.line)
    if dst != "-":
        sys.stderr.write(res.line + "\n")
    return EXIT_OK


__all__ = ["add_parser", "cmd_annotate", "CaptureError"]
