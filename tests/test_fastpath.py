"""The compiled fast paths (vfudissect/_fastpath.c) against the pure-Python path they stand in for: built here,
and the same events, bytes, errors and command output on any input."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vfudissect import fastpath, spec
from vfudissect.capture import reader, writer
from vfudissect.capture.reader import CaptureError, read_events
from vfudissect.capture.writer import CaptureWriter
from vfudissect.core.events import ConnClosed, ConnOpened, FdInfo, MessageIn, NoteIn
from tests.conftest import CAPTURES, ROOT

PURE = os.environ.get("VFUDISSECT_PURE", "") not in ("", "0")


def test_the_compiled_path_is_built_and_in_use() -> None:
    if PURE:
        pytest.skip("VFUDISSECT_PURE asks for the pure path")
    assert fastpath.fast is not None, ("vfudissect/_fastpath.c did not build or is stale: `pip install -e .` "
                                       "(make test) builds it with the C compiler Python's headers need")
    assert reader._scan is fastpath.fast.scan_messages and writer._pack is fastpath.fast.pack_message


def test_pure_in_the_environment_turns_it_off() -> None:
    out = subprocess.run([sys.executable, "-c", "from vfudissect import fastpath; print(fastpath.fast)"],
                         env={**os.environ, "VFUDISSECT_PURE": "1"}, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "None"


def _pure(fn):  # type: ignore[no-untyped-def]
    saved = reader._scan, writer._pack
    reader._scan, writer._pack = None, None
    try:
        return fn()
    finally:
        reader._scan, writer._pack = saved


def _events_and_error(blob: bytes) -> tuple[list[tuple[str, dict]], str]:
    got: list[tuple[str, dict]] = []
    try:
        for ev in read_events(io.BytesIO(blob), "x.pcapng"):
            got.append((type(ev).__name__, {k: getattr(ev, k) for k in ev.__dataclass_fields__}))
    except CaptureError as exc:
        return got, str(exc)
    return got, ""


_header = st.builds(lambda i, c, s, f: spec.HEADER.pack(i, c, s, f, 0), st.integers(0, 0xFFFF), st.integers(0, 40),
                    st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFF))
_message = st.builds(
    lambda ts, conn, d, head, body, fds, flags, extra: MessageIn(ts, conn, d, head + body, fds, 0,
                                                                 -1 if extra < 0 else len(head + body) + extra, flags),
    st.floats(0, 4e9, allow_nan=False), st.integers(0, 2**32 - 1), st.sampled_from([spec.C2S, spec.S2C]),
    st.one_of(_header, st.binary(max_size=20)), st.binary(max_size=600),
    st.one_of(st.just(()), st.tuples(st.builds(FdInfo, st.sampled_from(["memfd", "eventfd"]), st.integers(0, 9999)))),
    st.sampled_from([0, 0, 0, spec.VF_TRUNCATED, spec.VF_INJECTED, spec.VF_CONTEXT, spec.VF_WITHHELD]),
    st.integers(-1, 3))
_other = st.one_of(st.builds(ConnOpened, st.floats(0, 4e9, allow_nan=False), st.integers(0, 9), st.text(max_size=8)),
                   st.builds(ConnClosed, st.floats(0, 4e9, allow_nan=False), st.integers(0, 9)),
                   st.builds(NoteIn, st.floats(0, 4e9, allow_nan=False), st.integers(0, 9), st.text(max_size=20)))


@given(events=st.lists(st.one_of(_message, _message, _other), max_size=12), max_record=st.integers(150, 700),
       cut=st.one_of(st.none(), st.integers(0, 20000)), flip=st.one_of(st.none(), st.tuples(st.integers(0, 20000),
                                                                                         st.integers(1, 255))))
def test_any_capture_reads_alike_compiled_and_pure(events, max_record, cut, flip) -> None:  # type: ignore[no-untyped-def]
    def write() -> bytes:
        buf = io.BytesIO()
        w = CaptureWriter(buf, max_record=max_record, judged=5.0 if max_record % 2 else None)
        for ev in events:
            w.write(ev)
        return buf.getvalue()

    blob = write()
    assert _pure(write) == blob  # the compiled packer writes the pure path's bytes
    if cut is not None:
        blob = blob[:cut]
    if flip is not None and blob:
        i = flip[0] % len(blob)
        blob = blob[:i] + bytes([blob[i] ^ flip[1]]) + blob[i + 1:]
    assert _events_and_error(blob) == _pure(lambda: _events_and_error(blob))


@pytest.mark.parametrize("argv", [["read", "--json"], ["stats", "--json"], ["read", "-V"]], ids=" ".join)
def test_the_commands_say_the_same_compiled_and_pure(argv: list[str]) -> None:
    files = sorted(str(p) for p in CAPTURES.glob("*.pcapng"))
    runs = []
    for pure in ("0", "1"):
        out = subprocess.run([sys.executable, "-m", "vfudissect", *argv, "--no-progress", *files], cwd=ROOT,
                             env={**os.environ, "VFUDISSECT_PURE": pure}, capture_output=True, timeout=300)
        runs.append((out.returncode, out.stdout, out.stderr))
    assert runs[0] == runs[1]
    assert runs[0][1]
