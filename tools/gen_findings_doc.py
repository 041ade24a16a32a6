#!/usr/bin/env python3
"""Regenerate docs/findings.md from the finding catalogue in vfudissect/spec.py."""

from __future__ import annotations

import pathlib

from vfudissect import spec
from vfudissect.core import findings

ROOT = pathlib.Path(__file__).resolve().parent.parent


def render() -> str:
    lines = ["# Finding codes", "",
             "Generated from `vfudissect/spec.py` (`FINDINGS`) by `python tools/gen_findings_doc.py`; "
             "`vfudissect codes` prints the same list.",
             "Severity follows Wireshark's scale (note < warning < error); the basis column names the fact-sheet "
             "anomaly it implements.", "",
             "| code | severity | Wireshark group | meaning | basis |", "|---|---|---|---|---|"]
    lines += [f"| `{f.code}` | {f.severity} | {f.group} | {f.title} | {f.basis} |" for f in findings.CATALOGUE.values()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    (ROOT / "docs" / "findings.md").write_text(render())
