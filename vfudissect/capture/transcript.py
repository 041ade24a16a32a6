"""Relay transcripts (JSON Lines, as in ../shared/captures) -> engine events.

One object per line: ``open`` (a connection opened; value = socket file name),
``data`` (hex of one framed message, with its ``fds``), or ``eof`` (a direction
closed).  Bad lines raise ``TranscriptError`` naming the line.
"""

from __future__ import annotations

import json
from typing import Iterable, Iterator

from ..core.events import ConnClosed, ConnOpened, Event, FdInfo, MessageIn


class TranscriptError(ValueError):
    pass


def transcript_events(lines: Iterable[str], name: str = "<transcript>") -> Iterator[Event]:
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
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
                raise TranscriptError("no open, data or eof key")
        except (KeyError, ValueError, TypeError, RecursionError) as exc:
            raise TranscriptError(f"{name}:{lineno}: {exc}") from None
