"""The committed fixtures are exactly what tools/make_fixtures.py builds from the relay transcripts."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "captures"


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/captures (the transcripts) is not beside this checkout")
def test_fixtures_are_reproducible(tmp_path):
    work = tmp_path / "repo"
    (work / "captures").mkdir(parents=True)
    (work / "tools").mkdir()
    (work / "tools" / "make_fixtures.py").write_text((ROOT / "tools" / "make_fixtures.py").read_text())
    p = subprocess.run([sys.executable, str(work / "tools" / "make_fixtures.py"), str(SHARED)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    for built in (work / "captures").glob("*.pcapng"):
        assert built.read_bytes() == (ROOT / "captures" / built.name).read_bytes(), built.name
    assert len(list((work / "captures").glob("*.pcapng"))) == 2
