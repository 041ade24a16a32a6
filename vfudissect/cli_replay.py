"""`vfudissect replay client|server`: play a recorded connection against a live peer, and say where it diverges."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .cli import EXIT_BAD_INPUT, EXIT_FINDINGS, EXIT_OK, use_color


def positive_seconds(text: str) -> float:
    """A duration in seconds, above 0 (argparse type)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a positive number of seconds")
    return v

_DESCRIPTION = """\
Reproduce a recorded exchange without the peer that made it.

  replay client CAPTURE --connect SOCK   be the recorded client for a live server
  replay server CAPTURE --listen SOCK    be the recorded device for a live client

The replay is itself recorded (through the same writer and engine as
`record`) into OUT, by default beside the capture, so `read`, `stats` and
Wireshark show it; its own findings (REPLAY_*) name the recorded frame they
compare with.  What legitimately changes from run to run (an fd's inode and
name, the mmap offset of a region fd, a server's own msg_id counter) is
normalised by the rules `vfudissect replay rules` prints; nothing else is
ignored.
"""

_CLIENT = """\
Play the recorded client side of one connection against a live server and
compare every server message with the recorded one: header (command, type,
error, size), every decoded payload field, fd count and kinds.

Each recorded client request goes out with its recorded msg_id once every
server message that preceded it in the capture has come in (pipelined
requests stay pipelined).  The fds are made afresh: memfds of the recorded
size and name for DMA_MAP (holding what the capture shows of guest memory,
zero elsewhere), eventfds for SET_IRQS; the server's own commands
(DMA_READ/DMA_WRITE, on the main or the twin socket) are answered from that
memory.  A message that does not come within --timeout is a finding, and
the replay goes on.
"""

_SERVER = """\
Be the recorded device for a live client (QEMU, the emulated client, a new
client build).  Each request is answered with the recorded reply whose
request matches it: same command and payload (after the normalisation
rules), the next unused one in recorded order among equals; else the next
unused of the same command (REPLAY_INEXACT); a request whose command was
never recorded gets an EINVAL error reply (REPLAY_UNMATCHED).  Replies go
with the live msg_id and with fds made afresh (region fds as memfds of the
recorded size, showing what the recording showed of the region; a twin
socket of its own when the recording negotiated one).  The recorded server's
own commands (DMA_READ/DMA_WRITE) are sent at the point they came in the
recording, and the client's replies compared with the recorded ones.

Interrupts are not on the wire: a capture made with `record --watch-irqs`
holds them (IRQ records), and the replay server raises each on the live
client's eventfd (from its SET_IRQS) where it came in the recording.  The
device's direct accesses to mmapped guest memory are not replayed: they never
cross the socket, so no capture holds them.
"""

