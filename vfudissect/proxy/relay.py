"""The relay loop: one thread, epoll, every connection's two directions framed (core/framing.py) and forwarded.

Design (measured, see bench/README.md):

1. Forwarding first.  Each direction reads exactly what its deframer asks
   for (a header, then its body: so the fds a read brings belong to the
   message it reads) and forwards each whole message with ONE sendmsg
   carrying its fds, then describes and closes its copies of the fds.
2. Recording (capture write, analysis, live view) is queued and done in
   slices between polls, each slice at most ``record_slice`` seconds, so a
   message that arrives while the recorder works waits at most that long:
   recording never stops the relay, whatever the load.
3. Backpressure that slows, never stops: the queue is bounded in events
   and in bytes (what a queued event costs: its data plus its overhead).
   While it is full the relay reads nothing new and records; each slice
   makes room for the next reads, so the peers are slowed to the recording
   rate instead of being held while a backlog drains.
4. Time the recorder may trust: a Tick (which lets REPLY_TIMEOUT fire while
   a request waits) is queued in order behind every event read before it,
   and none while the relay holds reads back (the replies it has not read
   yet are the proxy's doing, not the peer's).
5. A message larger than its receiver accepts is never held: the deframer
   puts out its header and then its body in chunks as they arrive.

Optionally the loop keeps polling without sleeping for ``busy_poll`` seconds
after a small message (a sleeping relay costs a scheduler wake-up per hop);
the CLI enables it only with 4 or more CPUs.
"""

from __future__ import annotations

import array
import ctypes
import ctypes.util
import errno
import os
import select
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from .. import spec
from ..core import framing
from ..core.events import ConnClosed, ConnOpened, Cred, Event, FdInfo, IrqIn, NoteIn, RawIn, Tick, make_message_in
from ..core.framing import MESSAGE, RAW, ConnectionFraming, Deframer, Out
from .fdinfo import describe_fd
from .inject import SIDE_DIR, Forward, Injector, LiveFault, Plan
from .recorder import Recorder

C2S, S2C = spec.C2S, spec.S2C
_ANC = socket.CMSG_SPACE(253 * 4)
# plain ints: socket.MSG_* are enum members, and `int & member` runs enum code (~2.5 us per message measured)
_DONTWAIT = int(socket.MSG_DONTWAIT)
_RECV_FLAGS = int(socket.MSG_DONTWAIT) | int(getattr(socket, "MSG_CMSG_CLOEXEC", 0))
_CTRUNC = int(socket.MSG_CTRUNC)
_IN, _OUT = select.EPOLLIN, select.EPOLLOUT
_ERRMASK = select.EPOLLERR | select.EPOLLHUP
_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EBADF)
_CRED = struct.Struct("3i")
_SNDBUF = 4 << 20  # room for a whole 1 MiB message per sendmsg (SO_SNDBUFFORCE when allowed, else capped)
_SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
_BIG = 64 << 10  # larger messages: no busy-polling after them
_EVENT_COST = 256  # bytes a queued event costs beyond its data (the objects that carry it)
_now = time.time
_VERSION = int(spec.Command.VERSION)  # the low byte of the command field: what saw() looks at first

# pump states (framing itself is the deframer's)
OPEN, EOF, DONE = 0, 2, 3


@dataclass(frozen=True, slots=True)
class RelayConfig:
    stall_timeout: float = 0.5  # seconds without progress inside a message before it is forwarded raw
    busy_poll: float = 0.0  # seconds to keep polling after activity (0 = always sleep in epoll)
    tick_interval: float = 0.1  # how often the engine hears the time (live REPLY_TIMEOUT)
    record_slice: float = 0.005  # longest stretch of recording between two polls: what a message may wait for it
    read_budget: int = 32  # messages read from one socket in a row before the others get a turn
    max_events: int = 100_000  # events queued for recording before reading pauses
    max_bytes: int = 32 << 20  # ... or bytes (data plus _EVENT_COST each)
    live_lag: int = 256  # events waiting to be recorded before the live view stops rendering messages
    connect_timeout: float = 2.0
    faults: tuple[LiveFault, ...] = ()  # record --fault: without any, the proxy is byte- and fd-transparent
    # record --watch-irqs: the server gets eventfds of the proxy's in SET_IRQS (the client's stay with the proxy), so
    # each interrupt is seen, relayed to the client's eventfd at once, and recorded
    watch_irqs: bool = False

    @property
    def max_hold(self) -> float:
        """The most a message that can be read waits in the proxy for recording: one slice (the forwarding around
        it is measured in microseconds)."""
        return self.record_slice


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


