"""BENCHMARKS.md is built from benchmarks/results/*.md; an edit made only to one of them is lost
the next time ``python benchmarks/make_report.py`` runs."""

from conftest import ROOT, load_benchmark_script


def test_benchmarks_md_is_what_make_report_builds():
    make_report = load_benchmark_script("make_report")
    assert (ROOT / "BENCHMARKS.md").read_text() == make_report.render(), (
        "edit benchmarks/results/*.md, then run python benchmarks/make_report.py"
    )
