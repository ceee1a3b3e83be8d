"""Shared fixtures: the bundled sample slide and the real, labelled patches in tests/fixtures.

Everything here lives in the repository, so a fresh clone runs the whole suite. The full data sets
in ../shared/data feed only the benchmarks and the tests marked ``shared`` (``pytest -m shared``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SLIDE = ROOT / "wsi_ccrl" / "data" / "CMU-1-Small-Region.svs"
CONFIGS = ROOT / "configs"  # the shipped profiles (package wsi_ccrl_configs)
FIXTURES = ROOT / "tests" / "fixtures"  # credits and terms: tests/fixtures/README.md
CONSEP_PATCHES = FIXTURES / "consep" / "Train"  # 27 real CoNSeP patches with labels
MONUSEG = FIXTURES / "monuseg"  # one real MoNuSeg crop (colon, 40x) with labels
SHARED_DATA = ROOT.parent / "shared" / "data"  # the project's full data sets, not in the repo


def load_benchmark_script(name: str):
    """A script of benchmarks/ (not a package) imported as a module, for the tests of its parts."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    """Two cores here: keep torch from oversubscribing them."""
    import torch

    torch.set_num_threads(2)


@pytest.fixture
def sample_slide() -> Path:
    return SAMPLE_SLIDE


def needs(path: Path):
    """A test that reads ``path``; one under ../shared/data is marked ``shared`` (left out of the
    default run, ``pytest -m shared`` runs it) and skipped, saying so, where that data is absent."""
    where = "the shared data set beside the repository (../shared/data/README.md)"
    skip = pytest.mark.skipif(not path.exists(), reason=f"{path} not available: {where}")

    def mark(test):
        test = skip(test)
        return pytest.mark.shared(test) if path.is_relative_to(SHARED_DATA) else test

    return mark


@pytest.fixture(scope="session")
def no_mpp_slide(tmp_path_factory) -> Path:
    """A real two-level tiled TIFF (the sample slide's pixels) whose metadata has no µm/px."""
    import numpy as np
    import tifffile

    from wsi_ccrl.io.slide import Slide

    with Slide.open(SAMPLE_SLIDE) as slide:
        image = slide.read_level(0, 0, *slide.dimensions, 0)
    path = tmp_path_factory.mktemp("no-mpp") / "no-mpp.tif"
    with tifffile.TiffWriter(path) as tif:
        opts = {"tile": (256, 256), "photometric": "rgb", "compression": "jpeg"}
        tif.write(image, **opts)
        tif.write(np.ascontiguousarray(image[::2, ::2]), subfiletype=1, **opts)
    return path


@pytest.fixture(scope="session")
def tile10_cells(tmp_path_factory):
    """The benchmark's cells (``CellSet``) of 3 real CoNSeP patches of tile 10, crop rule applied."""
    from wsi_ccrl.bench.datasets import consep
    from wsi_ccrl.bench.datasets.common import load_cells
    from wsi_ccrl.bench.datasets.common import write_store as write_benchmark_store
    from wsi_ccrl.io.crops import CropSpec

    images = [CONSEP_PATCHES / "Images" / f"train_10_00{k}.png" for k in range(3)]
    store = write_benchmark_store(
        tmp_path_factory.mktemp("tile10") / "cells.zarr", consep.iter_tiles(images, "merged4"),
        [p.name for p in images], {"dataset": "consep"}, CropSpec(32, 2.0, 8.0),
    )  # fmt: skip
    return load_cells(store)


def build_consep_store(out: Path, n_patches: int = 8, crop_size: int = 32, chunk_cells: int = 128):
    """A small real cell store: crops around CoNSeP ground-truth nuclei, with ``gt_class``."""
    import numpy as np
    import scipy.io
    from PIL import Image
    from scipy import ndimage

    from wsi_ccrl.io.crops import CropSpec
    from wsi_ccrl.io.store import CellBatch, CellStoreWriter

    writer = CellStoreWriter(out, crop_size, {"source": "consep-patches"}, chunk_cells=chunk_cells)
    images = sorted((CONSEP_PATCHES / "Images").glob("*.png"))[:n_patches]
    for png in images:
        image = np.asarray(Image.open(png).convert("RGB"))
        mat = scipy.io.loadmat(CONSEP_PATCHES / "Labels" / f"{png.stem}.mat")
        inst = mat["inst_map"].astype(np.int32)
        centroid = mat["inst_centroid"].astype(np.float32).reshape(-1, 2)
        types = mat["inst_type"].astype(np.int16).ravel()
        slices = ndimage.find_objects(inst)
        bbox = np.array(
            [[s[1].start, s[0].start, s[1].stop, s[0].stop] if s else [0, 0, 1, 1] for s in slices],
            np.int32,
        ).reshape(-1, 4)
        n = min(len(centroid), len(bbox))
        centroid, bbox, types = centroid[:n], bbox[:n], types[:n]
        crops = CropSpec(crop_size, 2.0, 16.0).crops(image, bbox)
        box_xy = bbox[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(-1, 2).astype(np.float32)
        writer.add(
            CellBatch(
                crops=crops,
                centroid=centroid,
                bbox=bbox,
                area=((bbox[:, 2] - bbox[:, 0]) * (bbox[:, 3] - bbox[:, 1])).astype(np.float32),
                seg_type=types,
                seg_prob=np.ones(n, np.float32),
                contour_offsets=np.arange(0, 4 * n + 1, 4, dtype=np.int64),
                contour_xy=box_xy,
                extra={"gt_class": types},
            )
        )
    writer.finalize()
    return writer.path


@pytest.fixture(scope="session")
def consep_store(tmp_path_factory) -> Path:
    """A few hundred real CoNSeP cells, 32 px crops, chunks of 128, with ``gt_class`` (1-4)."""
    return build_consep_store(tmp_path_factory.mktemp("consep") / "consep.zarr")


# --------------------------------------------------------------------------- label fixtures
LABEL_PATCHES = ("train_10_000", "train_10_001", "train_10_002", "train_10_003")


def build_label_store(
    out: Path,
    patches: tuple[str, ...] = LABEL_PATCHES[:2],
    origin: tuple[int, int] = (1200, 1400),
    slide: Path | None = SAMPLE_SLIDE,
    mpp: float | None = 0.499,
    crop_size: int = 32,
    chunk_cells: int = 64,
    max_cells: int | None = None,
) -> Path:
    """A real cell store for ``label``: CoNSeP ground-truth nuclei with their true contours.

    Patch j is placed at level-0 ``origin + (256 j, 0)`` of ``slide`` (the bundled sample by
    default, so overviews draw on a real thumbnail); the same patch gives identical cells (crops,
    contours) in every store that includes it. ``max_cells`` keeps the first nuclei of each patch.
    """
    import cv2
    import numpy as np
    import scipy.io
    from PIL import Image
    from scipy import ndimage

    from wsi_ccrl.io.crops import CropSpec
    from wsi_ccrl.io.store import CellBatch, CellStoreWriter

    attrs = {"source": "consep-patches", "segmenter": {"name": "ground-truth"}}
    if slide is not None:
        attrs["slide"] = {"path": str(slide), "dimensions": [2220, 2967], "mpp": mpp}
    elif mpp is not None:
        attrs["slide"] = {"mpp": mpp}
    writer = CellStoreWriter(out, crop_size, attrs, chunk_cells=chunk_cells, overwrite=True)
    for j, stem in enumerate(patches):
        image = np.asarray(Image.open(CONSEP_PATCHES / "Images" / f"{stem}.png").convert("RGB"))
        mat = scipy.io.loadmat(CONSEP_PATCHES / "Labels" / f"{stem}.mat")
        inst = mat["inst_map"].astype(np.int32)
        ox, oy = origin[0] + 256 * j, origin[1]
        rows = []
        for i, sl in enumerate(ndimage.find_objects(inst), start=1):
            if sl is None:
                continue
            mask = (inst[sl] == i).astype(np.uint8)
            found, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            contour = max(found, key=len).reshape(-1, 2).astype(np.float32)
            if len(contour) < 3:
                continue  # a one- or two-pixel sliver: not a nucleus
            contour += (sl[1].start + ox, sl[0].start + oy)
            box = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
            ys, xs = np.nonzero(mask)
            cxy = (xs.mean() + sl[1].start, ys.mean() + sl[0].start)
            rows.append((contour, box, cxy, int(mask.sum()), int(mat["inst_type"][i - 1, 0])))
            if max_cells is not None and len(rows) == max_cells:
                break
        bbox = np.array([r[1] for r in rows], np.int32)
        centroid = np.array([r[2] for r in rows], np.float32)
        crops = CropSpec(crop_size, 2.0, 16.0).crops(image, bbox)
        lengths = [len(r[0]) for r in rows]
        writer.add(
            CellBatch(
                crops=crops,
                centroid=centroid + np.float32([ox, oy]),
                bbox=bbox + np.int32([ox, oy, ox, oy]),
                area=np.array([r[3] for r in rows], np.float32),
                seg_type=np.array([r[4] for r in rows], np.int16),
                seg_prob=np.linspace(0.5, 1.0, len(rows), dtype=np.float32),
                contour_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                contour_xy=np.concatenate([r[0] for r in rows]),
            )
        )
    writer.finalize()
    return writer.path


@pytest.fixture
def small_store_factory(tmp_path):
    """``make(name, **build_label_store kwargs) -> store path`` in this test's tmp_path."""

    def make(name: str = "slide", **kwargs) -> Path:
        return build_label_store(tmp_path / "stores" / f"{name}.zarr", **kwargs)

    return make


@pytest.fixture(scope="session")
def random_model_file(tmp_path_factory) -> Path:
    """A real ``model.pt`` (32 px crops) holding two randomly initialised backbones."""
    import torch

    from wsi_ccrl.ccrl.backbone import PreActResNet18
    from wsi_ccrl.ccrl.model_io import save_model

    torch.manual_seed(0)
    query, momentum = PreActResNet18("small"), PreActResNet18("small")
    path = tmp_path_factory.mktemp("model") / "model.pt"
    return save_model(path, query, momentum, {"crop_size": 32, "stem": "small"})


def write_store(path: Path, crops, chunk_cells: int = 8, gt=None) -> Path:
    """A store holding ``crops`` (N, S, S, 3) uint8 (e.g. real crops copied from a CoNSeP store)."""
    import numpy as np

    from wsi_ccrl.io.store import CellBatch, CellStoreWriter

    n = len(crops)
    writer = CellStoreWriter(path, crops.shape[1], {"source": "test"}, chunk_cells=chunk_cells)
    if n:
        writer.add(
            CellBatch(
                crops=crops,
                centroid=np.zeros((n, 2), np.float32),
                bbox=np.zeros((n, 4), np.int32),
                area=np.ones(n, np.float32),
                seg_type=np.zeros(n, np.int16),
                seg_prob=np.ones(n, np.float32),
                contour_offsets=np.zeros(n + 1, np.int64),
                contour_xy=np.zeros((0, 2), np.float32),
                extra={} if gt is None else {"gt_class": gt},
            )
        )
    return writer.finalize().path


# --------------------------------------------------------------------------- BRCA-M2C layout
BRCA_PATCHES = ("train_10_000", "train_10_001", "train_21_000", "train_24_000")
TO_BRCA = (-1, 0, 1, 2)  # CoNSeP merged4 -> lymphocyte, tumour, stromal (misc: none)


def make_brca_folder(root: Path, patches=BRCA_PATCHES, split: str = "val") -> Path:
    """CoNSeP patches halved to 20x (0.5 µm/px), named and dotted as BRCA-M2C is."""
    import cv2
    import numpy as np
    from PIL import Image

    from wsi_ccrl.bench.datasets.consep import read_tile

    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    names = []
    for i, stem in enumerate(patches):
        tile = read_tile(CONSEP_PATCHES / "Images" / f"{stem}.png", "merged4")
        small = cv2.resize(tile.image, (128, 128), interpolation=cv2.INTER_AREA)
        name = f"TCGA-T{i}-0000-01Z-00-DX1_0_0_256_256_1.0"  # 1.0 / 2 = 0.5 µm/px
        Image.fromarray(small).save(root / "images" / f"{name}.png")
        cls = np.array(TO_BRCA)[tile.nuclei.gt_class]
        xy = tile.nuclei.centroid[cls >= 0] / 2 - 0.5  # pixel-edge frame at 40x -> dot pixel
        rows = np.column_stack([xy[:, 1], xy[:, 0], cls[cls >= 0] + 1])
        np.savetxt(root / "labels" / f"{name}_gt_class_coords.txt", rows, fmt="%.1f %.1f %d")
        names.append(f"{name}.png")
    (root / f"brca_ds_{split}.txt").write_text("\n".join(names) + "\n")
    return root


# --------------------------------------------------------------------------- faults
def corrupt_chunk(store: Path, array: str, chunk: int = 0) -> Path:
    """Zero 16 bytes in the middle of one stored chunk, as a bad disk sector would."""
    files = sorted((store / array / "c").glob(f"{chunk}/**/*")) or [
        store / array / "c" / str(chunk)
    ]
    target = next(f for f in files if f.is_file())
    data = bytearray(target.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 16] = bytes(16) if any(data[mid : mid + 16]) else b"\xff" * 16
    target.write_bytes(bytes(data))
    return target
