"""The `vfudissect annotate` subcommand: rewrite a capture's stored verdicts with the engine's current ones."""

from __future__ import annotations

import argparse
import os
import sys

from . import spec
from .capture.annotate import annotate
from .capture.files import GROUP_READ_HELP, open_capture_output
from .capture.reader import CaptureError

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
        epilog="Exit status: 0 written, 2 unusable input (damaged, not a capture, IN and OUT the same file) or a "
               "usage error.\nExamples:\n"
               "  vfudissect annotate old.pcapng -w old-judged.pcapng\n"
               "  vfudissect annotate live.pcapng -w - --timeout 0.5 | tshark -r - -q -z expert",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="IN", help="capture to judge (- for stdin)")
    p.add_argument("-w", "--write", required=True, metavar="OUT", help="capture to write (- for stdout)")
    p.add_argument("--timeout", type=_seconds, default=spec.DEFAULT_REPLY_TIMEOUT, metavar="SECONDS",
                   help="REPLY_TIMEOUT threshold (default %(default)s s, QEMU's x-msg-timeout; 0 disables)")
    p.add_argument("-g", "--group-read", action="store_true", help=GROUP_READ_HELP)
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
    src, dst = args.file, args.write
    if src != "-" and dst != "-":
        if os.path.exists(dst) and os.path.exists(src) and os.path.samefile(src, dst):
            return _err(f"{dst} is the capture being read: annotate never overwrites its input; write elsewhere")
    try:
        fin = sys.stdin.buffer if src == "-" else open(src, "rb")
    except OSError as exc:
        return _err(f"{src}: {exc.strerror or exc}")
    try:
        try:
            out = sys.stdout.buffer if dst == "-" else open_capture_output(dst, args.group_read)
        except OSError as exc:
            return _err(f"cannot write {dst}: {exc.strerror or exc}")
        try:
            res = annotate(fin, out, "<stdin>" if src == "-" else src, timeout=args.timeout, flush=dst == "-")
        except BrokenPipeError:
            return EXIT_OK
        finally:
            if dst != "-":
                out.close()
    finally:
        if src != "-":
            fin.close()
    if res.error is not None:
        if res.copied == 0 and dst != "-":
            try:
                os.unlink(dst)  # nothing of it was a capture: leave no empty file behind
            except OSError:
                pass
        where = f"; {res.copied} records before it written to {dst}" if res.copied else ""
        return _err(f"{res.error}{where}")
    if dst != "-":
        sys.stderr.write(f"{dst}: {res.copied} records copied, {res.findings} findings recorded"
                         + (f" (replacing {res.dropped} stored)" if res.dropped else "") + "\n")
    return EXIT_OK


__all__ = ["add_parser", "cmd_annotate", "CaptureError"]
