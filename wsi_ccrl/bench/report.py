"""The benchmark's table: each model's scores beside the paper's (Nakhli et al., Tables 2 and 3),
as Markdown, with the run's settings and machine."""

from __future__ import annotations

import os
import platform
import time
from typing import Any

CCRL_LABELS = {
    "ccrl": "CCRL",
    "ccrl_no_local_global": "CCRL w/o local–global",
    "ccrl_query_encoder": "CCRL w/o ensembling (query encoder)",
    "ccrl_no_predictor": "CCRL w/o prediction head",
}


def model_label(name: str) -> str:
    """A model's row name: CCRL's rows, or the label a baseline registered with."""
    from wsi_ccrl.bench.baselines import baseline_names, get_baseline

    if name in CCRL_LABELS:
        return CCRL_LABELS[name]
    return get_baseline(name).label if name in baseline_names() else name


# ../shared/CCRL.md, Tables 2 (CoNSeP) and 3 (NuCLS): AMI, ARI, Purity in %, None where the paper
# has no number (the ablations are reported on NuCLS only)
_PAPER_ROWS = {
    #                        CoNSeP              NuCLS
    "imagenet":             ((7.3, 7.0, 42.7),   (9.3, 7.8, 56.7)),
    "morphological":        ((12.7, 1.3, 48.8),  (21.1, 18.8, 66.1)),
    "manual":               ((9.5, 6.4, 45.5),   (11.25, 7.8, 56.2)),
    "dcae":                 ((10.1, 7.3, 50.5),  (8.3, 7.2, 56.8)),
    "infogan":              ((14.8, 15.7, 58.4), (14.0, 12.6, 62.0)),
    "ccrl":                 ((24.2, 21.7, 51.8), (22.8, 24.0, 68.3)),
    "ccrl_no_local_global": (None,               (21.9, 20.4, 69.7)),
    "ccrl_query_encoder":   (None,               (21.1, 19.2, 67.2)),
    "ccrl_no_predictor":    (None,               (22.0, 20.9, 68.1)),
}  # fmt: skip
PAPER = {
    dataset: {model: rows[i] for model, rows in _PAPER_ROWS.items() if rows[i] is not None}
    for i, dataset in enumerate(("consep", "nucls"))
}


# the libraries whose versions change a training run's random views or arithmetic: one CCRL run
# is one draw, and a new version of one of them is a new draw (BENCHMARKS.md, fold 2's profile)
DRAW_LIBRARIES = ("kornia", "numpy", "scikit-learn")


def machine_info(device: str) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    versions = {}
    for name in DRAW_LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "absent"
    info = {
        "processor": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "libraries": versions,
        "device": device,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# --------------------------------------------------------------------------- the table
def percent_pm(stat: dict[str, float]) -> str:
    return f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f}"


def format_table(results: dict[str, Any]) -> str:
    """Markdown: both protocols per model, and the paper's Table 2/3 numbers beside them."""
    ds = results["dataset"]
    cfg = results["config"]
    train = cfg["train"]
    paper = results["paper"]
    lines = [
        f"# wsi-ccrl benchmark — {ds}"
        + (f" (profile: {results['profile']})" if results["profile"] else ""),
        "",
        f"Classes ({len(results['classes'])}): {', '.join(results['classes'])}; "
        f"evaluated class counts {results['class_counts_test']}.",
        f"**Evaluated on: {results.get('evaluated_split', 'test')}.** Hyper-parameters of the "
        "profiles were chosen on the validation tiles of Train only (BENCHMARKS.md, CCRL "
        "ablation); an official Test split is never used to choose anything.",
        "",
        f"Cells: {results['n_train_cells']} train ({results['n_train_fit_cells']} used to fit "
        f"K-means and the baselines), {results['n_test_cells']} of {results['n_test_cells_total']} "
        f"evaluated. Split: {cfg['split']}"
        + (
            f" (train tiles {ranges(cfg['train_tiles'])}, validation tiles "
            f"{ranges(cfg['test_tiles'])})"
            if cfg["split"] == "tiles"
            else ""
        )
        + f"; class scheme {cfg['class_scheme'] if ds == 'consep' else 'nucls-5'}; crops "
        f"{cfg['crop_size']} px, window scale {cfg['window_scale']}.",
        f"K-means k = {len(results['classes'])}, seeds {results['seeds']}; CCRL training seeds "
        f"{results['train_seeds']}: {train['epochs']} epochs"
        + (f" (max {train['max_steps']} steps)" if train.get("max_steps") else "")
        + f", batch {train['batch_size']}, lr {train['lr']}, queue {train['queue_size']}, "
        f"momentum {train['momentum']}, temperature {train['temperature']}, stem {train['stem']}.",
        "Values in %, mean ± std over seeds. Paper: Nakhli et al., Tables 2–3 (full data, 500 "
        "epochs, GPU; protocol not stated in the paper).",
        "",
        "| model | train→test AMI | ARI | Purity | standalone AMI | ARI | Purity "
        "| paper AMI | ARI | Purity | time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, res in results["models"].items():
        a, b = res["summary"]["train_to_test"], res["summary"]["standalone"]
        p = paper.get(model)
        ptxt = " | ".join(f"{v:g}" for v in p) if p else "– | – | –"
        lines.append(
            f"| {model_label(model)} | {percent_pm(a['ami'])} | {percent_pm(a['ari'])} | {percent_pm(a['purity'])} "
            f"| {percent_pm(b['ami'])} | {percent_pm(b['ari'])} | {percent_pm(b['purity'])} | {ptxt} "
            f"| {results['timings_s'][model]:g} |"
        )
    for model in results["skipped"]:  # still a row of Table 2: the paper's numbers beside it
        p = paper.get(model)
        ptxt = " | ".join(f"{v:g}" for v in p) if p else "– | – | –"
        lines.append(
            f"| {model_label(model)} (not run, see below) | – | – | – | – | – | – | {ptxt} | |"
        )
    for why in results["skipped"].values():
        lines.append(f"\n{why}")
    lines += ["", f"{machine_line(results['machine'])}; total {results['total_seconds']:g} s.", ""]
    return "\n".join(lines)


def machine_line(m: dict[str, Any]) -> str:
    """'Machine: …, torch …, kornia …, device …; date' of a ``machine_info`` record."""
    libraries = "".join(f", {k} {v}" for k, v in m.get("libraries", {}).items())
    gpu = f" ({m['gpu']})" if "gpu" in m else ""
    return (
        f"Machine: {m['processor']}, {m['cores']} cores, torch {m['torch']}{libraries}, "
        f"device {m['device']}{gpu}; {m['date']}"
    )


def ranges(values: list[int]) -> str:
    """[1, 2, 3, 5] -> '1–3, 5'."""
    values = sorted(values)
    if not values:
        return "–"
    parts, start, prev = [], values[0], values[0]
    for v in values[1:] + [None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        parts.append(f"{start}–{prev}" if prev > start else f"{start}")
        if v is not None:
            start = prev = v
    return ", ".join(parts)
