"""Which captures a command line names: files, globs and directories, with rotated captures read as one, in order.

``captures(["a.pcapng", "runs/", "host-*.pcapng"])`` gives capture sets: a
rotated capture (``cap.pcapng``, ``cap-2.pcapng``, ``cap-3.pcapng`` ...) is one
set whose parts come in part order, whether the parts were named, globbed,
found in a directory, or only the first one was given (the others are
found beside it); a later part named without the first is read alone, as
it was asked for (each part reads on its own).  Other files are sets of one.  A name that exists nowhere is
kept as it is (reading it says why it cannot be read); a glob or a directory
that names no capture is an error.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass

from .capture.rotate import part_path

CAPTURE_SUFFIXES = (".pcapng", ".pcap", ".ntar")
_PART = re.compile(r"^(?P<stem>.*)-(?P<n>[0-9]+)$")


class InputError(ValueError):
    """A glob or directory that names no capture (one line for the user)."""


@dataclass(frozen=True, slots=True)
class CaptureSet:
    """One capture as the user means it: a single file, or a rotated capture's parts in order."""

    name: str  # the first part's path, as given or found
    parts: tuple[str, ...]

    @property
    def rotated(self) -> bool:
        return len(self.parts) > 1


def _part_of(path: str) -> tuple[str, int]:
    """(path of part 1, part number) of a file named like a rotated capture's part, else (path, 1)."""
    stem, ext = os.path.splitext(path)
    m = _PART.match(stem)
    if m and int(m.group("n")) >= 2:
        first = m.group("stem") + ext
        if os.path.exists(first):
            return first, int(m.group("n"))
    return path, 1


def _expand(arg: str) -> list[str]:
    if arg == "-":
        return ["-"]
    if os.path.isdir(arg):
        found = sorted(os.path.join(d, f) for d, _dirs, files in os.walk(arg) for f in files
                       if f.endswith(CAPTURE_SUFFIXES))
        if not found:
            raise InputError(f"{arg}: a directory with no capture in it (*{', *'.join(CAPTURE_SUFFIXES)})")
        return found
    if not os.path.exists(arg) and glob.has_magic(arg):
        found = sorted(glob.glob(arg, recursive=True))
        if not found:
            raise InputError(f"{arg}: no capture matches")
        return found
    return [arg]


def captures(args: list[str]) -> list[CaptureSet]:
    """The capture sets the arguments name, in the order they are first named."""
    order: list[str] = []
    parts: dict[str, dict[int, str]] = {}
    for arg in args:
        for path in _expand(arg):
            first, n = _part_of(path) if path != "-" else (path, 1)
            if first not in parts:
                parts[first] = {}
                order.append(first)
            parts[first][n] = path
    out = []
    for first in order:
        have = parts[first]
        if 1 not in have:  # only later parts were named (read long-3.pcapng): those parts, nothing else
            out.append(CaptureSet(have[min(have)], tuple(have[k] for k in sorted(have))))
            continue
        if first != "-" and os.path.exists(first):  # the first part named: the parts beside it too
            n = 2
            while os.path.exists(part_path(first, n)):
                have.setdefault(n, part_path(first, n))
                n += 1
        out.append(CaptureSet(first, tuple(have[k] for k in sorted(have))))
    return out
