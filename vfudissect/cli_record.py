"""`vfudissect record`: the recording man-in-the-middle proxy's command line."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from . import spec
from .capture.files import GROUP_READ_HELP
from .proxy.relay import RelayConfig as _RelayConfig

RELAY_DEFAULTS = _RelayConfig()
_FAULT_SYNTAX = ("ACTION[,side=server|client][,command=NAME][,kind=command|reply][,nth=N][,delay=S][,data=HEX]"
                 "[,header=FIELD=V/...] (the vocabulary of `serve --fault`; side: whose messages, default server)")
WAIT_SERVER_DEFAULT = 30.0  # seconds, --wait-server without a value

_DESCRIPTION = """\
Sit between a vfio-user client (e.g. QEMU's vfio-user-pci) and a device server,
relay every message unchanged (including the file descriptors passed with
them: memfds, eventfds, the twin socket) and record everything to a pcapng
capture that `vfudissect read`, tshark and Wireshark (with `vfudissect lua`)
open.  While it runs it prints the same one-line decode as `vfudissect read`,
with findings as they happen (REPLY_TIMEOUT while a request is still waiting).
Ctrl-C or SIGTERM ends it, leaves a valid capture, prints a summary and
restores an intercepted socket.

Two ways in:
  --listen PATH --connect PATH   give the client a new socket (PATH) and
                                 forward each client it accepts to the server
  --intercept PATH               take over a server that is already listening
                                 at PATH: its socket is linked aside as
                                 PATH.vfudissect-orig and put back on exit

The server is checked at start without connecting to it (a single-client
server such as libvfio-user's sample would take a test connection for its
client): a missing socket, a path that is not a socket or a socket nobody
listens on is refused (exit 2), unless --wait-server waits for it.  A client
that arrives later while the server is not there is closed, with a line in
the live view and a note in the capture, and the proxy goes on serving.

The capture is created 0600 (owner only): it holds guest memory (DMA data),
the device's data and the peers' credentials (as Wireshark's dumpcap does;
-g makes it 0640).  An existing file is never made more readable: group and
other bits beyond that are cleared.
"""

_EPILOG = """\
examples:
  vfudissect record --listen /tmp/proxy.sock --connect /run/gpio.sock -w gpio.pcapng
  vfudissect record --intercept /run/gpio.sock -w gpio.pcapng -q
  vfudissect record --listen /tmp/p.sock --connect /run/gpio.sock -w - | wireshark -k -i -
  vfudissect record --intercept /run/gpio.sock -w long.pcapng --rotate-size 100M
  vfudissect record --listen /tmp/p.sock --connect /run/gpio.sock -w f.pcapng \\
      --fault delay,side=server,command=REGION_READ,nth=3,delay=6
  (for Wireshark to decode: vfudissect lua --install)

exit status: 0 after a clean stop (Ctrl-C, SIGTERM), 2 when a path, a
permission or the server is unusable (said in one line): the server socket
missing (without --wait-server, or still missing when it runs out), not a
socket, or nobody listening on it.

Performance: recording never sits between a message and its forwarding: it
is done in slices of at most --max-hold between looks at the sockets, so a
message that has arrived waits at most that long for the proxy, whatever the
load; when recording cannot keep up, the peers are slowed to its rate (never
stopped) and memory stays bounded.  With --busy-poll the relay keeps
polling instead of sleeping for that long after small messages: one CPU is
busy while messages flow, and a process wake-up (tens of microseconds on
virtual machines) is saved per hop.  It is on by default only with 4 or more
CPUs: on fewer, the spinning relay takes the CPU the peers need.
"""


def _mode(text: str) -> int:
    try:
        v = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal mode: {text!r}") from None
    if not 0 <= v <= 0o777:
        raise argparse.ArgumentTypeError(f"mode out of range: {text!r}")
    return v


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return v


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _size(text: str) -> int:
    """A byte count with an optional k/M/G suffix (powers of 1024): 500000, 64k, 100M, 2G."""
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    unit = t[-1:] if t[-1:] in ("k", "m", "g") else ""
    try:
        v = float(t[:-1] if unit else t) * _UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 100M)") from None
    if v < 4096:
        raise argparse.ArgumentTypeError(f"too small: {text!r} (at least 4k)")
    return int(v)


def default_busy_poll() -> float:
    """Seconds of busy-polling by default: only where a spinning relay does not take a CPU from the peers.

    Measured (bench/README.md): on a 2-CPU machine the spinning relay competes with client and server and
    is no faster; it pays off when a CPU is to spare and wake-ups are what costs."""
    return 200e-6 if (os.cpu_count() or 1) >= 4 else 0.0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("record", help="relay a vfio-user connection and record it (MITM proxy)",
                              description=_DESCRIPTION, epilog=_EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_argument_group("sockets")
    where.add_argument("--listen", metavar="PATH", help="listen for clients here (a new socket)")
    where.add_argument("--connect", metavar="PATH", help="the server's socket each client is forwarded to")
    where.add_argument("--intercept", metavar="PATH",
                       help="take over the server listening at PATH (restored on exit)")
    where.add_argument("--wait-server", type=_positive, nargs="?", const=WAIT_SERVER_DEFAULT, default=None,
                       metavar="SECONDS",
                       help="when the --connect socket does not exist yet or nobody listens on it, wait for its "
                            f"server (up to SECONDS: {WAIT_SERVER_DEFAULT:g} when given without a value, 0 = for "
                            "ever) instead of exit 2; --listen's socket is there meanwhile, and a client that "
                            "connects is held until the server is")
    where.add_argument("--mode", type=_mode, default=0o600, metavar="OCTAL",
                       help="permissions of the listening socket (default 0600; --intercept keeps the "
                            "server socket's own unless given)")
    out = p.add_argument_group("capture")
    out.add_argument("-w", "--write", required=True, metavar="FILE",
                     help="pcapng capture to write as it goes (whole records, at the latest every 0.1 s); - "
                          "for stdout (the live view then goes to stderr)")
    out.add_argument("--snaplen", type=int, metavar="N",
                     help="keep only N bytes of bulk data per message (headers and fixed fields always kept)")
    out.add_argument("--rotate-size", type=_size, metavar="SIZE",
                     help="start a new file when the capture reaches SIZE (e.g. 100M): FILE, then FILE-2, "
                          "FILE-3 ...; each begins with the connections' state (VERSION, device info, DMA "
                          "mappings, requests awaiting replies) as CONTEXT records, so it reads on its own")
    out.add_argument("-g", "--group-read", action="store_true", help=GROUP_READ_HELP)
    view = p.add_argument_group("live view")
    view.add_argument("-q", "--quiet", action="store_true",
                      help="no line per message: only findings and the summary")
    view.add_argument("--color", choices=["auto", "always", "never"], default="auto",
                      help="colour the live view (default: when it goes to a terminal)")
    view.add_argument("--timeout", type=_positive, default=spec.DEFAULT_REPLY_TIMEOUT, metavar="SECONDS",
                      help="REPLY_TIMEOUT threshold (default %(default)s s; raised while the request still waits)")
    view.add_argument("--no-summary", action="store_true", help="no statistics summary on exit")
    tune = p.add_argument_group("relay")
    tune.add_argument("--stall-timeout", type=_positive, default=0.5, metavar="SECONDS",
                      help="a message whose bytes stop arriving this long is forwarded as far as it came and "
                           "that direction is relayed raw (default %(default)s)")
    tune.add_argument("--max-hold", type=_positive, default=RELAY_DEFAULTS.record_slice, metavar="SECONDS",
                      help="longest stretch the relay spends recording between two looks at the sockets, i.e. the "
                           "most a message that has arrived waits for the proxy (default %(default)s s; QEMU's own "
                           "reply timeout is 5 s). When recording falls behind, the peers are slowed to its rate, "
                           "never stopped, and at most 100,000 events or 32 MiB wait to be recorded")
    tune.add_argument("--busy-poll", type=_positive, default=None, metavar="USEC",
                      help="keep polling this long after traffic instead of sleeping (default: 200 us on "
                           "machines with 4 or more CPUs, 0 = never, below that)")
    provoke = p.add_argument_group("fault injection (the proxy stays byte- and fd-transparent without it)")
    provoke.add_argument("--fault", type=_fault, action="append", default=[], metavar="SPEC",
                         help="change what one side sends, on purpose (repeatable): " + _FAULT_SYNTAX + "; every "
                              "changed or invented message is recorded as forwarded, flagged INJECTED, the original "
                              "beside it, withheld. ACTIONs: " + ", ".join(_fault_actions()))
    provoke.add_argument("--watch-irqs", action="store_true",
                         help="record the server's interrupts: the server gets eventfds of the proxy's in SET_IRQS "
                              "(the client's are kept and recorded as it sent them), each signal is relayed to the "
                              "client's eventfd at once and recorded (an IRQ record: index, vector, count), so "
                              "`replay server` can raise them where they came. Changes which eventfds the server "
                              "holds (not the bytes); off by default")
    p.set_defaults(func=cmd_record)
    return p


def _fault_actions() -> list[str]:
    from .peers.faults import ACTIONS

    return list(ACTIONS)


def _fault(text: str):  # type: ignore[no-untyped-def]
    from .proxy.inject import parse

    try:
        return parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def cmd_record(args: argparse.Namespace) -> int:
    from .cli import use_color
    from .proxy.relay import RelayConfig
    from .proxy.session import ProxyOptions, run_proxy

    live_stream = sys.stderr if args.write == "-" else sys.stdout
    if args.snaplen is not None and args.snaplen < 0:
        sys.stderr.write("vfudissect: error: --snaplen must not be negative\n")
        return 2
    if args.rotate_size is not None and args.write == "-":
        sys.stderr.write("vfudissect: error: --rotate-size needs a capture file, not - (stdout)\n")
        return 2
    opts = ProxyOptions(
        write=args.write, listen=args.listen, connect=args.connect, intercept=args.intercept, mode=args.mode,
        snaplen=args.snaplen, rotate_size=args.rotate_size, quiet=args.quiet, color=use_color(args.color, live_stream), timeout=args.timeout,
        relay=RelayConfig(stall_timeout=args.stall_timeout, busy_poll=default_busy_poll() if args.busy_poll is None
                          else args.busy_poll / 1e6, record_slice=max(args.max_hold, 1e-4),
                          faults=tuple(args.fault), watch_irqs=args.watch_irqs),
        comment="vfudissect " + " ".join(shlex.quote(a) for a in sys.argv[1:]), summary=not args.no_summary,
        group_read=args.group_read, wait_server=args.wait_server)
    return run_proxy(opts)
