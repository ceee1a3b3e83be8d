"""benchmarks/cross_validation.py: the best baseline per metric and CCRL's lead, per fold and
over folds, from results.json files as `wsi-ccrl benchmark` writes them."""

import json

import pytest
from conftest import load_benchmark_script


def _results(split: str, n: int, scores: dict) -> dict:
    """The part of a benchmark's results.json the script reads (scores as fractions)."""

    def metric(value):
        return {"mean": value, "std": 0.01, "n": 9}

    return {
        "evaluated_split": split,
        "n_test_cells": n,
        "models": {
            name: {"summary": {"train_to_test": {"ami": metric(ami), "ari": metric(ari)}}}
            for name, (ami, ari) in scores.items()
        },
    }


def _write(folder, results):
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def test_lead_is_over_the_best_baseline_of_each_metric_and_ablations_are_not_baselines(
    tmp_path, capsys
):
    cv = load_benchmark_script("cross_validation")
    # fold a clears (lead 10 AMI over manual, 6 ARI over dcae); fold b does not (ARI lead 2).
    # The query-encoder ablation beats CCRL on both folds and must never count as a baseline.
    a = _write(tmp_path / "a", _results("tiles 1–7", 100, {
        "ccrl": (0.30, 0.26), "ccrl_query_encoder": (0.35, 0.40),
        "manual": (0.20, 0.10), "dcae": (0.15, 0.20), "raw_pixels": (0.05, 0.05),
    }))  # fmt: skip
    b = _write(tmp_path / "b", _results("tiles 8–14", 50, {
        "ccrl": (0.20, 0.14), "ccrl_query_encoder": (0.30, 0.30),
        "manual": (0.10, 0.12), "dcae": (0.05, 0.02),
    }))  # fmt: skip

    summary = cv.fold_summary(json.loads((a / "results.json").read_text()))
    assert summary["ami"]["best"] == "manual"
    assert summary["ari"]["best"] == "dcae"
    assert summary["ami"]["margin"] == pytest.approx(10.0)
    assert summary["ari"]["margin"] == pytest.approx(6.0)

    assert cv.main([str(a), str(b)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    fold_a, fold_b, mean = rows[-3:]
    assert fold_a.split(" | ")[-1] == "yes |"
    assert fold_b.split(" | ")[-1] == "no |"
    cells = [cell.strip() for cell in mean.strip("|").split("|")]
    assert cells[0] == "mean of 2" and cells[1] == "150"
    assert cells[2:5] == ["25.0", "15.0", "+10.0"]  # AMI: (30 + 20) / 2, (20 + 10) / 2
    assert cells[5:8] == ["20.0", "16.0", "+4.0"]  # ARI: (26 + 14) / 2, (20 + 12) / 2
    assert cells[8] == "1 of 2"


def test_a_run_without_results_or_baselines_is_a_one_line_error(tmp_path, capsys):
    cv = load_benchmark_script("cross_validation")
    with pytest.raises(SystemExit) as err:
        cv.main([str(tmp_path / "missing")])
    assert err.value.code == 2
    assert "no results.json or end_to_end.json" in capsys.readouterr().err

    only_ccrl = _write(tmp_path / "c", _results("tiles 1–7", 10, {"ccrl": (0.3, 0.3)}))
    with pytest.raises(SystemExit) as err:
        cv.main([str(only_ccrl)])
    assert err.value.code == 2
    assert "no baseline in this run" in capsys.readouterr().err


def test_end_to_end_runs_count_their_matched_detections(tmp_path, capsys):
    cv = load_benchmark_script("cross_validation")
    results = _results("tiles 8–14", 0, {"ccrl": (0.28, 0.26), "manual": (0.14, 0.12)})
    del results["n_test_cells"]  # end_to_end.json scores matched detections instead
    results["detection"] = {"validation": {"detected": 5018, "matched": 3246}}
    folder = tmp_path / "e2e"
    folder.mkdir()
    (folder / "end_to_end.json").write_text(json.dumps(results))

    assert cv.main([str(folder)]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| e2e")][0]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == "3246"
    assert cells[4] == "+14.0" and cells[7] == "+14.0"
