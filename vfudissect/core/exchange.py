"""Exchanges: what each side puts on the wire, step by step (the finding catalogue's examples, the scripted demo).

A ``Scenario`` is a list of ``Step``s: who sends (``c2s``: the client,
``s2c``: the server), the bytes (built with ``core/build.py``), the kinds of
fds to pass with them (fresh memfds, eventfds, sockets), a wait before
sending, and how the bytes go out; the step marked ``flag=CODE`` is the
message the finding must point at.  ``negotiate()``, ``discover()`` and
``mapped()`` are the start of a real session the examples build on.  Pure
data: ``demo/scripted.py`` plays scenarios through a real proxy, the
Playbook feeds them to the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import spec
from .build import (dma_map, get_info, get_info_reply, irq_info, irq_info_reply, region_info, region_info_reply,
                    reply, version, version_reply)

C2S, S2C = spec.C2S, spec.S2C
HOW = {
    "whole": "one sendmsg with every byte and fd of the step",
    "split": "the 16-byte header alone, then the rest with the fds",
    "cut": "the bytes given (a message whose header promises more), then the sender closes its side",
    "close": "no bytes: the sender closes its side",
}
FD_KINDS = ("memfd", "eventfd", "socket")


@dataclass(frozen=True, slots=True)
class Step:
    """One thing a scripted peer puts on the wire."""

    dir: str  # C2S: the client sends it; S2C: the server
    data: bytes = b""
    fds: tuple[str, ...] = ()  # kinds of fresh fds passed with it (FD_KINDS)
    delay: float = 0.0  # seconds to wait before sending
    how: str = "whole"  # HOW
    flag: str | None = None  # a finding code whose first frame must be one of this step's frames
    starve_fds: bool = False  # the proxy cannot take the fds (no free descriptor): recorded without them

    def __post_init__(self) -> None:
        if self.dir not in (C2S, S2C):
            raise ValueError(f"dir must be {C2S!r} or {S2C!r}, not {self.dir!r}")
        if self.how not in HOW:
            raise ValueError(f"how must be one of {', '.join(HOW)}, not {self.how!r}")
        if any(k not in FD_KINDS for k in self.fds):
            raise ValueError(f"fd kinds must be among {', '.join(FD_KINDS)}: {self.fds!r}")
        if self.how in ("whole", "split") and len(self.data) < spec.HEADER_SIZE:
            raise ValueError(f"a {self.how} step needs at least a 16-byte header (use how='cut' for less)")
        if self.how == "split" and len(self.data) == spec.HEADER_SIZE:
            raise ValueError("a split step needs a body after the header (the fds go with it)")
        if self.how == "close" and (self.data or self.fds):
            raise ValueError("a close step carries no bytes or fds")
        if self.how == "cut" and self.fds:
            raise ValueError("a cut step carries no fds")
        if self.starve_fds and not self.fds:
            raise ValueError("starve_fds needs fds to starve")

    @property
    def size(self) -> int:
        """The header's size field (0 without a whole header)."""
        return spec.HEADER.unpack_from(self.data)[2] if len(self.data) >= spec.HEADER_SIZE else 0


def c2s(data: bytes, *fds: str, **kw: object) -> Step:
    """The client sends ``data`` with fresh fds of the given kinds."""
    return Step(C2S, data, tuple(fds), **kw)  # type: ignore[arg-type]


def s2c(data: bytes, *fds: str, **kw: object) -> Step:
    """The server sends ``data`` with fresh fds of the given kinds."""
    return Step(S2C, data, tuple(fds), **kw)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Scenario:
    """Steps and the proxy settings they need (REPLY_TIMEOUT threshold, snaplen)."""

    name: str
    steps: tuple[Step, ...]
    timeout: float = spec.DEFAULT_REPLY_TIMEOUT
    snaplen: int | None = None
    about: str = ""

    def __post_init__(self) -> None:
        from . import findings  # below this module in import order: the catalogue is made of exchanges

        unknown = [st.flag for st in self.steps if st.flag and st.flag not in findings.CATALOGUE]
        if unknown:
            raise ValueError(f"{self.name}: unknown finding code {unknown[0]!r}")

    @property
    def needs_fd_starving(self) -> bool:
        return any(s.starve_fds for s in self.steps)


# ------------------------------------------------------------------ a real session's start
C = spec.Command
EINVAL, EFAULT, ENOSYS = 22, 14, 38
# A client like QEMU without the legacy 'migration' key, a server like libvfio-user: no finding at all.
CLIENT_CAPS = {"capabilities": {"pgsizes": 4096, "max_msg_fds": 16, "max_dma_maps": 65535,
                                "max_data_xfer_size": 1048576}}
SERVER_CAPS = {"capabilities": {"max_msg_fds": 8, "max_data_xfer_size": 1048576}}
MAP_ADDR, MAP_SIZE = 0x100000, 0x10000


def negotiate(caps: object = CLIENT_CAPS, reply_caps: object = SERVER_CAPS) -> list[Step]:
    """Frames 2-3: VERSION and its reply."""
    return [c2s(version(0, caps=caps)), s2c(version_reply(0, caps=reply_caps))]


def discover() -> list[Step]:
    """Frames 4-13 (ids 1-5): GET_INFO (9 regions, 5 IRQ types), BAR0, BAR1 and CONFIG region info, MSI info."""
    steps = [c2s(get_info(1)), s2c(get_info_reply(1, num_regions=9, num_irqs=5))]
    for mid, (idx, size) in enumerate(((0, 0x1000), (1, 0x10000), (7, 0x100)), start=2):
        steps += [c2s(region_info(mid, idx)), s2c(region_info_reply(mid, idx, size, flags=0x3))]
    return steps + [c2s(irq_info(5, 1)), s2c(irq_info_reply(5, 1, 4))]


def mapped() -> list[Step]:
    """Frames 14-15 (id 6): 64 KiB of guest memory at 0x100000, passed as a memfd."""
    return [c2s(dma_map(6, MAP_ADDR, MAP_SIZE), "memfd"), s2c(reply(dma_map(6, MAP_ADDR, MAP_SIZE)))]


READY = negotiate() + discover()


def refused(request: bytes, errno_: int = EINVAL) -> Step:
    """The server's error reply to ``request``."""
    return s2c(reply(request, error=errno_))


def caps_in_reply(code: str, raw: bytes) -> list[Step]:
    """A VERSION exchange whose reply carries ``raw`` as its version data, flagged ``code``."""
    return [c2s(version(0, caps=CLIENT_CAPS)), s2c(version_reply(0, raw=raw), flag=code)]
