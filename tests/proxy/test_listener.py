"""Socket paths: what the proxy refuses to touch, and intercepting a live server's socket and giving it back."""

from __future__ import annotations

import os
import socket
import stat

import pytest

from vfudissect.peers.client import Client
from vfudissect.peers.server import DeviceServer
from vfudissect.proxy.listener import MOVED_SUFFIX, PathError, check_server, intercept, listen_at


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