_EXIT = ("exit status: 0 the peer behaved as recorded, 1 it diverged (findings REPLAY_*, or it closed early), "
         "2 unusable input (a damaged capture, no such connection, nothing to play, a peer that cannot be "
         "reached) or a usage error")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("replay", help="play a capture's client or server side against a live peer",
                              description=_DESCRIPTION, epilog=_EXIT,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="side", metavar="{client,server,rules}")
    sub.required = True

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("capture", metavar="CAPTURE", help="the recorded capture (pcapng)")
        q.add_argument("--conn", type=int, metavar="N", help="the recorded connection to play (default: the first "
                                                             "one with messages of that side)")
        q.add_argument("-w", "--write", metavar="OUT", help="the replay's own capture (default: beside CAPTURE, "
                                                             "CAPTURE-replay-client.pcapng / -replay-server.pcapng)")
        q.add_argument("--timeout", type=positive_seconds, default=5.0, metavar="SECONDS",
                       help="how long a message may keep the replay waiting before it is a finding "
                            "(default %(default)s s)")
        q.add_argument("-q", "--quiet", action="store_true", help="show only the replay's findings (REPLAY_*) and the "
                                                                  "summary, not every message and the engine's "
                                                                  "findings (those are in the replay's capture)")
        q.add_argument("--json", action="store_true", help="the summary as one JSON object on stdout (the live "
                                                           "view goes to stderr)")
        q.add_argument("--color", choices=("auto", "always", "never"), default="auto", help="colour the live view "
                                                                                          "(default: on a terminal)")

    c = sub.add_parser("client", help="be the recorded client for a live server", description=_CLIENT, epilog=_EXIT
                       + "\nexample:\n  vfudissect replay client boot.pcapng --connect /run/gpio.sock",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    common(c)
    c.add_argument("--connect", required=True, metavar="SOCK", help="the live server's socket")
    c.add_argument("--pace", choices=("fast", "recorded"), default="fast",
                   help="fast: each message as soon as the server answered what it waits for (default); recorded: "
                        "also keep the recorded gaps")
    c.set_defaults(func=cmd_replay_client)
    s = sub.add_parser("server", help="be the recorded device for a live client", description=_SERVER,
                       epilog=_EXIT + "\nexample:\n  vfudissect replay server boot.pcapng --listen /tmp/dev.sock &\n"
                       "  qemu-system-x86_64 ... -device '{\"driver\":\"vfio-user-pci\",\"socket\":"
                       "{\"path\":\"/tmp/dev.sock\",\"type\":\"unix\"}}'",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    common(s)
    s.add_argument("--listen", required=True, metavar="SOCK", help="the socket to listen on for the client")
    s.add_argument("--accept-timeout", type=positive_seconds, default=None, metavar="SECONDS",
                   help="give up when no client connects within this (default: wait until interrupted)")
    s.set_defaults(func=cmd_replay_server)
    r = sub.add_parser("rules", help="print the normalisation rules a replay compares with",
                       description="What a replay does not count as a divergence, and why.")
    r.set_defaults(func=cmd_replay_rules)
    return p


def _out_path(args: argparse.Namespace, side: str) -> str:
    if args.write:
        return args.write
    stem, ext = os.path.splitext(args.capture)
    return f"{stem}-replay-{side}{ext or '.pcapng'}"


def _fail(text: str, status: int = EXIT_BAD_INPUT) -> int:
    sys.stderr.write(f"vfudissect: error: {text}\n")
    return status


def _replay(args: argparse.Namespace, side: str, play):  # type: ignore[no-untyped-def]
    """What both sides share: the output path, the script, the stream the live view goes to, and the run, with
    every way it can fail as one line.  Returns (exit status or None, the result, the script, out, stream)."""
    from .replay.client import ReplayFailed
    from .replay.recording import RecordingError
    from .replay.script import ScriptError, load

    out = _out_path(args, side)
    if os.path.abspath(out) == os.path.abspath(args.capture):
        return _fail(f"the replay's capture {out} would overwrite the capture it replays; give -w another file"), \
            None, None, out, None
    try:
        script = load(args.capture, args.conn, side)
    except ScriptError as exc:
        return _fail(str(exc)), None, None, out, None
    stream = sys.stderr if args.json else sys.stdout
    try:
        res = play(script, out, stream, use_color(args.color, stream))
    except ReplayFailed as exc:
        return _fail(str(exc), exc.status), None, script, out, stream
    except RecordingError as exc:
        return _fail(str(exc)), None, script, out, stream
    except KeyboardInterrupt:
        return _fail("interrupted; the replay's capture is complete up to here", EXIT_FINDINGS), None, script, out, \
            stream
    return None, res, script, out, stream


def _end(args: argparse.Namespace, res, summary: dict, line: str, stream) -> int:  # type: ignore[no-untyped-def]
    if args.json:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        stream.write(line + "\n")
    if res.stopped:
        sys.stderr.write(f"vfudissect: {res.stopped}\n")
    return EXIT_FINDINGS if res.diverged else EXIT_OK


def cmd_replay_client(args: argparse.Namespace) -> int:
    from .replay.client import run

    status, res, script, out, stream = _replay(args, "client", lambda script, out, stream, color: run(
        script, args.connect, out, timeout=args.timeout, pace=args.pace == "recorded", quiet=args.quiet,
        color=color, view=stream))
    if status is not None:
        return status
    t = res.tally
    played = sum(1 for r in script.items if r.dir == "c2s")
    summary = {"capture": args.capture, "connection": script.conn, "server": args.connect, "replay": out,
               "client_messages": played, "sent": t.sent, "received": t.received, "compared": t.compared,
               "divergences": t.divergences, "findings": t.by_code, "seconds": round(res.seconds, 6),
               "recorded_seconds": round(script.duration, 6), "stopped": res.stopped or None}
    verdict = "as recorded" if not res.diverged else \
        f"{t.divergences} divergence{'s' if t.divergences != 1 else ''} (" + ", ".join(
            f"{c} {n}" for c, n in sorted(t.by_code.items())) + ")"
    line = (f"replayed connection #{script.conn} of {args.capture} against {args.connect}: {t.sent} messages sent, "
            f"{t.received} received in {res.seconds:.3f} s (recorded: {script.duration:.3f} s); {verdict}; "
            f"capture: {out}")
    return _end(args, res, summary, line, stream)


def cmd_replay_server(args: argparse.Namespace) -> int:
    from .replay.server import run

    status, res, script, out, stream = _replay(args, "server", lambda script, out, stream, color: run(
        script, args.listen, out, timeout=args.timeout, quiet=args.quiet, color=color, view=stream,
        accept_timeout=args.accept_timeout))
    if status is not None:
        return status
    t = res.tally
    summary = {"capture": args.capture, "connection": script.conn, "listen": args.listen, "replay": out,
               "requests": t.requests, "exact": t.exact, "inexact": t.inexact, "unmatched": t.unmatched,
               "divergences": t.divergences, "findings": t.by_code, "seconds": round(res.seconds, 6),
               "recorded_requests": t.recorded_requests, "never_asked": t.recorded_requests - t.used,
               "interrupts": t.interrupts, "recorded_interrupts": t.recorded_interrupts,
               "stopped": res.stopped or None}
    line = (f"served the recorded device of connection #{script.conn} of {args.capture} on {args.listen}: "
            f"{t.requests} requests, {t.exact} matched exactly, {t.inexact} inexactly, {t.unmatched} not at all; "
            f"{t.recorded_requests - t.used} of {t.recorded_requests} recorded requests never asked; "
            + (f"{t.interrupts} of {t.recorded_interrupts} recorded interrupts raised; "
               if t.recorded_interrupts else "no interrupts recorded (record --watch-irqs records them); ")
            + f"{t.divergences} divergence{'s' if t.divergences != 1 else ''}; capture: {out}")
    return _end(args, res, summary, line, stream)


def cmd_replay_rules(args: argparse.Namespace) -> int:
    from . import spec
    from .replay.match import FD_RULE, RULES

    for r in RULES:
        where = spec.command_name(r.command) if r.command is not None else "every"
        what = f"{where} {r.msg_type or 'message'}" + (" carrying fds" if r.when_fds else "")
        sys.stdout.write(f"{r.field:<20} in {what}: {r.why}\n")
    sys.stdout.write(f"{'fds':<20} {FD_RULE}\n")
    return EXIT_OK