def _close_all(fds: list[int] | tuple[int, ...]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _malloc_trim() -> Callable[[], None]:
    """glibc's malloc_trim(0): hand freed heap back to the system after a burst (a no-op elsewhere)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0) and None


class Conn:
    """One proxied connection (or twin-socket channel): the two sockets, the framing, the two pumps."""

    __slots__ = ("id", "path", "client", "server", "c2s", "s2c", "twin_of", "framing", "client_cred", "closed")

    def __init__(self, cid: int, path: str, client: socket.socket, server: socket.socket, stall: float,
                 twin_of: int | None = None, framing_of: ConnectionFraming | None = None) -> None:
        self.id = cid
        self.path = path
        self.client = client
        self.server = server
        self.twin_of = twin_of
        self.framing = ConnectionFraming(stall)
        if framing_of is not None:  # a twin socket carries what its main connection negotiated
            self.framing.c2s.limit, self.framing.s2c.limit = framing_of.c2s.limit, framing_of.s2c.limit
        self.client_cred: Cred | None = None
        self.closed = False
        self.c2s = Pump(self, C2S, client, server, self.framing.c2s)
        self.s2c = Pump(self, S2C, server, client, self.framing.s2c)


class Pump:
    """One direction of one connection: its deframer, its state, and the output still to send."""

    __slots__ = ("conn", "dir", "src", "dst", "d", "state", "out", "out_fds", "shut_pending", "gone", "held",
                 "stalled", "injector")

    def __init__(self, conn: Conn, d: str, src: socket.socket, dst: socket.socket, deframer: Deframer) -> None:
        self.conn = conn
        self.dir = d
        self.src = src
        self.dst = dst
        self.d = deframer
        self.state = OPEN
        self.out: memoryview | None = None  # bytes still to send to dst
        self.out_fds: list[int] = []  # fds to send with the next sendmsg (nothing of `out` sent yet)
        self.shut_pending = False  # src hit EOF while output was pending: shut dst down after it drains
        self.gone: OSError | None = None  # the last forward found the receiver gone (handled once recorded)
        # record --fault: injected forwards waiting for their time (or for the output before them), in order, while
        # reading this direction pauses; ``stalled`` after a truncate: nothing more is forwarded
        self.held: deque[tuple[float, Forward | None, Conn]] | None = None
        self.stalled = False
        self.injector: Injector | None = None


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
        self._entries: dict[int, object] = {}  # fd -> listener marker / wake marker
        self._masks: dict[int, int] = {}
        self._by_sock: dict[int, tuple[Pump, Pump]] = {}  # fd -> (pump reading it, pump writing it)
        self.conns: dict[int, Conn] = {}
        self._next_conn = 1
        self.queue: deque[tuple[Event, int]] = deque()
        self.queued_bytes = 0
        self.peak_events = 0  # most events queued at once (the soak benchmark reports it)
        self.longest_wait = 0.0  # the longest stretch the relay spent away from sockets that had data for it
        self._partial: set[Pump] = set()
        self._stopping = False
        self._trim = _malloc_trim()
        self._heavy = False  # the queue grew large since it was last empty: give memory back once it empties
        self._idle_due = False
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        listener.setblocking(False)
        self._register(listener.fileno(), _IN)
        self._entries[listener.fileno()] = "listener"
        self._register(self.wake_r, _IN)
        self._entries[self.wake_r] = "wake"
        self.messages = 0
        self._spin_ok = True  # busy-poll only after small messages: bulk transfers need the CPU elsewhere
        self._held: set[Pump] = set()  # pumps with injected forwards waiting (record --fault)
        self.injected = 0  # faults that fired
        self._irqs: dict[tuple[int, int, int], tuple[int, int]] = {}  # (conn, index, vector) -> (ours, client's)
        self._irq_of: dict[int, tuple[int, int, int]] = {}  # our eventfd -> (conn, index, vector)
        self.interrupts = 0  # relayed (record --watch-irqs)

    # ------------------------------------------------------------ public
    def stop(self) -> None:
        """Ask the loop to end (safe from a signal handler or another thread)."""
        self._stopping = True
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass

    @property
    def full(self) -> bool:
        """The recording queue is at its bound: reading waits for recording to make room."""
        return len(self.queue) >= self.cfg.max_events or self.queued_bytes >= self.cfg.max_bytes

    def run(self) -> None:
        cfg = self.cfg
        poll = self.ep.poll
        mono = time.monotonic
        busy = cfg.busy_poll
        last_active = 0.0
        busy_since = 0.0  # end of the last dispatch, while sockets keep being ready
        next_timer = mono() + cfg.tick_interval
        try:
            while not self._stopping:
                now = mono()
                if now >= next_timer:
                    self._timers(now)
                    next_timer = now + min(cfg.tick_interval, cfg.stall_timeout / 4 if self._partial else 1.0)
                if self._held:
                    next_timer = self._release_held(now, next_timer)
                if self.queue:
                    evs = poll(0)
                elif now - last_active < busy and self._spin_ok:
                    evs = poll(0)
                    if not evs:
                        continue
                else:
                    evs = poll(0)
                    if not evs:  # nothing to relay, nothing to record: the view and the capture catch up, then sleep
                        if self._idle_due:
                            self._idle_due = False
                            self.recorder.idle()
                        evs = poll(max(next_timer - mono(), 0.0))
                if evs:
                    last_active = t = mono()
                    if busy_since and t - busy_since > self.longest_wait:
                        self.longest_wait = t - busy_since  # sockets were ready all this time: what a message waited
                    self._dispatch(evs, read=not self.full)
                    busy_since = mono()
                else:
                    busy_since = 0.0
                if self.queue:
                    self._record_slice(mono() + cfg.record_slice)
                    last_active = mono()  # traffic is still flowing: spin on after recording too
            self._final_pass()
        finally:
            self._shutdown()

    def _dispatch(self, evs: list[tuple[int, int]], accept: bool = True, read: bool = True) -> None:
        for fd, mask in evs:
            entry = self._by_sock.get(fd)
            if entry is not None:
                reader, writer = entry
                if mask & _OUT and writer.out is not None:
                    self._flush_out(writer)
                if read and mask & (_IN | _ERRMASK) and reader.state == OPEN and reader.out is None \
                        and reader.held is None:
                    self._read(reader)
                elif mask & _ERRMASK and reader.state >= EOF and writer.state >= EOF:
                    self._teardown(reader.conn)
                continue
            kind = self._entries.get(fd)
            if kind == "irq":
                self._irq_fired(fd)
                continue
            if kind == "listener":
                if accept and read:
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
        mask = (_IN if reader.state == OPEN and reader.out is None and reader.held is None else 0) | (
            _OUT if writer.out is not None else 0)
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

    # ------------------------------------------------------------ recording
    def _enqueue(self, ev: Event, size: int = 0) -> None:
        cost = size + _EVENT_COST
        self.queue.append((ev, cost))
        self.queued_bytes += cost
        n = len(self.queue)
        if n > self.peak_events:
            self.peak_events = n
            if n > 10_000:
                self._heavy = True

    def _record_slice(self, until: float) -> None:
        """Record queued events (capture write, analysis, live view) for at most one slice, oldest first."""
        queue = self.queue
        record = self.recorder.record
        mono = time.monotonic
        live = self.recorder.live
        if live is not None and len(queue) > self.cfg.live_lag:
            live.behind = True
        while queue:
            ev, cost = queue.popleft()
            self.queued_bytes -= cost
            record(ev)
            if mono() >= until:  # every event: one slow one (a big write, a stalled sink) ends the slice at once
                break
        if not queue:
            self._idle_due = True  # recorder.idle() once the relay has nothing else to do (not after every burst)
            if self._heavy:
                self._heavy = False
                self._trim()

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
        except OSError as exc:  # the server is not there (or not taking clients): this client only is closed
            server.close()
            client.close()
            msg = exc.strerror or str(exc)
            why = {errno.ENOENT: f"the server socket does not exist ({msg})",
                   errno.ECONNREFUSED: f"nobody listens on it ({msg}: the server is gone)",
                   errno.EAGAIN: f"the server takes no more clients ({msg}: its backlog is full)"}.get(
                       exc.errno or 0, f"the server does not accept ({msg})" if isinstance(exc, TimeoutError) else msg)
            self.error(f"connection #{cid}: cannot connect to {self.connect_path}: {why}; client "
                       + (f"pid {ccred.pid} " if ccred else "") + "closed, still accepting clients")
            self._enqueue(ConnOpened(now, cid, self.label, ccred, None))
            self._enqueue(NoteIn(now, cid, f"cannot connect to {self.connect_path}: {why}; client closed, the proxy "
                                           "goes on accepting clients", proxy_errno=exc.errno or 0))
            self._enqueue(ConnClosed(now, cid))
            return
        conn = self._add_conn(cid, client, server)
        conn.client_cred = ccred
        self._enqueue(ConnOpened(now, cid, self.label, ccred, peer_cred(server)))

    def _add_conn(self, cid: int, client: socket.socket, server: socket.socket, twin_of: Conn | None = None) -> Conn:
        for s in (client, server):
            s.setblocking(False)
            _widen(s)
        conn = Conn(cid, self.label, client, server, self.cfg.stall_timeout,
                    twin_of.id if twin_of is not None else None, twin_of.framing if twin_of is not None else None)
        self.conns[cid] = conn
        if self.cfg.faults:  # each side's faults count per connection, a twin socket's with its main connection's
            if twin_of is not None:
                conn.c2s.injector, conn.s2c.injector = twin_of.c2s.injector, twin_of.s2c.injector
            else:
                for side, d in SIDE_DIR.items():
                    mine = [f for f in self.cfg.faults if f.side == side]
                    if mine:
                        (conn.c2s if d == C2S else conn.s2c).injector = Injector(side, mine)
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
        if conn.c2s.state < DONE or conn.s2c.state < DONE:
            for p in (conn.c2s, conn.s2c):
                if p.d.partial:
                    self._outs(p, p.d.close(now, "connection torn down"), send=False)
            self._enqueue(ConnClosed(now, conn.id))
        for p in (conn.c2s, conn.s2c):
            _close_all(p.out_fds)
            p.out_fds, p.out = [], None
            p.state = DONE
            self._partial.discard(p)
            if p.held is not None:  # injected forwards not yet due: they go nowhere now
                for _due, fw, _c in p.held:
                    if fw is not None:
                        _close_all(fw.fds)
                p.held = None
                self._held.discard(p)
        for key in [k for k in self._irqs if k[0] == conn.id]:
            self._unwatch(key)
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
        """Read what the deframer asks for while it makes progress, up to ``read_budget`` messages (a pipelined
        peer's burst in one go, without starving the other sockets); stop early when the recording queue is full
        or the output is pending (level-triggered epoll reports the socket again if more is waiting)."""
        d = p.d
        src = p.src
        budget = self.cfg.read_budget
        received = d.received
        while True:
            buf = d.buffer()
            want = len(buf)
            if not want:
                return
            if want > _BIG:
                self._spin_ok = False  # a bulk body to read: the CPU is better spent elsewhere than spinning
            try:
                n, anc, flags, _ = src.recvmsg_into([buf], _ANC, _RECV_FLAGS)
            except (BlockingIOError, InterruptedError):
                if d.partial and p not in self._partial:  # a message in hand must stall out if it stops
                    self._partial.add(p)
                return
            except OSError as exc:
                self._src_gone(p, exc)
                return
            fds: list[int] = []
            if anc:
                _take_fds(anc, fds)
            if n == 0:
                if fds:
                    _close_all(fds)
                self._eof(p)
                return
            outs = received(n, fds, flags & _CTRUNC != 0, _now())
            if outs:
                if not d.partial:
                    self._partial.discard(p)
                self._outs(p, outs)
                budget -= 1
                if budget <= 0 or p.out is not None or p.state != OPEN or self.full or p.held is not None:
                    return

    def _outs(self, p: Pump, outs: list[Out], send: bool = True) -> None:
        """Forward (unless the connection is gone) and queue for recording what the deframer put out."""
        conn = p.conn
        for o in outs:
            kind = o.kind
            if kind == MESSAGE:
                self._message(p, o, send)
            elif kind == RAW:
                infos = self._send(p, o.data, list(o.fds)) if send else self._describe_and_close(o.fds)
                self._enqueue(RawIn(o.ts, conn.id, p.dir, bytes(o.data), infos, 0, o.note, o.flags), len(o.data))
            else:
                if o.fds:
                    _close_all(o.fds)  # fds that came with no bytes: nothing to forward them with
                if o.note:
                    self._enqueue(NoteIn(o.ts, conn.id, o.note, p.dir))
        self._after_send(p)

    def _message(self, p: Pump, o: Out, send: bool) -> None:
        conn = p.conn
        data = o.data
        fds = list(o.fds)
        twin: tuple[socket.socket, socket.socket] | None = None
        infos: tuple[FdInfo, ...] | None = None
        # VERSION: the receivers' limits (and the twin socket) follow it; saw() is asked only when it may be one
        caps = conn.framing.saw(p.dir, data) if data[2] == _VERSION and not data[3] else None
        if p.injector is not None and send:
            plan = None if p.stalled else p.injector.plan(bytes(data), fds)
            if plan is not None or p.stalled:
                self._inject(p, o, plan)
                return
        if self.cfg.watch_irqs and p.dir == C2S and send and conn.twin_of is None and len(data) >= 36 \
                and data[2] == spec.Command.DEVICE_SET_IRQS and not data[3] and not data[8] & spec.FLAG_TYPE_MASK:
            if fds:
                infos = tuple(describe_fd(fd) for fd in fds)  # the client's eventfds, as it sent them
            fds = self._watch_irqs(conn, data, fds)
        if caps is not None and fds:
            infos = tuple(describe_fd(fd) for fd in fds)  # as the sender sent them, before any swap
            if p.dir == S2C and send:
                twin = self._twin_socket(caps, fds)
        if send:
            infos = self._send(p, data, fds, infos)
        else:
            infos = infos or self._describe_and_close(fds)
        self.messages += 1
        self._spin_ok = len(data) <= _BIG
        self._enqueue(make_message_in(o.ts, conn.id, p.dir, data, infos, 0, o.msg_len, o.flags), len(data))
        if twin is not None:
            if p.gone is None:
                self._open_twin(conn, *twin)
            else:  # the client is gone: nobody will use the twin channel
                for sock in twin:
                    sock.close()

    # ------------------------------------------------------------ record --watch-irqs
    def _watch_irqs(self, conn: Conn, data: bytes | bytearray, fds: list[int]) -> list[int]:
        """A SET_IRQS that hands the server eventfds to trigger: keep the client's, give the server ours (what the
        server's writes to them mean is relayed and recorded by _irq_fired).  Anything else goes as it is."""
        _argsz, flags, index, start, count = struct.unpack_from("<IIIII", data, 16)
        if flags & spec.IRQ_SET_DATA_MASK == spec.IRQ_SET_DATA_NONE and count == 0 \
                and flags & spec.IRQ_SET_ACTION_MASK == spec.IRQ_SET_ACTION_TRIGGER:  # the index's triggers torn down
            for key in [k for k in self._irqs if k[0] == conn.id and k[1] == index]:
                self._unwatch(key)
            return fds
        if not fds or flags & spec.IRQ_SET_DATA_MASK != spec.IRQ_SET_DATA_EVENTFD or \
                flags & spec.IRQ_SET_ACTION_MASK != spec.IRQ_SET_ACTION_TRIGGER or len(fds) != count:
            return fds
        out: list[int] = []
        for i, theirs in enumerate(fds):
            key = (conn.id, index, start + i)
            self._unwatch(key)
            ours = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            self._irqs[key] = (ours, theirs)
            self._irq_of[ours] = key
            self._register(ours, _IN)
            self._entries[ours] = "irq"
            out.append(os.dup(ours))  # the server's copy: sent, then closed like any forwarded fd
        return out

    def _unwatch(self, key: tuple[int, int, int]) -> None:
        pair = self._irqs.pop(key, None)
        if pair is None:
            return
        ours, theirs = pair
        self._irq_of.pop(ours, None)
        self._entries.pop(ours, None)
        try:
            self.ep.unregister(ours)
        except OSError:
            pass
        self._masks.pop(ours, None)
        _close_all((ours, theirs))

    def _irq_fired(self, ours: int) -> None:
        """The server signalled one of our eventfds: the same count to the client's, and an IRQ record."""
        key = self._irq_of.get(ours)
        if key is None:
            return
        try:
            n = os.eventfd_read(ours)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._unwatch(key)
            return
        conn_id, index, vector = key
        try:
            os.eventfd_write(self._irqs[key][1], n)
        except OSError as exc:
            self._enqueue(NoteIn(time.time(), conn_id, f"interrupt {index}/{vector} could not be relayed to the "
                                                       f"client: {exc.strerror or exc}", S2C, proxy_errno=exc.errno or 0))
        self.interrupts += 1
        self._enqueue(IrqIn(time.time(), conn_id, index, vector, n))

    # ------------------------------------------------------------ record --fault
    def _inject(self, p: Pump, o: Out, plan: Plan | None) -> None:
        """Carry out a fault's plan: the original recorded (WITHHELD unless it goes on as it was), each injected
        forward now or at its time (INJECTED), then the close.  ``plan`` None: the direction is stalled (after a
        truncate) and the message is withheld."""
        conn = p.conn
        data, fds = o.data, list(o.fds)
        infos = tuple(describe_fd(fd) for fd in fds)
        self.messages += 1
        if plan is None or not plan.original:
            if plan is not None:
                self.injected += 1
                self._enqueue(NoteIn(time.time(), conn.id, plan.note, p.dir))
            _close_all(plan.unused if plan is not None else fds)
            self._enqueue(make_message_in(o.ts, conn.id, p.dir, data, infos, 0, o.msg_len,
                                          o.flags | spec.VF_WITHHELD), len(data))
            if plan is None:
                return
        else:
            self.injected += 1
            self._enqueue(NoteIn(time.time(), conn.id, plan.note, p.dir))
            infos = self._send(p, data, [fd for fd in fds if fd not in plan.unused], infos)
            _close_all(plan.unused)
            self._enqueue(make_message_in(o.ts, conn.id, p.dir, data, infos, 0, o.msg_len, o.flags), len(data))
        base = time.monotonic()
        queue: deque[tuple[float, Forward | None, Conn]] = p.held if p.held is not None else deque()
        for fw in plan.forwards:
            queue.append((base + fw.delay, fw, conn))
        if plan.close:
            queue.append((base + max((fw.delay for fw in plan.forwards), default=0.0), None, conn))
        if queue:
            p.held = queue
            self._held.add(p)
            self._update(p.src)
            self._drain_held(p)

    def _release_held(self, now: float, next_timer: float) -> float:
        """Forward what is due; the next timer no later than the next forward's time."""
        for p in list(self._held):
            self._drain_held(p)
            if p.held:
                next_timer = min(next_timer, p.held[0][0])
        return next_timer

    def _drain_held(self, p: Pump) -> None:
        q = p.held
        while q and p.out is None and p.state < DONE:
            due, fw, conn = q[0]
            if due > time.monotonic():
                return
            q.popleft()
            if fw is None:
                self._teardown(conn, f"the proxy closed connection #{conn.id} (record --fault close)")
                q.clear()
                break
            self._forward_injected(p, fw)
            if fw.stall:
                p.stalled = True
        if q and p.state < DONE:
            return
        for _due, fw, _c in q or ():
            if fw is not None:
                _close_all(fw.fds)
        p.held = None
        self._held.discard(p)
        if p.state < DONE:
            self._update(p.src)
            if p.state == OPEN and p.out is None and not self.full:
                self._read(p)

    def _forward_injected(self, p: Pump, fw: Forward) -> None:
        target = p
        if fw.main_socket and p.conn.twin_of is not None and p.conn.twin_of in self.conns:
            main = self.conns[p.conn.twin_of]
            target = main.s2c if p.dir == S2C else main.c2s
        infos = self._send(target, fw.data, list(fw.fds))
        now = time.time()
        data = fw.data
        if len(data) >= framing.HEADER_SIZE:
            size = spec.HEADER.unpack_from(data)[2]
            flags = spec.VF_INJECTED | (spec.VF_FRAMING_ERROR if size < framing.HEADER_SIZE else 0)
            self._enqueue(make_message_in(now, target.conn.id, p.dir, data, infos, 0, -1, flags), len(data))
        else:
            self._enqueue(RawIn(now, target.conn.id, p.dir, data, infos, 0, "injected by the proxy",
                                spec.VF_INJECTED), len(data))
        self._after_send(target)

    @staticmethod
    def _describe_and_close(fds: tuple[int, ...] | list[int]) -> tuple[FdInfo, ...]:
        infos = tuple(describe_fd(fd) for fd in fds)
        _close_all(fds)
        return infos

    def _eof(self, p: Pump) -> None:
        now = time.time()
        outs = p.d.close(now)
        self._partial.discard(p)
        if outs:
            self._outs(p, outs, send=p.state < DONE and not p.conn.closed)
        if p.state < EOF:
            p.state = EOF
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
    def _send(self, p: Pump, data: bytes | bytearray, fds: list[int],
              infos: tuple[FdInfo, ...] | None = None) -> tuple[FdInfo, ...]:
        """Forward with one sendmsg; returns the fds' descriptions.  Keeps the rest pending if the peer is full."""
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else None
        sent = 0
        gone: OSError | None = None
        if p.state < DONE:
            try:
                sent = p.dst.sendmsg([data], anc) if anc else p.dst.send(data, _DONTWAIT)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                gone = exc
        if infos is None:
            infos = tuple(describe_fd(fd) for fd in fds) if fds else ()
        if gone is not None or p.state >= DONE:
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
            if p.held is not None:
                self._drain_held(p)
                return
            if p.shut_pending:
                p.shut_pending = False
                self._shut_dst(p)
                return
            self._update(p.dst)
            self._update(p.src)
            if p.state == OPEN and not self.full:
                self._read(p)

    def _dst_gone(self, p: Pump, exc: OSError) -> None:
        """The receiving peer is gone: stop this direction and tell the sender (its writes now fail)."""
        self._enqueue(NoteIn(time.time(), p.conn.id, f"{p.dir} could not be forwarded: {exc.strerror or exc}; "
                                                     "the receiving peer is gone", p.dir, proxy_errno=exc.errno or 0))
        for o in p.d.close(time.time(), "the receiving peer is gone"):
            _close_all(o.fds)  # what arrived of a message in hand can go nowhere: dropped
        self._partial.discard(p)
        if p.state < EOF:
            self._enqueue(ConnClosed(time.time(), p.conn.id, p.dir))
        self._half_done(p, p.src, socket.SHUT_RD)

    def _half_done(self, p: Pump, sock: socket.socket, how: int) -> None:
        """One direction is finished: shut its socket half; tear the connection down once both are."""
        p.state = DONE
        try:
            sock.shutdown(how)
        except OSError:
            pass
        other = p.conn.s2c if p is p.conn.c2s else p.conn.c2s
        if other.state == DONE:
            self._teardown(p.conn)
        else:
            self._update(sock)

    # ------------------------------------------------------------ the twin socket
    def _twin_socket(self, caps: dict, fds: list[int]) -> tuple[socket.socket, socket.socket] | None:
        """A VERSION reply naming a twin socket among its fds: put our end of a socket pair in its place."""
        idx = framing.twin_socket_index(caps, len(fds))
        if idx is None or describe_fd(fds[idx]).kind != "socket":
            return None
        theirs = socket.socket(fileno=fds[idx])
        to_client, mine = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds[idx] = to_client.detach()
        return theirs, mine

    def _open_twin(self, main: Conn, theirs: socket.socket, mine: socket.socket) -> None:
        """Relay the twin socket as its own connection: `mine` faces the client, `theirs` is the server's end."""
        cid = self._next_conn
        self._next_conn += 1
        twin = self._add_conn(cid, mine, theirs, twin_of=main)
        twin.client_cred = main.client_cred
        self._enqueue(ConnOpened(time.time(), cid, self.label, main.client_cred, peer_cred(theirs), main.id))

    # ------------------------------------------------------------ timers and shutdown
    def _timers(self, now: float) -> None:
        self.recorder.commit()  # traffic that never pauses still reaches the capture file every tick
        wall = time.time()
        for p in list(self._partial):
            if p.state == OPEN and p.d.partial:
                outs = p.d.tick(wall)
                if outs:
                    self._partial.discard(p)
                    self._outs(p, outs)
            else:
                self._partial.discard(p)
        if not self.full:  # while reads are held back, the time of replies not yet read is not the peer's
            self._enqueue(Tick(wall))

    def _shutdown(self) -> None:
        for conn in list(self.conns.values()):
            self._teardown(conn)
        while self.queue:
            self._record_slice(float("inf"))
        self.recorder.finish(time.time())
        for fd in (self.wake_r, self.wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self.ep.close()


def version_capabilities(data: bytes) -> dict:
    """The capabilities object of a VERSION message, {} when absent or malformed (core/framing's reading)."""
    return framing.version_capabilities(data)


def usable_max_xfer(caps: dict) -> int:
    """max_data_xfer_size of capabilities when present and valid for the schema, else 0."""
    from ..core import capabilities

    return capabilities.cap(caps, "max_data_xfer_size", 0)
