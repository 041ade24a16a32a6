"""The scripted demo catalogue: one scenario per finding code, each the example exchange declared with the code.

Derived from core/findings.py (nothing is declared here): ``SCENARIOS`` maps a
code to its example, ``EXCLUDED`` names the codes no traffic through a proxy
can produce and why, ``ELSEWHERE`` the codes produced through the real proxy
by other tests because a scripted peer (one connection) cannot produce them.
"""

from __future__ import annotations

from ..core.exchange import READY  # noqa: F401  (the session start the scenarios build on)
from ..core.findings import CATALOGUE, EXAMPLES

SCENARIOS = dict(EXAMPLES)
EXCLUDED = {code: k.no_example for code, k in CATALOGUE.items() if k.no_example}
ELSEWHERE = {code: k.elsewhere for code, k in CATALOGUE.items() if k.elsewhere}
