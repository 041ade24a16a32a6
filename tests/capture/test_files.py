"""Capture files are created owner-only (0600, 0640 with group read) and an existing one is never made wider."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import subprocess
import sys
import time
from typing import Iterator

import pytest

from vfudissect.capture import files
from vfudissect.capture.files import narrowed, open_capture_fd, open_capture_output, target_mode
from vfudissect.capture.rotate import part_path
from vfudissect.peers.client import Client
from vfudissect.peers.server import DeviceServer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(ROOT, "captures", "demo.pcapng")


def mode_of(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def write(path: str, group_read: bool = False, data: bytes = b"pcapng") -> None:
    with open_capture_output(path, group_read) as f:
        f.write(data)


def test_new_captures_are_owner_only_or_group_readable_when_asked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with umask(0o022):
        write(str(tmp_path / "a.pcapng"))
        write(str(tmp_path / "b.pcapng"), group_read=True)
    assert mode_of(str(tmp_path / "a.pcapng")) == 0o600
    assert mode_of(str(tmp_path / "b.pcapng")) == 0o640
    assert (tmp_path / "a.pcapng").read_bytes() == b"pcapng"
    fd = open_capture_fd(str(tmp_path / "c.pcapng"))
    try:
        assert os.get_inheritable(fd) is False and fcntl_flags(fd) & os.O_ACCMODE == os.O_WRONLY
    finally:
        os.close(fd)


def fcntl_flags(fd: int) -> int:
    import fcntl
    return fcntl.fcntl(fd, fcntl.F_GETFL)


@pytest.mark.parametrize("mask, plain, group", [(0o077, 0o600, 0o600), (0o027, 0o600, 0o640), (0o000, 0o600, 0o640),
                                                (0o277, 0o400, 0o400)])
def test_the_umask_applies_to_new_files(tmp_path, mask: int, plain: int,  # type: ignore[no-untyped-def]
                                        group: int) -> None:
    with umask(mask):
        fd1 = open_capture_fd(str(tmp_path / "p.pcapng"))
        fd2 = open_capture_fd(str(tmp_path / "g.pcapng"), group_read=True)
    os.close(fd1)
    os.close(fd2)
    assert (mode_of(str(tmp_path / "p.pcapng")), mode_of(str(tmp_path / "g.pcapng"))) == (plain, group)


@pytest.mark.parametrize("before, group_read, after", [
    (0o644, False, 0o600),  # world-readable: narrowed to what was asked
    (0o644, True, 0o640),
    (0o664, True, 0o640),   # group write is more than asked too
    (0o666, False, 0o600),
    (0o600, True, 0o600),   # never widened: group read is allowed, not added
    (0o640, False, 0o600),
    (0o400, False, 0o400),  # narrower than asked stays as it is
    (0o700, False, 0o700),  # the owner's bits are the owner's
    (0o604, True, 0o600),
])
def test_an_existing_file_is_truncated_and_never_more_readable_than_asked(  # type: ignore[no-untyped-def]
        tmp_path, before: int, group_read: bool, after: int) -> None:
    path = str(tmp_path / "old.pcapng")
    with open(path, "wb") as f:
        f.write(b"an older capture, longer than the new one")
    os.chmod(path, before)
    ino = os.stat(path).st_ino
    with umask(0o022):
        write(path, group_read, b"new")
    assert mode_of(path) == after == narrowed(before, 0o640 if group_read else 0o600)
    assert after & ~before == 0  # no bit added
    assert os.stat(path).st_ino == ino  # the same file, written in place
    with open(path, "rb") as f:
        assert f.read() == b"new"


def test_a_writer_that_renames_a_temporary_file_into_place_gets_the_same_rule(  # type: ignore[no-untyped-def]
        tmp_path) -> None:
    path = str(tmp_path / "x.pcapng")
    with umask(0o027):
        assert (target_mode(path), target_mode(path, True)) == (0o600, 0o640)  # new: asked less the umask
    with umask(0o077):
        assert target_mode(path, True) == 0o600
    with open(path, "wb"):
        pass
    for before, group_read, after in ((0o644, False, 0o600), (0o644, True, 0o640), (0o600, True, 0o600),
                                      (0o400, True, 0o400)):
        os.chmod(path, before)
        with umask(0o000):  # an existing file's mode is the file's, the umask plays no part
            assert target_mode(path, group_read) == after


def test_a_fifo_keeps_its_mode(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    fifo = str(tmp_path / "to-wireshark")
    os.mkfifo(fifo, 0o644)
    os.chmod(fifo, 0o644)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # someone reads it (Wireshark -k -i FIFO)
    try:
        write(fifo)
        assert os.read(reader, 100) == b"pcapng"
    finally:
        os.close(reader)
    assert mode_of(fifo) == 0o644
    chmods: list[int] = []  # nor is a device (-w /dev/null) ever chmodded: watched, not tried on the real one
    monkeypatch.setattr(files.os, "fchmod", lambda fd, mode: chmods.append(mode))
    write(os.devnull)
    assert chmods == []


def test_a_file_that_cannot_be_narrowed_is_still_written(tmp_path,  # type: ignore[no-untyped-def]
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "theirs.pcapng")
    with open(path, "wb"):
        pass
    os.chmod(path, 0o666)

    def not_yours(fd: int, mode: int) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(files.os, "fchmod", not_yours)
    write(path)  # its owner let us write it: the mode is theirs
    assert mode_of(path) == 0o666 and open(path, "rb").read() == b"pcapng"


def test_an_unwritable_path_raises_oserror(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FileNotFoundError):
        open_capture_fd(str(tmp_path / "no" / "such" / "dir.pcapng"))


# ----------------------------------------------------------------- through the commands


def run(*args: str, **kw: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vfudissect", *args], cwd=ROOT, capture_output=True, timeout=30,
                          umask=0o022, **kw)  # type: ignore[call-overload]


def test_record_creates_its_capture_and_every_rotated_part_0600(sockdir: str) -> None:
    srv = DeviceServer(os.path.join(sockdir, "dev.sock")).start()
    px, cap, gcap = (os.path.join(sockdir, n) for n in ("p.sock", "c.pcapng", "g.pcapng"))
    with open(cap, "wb"):
        pass
    os.chmod(cap, 0o644)  # an older, world-readable capture at that name
    try:
        for out, extra in ((cap, ["--rotate-size", "4k"]), (gcap, ["-g"])):
            proc = subprocess.Popen([sys.executable, "-m", "vfudissect", "record", "--listen", px, "--connect",
                                     srv.path, "-w", out, "-q", "--no-summary", *extra], cwd=ROOT, umask=0o022,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            end = time.monotonic() + 10
            while not os.path.exists(px):
                assert time.monotonic() < end and proc.poll() is None, "the proxy never listened"
                time.sleep(0.01)
            with Client(px) as c:
                c.version()
                for _ in range(40):
                    c.region_write(1, 0, os.urandom(512))
            time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
            assert proc.returncode == 0, err
    finally:
        srv.stop()
    parts = [p for p in (part_path(cap, n) for n in range(1, 20)) if os.path.exists(p)]
    assert len(parts) >= 3  # it rotated
    assert {p: mode_of(p) for p in parts} == {p: 0o600 for p in parts}
    assert mode_of(gcap) == 0o640


def test_annotate_creates_its_output_0600(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out, old, grp = (str(tmp_path / n) for n in ("out.pcapng", "old.pcapng", "grp.pcapng"))
    with open(old, "wb"):
        pass
    os.chmod(old, 0o644)
    for dst, extra in ((out, []), (old, []), (grp, ["-g"])):
        r = run("annotate", DEMO, "-w", dst, *extra)
        assert r.returncode == 0, r.stderr
    assert (mode_of(out), mode_of(old), mode_of(grp)) == (0o600, 0o600, 0o640)
    assert os.path.getsize(old) > 1000
