"""Collect the tables the benchmark scripts wrote (benchmarks/results/*.md) into BENCHMARKS.md.

Each section is the verbatim output of the script named in it, with its command, machine and date.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
SECTIONS = [
    ("Label quality end to end: CoNSeP and BRCA-M2C", "label_quality.md"),
    ("Segmentation: speed and memory", "segment.md"),
    ("Nucleus detection: watershed and the embedded U-Net on CoNSeP", "detection.md"),
    ("The embedded nucleus U-Net: held-out F1 and speed", "nucleus_net.md"),
    ("CPU inference engines: torch, ONNX Runtime, OpenVINO", "engines.md"),
    ("Training: input pipeline vs model", "train.md"),
    ("Label: embedding, K-means, export", "label.md"),
    ("AnnData export: peak memory on 1 M cells", "anndata_export.md"),
    ("Overlay geometry: vertices, area and pixels of real nuclei", "overlay_geometry.md"),
    ("What was tried for CCRL's training", "ccrl_ablation.md"),
    ("The paper's protocol (wsi-ccrl benchmark)", "protocol.md"),
    ("Reliability: faults and bad inputs", "reliability.md"),
    ("GPU", "gpu.md"),
    ("The demo on the bundled slide", "demo.md"),
]

HEADER = """# Benchmarks

Every table below was printed by a script in `benchmarks/` (or by `wsi-ccrl benchmark`); each
section names its command, the machine and the date. Rebuild this file with
`python benchmarks/make_report.py` after re-running them. The machine for all of them: a 2-core
x86_64 VM without a GPU, often shared with other jobs while measuring, so speeds are pessimistic;
memory figures are not affected. Quality figures name their split: "validation" is carved from
CoNSeP's Train by source tile (tiles 21–27) and is what settings were chosen on; a second
validation fold (tiles 1–7) checks them, and folds 3 and 4 (tiles 8–14, 15–20) complete a 4-fold
cross-validation by tile ("Every tile of Train held out once"); BRCA-M2C's train and val splits
(90 breast tiles of 90 TCGA slides, 20x) are a second data set to choose label settings on; no
test split is in this repository's reach.
"""


def render() -> str:
    """BENCHMARKS.md as the results files make it (a test checks the two agree)."""
    parts = [HEADER]
    for title, name in SECTIONS:
        text = (HERE / "results" / name).read_text().strip()
        lines = text.splitlines()
        if lines and lines[0].startswith("#"):
            lines = lines[1:]  # the section title replaces the script's own
        body = "\n" + "\n".join(lines).strip()  # a heading on the first line is demoted too
        body = body.replace("\n# ", "\n### ").replace("\n## ", "\n### ").strip()
        parts.append(f"## {title}\n\n{body}\n")
    return "\n".join(parts)


def main() -> None:
    out = HERE.parent / "BENCHMARKS.md"
    out.write_text(render())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
