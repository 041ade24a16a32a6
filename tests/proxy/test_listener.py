"""Socket paths: what the proxy refuses to touch, and intercepting a live server's socket and giving it back."""

from __future__ import annotations

import os
import socket
import stat

import pytest

from vfudissect.peers.client import Client
from vfudissect.peers.server import DeviceServer
from vfudissect.proxy.listener import (MOVED_SUFFIX, PROC_NET_UNIX, PathError, check_server, intercept, is_live,
                                       listen_at, listening_at, server_status)


def test_listen_refuses_a_path_that_is_not_a_socket(sockdir: str) -> None:
    path = os.path.join(sockdir, "precious.txt")
    with open(path, "w") as f:
        f.write("keep me")
    with pytest.raises(PathError, match="not a socket"):
        listen_at(path)
    with open(path) as f:
        assert f.read() == "keep me"


def test_listen_refuses_a_socket_a_server_still_listens_on(sockdir: str) -> None:
    with DeviceServer(os.path.join(sockdir, "dev.sock")) as srv:
        with pytest.raises(PathError, match="--intercept"):
            listen_at(srv.path)
        with Client(srv.path) as c:  # still the server's
            assert c.version()["max_msg_fds"] == 8


def test_listen_replaces_a_stale_socket_and_sets_the_mode(sockdir: str) -> None:
    path = os.path.join(sockdir, "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()  # bound, never listening: stale
    lst = listen_at(path, 0o640)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
        c = socket.socket(socket.AF_UNIX)
        c.connect(path)
        c.close()
    finally:
        lst.close()


def test_server_path_must_be_a_socket(sockdir: str) -> None:
    with pytest.raises(PathError, match="No such file"):
        check_server(os.path.join(sockdir, "nothing.sock"))
    with pytest.raises(PathError, match="not a socket"):
        check_server(sockdir)


def test_intercept_swaps_atomically_and_restores_the_same_socket(sockdir: str) -> None:
    with DeviceServer(os.path.join(sockdir, "dev.sock")) as srv:
        before = os.stat(srv.path)
        ic = intercept(srv.path)
        try:
            assert os.stat(srv.path).st_ino != before.st_ino  # ours now
            assert os.stat(srv.path + MOVED_SUFFIX).st_ino == before.st_ino
            assert stat.S_IMODE(os.stat(srv.path).st_mode) == stat.S_IMODE(before.st_mode)
            with Client(ic.moved) as c:  # the link reaches the same server
                assert c.get_info() if c.version() else False
        finally:
            ic.restore()
        assert os.stat(srv.path).st_ino == before.st_ino and not os.path.lexists(srv.path + MOVED_SUFFIX)
        with Client(srv.path) as c:
            assert c.version()["max_data_xfer_size"] == 1 << 20


def test_intercept_refuses_non_sockets_and_a_leftover_from_an_earlier_run(sockdir: str) -> None:
    path = os.path.join(sockdir, "file")
    open(path, "w").close()
    with pytest.raises(PathError, match="not a socket"):
        intercept(path)
    with DeviceServer(os.path.join(sockdir, "dev.sock")) as srv:
        open(srv.path + MOVED_SUFFIX, "w").close()
        with pytest.raises(PathError, match="earlier run"):
            intercept(srv.path)
        assert os.path.exists(srv.path)


# ----------------------------------------------------------------- the server check: never a connection


def _stale(path: str) -> str:
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()  # the file stays, nobody is bound to it any more
    return path


def _one_client_listener(path: str) -> socket.socket:
    """Like libvfio-user's transport: listen(fd, 0), one accept() for the whole life of the server."""
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.listen(0)
    s.setblocking(False)
    return s


def test_a_socket_file_nobody_listens_on_is_refused_and_worth_waiting_for(sockdir: str) -> None:
    path = _stale(os.path.join(sockdir, "gone.sock"))
    st = server_status(path)
    assert not st.ok and st.waitable and "nobody listens" in st.why and path in st.why
    with pytest.raises(PathError, match=r"nobody listens at server socket .*\(connection refused"):
        check_server(path)


def test_a_missing_path_is_worth_waiting_for_and_other_files_are_not(sockdir: str) -> None:
    missing = server_status(os.path.join(sockdir, "later.sock"))
    assert not missing.ok and missing.waitable and "No such file" in missing.why
    regular = os.path.join(sockdir, "notes.txt")
    open(regular, "w").close()
    for path in (regular, sockdir):
        st = server_status(path)
        assert not st.ok and not st.waitable and st.why == f"server path {path} is not a socket"


def test_a_datagram_socket_is_the_wrong_type(sockdir: str) -> None:
    d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    d.bind(os.path.join(sockdir, "dgram.sock"))
    try:
        st = server_status(os.path.join(sockdir, "dgram.sock"))
        assert not st.ok and not st.waitable and "datagram socket" in st.why
    finally:
        d.close()


@pytest.mark.skipif(not os.access(PROC_NET_UNIX, os.R_OK), reason="needs /proc/net/unix")
def test_a_socket_bound_but_not_listening_yet_is_seen_in_proc_net_unix(sockdir: str) -> None:
    b = socket.socket(socket.AF_UNIX)
    b.bind(os.path.join(sockdir, "early.sock"))
    try:
        st = server_status(os.path.join(sockdir, "early.sock"))
        assert not st.ok and st.waitable and "bound but nobody listens" in st.why
        b.listen(1)
        assert server_status(os.path.join(sockdir, "early.sock")).ok
    finally:
        b.close()


def test_checking_a_one_client_server_takes_nothing_from_it(sockdir: str) -> None:
    """The check is no connection: the single pending slot of a listen(0) server stays free, nothing to accept."""
    path = os.path.join(sockdir, "one.sock")
    srv = _one_client_listener(path)
    try:
        for _ in range(3):
            check_server(path)
            assert is_live(path)
            with pytest.raises(PathError, match="--intercept"):
                listen_at(path)  # the --listen side asks the same way
        with pytest.raises(BlockingIOError):
            srv.accept()  # no connection came
        c = socket.socket(socket.AF_UNIX)
        c.setblocking(False)
        c.connect(path)  # the one slot is still free for the real client
        conn, _ = srv.accept()
        conn.close()
        c.close()
    finally:
        srv.close()


def test_proc_net_unix_refines_only_for_sockets_listed_at_that_very_path(sockdir: str) -> None:
    table = os.path.join(sockdir, "unix")
    with open(table, "w") as f:
        f.write("Num       RefCount Protocol Flags    Type St Inode Path\n"
                "0000000000000000: 00000002 00000000 00010000 0001 01 11 /run/a.sock\n"
                "0000000000000000: 00000002 00000000 00000000 0001 01 12 /run/b.sock\n"
                "0000000000000000: 00000002 00000000 00010000 0005 01 13 /run/with space.sock\n"
                "0000000000000000: 00000003 00000000 00000000 0001 03 14\n"
                "0000000000000000: 00000002 00000000 00010000 0001 01 15 rel.sock\n")
    assert listening_at("/run/a.sock", table) == (1,)
    assert listening_at("/run/b.sock", table) == ()  # bound, not listening
    assert listening_at("/run/with space.sock", table) == (5,)
    assert listening_at("/run/elsewhere.sock", table) is None  # not listed: no conclusion
    assert listening_at("/run/a.sock", os.path.join(sockdir, "no-such-table")) is None
