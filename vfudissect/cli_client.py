"""`vfudissect client`: the emulated QEMU-shaped vfio-user client, run once against a socket (a proxy or a server)."""

from __future__ import annotations

import argparse
import os
import stat
import sys

_DESCRIPTION = """\
Connect to a vfio-user socket (a device server, or `vfudissect record`'s listening
socket) and run one session shaped like QEMU 10.2's: VERSION with QEMU's
capabilities, DMA_MAP of a memfd, device, region and IRQ info, SET_IRQS with
eventfds, config-space and BAR accesses, interrupts through the eventfds, a DMA
round trip, DEVICE_RESET and DMA_UNMAP; then say what it verified.  Against
`vfudissect serve` every check passes; against another server, the checks
that need the emulated device's registers may not.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("client", help="run the emulated QEMU-shaped client once against a socket",
                              description=_DESCRIPTION,
                              epilog="exit status: 0 every check passed, 1 a check failed, 2 the server could not "
                                     "be reached or broke the session (said in one line)\n"
                                     "example:\n  vfudissect serve --socket gpio.sock &\n"
                                     "  vfudissect record --listen vfio-user.sock --connect gpio.sock -w live.pcapng &\n"
                                     "  vfudissect client vfio-user.sock",
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("socket", metavar="PATH", help="the vfio-user socket to connect to")
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="how long to wait for each reply (default %(default)s s)")
    p.add_argument("--twin-socket", action="store_true", help="ask for a twin socket in VERSION")
    p.set_defaults(func=cmd_client)
    return p


def cmd_client(args: argparse.Namespace) -> int:
    from .peers.client import TWIN_VERSION_JSON, Client, ProtocolError, ReplyTimeout, VfuError, run_session

    try:
        with Client(args.socket, timeout=args.timeout) as c:
            kw = {"json_text": TWIN_VERSION_JSON} if args.twin_socket else {}
            rep = run_session(c, **kw)  # type: ignore[arg-type]
    except FileNotFoundError:
        return _fail(f"cannot connect to {args.socket}: no such socket")
    except ConnectionRefusedError:
        if not stat.S_ISSOCK(os.stat(args.socket).st_mode):
            return _fail(f"cannot connect to {args.socket}: it is not a socket")
        return _fail(f"cannot connect to {args.socket}: nobody listens on it")
    except (VfuError, ProtocolError) as exc:
        return _fail(f"the session with {args.socket} broke: {exc}")
    except (TimeoutError, ReplyTimeout) as exc:
        what = f" ({exc})" if str(exc) else ""
        return _fail(f"the server at {args.socket} did not answer within {args.timeout:g} s{what}")
    except OSError as exc:
        return _fail(f"the session with {args.socket} broke: {exc.strerror or exc}")
    print(f"{rep.messages} messages; device: {len(rep.regions)} regions, {len(rep.irq_counts)} IRQ types")
    for what, ok in rep.checks:  # every check the exit status stands on
        print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    return 0 if rep.ok else 1


def _fail(msg: str) -> int:
    sys.stderr.write(f"vfudissect client: error: {msg}\n")
    return 2
