"""The core stays sans-io: no sockets, threads, clocks or file access in vfudissect/core."""

from __future__ import annotations

import ast
import pathlib

import vfudissect.core

BANNED = {"socket", "selectors", "asyncio", "threading", "time", "os", "subprocess", "select", "signal"}


def test_core_modules_import_no_io():
    root = pathlib.Path(vfudissect.core.__file__).parent
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module.split(".")[0]]
            assert not BANNED.intersection(names), f"{path.name} imports {BANNED.intersection(names)}"
        assert "open(" not in path.read_text(), f"{path.name} opens files"
