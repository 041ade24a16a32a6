"""The relay loop: one thread, epoll, every connection's two directions framed message by message.

Design (measured, see bench/README.md): a single-threaded epoll loop with
non-blocking sockets.  Each direction reads a header, then exactly its
body (recvmsg on every read, so each fd is tied to the message whose
bytes carried it), and forwards the whole message with ONE sendmsg carrying
its fds, then describes and closes its copies of the fds.  Recording
(capture write, analysis, live view) is queued and done by the same thread
only when no socket is ready, one event at a time (a poll between events),
so it never sits between a message and its forwarding.  Optionally the loop
keeps polling without sleeping for ``busy_poll`` seconds after a small
message: a sleeping relay costs a scheduler wake-up per hop (~30 us on the
VM this was measured on), which a spinning one saves when it has a CPU of
its own (measured 1.79x -> 0.96x round trip); on a 2-CPU machine it competes
with the peers instead, so the CLI enables it only with 4 or more CPUs.
Backlog is bounded: past ``max_backlog`` queued bytes the loop records
before it reads again, so a slow capture consumer slows the peers instead
of growing memory.
"""

from __future__ import annotations

import array
import errno
import json
import os
import select
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from .. import spec
from ..core.events import ConnClosed, ConnOpened, Cred, Event, FdInfo, NoteIn, RawIn, Tick, make_message_in
from .fdinfo import describe_fd
from .recorder import Recorder

C2S, S2C = spec.C2S, spec.S2C
_HDR = spec.HEADER
_ANC = socket.CMSG_SPACE(253 * 4)
# plain ints: socket.MSG_* are enum members, and `int & member` runs enum code (~2.5 us per message measured)
_DONTWAIT = int(socket.MSG_DONTWAIT)
_RECV_FLAGS = int(socket.MSG_DONTWAIT) | int(getattr(socket, "MSG_CMSG_CLOEXEC", 0))
_CTRUNC = int(socket.MSG_CTRUNC)
_IN, _OUT = select.EPOLLIN, select.EPOLLOUT
_ERRMASK = select.EPOLLERR | select.EPOLLHUP
_FIXED_MAX = spec.HEADER_SIZE + max(spec.LAYOUTS[k].size for k in ("region_access", "dma_access", "mig_data"))
_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EBADF)
_CRED = struct.Struct("3i")
_SNDBUF = 4 << 20  # room for a whole 1 MiB message per sendmsg (SO_SNDBUFFORCE when allowed, else capped)
_SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
_BIG = 64 << 10  # larger messages: handed to the recorder without a copy, and no busy-polling after them

# pump modes
FRAMED, RAW, EOF, DONE = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class RelayConfig:
    stall_timeout: float = 0.5  # seconds without progress inside a message before it is forwarded raw
    busy_poll: float = 0.0  # seconds to keep polling after activity (0 = always sleep in epoll)
    tick_interval: float = 0.1  # how often the engine hears the time (live REPLY_TIMEOUT)
    max_backlog: int = 64 << 20  # bytes queued for recording before reading pauses
    read_budget: int = 64  # messages read from one socket before others get a turn
    live_lag: int = 256  # events waiting to be recorded before the live view stops rendering messages
    connect_timeout: float = 2.0


def peer_cred(sock: socket.socket) -> Cred | None:
    try:
        pid, uid, gid = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
    except OSError:
        return None
    return Cred(pid, uid, gid)


def _take_fds(ancdata: list[tuple[int, int, bytes]], out: list[int]) -> None:
    for level, kind, blob in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(blob[:len(blob) - len(blob) % 4])
            out.extend(a)


