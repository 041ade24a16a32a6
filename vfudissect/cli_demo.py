"""`vfudissect demo`: a clean and a misbehaving vfio-user session through the recording proxy, analyzed."""

from __future__ import annotations

import argparse
import sys

_DESCRIPTION = """\
Start the emulated vfio-user PCI device, put `vfudissect record` in front of
it and drive the emulated QEMU-like client through a session shaped like
QEMU's real one (VERSION, pipelined DMA_MAPs with a memfd, region and IRQ
discovery, SET_IRQS with eventfds, config space, BAR reads and writes, an
interrupt received through its eventfd, a DMA round trip, DEVICE_RESET,
DMA_UNMAP); then a second session where the server misbehaves on cue (a late
reply, a reply with the wrong id, one with the wrong command, an
incompatible VERSION with malformed capabilities).  Prints the proxy's live
view, the analysis of each capture, and how to open them in Wireshark.
Writes DIR/demo.pcapng and DIR/demo-faults.pcapng.  Exit status 0 when both
sessions showed what they should, 1 otherwise.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("demo", help="record and analyze a clean and a misbehaving session (emulated peers)",
                              description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--out-dir", default="captures", metavar="DIR",
                   help="where to write demo.pcapng and demo-faults.pcapng (default %(default)s)")
    p.add_argument("--timeout", type=float, default=0.3, metavar="SECONDS",
                   help="REPLY_TIMEOUT threshold of the misbehaving session (default %(default)s s)")
    p.add_argument("--color", choices=["auto", "always", "never"], default="auto",
                   help="colour the output (default: when it is a terminal)")
    p.set_defaults(func=cmd_demo)
    return p


def cmd_demo(args: argparse.Namespace) -> int:
    from .cli import use_color
    from .demo.record_process import ProxyError
    from .demo.runner import DemoOptions, run
    from .demo.sessions import LATE_BY
    from .peers.client import ReplyTimeout, VfuError
    from .peers.wire import ProtocolError

    if not 0 < args.timeout < LATE_BY:
        sys.stderr.write(f"vfudissect: error: --timeout must be above 0 and below the late reply's {LATE_BY:g} s\n")
        return 2
    try:
        return run(DemoOptions(out_dir=args.out_dir, timeout=args.timeout, color=use_color(args.color, sys.stdout)))
    except (ProxyError, ProtocolError, VfuError, ReplyTimeout) as exc:
        sys.stderr.write(f"vfudissect: error: demo: {exc}\n")
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        sys.stderr.write(f"vfudissect: error: demo: {exc.strerror or exc}{where}\n")
    return 1
