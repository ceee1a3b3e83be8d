"""``report.html`` in a real headless Chromium (the Debian package; skipped, saying why, without
it): every figure decodes from its inlined PNG, nothing is fetched, the screenshot shows them."""

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from wsi_ccrl.config import LabelConfig
from wsi_ccrl.label.charts import embedding_map, proportion_bars
from wsi_ccrl.label.pipeline import label_stores
from wsi_ccrl.label.report import principal_2d

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FIGURES = ("gallery", "proportions", "embedding", "overview-0", "overview-1")
# after load, each <img> records whether it decoded (naturalWidth) into the dumped DOM
PROBE = """<script>window.addEventListener('load', () => { for (const i of document.images)
  i.setAttribute('data-decoded', i.complete && i.naturalWidth > 0 ? i.naturalWidth : 0); });
</script>"""


def _chromium(*args, profile):
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def test_charts_and_principal_components():
    bars = proportion_bars(["a", "b"], np.array([[1, 3], [0, 0]]), [(255, 0, 0), (0, 0, 255)])
    pixels = np.asarray(bars)
    assert (pixels == [255, 0, 0]).all(-1).sum() > 0 and (pixels == [0, 0, 255]).all(-1).sum() > 0
    x = np.random.default_rng(0).normal(size=(200, 8)) * [5, 2, 1, 1, 1, 1, 1, 1]
    pcs, (v1, v2) = principal_2d(x)
    assert pcs.shape == (200, 2) and v1 > v2 > 0 and abs(pcs[:, 0].std() - 5) < 1
    image = embedding_map(pcs, np.arange(200) % 2, [(255, 0, 0), (0, 0, 255)], ("x", "y"))
    assert (np.asarray(image) == [0, 0, 255]).all(-1).sum() > 100


@pytest.mark.slow
@pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason="no headless Chromium: apt-get install chromium (.ci/run installs it when apt can)",
)
def test_report_opens_in_headless_chromium_with_every_figure(
    small_store_factory, random_model_file, tmp_path
):
    a = small_store_factory("slide_a", max_cells=20)
    b = small_store_factory("slide_b", patches=("train_10_002",), max_cells=30, slide=None)
    cfg = LabelConfig(
        k=3, batch_size=8, device="cpu", export=("geojson", "csv", "anndata"),
        gallery_per_cluster=4, overview_max_side=512,
    )  # fmt: skip
    summary = label_stores(random_model_file, [a, b], tmp_path / "out", cfg)
    page = summary.report
    assert page == tmp_path / "out" / "report.html"
    text = page.read_text()
    # self-contained: every picture inlined, no address to fetch; links to the files beside it
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text)
    assert len(re.findall(r'src="data:image/png;base64,', text)) == len(FIGURES)
    for href in re.findall(r'href="([^"]+)"', text):
        assert (page.parent / href).is_file(), href
    assert {"slide_a.geojson", "slide_b.csv", "cells.h5ad"} <= set(
        re.findall(r'href="([^"]+)"', text)
    )

    probed = page.with_name("probed.html")  # a copy with the probe, beside the files it links
    probed.write_text(text.replace("</body>", PROBE + "</body>"))
    dom = _chromium("--dump-dom", probed.as_uri(), profile=tmp_path / "p1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    for name in FIGURES:
        tag = re.search(rf'<img[^>]*id="{name}"[^>]*>', dom.stdout)
        assert tag, name
        decoded = re.search(r'data-decoded="(\d+)"', tag.group(0))
        assert decoded and int(decoded.group(1)) > 0, (name, tag.group(0)[:200])

    shot = tmp_path / "report.png"
    run = _chromium(f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri(),
                    profile=tmp_path / "p2")  # fmt: skip
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    assert pixels.shape[:2] == (2400, 1280)
    assert pixels.std() > 20  # not blank
    colours = {tuple(c) for c in summary.styles.colours}
    # the clusters' colours are drawn (bars, map, overviews)
    found = {c for c in colours if (np.abs(pixels - c).sum(-1) < 6).sum() > 50}
    assert found == colours
    keep = os.environ.get("WSI_CCRL_SCREENSHOT")  # where to keep the screenshot to look at
    if keep:
        shutil.copy(shot, keep)
    print(f"screenshot: {shot}")
