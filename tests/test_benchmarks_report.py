"""BENCHMARKS.md is built from benchmarks/results/*.md; an edit made only to one of them is lost
the next time ``python benchmarks/make_report.py`` runs."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmarks_md_is_what_make_report_builds():
    spec = importlib.util.spec_from_file_location(
        "make_report", ROOT / "benchmarks" / "make_report.py"
    )
    make_report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_report)
    assert (ROOT / "BENCHMARKS.md").read_text() == make_report.render(), (
        "edit benchmarks/results/*.md, then run python benchmarks/make_report.py"
    )
