"""pytest plugin: run libvfio-user's own Python test suite through `vfudissect record` (a real-peer check).

libvfio-user is not part of this project: build it outside the repository
(meson/ninja), then, from its ``test/py`` directory:

    LIBVFIO_SO_DIR=$LVU/build/lib PYTHONPATH=/path/to/vfudissect/tools:. \\
        python -m pytest -p lvu_suite_via_proxy .

with the vfudissect environment's python (it needs this package). The plugin
starts `vfudissect record` in front of the socket the suite's server
listens on, points the suite's client at the proxy, and lets the suite's
in-process server wait for the relayed bytes (the suite drives its server
step by step with non-blocking ``vfu_run_ctx`` calls, which assume the
client's bytes are already there). The capture goes to ``$VFU_CAPTURE``
(default ``lvu-suite.pcapng`` in the current directory), the live view to
``$VFU_CAPTURE.txt``.
"""

from __future__ import annotations

import ctypes
import os
import select
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_proc: subprocess.Popen | None = None


def pytest_configure(config) -> None:  # type: ignore[no-untyped-def]
    global _proc
    import libvfio_user as lvu  # the suite's own helper module (test/py)

    proxy = os.path.join(tempfile.mkdtemp(prefix="vfu-proxy-"), "proxy.sock")
    capture = os.environ.get("VFU_CAPTURE", "lvu-suite.pcapng")
    server = lvu.SOCK_PATH.decode()
    # the suite creates (and re-creates) its server later: `record` waits for it for ever (--wait-server 0)
    _proc = subprocess.Popen(
        [sys.executable, "-m", "vfudissect", "record", "--listen", proxy, "--connect", server, "--wait-server", "0",
         "-w", os.path.abspath(capture), "--color", "never"],
        stdout=open(capture + ".txt", "w"), stderr=subprocess.STDOUT, cwd=ROOT)
    for _ in range(500):
        if os.path.exists(proxy):
            break
        time.sleep(0.01)

    def connect_sock() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(proxy)
        return sock

    lib = lvu.lib
    real_attach, real_run = lib.vfu_attach_ctx, lib.vfu_run_ctx
    lib.vfu_get_poll_fd.argtypes = (ctypes.c_void_p,)
    lib.vfu_get_poll_fd.restype = ctypes.c_int

    def attach(ctx):  # type: ignore[no-untyped-def]
        ret = real_attach(ctx)  # the proxy connects to the server just after the client connected to it
        for _ in range(200):
            if ret == 0 or ctypes.get_errno() != 11:  # EAGAIN
                break
            time.sleep(0.01)
            ret = real_attach(ctx)
        return ret

    def run(ctx):  # type: ignore[no-untyped-def]
        fd = lib.vfu_get_poll_fd(ctx)  # the relayed bytes come a moment after the client sent them
        if fd >= 0:
            select.select([fd], [], [], 2.0)
        return real_run(ctx)

    lvu.connect_sock = connect_sock
    lib.vfu_attach_ctx = attach
    lib.vfu_run_ctx = run


def pytest_unconfigure(config) -> None:  # type: ignore[no-untyped-def]
    if _proc is not None:
        _proc.terminate()
        _proc.wait(timeout=60)
