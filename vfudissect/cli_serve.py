"""`vfudissect serve`: the emulated vfio-user PCI device as a standalone server (with optional faults)."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading

from . import spec

_DESCRIPTION = """\
Run the project's emulated vfio-user device server: a fake PCI device with
9 regions (config space with a capability list, BAR0 registers, BAR1 memory
backed by a memfd and offered for mmap with a sparse-mmap capability) and 5
IRQ types, negotiating like libvfio-user (twin socket when asked).  Ringing
BAR0's doorbell raises interrupts through the client's eventfds and makes the
server read/write the client's memory with DMA_READ / DMA_WRITE.  Useful as a
target for `vfudissect record` and to produce misbehaviour on purpose with
--fault.  Ends on SIGTERM / Ctrl-C; does not daemonize.
"""

_EPILOG = """\
--fault ACTION[,command=NAME][,kind=command|reply][,nth=N][,delay=S][,count=N][,data=HEX][,header=F=V/...]
  applies ACTION to the N-th matching message the server sends (nth=0: every one).
  ACTIONs: {actions}

examples:
  vfudissect serve --socket /tmp/dev.sock
  vfudissect serve --socket /tmp/dev.sock --fault delay,command=REGION_READ,delay=6
  vfudissect serve --socket /tmp/dev.sock --fault caps_no_nul,command=VERSION
"""


def _fault(text: str):  # type: ignore[no-untyped-def]
    """One --fault: the vocabulary `record --fault` shares (peers/faults.py), for what this server sends."""
    from .peers.faults import parse_fault

    try:
        side, fault = parse_fault(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    if side != "server":
        raise argparse.ArgumentTypeError(f"{text!r}: serve injects faults into what the server sends (side=server); "
                                         "side=client is for `record --fault`")
    return fault


def _bytes(text: str) -> int:
    """A size in bytes as C writes it: 65536, 0x10000 (no unit suffixes)."""
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of bytes (e.g. 65536 or 0x10000)") from None


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from .peers.faults import ACTIONS

    p = subparsers.add_parser("serve", help="run the emulated vfio-user device server (test target, faults)",
                              description=_DESCRIPTION, epilog=_EPILOG.format(actions=", ".join(ACTIONS)),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", "--socket-path", dest="socket", metavar="PATH",
                       help="listen here (one device instance per client)")
    where.add_argument("--fd", type=int, metavar="FDNUM", help="serve one client on this connected socket fd")
    p.add_argument("--bar1-size", type=_bytes, default=0x10000, metavar="BYTES",
                   help="size of BAR1 memory (default 64 KiB; a power of two >= 4 KiB)")
    p.add_argument("--max-data-xfer-size", type=_bytes, default=spec.DEFAULT_MAX_DATA_XFER_SIZE,
                   metavar="BYTES", help="advertised max_data_xfer_size (default %(default)s)")
    p.add_argument("--no-twin-socket", action="store_true", help="never offer a twin socket")
    p.add_argument("--fault", type=_fault, action="append", default=[], metavar="SPEC",
                   help="inject a fault into what the server sends (repeatable; see below)")
    p.add_argument("-v", "--verbose", action="store_true", help="log connections and refused requests")
    p.set_defaults(func=cmd_serve)
    return p


def cmd_serve(args: argparse.Namespace) -> int:
    from .peers.device import DeviceConfig
    from .peers.faults import Faults
    from .peers.server import DeviceServer, ServerConnection

    size = args.bar1_size
    if size < 0x1000 or size & (size - 1):
        sys.stderr.write(f"vfudissect: error: --bar1-size {size} ({size:#x}): BAR1 must be a power of two of at "
                         "least 4096 bytes, e.g. 4096, 65536 (the default), 0x100000\n")
        return 2
    cfg = DeviceConfig(bar1_size=size, max_data_xfer_size=args.max_data_xfer_size,
                       offer_twin_socket=not args.no_twin_socket)
    faults = Faults(*args.fault)

    def log(text: str) -> None:
        if args.verbose:
            sys.stderr.write(f"vfudissect serve: {text}\n")
            sys.stderr.flush()

    if args.fd is not None:
        try:
            sock = socket.socket(fileno=args.fd)
        except OSError as exc:
            sys.stderr.write(f"vfudissect: error: --fd {args.fd}: {exc.strerror or exc}\n")
            return 2
        ServerConnection(sock, cfg, faults.injector(), log).run()
        return 0
    path = args.socket
    if os.path.lexists(path):
        sys.stderr.write(f"vfudissect: error: {path} exists; remove it first\n")
        return 2
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before the socket exists: a signal then still cleans up
        signal.signal(sig, lambda *_: done.set())
    server = DeviceServer(path, cfg, faults, log)
    try:
        server.bind()
    except OSError as exc:
        sys.stderr.write(f"vfudissect: error: cannot listen on {path}: {exc.strerror or exc}\n")
        return 2
    server.start()
    sys.stderr.write(f"vfudissect serve: emulated vfio-user device listening on {path}\n")
    sys.stderr.flush()
    # a timed wait: the kernel may hand SIGTERM to a server thread, and Python runs its handler only
    # when the main thread wakes up; an untimed wait could sleep through it for ever
    while not done.wait(0.2):
        pass
    server.stop()
    return 0
