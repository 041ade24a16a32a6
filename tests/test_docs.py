"""Documentation stays in step with the code: docs/findings.md and the README's table come from the catalogue."""

from __future__ import annotations

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _generator():  # type: ignore[no-untyped-def]
    mod_spec = importlib.util.spec_from_file_location("gen", ROOT / "tools" / "gen_findings_doc.py")
    mod = importlib.util.module_from_spec(mod_spec)  # type: ignore[arg-type]
    mod_spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_findings_doc_is_generated_from_the_catalogue():
    assert (ROOT / "docs" / "findings.md").read_text() == _generator().render(), \
        "run `python tools/gen_findings_doc.py`"


def test_readme_table_is_generated_from_the_catalogue():
    readme = (ROOT / "README.md").read_text()
    assert readme == _generator().readme(readme), "run `python tools/gen_findings_doc.py`"


def test_readme_names_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
