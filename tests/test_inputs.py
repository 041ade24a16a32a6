"""inputs.captures: files, globs and directories as capture sets, rotated parts in part order."""

from __future__ import annotations

import pytest

from vfudissect.inputs import InputError, captures


def _touch(d, *names):  # type: ignore[no-untyped-def]
    for n in names:
        (d / n).write_bytes(b"")


def test_the_first_part_brings_the_others_in_part_order(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _touch(tmp_path, "long.pcapng", "long-2.pcapng", "long-10.pcapng", "long-3.pcapng")
    (cs,) = captures([str(tmp_path / "long.pcapng")])
    assert [p.rsplit("/", 1)[1] for p in cs.parts] == ["long.pcapng", "long-2.pcapng", "long-3.pcapng"]  # 10 is not next
    assert cs.rotated


def test_a_later_part_named_alone_is_read_alone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _touch(tmp_path, "long.pcapng", "long-2.pcapng", "long-3.pcapng")
    (cs,) = captures([str(tmp_path / "long-3.pcapng")])
    assert cs.parts == (str(tmp_path / "long-3.pcapng"),) and not cs.rotated
    (cs,) = captures([str(tmp_path / "long-3.pcapng"), str(tmp_path / "long-2.pcapng")])
    assert [p.rsplit("/", 1)[1] for p in cs.parts] == ["long-2.pcapng", "long-3.pcapng"]  # in part order


def test_a_glob_or_a_directory_with_nothing_is_said(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match="no capture matches"):
        captures([str(tmp_path / "*.pcapng")])
    with pytest.raises(InputError, match="a directory with no capture in it"):
        captures([str(tmp_path)])
    _touch(tmp_path, "a.pcapng", "b.pcap", "notes.txt")
    assert [cs.name.rsplit("/", 1)[1] for cs in captures([str(tmp_path)])] == ["a.pcapng", "b.pcap"]
