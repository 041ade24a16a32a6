"""The relay, through real sockets: byte-exact streams, framing failures, stalls, deaths, fds, many connections."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

from hypothesis import example, given, settings
from hypothesis import strategies as st

from vfudissect import spec
from vfudissect.capture.reader import read_events
from vfudissect.core.events import ConnClosed, ConnOpened, MessageIn, NoteIn, RawIn
from vfudissect.core.records import Finding
from vfudissect.analysis import analyze
from vfudissect.core.analyzer import AnalyzerConfig
from vfudissect.peers.client import Client, run_session
from vfudissect.peers.server import DeviceServer
from vfudissect.testing import region_read, region_read_reply

from tests.proxy.conftest import Proxy, RawServer, Received, connect, drain, open_fds, send_with_fds

HDR = spec.HEADER


def msg(msg_id: int, cmd: int, body: bytes, flags: int = 0, error: int = 0) -> bytes:
    return HDR.pack(msg_id, cmd, 16 + len(body), flags, error) + body


def codes(events: list) -> list[str]:
    return [it.code for it in analyze(iter(events), AnalyzerConfig(timeout=5.0)) if isinstance(it, Finding)]


def messages(events: list, conn: int, d: str) -> list[MessageIn]:
    return [e for e in events if isinstance(e, MessageIn) and e.conn == conn and e.dir == d]


def _body(size: int, seed: int) -> bytes:
    import random
    return random.Random(seed).randbytes(size)


# valid framing (size right), every other header field and the body arbitrary; some bodies over 64 KiB
_message = st.tuples(st.integers(0, 0xFFFF), st.integers(0, 40),
                     st.one_of(st.integers(0, 64), st.integers(60000, 140000)), st.integers(0, 2**32),
                     st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF))


def _build(specs: list[tuple[int, int, int, int, int, int]]) -> bytes:
    return b"".join(msg(mid, cmd, _body(size, seed), fl, err) for mid, cmd, size, seed, fl, err in specs)


def test_streams_are_byte_exact_both_ways_and_the_capture_frames_them(sockdir: str) -> None:
    raw = RawServer(os.path.join(sockdir, "raw.sock"))
    px = Proxy(sockdir, raw.path)
    expected: list[tuple[bytes, bytes]] = []
    try:
        @settings(max_examples=12, deadline=None)
        @given(c2s=st.lists(_message, min_size=1, max_size=6), s2c=st.lists(_message, min_size=1, max_size=6),
               cuts=st.lists(st.integers(1, 70000), max_size=8))
        def exchange(c2s: list[tuple[int, int, int, int, int, int]], s2c: list[tuple[int, int, int, int, int, int]],
                     cuts: list[int]) -> None:
            up, down = _build(c2s), _build(s2c)
            cli = connect(px.path)
            srv = raw.accepted()
            try:
                pos = 0
                for cut in cuts:  # the client writes in arbitrary pieces
                    cli.sendall(up[pos:pos + cut])
                    pos += cut
                cli.sendall(up[pos:])
                got = raw.wait_bytes(len(raw.conns) - 1, len(up))
                assert hashlib.sha256(got.data).hexdigest() == hashlib.sha256(up).hexdigest()
                sender = threading.Thread(target=srv.sendall, args=(down,))
                sender.start()
                back = drain(cli, Received(), until=len(down))
                sender.join()
                assert hashlib.sha256(back.data).hexdigest() == hashlib.sha256(down).hexdigest()
                expected.append((up, down))
            finally:
                cli.close()
                srv.close()

        exchange()
    finally:
        events = px.events()
        raw.close()
    opened = [e.conn for e in events if isinstance(e, ConnOpened)]
    assert len(opened) == len(set(opened)) >= len(expected)
    for conn, (up, down) in zip(opened[-len(expected):], expected):
        assert b"".join(m.data for m in messages(events, conn, "c2s")) == up
        assert b"".join(m.data for m in messages(events, conn, "s2c")) == down
    assert not any(isinstance(e, RawIn) for e in events)


def test_fds_really_work_through_the_proxy_and_the_capture_names_them(proxy: Proxy) -> None:
    with Client(proxy.path) as c:
        rep = run_session(c, migration=True)
    # memfd mmapped by the server, eventfds signalled by it, BAR1's memfd mmapped by the client, DMA messages
    assert rep.dma_direct_ok and rep.interrupts_seen == 2 and rep.bar1_mmap_ok
    assert rep.ok, rep
    events = proxy.events()
    live_codes = [f.code for f in proxy.session.recorder.findings]
    by_cmd: dict[str, list[MessageIn]] = {}
    for m in messages(events, 1, "c2s") + messages(events, 1, "s2c"):
        by_cmd.setdefault(spec.command_name(HDR.unpack_from(m.data)[1]), []).append(m)
    ram = [m for m in by_cmd["DMA_MAP"] if m.dir == "c2s" and m.fds]
    assert [(f.kind, f.size) for m in ram for f in m.fds] == [("memfd", 1 << 21)]
    assert "memory-backend-memfd" in ram[0].fds[0].path
    irqs = [f.kind for m in by_cmd["DEVICE_SET_IRQS"] for f in m.fds]
    assert irqs == ["eventfd"] * 3
    bar1 = [f for m in by_cmd["DEVICE_GET_REGION_INFO"] if m.dir == "s2c" for f in m.fds]
    assert [(f.kind, f.size) for f in bar1] == [("memfd", 0x10000)]
    assert len(by_cmd["DMA_READ"]) == 4 and len(by_cmd["DMA_WRITE"]) == 2  # two commands + two replies each
    # the live view said what `read` says about the same file
    assert live_codes == codes(events)


_chunk = st.one_of(
    st.binary(min_size=1, max_size=300),  # garbage
    _message.map(lambda m: _build([m])),  # a well-formed message
    st.tuples(st.integers(0, 0xFFFF), st.integers(0, 40),
              st.one_of(st.integers(0, 64), st.integers(0, 1 << 21), st.integers(0, (1 << 32) - 1)),
              st.binary(max_size=40)).map(
        lambda t: struct.pack("<HHIII", t[0], t[1], t[2], 0, 0) + t[3]),  # a header claiming any size
)


def test_any_byte_stream_arrives_whole_and_unchanged_and_the_capture_holds_it(sockdir: str) -> None:
    raw = RawServer(os.path.join(sockdir, "raw.sock"))
    px = Proxy(sockdir, raw.path, stall=0.1)
    sent: list[bytes] = []
    try:
        @settings(max_examples=25, deadline=None)
        @given(chunks=st.lists(_chunk, min_size=1, max_size=6))
        @example(chunks=[HDR.pack(1, 3, 1000, 0, 0)])  # a header alone: its body never starts
        @example(chunks=[HDR.pack(1, 3, 16, 0, 0), HDR.pack(2, 3, 40, 0, 0) + b"12"])  # a body that stops
        def stream(chunks: list[bytes]) -> None:
            data = b"".join(chunks)
            cli = connect(px.path)
            raw.accepted()
            try:
                for c in chunks:  # written as they come: a header may wait for a body that never comes
                    cli.sendall(c)
                got = raw.wait_bytes(len(raw.conns) - 1, len(data), timeout=5)
                assert bytes(got.data) == data  # never held back for good, never changed
                sent.append(data)
            finally:
                cli.close()

        stream()
    finally:
        events = px.events()
        raw.close()
    opened = [e.conn for e in events if isinstance(e, ConnOpened)]
    for conn, data in zip(opened[-len(sent):], sent):
        recorded = [e.data for e in events if isinstance(e, (MessageIn, RawIn)) and e.conn == conn and e.dir == "c2s"]
        assert b"".join(recorded) == data


def test_passed_fds_are_the_same_objects_on_the_other_side(sockdir: str, rawserver: RawServer) -> None:
    p2 = Proxy(sockdir, rawserver.path)
    try:
        mem = os.memfd_create("shared-page")
        os.ftruncate(mem, 4096)
        os.pwrite(mem, b"written before passing", 0)
        efd = os.eventfd(0)
        cli = connect(p2.path)
        send_with_fds(cli, msg(1, spec.Command.DMA_MAP, bytes(32)), [mem, efd])
        got = rawserver.wait_bytes(0, 48)
        assert [off for off, _ in got.fds] == [0, 0]
        their_mem, their_efd = got.fds[0][1], got.fds[1][1]
        assert os.pread(their_mem, 22, 0) == b"written before passing"
        os.pwrite(their_mem, b"answer", 100)
        assert os.pread(mem, 6, 100) == b"answer"
        os.eventfd_write(their_efd, 7)
        assert os.eventfd_read(efd) == 7
        cli.close()
        os.close(mem)
        os.close(efd)
    finally:
        p2.stop()


def test_fd_count_stays_flat_over_a_thousand_fd_carrying_messages(proxy: Proxy) -> None:
    with Client(proxy.path) as c:
        c.version()
        ram = c.add_memory(0x100000, 0x10000)
        efd = os.eventfd(0)
        for _ in range(3):  # warm up: lazy imports, first mappings, the eventfd the device keeps
            c.wait(c.dma_map_send(ram))
            c.dma_unmap(ram.address, ram.size)
            c.set_irqs(0, 0, [efd])
        proxy.wait_messages(3 * 2 * 3)
        c.read32(0, 0)  # a round trip without fds: the server closes a message's fds only after replying to it
        before = open_fds()
        counts = []
        for i in range(500):
            assert not c.wait(c.dma_map_send(ram)).is_error
            c.dma_unmap(ram.address, ram.size)
            c.set_irqs(0, 0, [efd])
            if i % 100 == 99:
                proxy.wait_messages(3 * 2 * (i + 4) + 2 * (i // 100 + 1))
                c.read32(0, 0)
                counts.append(open_fds())
        os.close(efd)
    # other tests' threads may still be closing theirs: the count must not grow, at any point
    assert max(counts) <= before, f"fds grew from {before} to {counts} over 1,000 fd-carrying messages"


def test_garbage_header_is_relayed_unchanged_and_the_rest_goes_raw(sockdir: str, rawserver: RawServer) -> None:
    px = Proxy(sockdir, rawserver.path)
    good = region_read(1, 7, 0, 4)
    garbage = struct.pack("<HHIII", 0xBEEF, 0xDEAD, 3, 0, 0) + b"\xff" * 100 + good
    cli = connect(px.path)
    cli.sendall(good + garbage)
    got = rawserver.wait_bytes(0, len(good) + len(garbage))
    assert bytes(got.data) == good + garbage
    cli.close()
    rawserver.wait_eof(0)
    events = px.events()
    c2s = [e for e in events if isinstance(e, (MessageIn, RawIn)) and e.dir == "c2s"]
    assert isinstance(c2s[0], MessageIn) and c2s[0].data == good
    assert isinstance(c2s[1], MessageIn) and c2s[1].flags & spec.VF_FRAMING_ERROR and len(c2s[1].data) == 16
    assert all(isinstance(e, RawIn) for e in c2s[2:])
    assert b"".join(e.data for e in c2s) == good + garbage
    found = codes(events)
    assert "BAD_SIZE" in found and "FRAMING_LOST" in found


def test_a_lone_unframeable_header_is_framing_lost_by_itself(sockdir: str, rawserver: RawServer) -> None:
    px = Proxy(sockdir, rawserver.path)
    head = struct.pack("<HHIII", 3, spec.Command.DEVICE_GET_INFO, 8, 0, 0)  # size 8: nothing can follow it
    cli = connect(px.path)
    cli.sendall(head)
    assert bytes(rawserver.wait_bytes(0, 16).data) == head
    cli.close()
    rawserver.wait_eof(0)
    # the header alone says it all: no raw bytes needed to follow, and it is not a request waiting for a reply
    assert codes(px.events()) == ["BAD_SIZE", "FRAMING_LOST"]


def test_a_message_beyond_its_receivers_limit_is_forwarded_at_once_not_held(sockdir: str,
                                                                            rawserver: RawServer) -> None:
    px = Proxy(sockdir, rawserver.path, stall=2.0)
    head = struct.pack("<HHIII", 5, spec.Command.REGION_WRITE, 0xFFFFFF00, 0, 0)
    cli = connect(px.path)
    t0 = time.monotonic()
    cli.sendall(head + b"tail bytes")
    got = rawserver.wait_bytes(0, len(head) + 10, timeout=2)
    assert bytes(got.data) == head + b"tail bytes"
    assert time.monotonic() - t0 < 1.0  # well before the 2 s stall timeout: its body is not waited for
    cli.close()
    events = px.events()
    found = codes(events)
    assert "MESSAGE_TOO_LARGE" in found and "FRAMING_LOST" not in found  # framed by its header, body raw
    head_rec = messages(events, 1, "c2s")[0]
    assert head_rec.data == head and head_rec.wire_len == 0xFFFFFF00 and head_rec.flags & spec.VF_BEYOND_LIMIT
    body = [e for e in events if isinstance(e, RawIn)]
    assert b"".join(e.data for e in body) == b"tail bytes" and all(e.flags & spec.VF_BEYOND_LIMIT for e in body)
    notes = [e.text for e in events if isinstance(e, NoteIn)]
    assert any("beyond what its receiver accepts" in t for t in notes)


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def test_a_huge_write_beyond_what_the_server_negotiated_keeps_the_proxy_small(sockdir: str) -> None:
    # the client proposes 2 GiB, the server answers 1 MiB: a 64 MiB REGION_WRITE is beyond the server's limit
    from vfudissect.demo.record_process import RecordProcess

    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(os.path.join(sockdir, "dev.sock"))
    server.listen(1)
    got = [0]

    def serve() -> None:  # counts what arrives, keeps nothing
        c, _ = server.accept()
        c.sendall(msg(0, spec.Command.VERSION, struct.pack("<HH", 0, 0) + b'{"capabilities": '
                      b'{"max_data_xfer_size": 1048576}}\0', flags=1))
        while True:
            data = c.recv(1 << 20)
            if not data:
                break
            got[0] += len(data)
        c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with open(os.path.join(sockdir, "live.txt"), "wb") as live:
        rp = RecordProcess("p.sock", "dev.sock", "c.pcapng", cwd=sockdir, stdout=live, extra=("-q",)).start()
        try:
            cli = connect(rp.listen)
            version = msg(0, spec.Command.VERSION, struct.pack("<HH", 0, 0) + b'{"capabilities": '
                          b'{"max_data_xfer_size": 2147483648}}\0')
            cli.sendall(version)
            drain(cli, Received(), until=16)
            size = 64 << 20
            cli.sendall(struct.pack("<HHIII", 1, spec.Command.REGION_WRITE, 16 + 16 + size, 0, 0)
                        + struct.pack("<QII", 0, 1, size))
            chunk = bytes(1 << 20)
            for _ in range(64):
                cli.sendall(chunk)
            end = time.monotonic() + 60
            while got[0] < len(version) + 32 + size:
                assert time.monotonic() < end, f"the server got {got[0]} bytes"
                time.sleep(0.01)
            peak = _peak_rss_kib(rp.pid)
            cli.close()
            assert rp.stop() == 0
        finally:
            rp.kill()
            server.close()
    assert peak < 100 << 10, f"the proxy peaked at {peak} KiB for a 64 MiB message it should not hold"
    with open(os.path.join(sockdir, "c.pcapng"), "rb") as f:
        events = list(read_events(f))
    write = [m for m in messages(events, 1, "c2s") if m.flags & spec.VF_BEYOND_LIMIT]
    assert len(write) == 1 and write[0].wire_len == 16 + 16 + size
    assert sum(len(e.data) for e in events if isinstance(e, RawIn)) == 16 + size
    assert "MESSAGE_TOO_LARGE" in codes(events)


def test_a_body_that_never_completes_is_forwarded_after_the_stall_timeout(sockdir: str, rawserver: RawServer,
                                                                            device: DeviceServer) -> None:
    px = Proxy(sockdir, rawserver.path, stall=0.3)
    partial = HDR.pack(9, spec.Command.REGION_WRITE, 16 + 16 + 64, 0, 0) + bytes(20)
    stuck = connect(px.path)
    stuck.sendall(partial)
    # meanwhile another connection is served normally: the stall blocks nobody
    other = connect(px.path)
    other.sendall(region_read(1, 7))
    assert bytes(rawserver.wait_bytes(1, 32).data) == region_read(1, 7)
    t0 = time.monotonic()
    got = rawserver.wait_bytes(0, len(partial), timeout=3)
    assert bytes(got.data) == partial and 0.0 <= time.monotonic() - t0 < 1.5
    stuck.sendall(b"late bytes")  # after the stall the direction is a raw relay
    assert bytes(rawserver.wait_bytes(0, len(partial) + 10).data) == partial + b"late bytes"
    # the server side still works in the other direction
    rawserver.conns[0].sendall(region_read_reply(9, 7))
    assert bytes(drain(stuck, Received(), until=36).data) == region_read_reply(9, 7)
    stuck.close()
    other.close()
    events = px.events()
    found = codes(events)
    assert "MESSAGE_INCOMPLETE" in found and "FRAMING_LOST" in found
    assert any("no progress for 0.3 s" in e.text for e in events if isinstance(e, NoteIn))


def test_a_header_whose_body_never_starts_is_forwarded_after_the_stall_timeout(sockdir: str,
                                                                              rawserver: RawServer) -> None:
    # libvfio-user's own test_negotiate.py::test_long_write: a VERSION header of 1 MiB + 33 bytes, no body; the
    # server must see the header to refuse it (found running that suite through the proxy: it hung)
    px = Proxy(sockdir, rawserver.path, stall=0.3)
    head = HDR.pack(1, spec.Command.VERSION, (1 << 20) + 33, 0, 0)
    cli = connect(px.path)
    t0 = time.monotonic()
    cli.sendall(head)
    assert bytes(rawserver.wait_bytes(0, 16, timeout=3).data) == head
    assert 0.25 <= time.monotonic() - t0 < 1.5
    cli.close()
    found = codes(px.events())
    assert "MESSAGE_INCOMPLETE" in found


def test_a_client_killed_mid_message_leaves_a_valid_capture(sockdir: str, rawserver: RawServer) -> None:
    px = Proxy(sockdir, rawserver.path)
    code = (f"import socket, struct, time\n"
            f"s = socket.socket(socket.AF_UNIX); s.connect({px.path!r})\n"
            f"s.sendall(struct.pack('<HHIII', 3, 10, 16 + 16 + 4096, 0, 0) + bytes(1000))\n"
            f"print('sent', flush=True); time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline() == b"sent\n"
    rawserver.wait_bytes(0, 16)  # the proxy has started on the message
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    got = rawserver.wait_eof(0)  # EOF propagated to the server, after what had arrived
    assert len(got.data) == 1016
    events = px.events()
    assert any(isinstance(e, ConnClosed) and e.dir == "c2s" for e in events)
    (cut,) = messages(events, 1, "c2s")
    assert len(cut.data) == 1016 and cut.wire_len == 1016
    assert "MESSAGE_INCOMPLETE" in codes(events)


def test_a_reply_to_a_client_that_left_is_recorded_before_the_note_that_it_went_nowhere(
        sockdir: str, rawserver: RawServer) -> None:
    # libvfio-user's suite does this (test_dma_map_busy_reply_fail): the reply comes after the client closed
    px = Proxy(sockdir, rawserver.path)
    cli = connect(px.path)
    cli.sendall(region_read(7, 7))
    rawserver.wait_bytes(0, 32)
    cli.close()
    rawserver.wait_eof(0)
    rawserver.conns[0].sendall(region_read_reply(7, 7))
    events = px.events()
    s2c = [type(e).__name__ for e in events if getattr(e, "dir", None) == "s2c"]
    assert s2c == ["MessageIn", "NoteIn", "ConnClosed"]  # received, could not be forwarded, direction done
    assert codes(events) == ["VERSION_NOT_FIRST"]  # the reply answers its request: no NO_REPLY, UNMATCHED_REPLY


def test_a_server_killed_mid_reply_ends_the_client_cleanly(sockdir: str) -> None:
    dev = os.path.join(sockdir, "dev.sock")
    server = subprocess.Popen([sys.executable, "-m", "vfudissect", "serve", "--socket", dev,
                               "--fault", "truncate,command=REGION_READ,count=40"], stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 20
        while not os.path.exists(dev):
            assert time.monotonic() < end and server.poll() is None, "serve never listened"
            time.sleep(0.01)
        px = Proxy(sockdir, dev)
        c = Client(px.path, timeout=5)
        c.version()
        mid = c.send(spec.Command.REGION_READ, struct.pack("<QII", 0, 7, 64))
        px.wait_messages(4)  # the server's cut reply is in the proxy (its head counts as a message)
        server.kill()
        server.wait()
        try:
            c.wait(mid)
            raise AssertionError("a reply cut short must not be answered")
        except Exception as exc:  # the client sees the cut, not a hang
            assert "cut" in str(exc) or "closed" in str(exc)
        c.close()
        events = px.events()
        (cut,) = [m for m in messages(events, 1, "s2c") if HDR.unpack_from(m.data)[1] == spec.Command.REGION_READ]
        assert len(cut.data) == 40 and "MESSAGE_INCOMPLETE" in codes(events)
    finally:
        server.kill()
        server.wait()


def test_half_close_propagates_and_the_other_direction_keeps_flowing(sockdir: str, rawserver: RawServer) -> None:
    px = Proxy(sockdir, rawserver.path)
    cli = connect(px.path)
    cli.sendall(region_read(1, 7))
    cli.shutdown(socket.SHUT_WR)
    got = rawserver.wait_eof(0)
    assert bytes(got.data) == region_read(1, 7)
    rawserver.conns[0].sendall(region_read_reply(1, 7))
    assert bytes(drain(cli, Received(), until=36).data) == region_read_reply(1, 7)
    rawserver.conns[0].close()
    assert drain(cli, Received()).eof
    cli.close()
    events = px.events()
    closes = [(e.dir) for e in events if isinstance(e, ConnClosed)]
    assert closes == ["c2s", "s2c"]
    assert codes(events) == ["VERSION_NOT_FIRST"]  # a bare exchange, no negotiation: nothing else wrong


def test_fifty_concurrent_connections_each_get_their_own_conn_id(proxy: Proxy) -> None:
    results: list[object] = []

    def one(i: int) -> None:
        try:
            with Client(proxy.path, timeout=20) as c:
                c.version()
                info = c.get_info()
                vals = [c.read32(0, 0) for _ in range(5)]
                c.write32(0, 4, i)
                results.append((info["num_regions"], set(vals), c.read32(0, 4) == i))
        except Exception as exc:  # collected, reported below
            results.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == [(9, {0x56465544}, True)] * 50
    events = proxy.events()
    opened = [e.conn for e in events if isinstance(e, ConnOpened)]
    assert sorted(opened) == list(range(1, 51))
    for conn in opened:
        assert len(messages(events, conn, "c2s")) == len(messages(events, conn, "s2c")) == 9
    assert set(codes(events)) == {"CAPS_LEGACY_KEY"}  # QEMU's legacy "migration" key, once per connection


def test_a_slow_reader_slows_the_writer_instead_of_growing_a_queue(sockdir: str) -> None:
    raw = RawServer(os.path.join(sockdir, "raw.sock"))
    raw.read = False  # the server never reads
    px = Proxy(sockdir, raw.path)
    cli = connect(px.path)
    cli.settimeout(1.0)
    sent = 0
    blob = msg(1, spec.Command.REGION_WRITE, bytes(16 + 65536))
    try:
        while sent < 256 << 20:
            cli.sendall(blob)
            sent += len(blob)
    except TimeoutError:
        pass
    # the client was stopped by back-pressure long before it could hand 256 MiB to the proxy
    assert sent < 32 << 20
    queued = px.relay.queued_bytes
    assert queued < 32 << 20
    cli.close()
    raw.close()
    px.stop()


def test_twin_socket_is_relayed_and_recorded_as_its_own_connection(proxy: Proxy) -> None:
    from vfudissect.peers.client import TWIN_VERSION_JSON

    with Client(proxy.path) as c:
        rep = run_session(c, json_text=TWIN_VERSION_JSON)
        assert c.twin is not None
    assert rep.ok and rep.dma_served == 3
    events = proxy.events()
    opens = [e for e in events if isinstance(e, ConnOpened)]
    assert [(o.conn, o.twin_of) for o in opens] == [(1, None), (2, 1)]
    version_reply = messages(events, 1, "s2c")[0]
    assert [f.kind for f in version_reply.fds] == ["socket"]
    twin_cmds = {HDR.unpack_from(m.data)[1] for m in messages(events, 2, "s2c")}
    assert twin_cmds == {spec.Command.DMA_READ, spec.Command.DMA_WRITE}
    assert not any(HDR.unpack_from(m.data)[1] in (11, 12) for m in messages(events, 1, "s2c"))
    assert "TWIN_SOCKET_BAD" not in codes(events) and "WRONG_DIRECTION" not in codes(events)


def test_a_server_command_on_the_main_socket_despite_the_twin_socket_is_wrong_channel(sockdir: str) -> None:
    from vfudissect.peers.client import TWIN_VERSION_JSON
    from vfudissect.peers.faults import Fault, Faults

    srv = DeviceServer(os.path.join(sockdir, "dev.sock"),
                       faults=Faults(Fault("wrong_channel", command=spec.Command.DMA_READ))).start()
    px = Proxy(sockdir, srv.path)
    try:
        with Client(px.path) as c:
            rep = run_session(c, json_text=TWIN_VERSION_JSON)
        assert rep.ok and rep.dma_served == 3  # the client answered it where it came, on the main socket
        events = px.events()
        wrong = [m for m in messages(events, 1, "s2c") if HDR.unpack_from(m.data)[1] == spec.Command.DMA_READ]
        assert len(wrong) == 1
        found = [f for f in analyze(iter(events), AnalyzerConfig(timeout=5.0)) if isinstance(f, Finding)]
        assert [(f.code, f.frame) for f in found if f.code == "WRONG_CHANNEL"] == [("WRONG_CHANNEL", wrong[0].frame)]
        live = [(f.code, f.frames) for f in px.session.recorder.findings]  # type: ignore[union-attr]
        assert live == [(f.code, f.frames) for f in found]
    finally:
        px.stop()
        srv.stop()


def test_reply_timeout_is_reported_live_while_the_request_still_waits(sockdir: str) -> None:
    from vfudissect.peers.faults import Fault, Faults

    srv = DeviceServer(os.path.join(sockdir, "slow.sock"),
                       faults=Faults(Fault("delay", command=spec.Command.REGION_READ, delay=3.0))).start()
    px = Proxy(sockdir, srv.path, timeout=0.4)
    try:
        with Client(px.path) as c:
            c.version()
            mid = c.send(spec.Command.REGION_READ, struct.pack("<QII", 0, 0, 4))
            deadline = time.monotonic() + 2.5  # due at 0.4-0.5 s; the reply comes at 3 s
            while "REPLY_TIMEOUT" not in {f.code for f in px.session.recorder.findings}:
                assert time.monotonic() < deadline, "no live REPLY_TIMEOUT while the request waited"
                time.sleep(0.02)
            assert not c.wait(mid).is_error  # the reply had not come yet when the finding appeared
        live = px.live()
        assert live.index("REPLY_TIMEOUT") < live.index("REGION_READ reply")
    finally:
        px.stop()
        srv.stop()


def test_snaplen_truncates_bulk_data_in_the_capture_only(sockdir: str, device: DeviceServer) -> None:
    px = Proxy(sockdir, device.path, snaplen=8)
    with Client(px.path) as c:
        c.version()
        data = os.urandom(4096)
        c.region_write(1, 0, data)
        assert c.region_read(1, 0, 4096) == data  # the peers got every byte
    events = px.events()
    write = messages(events, 1, "c2s")[1]
    assert write.flags & spec.VF_TRUNCATED and len(write.data) == 16 + 16 + 8 and write.wire_len == 16 + 16 + 4096


@given(st.binary(max_size=200), st.one_of(st.none(), st.dictionaries(
    st.sampled_from(["max_data_xfer_size", "twin_socket", "max_msg_fds"]),
    st.one_of(st.integers(-5, 1 << 40), st.text(max_size=5), st.booleans(), st.none(),
              st.fixed_dictionaries({"supported": st.booleans(), "fd_index": st.integers(-2, 3)})))))
def test_version_payloads_never_break_the_relays_own_parsing(junk: bytes, caps: dict | None) -> None:
    from vfudissect.proxy.relay import usable_max_xfer, version_capabilities

    text = junk if caps is None else (json.dumps({"capabilities": caps}).encode() + b"\0")
    data = msg(0, spec.Command.VERSION, struct.pack("<HH", 0, 0) + text, flags=1)
    got = version_capabilities(data)
    assert isinstance(got, dict) and 0 <= usable_max_xfer(got) <= spec.QEMU_MAX_MAX_DATA_XFER_SIZE
    v = caps.get("max_data_xfer_size") if caps is not None else None
    if isinstance(v, int) and not isinstance(v, bool) and 0 < v <= spec.QEMU_MAX_MAX_DATA_XFER_SIZE:
        assert usable_max_xfer(got) == v  # the engine's reading of the schema: what it judges, the relay frames by


def test_version_json_nested_beyond_pythons_recursion_limit_is_relayed_and_judged(sockdir: str,
                                                                                   rawserver: RawServer) -> None:
    px = Proxy(sockdir, rawserver.path)
    deep = msg(0, spec.Command.VERSION, struct.pack("<HH", 0, 0) + b"[" * 200000 + b"]" * 200000 + b"\0")
    cli = connect(px.path)
    cli.sendall(deep)
    assert bytes(rawserver.wait_bytes(0, len(deep)).data) == deep
    rawserver.conns[0].sendall(region_read_reply(1, 7))
    assert bytes(drain(cli, Received(), until=36).data) == region_read_reply(1, 7)  # the relay lives on
    cli.close()
    assert "CAPS_MALFORMED" in codes(px.events()) and px.errors == []


def test_an_engine_bug_stops_neither_the_relay_nor_the_capture(sockdir: str, rawserver: RawServer) -> None:
    px = Proxy(sockdir, rawserver.path)
    real = px.session.recorder.analyzer.feed  # type: ignore[union-attr]

    def feed(ev):  # type: ignore[no-untyped-def]
        if isinstance(ev, MessageIn) and HDR.unpack_from(ev.data)[0] == 2:
            raise KeyError("made up by the test")
        return real(ev)

    px.session.recorder.analyzer.feed = feed  # type: ignore[union-attr]
    cli = connect(px.path)
    stream = region_read(1, 7) + region_read(2, 7) + region_read(3, 7)
    cli.sendall(stream)
    assert bytes(rawserver.wait_bytes(0, len(stream)).data) == stream
    cli.close()
    events = px.events()
    assert [HDR.unpack_from(m.data)[0] for m in messages(events, 1, "c2s")] == [1, 2, 3]
    live = px.live()
    failed = next(m for m in messages(events, 1, "c2s") if HDR.unpack_from(m.data)[0] == 2)
    assert live.count(f"internal error analysing frame {failed.frame} (KeyError") == 1
    assert "#1 C→S REGION_READ command id=3" in live


def test_a_twin_socket_claim_without_a_socket_is_relayed_untouched(sockdir: str, rawserver: RawServer) -> None:
    px = Proxy(sockdir, rawserver.path)
    cli = connect(px.path)
    cli.sendall(msg(0, spec.Command.VERSION, struct.pack("<HH", 0, 2) + b'{"capabilities": {"twin_socket": '
                    b'{"supported": true}}}\0'))
    rawserver.wait_bytes(0, 16)
    mem = os.memfd_create("not-a-socket")
    text = b'{ "capabilities": { "twin_socket": { "supported": true, "fd_index": 0 } } }\0'
    reply_bytes = msg(0, spec.Command.VERSION, struct.pack("<HH", 0, 2) + text, flags=1)
    send_with_fds(rawserver.conns[0], reply_bytes, [mem])
    back = drain(cli, Received(), until=len(reply_bytes))
    assert bytes(back.data) == reply_bytes and len(back.fds) == 1
    assert os.fstat(back.fds[0][1]).st_ino == os.fstat(mem).st_ino  # the very same memfd, not a proxy socket
    back.close_fds()
    os.close(mem)
    cli.close()
    events = px.events()
    assert [e.conn for e in events if isinstance(e, ConnOpened)] == [1]  # no twin connection was made up
