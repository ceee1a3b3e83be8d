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

Every table was printed by a script in `benchmarks/` or by `wsi-ccrl benchmark`; each section names its
command, machine and date (rebuild this file with `python benchmarks/make_report.py`). The machine: a
shared 2-core x86_64 VM without a GPU, so speeds are pessimistic. Quality figures name their split:
validation splits carved from CoNSeP Train by source tile, and BRCA-M2C's train / val; no test split is
in reach.
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