def _widen(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_SNDBUFFORCE, _SNDBUF)
    except OSError:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SNDBUF)
        except OSError:
            pass


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def version_capabilities(data: bytes) -> dict:
    """The capabilities object of a VERSION message, {} when absent or malformed."""
    text = data[spec.HEADER_SIZE + 4:]
    if not text.endswith(b"\0"):
        return {}
    try:
        obj = json.loads(text[:-1].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # nesting beyond Python's limit, too
        return {}
    caps = obj.get("capabilities") if isinstance(obj, dict) else None
    return caps if isinstance(caps, dict) else {}


def usable_max_xfer(caps: dict) -> int:
    v = caps.get("max_data_xfer_size")
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 1 << 31 else 0


class Conn:
    """One proxied connection (or twin-socket channel): the two sockets and the two pumps."""

    __slots__ = ("id", "path", "client", "server", "c2s", "s2c", "twin_of", "limit", "xfer", "client_cred",
                 "closed")

    def __init__(self, cid: int, path: str, client: socket.socket, server: socket.socket, limit: int,
                 twin_of: int | None = None) -> None:
        self.id = cid
        self.path = path
        self.client = client
        self.server = server
        self.twin_of = twin_of
        self.limit = limit
        self.xfer = {C2S: 0, S2C: 0}
        self.client_cred: Cred | None = None
        self.closed = False
        self.c2s = Pump(self, C2S, client, server)
        self.s2c = Pump(self, S2C, server, client)


class Pump:
    """One direction of one connection: framing state, pending output, and the fds of the message in hand."""

    __slots__ = ("conn", "dir", "src", "dst", "mode", "hbuf", "hview", "hgot", "body", "bview", "size", "got",
                 "fds", "late",
                 "ctrunc", "progress", "out", "out_fds", "out_close", "shut_pending", "raw_note", "gone")

    def __init__(self, conn: Conn, d: str, src: socket.socket, dst: socket.socket) -> None:
        self.conn = conn
        self.dir = d
        self.src = src
        self.dst = dst
        self.mode = FRAMED
        self.hbuf = bytearray(spec.HEADER_SIZE)
        self.hview = memoryview(self.hbuf)
        self.hgot = 0
        self.body: bytearray | None = None
        self.bview: memoryview | None = None
        self.size = 0
        self.got = 0
        self.fds: list[int] = []
        self.late = False  # fds arrived after the message's first byte
        self.ctrunc = False
        self.progress = 0.0
        self.out: memoryview | None = None  # bytes still to send to dst
        self.out_fds: list[int] = []  # fds to send with the next sendmsg (nothing of `out` sent yet)
        self.out_close: list[int] = []  # fds to close once `out` is gone
        self.shut_pending = False  # src hit EOF while output was pending: shut dst down after it drains
        self.raw_note = ""
        self.gone: OSError | None = None  # the last forward found the receiver gone (handled once recorded)

    @property
    def partial(self) -> bool:
        return self.hgot > 0 or self.body is not None


class Relay:
    """Accepts clients on ``listener``, connects each to ``connect_path``, relays and records until stopped."""

    def __init__(self, listener: socket.socket, connect_path: str, recorder: Recorder,
                 config: RelayConfig | None = None, socket_label: str = "",
                 error: Callable[[str], None] | None = None) -> None:
        self.cfg = config or RelayConfig()
        self.listener = listener
        self.connect_path = connect_path
        self.label = socket_label or connect_path
        self.recorder = recorder
        self.error = error or (lambda text: None)
        self.ep = select.epoll()
        self._entries: dict[int, object] = {}  # fd -> listener marker / wake marker / (Conn, socket)
        self._masks: dict[int, int] = {}
        self._by_sock: dict[int, tuple[Pump, Pump]] = {}  # fd -> (pump reading it, pump writing it)
        self.conns: dict[int, Conn] = {}
        self._next_conn = 1
        self.queue: deque[tuple[Event, int]] = deque()
        self._queued_bytes = 0
        self._partial: set[Pump] = set()
        self._stopping = False
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        listener.setblocking(False)
        self._register(listener.fileno(), _IN)
        self._entries[listener.fileno()] = "listener"
        self._register(self.wake_r, _IN)
        self._entries[self.wake_r] = "wake"
        self.messages = 0
        self._spin_ok = True  # busy-poll only after small messages: bulk transfers need the CPU elsewhere
        self.base_limit = spec.DEFAULT_MAX_DATA_XFER_SIZE + _FIXED_MAX + spec.FRAMING_SLACK

    # ------------------------------------------------------------ public
    def stop(self) -> None:
        """Ask the loop to end (safe from a signal handler or another thread)."""
        self._stopping = True
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass

    def run(self) -> None:
        cfg = self.cfg
        poll = self.ep.poll
        queue = self.queue
        mono = time.monotonic
        busy = cfg.busy_poll
        last_active = 0.0
        next_timer = mono() + cfg.tick_interval
        try:
            while not self._stopping:
                now = mono()
                if now >= next_timer:
                    self._timers(now)
                    next_timer = now + min(cfg.tick_interval, cfg.stall_timeout / 4 if self._partial else 1.0)
                if self._queued_bytes > cfg.max_backlog:
                    while queue and self._queued_bytes > cfg.max_backlog // 2:
                        self._record_one()
                    continue
                if queue:
                    evs = poll(0)
                    if not evs:
                        self._record_one()
                        last_active = mono()  # spin on after recording too: traffic is still flowing
                        continue
                elif now - last_active < busy and self._spin_ok:
                    evs = poll(0)
                    if not evs:
                        continue
                else:
                    evs = poll(max(next_timer - now, 0.0))
                    if not evs:
                        continue
                last_active = mono()
                self._dispatch(evs)
            self._final_pass()
        finally:
            self._shutdown()

    def _dispatch(self, evs: list[tuple[int, int]], accept: bool = True) -> None:
        for fd, mask in evs:
            entry = self._by_sock.get(fd)
            if entry is not None:
                reader, writer = entry
                if mask & _OUT and writer.out is not None:
                    self._flush_out(writer)
                if mask & (_IN | _ERRMASK) and reader.mode < EOF and reader.out is None:
                    self._read(reader)
                elif mask & _ERRMASK and reader.mode >= EOF and writer.mode >= EOF:
                    self._teardown(reader.conn)
                continue
            kind = self._entries.get(fd)
            if kind == "listener":
                if accept:
                    self._accept()
            elif kind == "wake":
                try:
                    os.read(self.wake_r, 4096)
                except OSError:
                    pass

    def _final_pass(self, rounds: int = 200) -> None:
        """Stopping: relay and record what is already readable (EOFs, trailing bytes), without waiting."""
        if self._masks.get(self.listener.fileno(), 0) > 0:
            self.ep.unregister(self.listener.fileno())
            self._masks[self.listener.fileno()] = 0
        for _ in range(rounds):
            evs = [(fd, m) for fd, m in self.ep.poll(0) if fd != self.wake_r]
            if not evs:
                return
            self._dispatch(evs, accept=False)

    # ------------------------------------------------------------ epoll bookkeeping
    def _register(self, fd: int, mask: int) -> None:
        self.ep.register(fd, mask)
        self._masks[fd] = mask

    def _update(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        entry = self._by_sock.get(fd)
        if entry is None:
            return
        reader, writer = entry
        mask = (_IN if reader.mode < EOF and reader.out is None else 0) | (_OUT if writer.out is not None else 0)
        old = self._masks.get(fd, -1)
        if mask == old:
            return
        if mask == 0:
            if old > 0:
                self.ep.unregister(fd)
            self._masks[fd] = 0
        elif old <= 0:
            self.ep.register(fd, mask)
            self._masks[fd] = mask
        else:
            self.ep.modify(fd, mask)
            self._masks[fd] = mask

    def _enqueue(self, ev: Event, cost: int = 64) -> None:
        self.queue.append((ev, cost))
        self._queued_bytes += cost

    def _record_one(self) -> None:
        """Record the oldest queued event (capture write, analysis, live view)."""
        ev, cost = self.queue.popleft()
        self._queued_bytes -= cost
        live = self.recorder.live
        if live is not None and len(self.queue) > self.cfg.live_lag:
            live.behind = True
        self.recorder.record(ev)
        if not self.queue:
            self.recorder.idle()

    # ------------------------------------------------------------ connections
    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.error(f"accept on {self.label}: {exc.strerror or exc}")
                return
            self._open(client)

    def _open(self, client: socket.socket) -> None:
        now = time.time()
        cid = self._next_conn
        self._next_conn += 1
        ccred = peer_cred(client)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.settimeout(self.cfg.connect_timeout)
        try:
            server.connect(self.connect_path)
        except OSError as exc:
            server.close()
            client.close()
            msg = exc.strerror or str(exc)
            self.error(f"connection #{cid}: cannot connect to {self.connect_path}: {msg}"
                       + (f" (client pid {ccred.pid} dropped)" if ccred else ""))
            self._enqueue(ConnOpened(now, cid, self.label, ccred, None))
            self._enqueue(NoteIn(now, cid, f"cannot connect to {self.connect_path}: {msg}; client dropped",
                                 proxy_errno=exc.errno or 0))
            self._enqueue(ConnClosed(now, cid))
            return
        conn = self._add_conn(cid, client, server)
        conn.client_cred = ccred
        self._enqueue(ConnOpened(now, cid, self.label, ccred, peer_cred(server)))

    def _add_conn(self, cid: int, client: socket.socket, server: socket.socket, twin_of: int | None = None,
                  limit: int | None = None) -> Conn:
        for s in (client, server):
            s.setblocking(False)
            _widen(s)
        conn = Conn(cid, self.label, client, server, limit or self.base_limit, twin_of)
        self.conns[cid] = conn
        self._by_sock[client.fileno()] = (conn.c2s, conn.s2c)
        self._by_sock[server.fileno()] = (conn.s2c, conn.c2s)
        self._masks[client.fileno()] = 0
        self._masks[server.fileno()] = 0
        self._update(client)
        self._update(server)
        return conn

    def _teardown(self, conn: Conn, why: str = "") -> None:
        if conn.closed:
            return
        conn.closed = True
        now = time.time()
        if why:
            self._enqueue(NoteIn(now, conn.id, why))
        if conn.c2s.mode < DONE or conn.s2c.mode < DONE:
            for p in (conn.c2s, conn.s2c):
                if p.partial:
                    self._incomplete(p, "connection torn down")
            self._enqueue(ConnClosed(now, conn.id))
        for p in (conn.c2s, conn.s2c):
            _close_all(p.fds)
            _close_all(p.out_fds)
            _close_all(p.out_close)
            p.fds, p.out_fds, p.out_close, p.out = [], [], [], None
            p.mode = DONE
            self._partial.discard(p)
        for s in (conn.client, conn.server):
            fd = s.fileno()
            if fd >= 0:
                if self._masks.get(fd, 0) > 0:
                    try:
                        self.ep.unregister(fd)
                    except OSError:
                        pass
                self._masks.pop(fd, None)
                self._by_sock.pop(fd, None)
            s.close()
        self.conns.pop(conn.id, None)

    # ------------------------------------------------------------ reading
    def _read(self, p: Pump) -> None:
        """Read on while it makes progress on the message in hand; return after delivering one message
        (level-triggered epoll reports the socket again if more is waiting: no extra EAGAIN read)."""
        if p.mode == RAW:
            for _ in range(self.cfg.read_budget):
                if p.out is not None or p.mode != RAW or not self._read_raw(p):
                    return
            return
        src = p.src
        while True:
            try:
                if p.body is None:
                    n, anc, flags, _ = src.recvmsg_into([p.hview[p.hgot:]], _ANC, _RECV_FLAGS)
                else:
                    n, anc, flags, _ = src.recvmsg_into([p.bview[p.got:]], _ANC, _RECV_FLAGS)
            except (BlockingIOError, InterruptedError):
                if p.body is not None and p not in self._partial:  # a header whose body has not started: it
                    p.progress = time.monotonic()  # must stall out too (off the path of whole messages)
                    self._partial.add(p)
                return
            except OSError as exc:
                self._src_gone(p, exc)
                return
            if anc:
                if p.hgot or p.body is not None:
                    p.late = True
                _take_fds(anc, p.fds)
            if flags & _CTRUNC:
                p.ctrunc = True
            if n == 0:
                self._eof(p)
                return
            if p.body is None:
                p.hgot += n
                if p.hgot < spec.HEADER_SIZE:
                    p.progress = time.monotonic()
                    self._partial.add(p)
                    continue
                size = _HDR.unpack_from(p.hbuf)[2]
                if size == spec.HEADER_SIZE:
                    self._deliver(p, bytes(p.hbuf))
                    return
                if size < spec.HEADER_SIZE or size > p.conn.limit:
                    self._unframeable(p, size)
                    return
                body = bytearray(size)
                body[:spec.HEADER_SIZE] = p.hbuf
                p.body, p.bview, p.size, p.got = body, memoryview(body), size, spec.HEADER_SIZE
                continue
            p.got += n
            if p.got < p.size:
                p.progress = time.monotonic()
                self._partial.add(p)
                if p.size > _BIG:
                    self._spin_ok = False
                continue
            body = p.body
            self._deliver(p, bytes(body) if p.size <= _BIG else body)  # type: ignore[arg-type]
            return

    def _read_raw(self, p: Pump) -> bool:
        try:
            data, anc, flags, _ = p.src.recvmsg(65536, _ANC, _RECV_FLAGS)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            self._src_gone(p, exc)
            return False
        if anc:
            _take_fds(anc, p.fds)
        if not data:
            self._eof(p)
            return False
        fds, p.fds = p.fds, []
        fl = spec.VF_FDS_CTRUNC if flags & _CTRUNC else 0
        infos = self._send(p, data, fds)
        self._enqueue(RawIn(time.time(), p.conn.id, p.dir, data, infos, 0, p.raw_note, fl), len(data) + 64)
        p.raw_note = ""
        self._after_send(p)
        return True

    def _reset_msg(self, p: Pump) -> None:
        p.hgot = 0
        if p.body is not None:
            p.bview.release()  # type: ignore[union-attr]
            p.body = p.bview = None
        p.size = p.got = 0
        p.late = p.ctrunc = False
        if p in self._partial:
            self._partial.discard(p)

    def _flags(self, p: Pump) -> int:
        return (spec.VF_FDS_NOT_AT_MSG_START if p.late else 0) | (spec.VF_FDS_CTRUNC if p.ctrunc else 0)

    def _deliver(self, p: Pump, data: bytes) -> None:
        """A whole message: forward it (one sendmsg with its fds), then queue it for recording."""
        ts = time.time()
        fds, p.fds = p.fds, []
        flags = self._flags(p)
        self._reset_msg(p)
        twin: tuple[socket.socket, socket.socket] | None = None
        infos: tuple[FdInfo, ...] | None = None
        if data[2] == 1 and data[3] == 0:  # VERSION: negotiated limits (and the twin socket) matter to the relay
            if fds:
                infos = tuple(describe_fd(fd) for fd in fds)  # as the server sent them, before any swap
            twin = self._version(p, data, fds)
        infos = self._send(p, data, fds, infos)
        self.messages += 1
        self._spin_ok = len(data) <= _BIG
        self._enqueue(make_message_in(ts, p.conn.id, p.dir, data, infos, 0, -1, flags), len(data) + 64)
        if twin is not None:
            if p.gone is None:
                self._open_twin(p.conn, *twin)
            else:  # the client is gone: nobody will use the twin channel
                for sock in twin:
                    sock.close()
        self._after_send(p)

    def _unframeable(self, p: Pump, size: int) -> None:
        """A header that cannot be framed: forward it at once and relay this direction raw from now on."""
        data = bytes(p.hbuf)
        fds, p.fds = p.fds, []
        flags = self._flags(p) | spec.VF_FRAMING_ERROR
        self._reset_msg(p)
        why = (f"header size {size} is below 16" if size < spec.HEADER_SIZE
               else f"header size {size} is beyond the negotiated maximum ({p.conn.limit})")
        infos = self._send(p, data, fds)
        self._enqueue(make_message_in(time.time(), p.conn.id, p.dir, data, infos, 0, -1, flags), 80)
        self._enqueue(NoteIn(time.time(), p.conn.id, f"{p.dir} {why}: relaying raw from here", p.dir))
        p.mode = RAW
        p.raw_note = why
        self._after_send(p)

    def _incomplete(self, p: Pump, why: str) -> None:
        """Forward and record what arrived of the message in hand (stall, EOF or teardown mid-message)."""
        fds, p.fds = p.fds, []
        flags = self._flags(p)
        if p.body is not None:
            data, size = bytes(p.bview[:p.got]), p.size  # type: ignore[index]
        else:
            data, size = bytes(p.hbuf[:p.hgot]), 0
        self._reset_msg(p)
        if p.mode < DONE and not p.conn.closed:
            infos = self._send(p, data, fds)
        else:
            infos = tuple(describe_fd(fd) for fd in fds)
            _close_all(fds)
        now = time.time()
        if size:
            self._enqueue(make_message_in(now, p.conn.id, p.dir, data, infos, 0, -1, flags), len(data) + 64)
            what = f"{p.dir} message cut short: {len(data)} of {size} bytes ({why})"
        else:
            self._enqueue(RawIn(now, p.conn.id, p.dir, data, infos, 0, f"{len(data)}-byte partial header ({why})",
                                flags), len(data) + 64)
            what = f"{p.dir} partial header of {len(data)} bytes ({why})"
        self._enqueue(NoteIn(now, p.conn.id, what, p.dir))
        self._after_send(p)

    def _stall(self, p: Pump) -> None:
        self._incomplete(p, f"no progress for {self.cfg.stall_timeout:g} s; forwarded as far as it came, "
                            "relaying raw from here")
        if p.mode == FRAMED:
            p.mode = RAW
            p.raw_note = "after a stalled message"

    def _eof(self, p: Pump) -> None:
        if p.partial:
            self._incomplete(p, "peer closed mid-message")
        if p.fds:  # fds with no bytes at all
            _close_all(p.fds)
            p.fds = []
        p.mode = EOF
        self._enqueue(ConnClosed(time.time(), p.conn.id, p.dir))
        if p.out is None:
            self._shut_dst(p)
        else:
            p.shut_pending = True
        self._update(p.src)

    def _src_gone(self, p: Pump, exc: OSError) -> None:
        if exc.errno not in _GONE:
            self._enqueue(NoteIn(time.time(), p.conn.id, f"{p.dir} read failed: {exc.strerror or exc}", p.dir,
                                 proxy_errno=exc.errno or 0))
        self._eof(p)

    def _shut_dst(self, p: Pump) -> None:
        self._half_done(p, p.dst, socket.SHUT_WR)

    # ------------------------------------------------------------ writing
    def _send(self, p: Pump, data: bytes, fds: list[int],
              infos: tuple[FdInfo, ...] | None = None) -> tuple[FdInfo, ...]:
        """Forward with one sendmsg; returns the fds' descriptions.  Keeps the rest pending if the peer is full."""
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else None
        sent = 0
        gone: OSError | None = None
        if p.mode < DONE:
            try:
                sent = p.dst.sendmsg([data], anc) if anc else p.dst.send(data, _DONTWAIT)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                gone = exc
        if infos is None:
            infos = tuple(describe_fd(fd) for fd in fds) if fds else ()
        if gone is not None or p.mode >= DONE:
            _close_all(fds)
            p.gone = gone  # the caller records the message first, then _after_send() says it went nowhere
            return infos
        if sent == len(data):
            _close_all(fds)
            return infos
        p.out = memoryview(data)[sent:]
        if sent:
            _close_all(fds)
        else:
            p.out_fds = fds
        self._update(p.src)
        self._update(p.dst)
        return infos

    def _after_send(self, p: Pump) -> None:
        """After recording a message: if its forward found the receiver gone, stop this direction now."""
        if p.gone is not None:
            exc, p.gone = p.gone, None
            self._dst_gone(p, exc)

    def _flush_out(self, p: Pump) -> None:
        assert p.out is not None
        try:
            if p.out_fds:
                anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", p.out_fds).tobytes())]
                n = p.dst.sendmsg([p.out], anc)
            else:
                n = p.dst.send(p.out, _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            _close_all(p.out_fds)
            p.out_fds, p.out = [], None
            self._dst_gone(p, exc)
            return
        if p.out_fds:
            _close_all(p.out_fds)
            p.out_fds = []
        p.out = p.out[n:] if n < len(p.out) else None
        if p.out is None:
            if p.shut_pending:
                p.shut_pending = False
                self._shut_dst(p)
                return
            self._update(p.dst)
            self._update(p.src)
            if p.mode < EOF:
                self._read(p)

    def _dst_gone(self, p: Pump, exc: OSError) -> None:
        """The receiving peer is gone: stop this direction and tell the sender (its writes now fail)."""
        self._enqueue(NoteIn(time.time(), p.conn.id, f"{p.dir} could not be forwarded: {exc.strerror or exc}; "
                                                     "the receiving peer is gone", p.dir, proxy_errno=exc.errno or 0))
        if p.partial:
            self._reset_msg(p)
        _close_all(p.fds)
        p.fds = []
        if p.mode < EOF:
            self._enqueue(ConnClosed(time.time(), p.conn.id, p.dir))
        self._half_done(p, p.src, socket.SHUT_RD)

    def _half_done(self, p: Pump, sock: socket.socket, how: int) -> None:
        """One direction is finished: shut its socket half; tear the connection down once both are."""
        p.mode = DONE
        try:
            sock.shutdown(how)
        except OSError:
            pass
        other = p.conn.s2c if p is p.conn.c2s else p.conn.c2s
        if other.mode == DONE:
            self._teardown(p.conn)
        else:
            self._update(sock)

    # ------------------------------------------------------------ VERSION and the twin socket
    def _version(self, p: Pump, data: bytes, fds: list[int]) -> tuple[socket.socket, socket.socket] | None:
        conn = p.conn
        flags = _HDR.unpack_from(data)[3]
        is_reply = (flags & spec.FLAG_TYPE_MASK) == spec.MSG_TYPE_REPLY
        if p.dir == (S2C if is_reply else C2S) and not flags & spec.FLAG_ERROR:
            caps = version_capabilities(data)
            conn.xfer[p.dir] = usable_max_xfer(caps)
            conn.limit = max(self.base_limit, max(conn.xfer.values()) + _FIXED_MAX + spec.FRAMING_SLACK)
            if is_reply and fds:
                tw = caps.get("twin_socket")
                if isinstance(tw, dict) and tw.get("supported") is True:
                    idx = tw.get("fd_index")
                    if isinstance(idx, int) and not isinstance(idx, bool) and 0 <= idx < len(fds):
                        if describe_fd(fds[idx]).kind == "socket":
                            theirs = socket.socket(fileno=fds[idx])
                            to_client, mine = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                            fds[idx] = to_client.detach()
                            return theirs, mine
        return None

    def _open_twin(self, main: Conn, theirs: socket.socket, mine: socket.socket) -> None:
        """Relay the twin socket as its own connection: `mine` faces the client, `theirs` is the server's end."""
        cid = self._next_conn
        self._next_conn += 1
        twin = self._add_conn(cid, mine, theirs, twin_of=main.id, limit=main.limit)
        twin.client_cred = main.client_cred
        self._enqueue(ConnOpened(time.time(), cid, self.label, main.client_cred, peer_cred(theirs), main.id))

    # ------------------------------------------------------------ timers and shutdown
    def _timers(self, now: float) -> None:
        self.recorder.commit()  # traffic that never pauses still reaches the capture file every tick
        stall = self.cfg.stall_timeout
        for p in [p for p in self._partial if now - p.progress > stall]:
            if p.mode == FRAMED and p.partial:
                self._stall(p)
            else:
                self._partial.discard(p)
        self._enqueue(Tick(time.time()), 0)

    def _shutdown(self) -> None:
        for conn in list(self.conns.values()):
            self._teardown(conn)
        while self.queue:
            self._record_one()
        self.recorder.finish(time.time())
        for fd in (self.wake_r, self.wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self.ep.close()
