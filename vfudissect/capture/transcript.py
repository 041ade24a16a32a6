"""Relay transcripts (JSON Lines, as in ../shared/captures) -> engine events.

One object per line: ``open`` (a connection opened; value = socket file name),
``data`` (hex of one framed message, with its ``fds``), or ``eof`` (a direction
closed).  Bad lines raise ``TranscriptError`` naming the line.
"""

from __future__ import annotations

import json
from typing import BinaryIO, Iterable, Iterator

from .. import spec
from ..core.events import ConnClosed, ConnOpened, Event, FdInfo, MessageIn
from .judge import JudgingWriter
from .writer import CaptureWriter


class TranscriptError(ValueError):
    pass


def transcript_events(lines: Iterable[str], name: str = "<transcript>") -> Iterator[Event]:
    """Events of a transcript's lines; TranscriptError says which line is wrong and how."""
    it = iter(lines)
    lineno = 0
    while True:
        try:
            line = next(it)
        except StopIteration:
            return
        except UnicodeDecodeError as exc:
            raise TranscriptError(f"{name}: not a text transcript (a byte that is not UTF-8 at offset {exc.start} of "
                                  f"line {lineno + 1}): is it a capture? `vfudissect read` reads captures") from None
        lineno += 1
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise TranscriptError(f"{name}:{lineno}: not a JSON object ({getattr(exc, 'msg', exc)})") from None
        if not isinstance(obj, dict):
            raise TranscriptError(f"{name}:{lineno}: not a JSON object but {type(obj).__name__}")
        try:
            ts = float(obj["t"])
            conn = int(obj["conn"])
            if "open" in obj:
                yield ConnOpened(ts, conn, str(obj["open"]))
            elif "data" in obj:
                fds = tuple(FdInfo(str(fd.get("kind", "unknown")), int(fd.get("size", 0)), int(fd.get("ino", 0)),
                                   0, str(fd.get("link", ""))) for fd in obj.get("fds", []))
                yield MessageIn(ts, conn, obj["dir"], bytes.fromhex(obj["data"]), fds)
            elif obj.get("eof"):
                yield ConnClosed(ts, conn, obj["dir"])
            else:
                raise TranscriptError(f"{name}:{lineno}: no open, data or eof key")
        except KeyError as exc:
            raise TranscriptError(f"{name}:{lineno}: missing key {exc.args[0]!r}") from None
        except TranscriptError:
            raise
        except (ValueError, TypeError, AttributeError) as exc:
            raise TranscriptError(f"{name}:{lineno}: {exc}") from None


def write_judged(lines: Iterable[str], out: BinaryIO, name: str = "<transcript>", *, comment: str = "",
                 if_name: str = "vfio-user", timeout: float = spec.DEFAULT_REPLY_TIMEOUT, flush: bool = False) -> int:
    """A transcript as a judged capture (the engine's verdicts recorded with the traffic); returns the records
    written.  TranscriptError on a bad line (what was written before it stays written)."""
    w = CaptureWriter(out, comment=comment or f"imported from {name}", if_name=if_name, flush=flush, judged=timeout)
    judge = JudgingWriter(w, timeout=timeout)
    last = 0.0
    for ev in transcript_events(lines, name):
        judge.write(ev)
        last = ev.ts
    judge.finish(last)
    return w.records
