"""Shared fixtures: the bundled sample slide and the real data in ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SLIDE = ROOT / "data" / "CMU-1-Small-Region.svs"
SHARED_DATA = ROOT.parent / "shared" / "data"
CONSEP_PATCHES = SHARED_DATA / "consep-patches" / "Train"
NO_MPP_SLIDE = SHARED_DATA / "wsi" / "tcga-cr-7395-01a-01-ts1.svs"


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    """Two cores here: keep torch from oversubscribing them."""
    import torch

    torch.set_num_threads(2)


@pytest.fixture
def sample_slide() -> Path:
    return SAMPLE_SLIDE


def needs(path: Path):
    """Skip a test whose real data is not present (CI always has ../shared/data)."""
    return pytest.mark.skipif(not path.exists(), reason=f"{path} not available")
