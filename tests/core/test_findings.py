"""The finding catalogue: each code declared once with its documentation and example, each example raises its code
on its flagged step (sans-io, through the engine the proxy runs), and every rule emits only what it declares."""

from __future__ import annotations

import ast
import inspect
import textwrap
import pathlib

import pytest

from vfudissect.core import findings
from vfudissect.core.findings import CATALOGUE, EXAMPLES, Code
from vfudissect.core.rules import base
from vfudissect.demo.scripted import expected, step_frames

RULES_DIR = pathlib.Path(base.__file__).parent


def test_every_code_has_documentation_and_an_example_or_says_why_not():
    for code, k in CATALOGUE.items():
        assert len(k.doc.split(". ")) >= 2, f"{code}: its documentation is a sentence or less"
        assert (code in EXAMPLES) != bool(k.no_example or k.elsewhere), code
    assert sorted(c for c, k in CATALOGUE.items() if k.no_example) == ["CAPTURE_CORRUPT"]
    elsewhere = sorted(c for c, k in CATALOGUE.items() if k.elsewhere)
    assert elsewhere == sorted(["WRONG_CHANNEL", "FAULT_INJECTED"] + [c for c in CATALOGUE if c.startswith("REPLAY_")])
    root = RULES_DIR.parent.parent.parent
    for code in elsewhere:  # the test it names exists and checks that code
        named = [w.rstrip(",;:)") for w in CATALOGUE[code].elsewhere.split() if w.startswith("tests/")]
        assert named, f"{code}: names no test"
        assert any(code in (root / t).read_text() for t in named), f"{code}: {named} do not check it"


def test_code_is_the_catalogue():
    assert [c.value for c in Code] == list(CATALOGUE)
    assert Code.NO_REPLY == "NO_REPLY" and f"{Code.NO_REPLY}" == "NO_REPLY"
    with pytest.raises(AttributeError):
        Code.NOT_A_CODE  # noqa: B018 - an undeclared code does not exist


def test_a_declaration_without_documentation_or_example_is_refused():
    with pytest.raises(ValueError, match="no documentation"):
        findings.FindingKind("NEW_CODE", "note", "protocol", "t", "X1", elsewhere="somewhere")
    with pytest.raises(ValueError, match="an example exchange, or a reason"):
        findings.FindingKind("NEW_CODE", "note", "protocol", "t", "X1", doc="Two. Sentences.")


@pytest.mark.parametrize("code", sorted(EXAMPLES))
def test_the_example_raises_its_code_on_the_flagged_step(code: str) -> None:
    scn = EXAMPLES[code]
    raised = [f for f in expected(scn).findings() if f.code == code]
    flagged = next(i for i, st in enumerate(scn.steps) if st.flag)
    assert raised, f"{code}: its example does not raise it"
    assert any(f.frames[0] in step_frames(scn)[flagged] for f in raised), f"{code} not on its flagged step"
    assert all(f.severity == CATALOGUE[code].severity for f in raised)


def _codes_used(fn: object) -> set[str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))  # type: ignore[arg-type]
    return {n.attr for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "Code"}


def test_every_rule_adds_only_the_codes_it_declares():
    import vfudissect.core.rules as rules  # noqa: F401  (registers them)
    import vfudissect.replay.client, vfudissect.replay.server  # noqa: E401, F401  (the replay's judges)

    for name, emits in base.EMITS.items():
        fn = _resolve(name)
        used = _codes_used(fn)
        # helpers a rule calls in its own module count as the rule's (e.g. _caps_problems adds m.vdata's codes)
        assert used <= {c.value for c in emits}, f"{name} adds {sorted(used - set(emits))} it does not declare"


def _resolve(name: str) -> object:
    """A judge by its dotted name (module.function or module.Class.method)."""
    import importlib

    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for p in parts[i:]:
            obj = getattr(obj, p)
        return obj
    raise LookupError(name)


def test_every_declared_code_is_emitted_by_some_judge():
    import vfudissect.core.capabilities  # noqa: F401
    import vfudissect.replay.client, vfudissect.replay.server  # noqa: E401, F401  (the replay's judges)

    declared = {c for emits in base.EMITS.values() for c in emits}
    assert set(CATALOGUE) <= declared, f"declared but no judge raises {sorted(set(CATALOGUE) - declared)}"


def test_rules_name_codes_only_through_code():
    for path in RULES_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add" \
                    and node.args and isinstance(node.args[0], ast.Constant):
                raise AssertionError(f"{path.name}:{node.lineno} names a code as a string: use Code.<NAME>")
