"""Documentation stays in step with the code: finding tables and the README's quick start."""

from __future__ import annotations

import pathlib

from vfudissect import spec
from vfudissect.core import findings

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_findings_doc_is_generated_from_the_catalogue():
    import importlib.util
    mod_spec = importlib.util.spec_from_file_location("gen", ROOT / "tools" / "gen_findings_doc.py")
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    assert (ROOT / "docs" / "findings.md").read_text() == mod.render()


def test_readme_names_the_two_commands_and_every_code():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    for code, kind in findings.CATALOGUE.items():
        assert f"| `{code}` | {kind.severity} |" in readme, code
