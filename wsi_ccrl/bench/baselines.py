"""The paper's baseline cell representations, each fit on the train split and applied to any split.

One file of ~380 lines on purpose: four short fit/transform baselines that share the crop helpers,
read side by side; the polygon maths is in ``contours``.

- ``morphological``: 29 shape/geometry features of the nucleus polygon (after Bhaskar et al.):
  size, perimeter, ellipse axes, eccentricity, circularity, extent, convexity, radial profile and
  Hu's moment invariants; polygon moments are computed for every cell at once (Green's theorem).
- ``manual``: dense SIFT bag of visual words + uniform LBP histograms (after Hu et al.); all crops
  are laid out in one padded mosaic so that SIFT and LBP each run once per chunk of cells.
- ``raw_pixels``: the crop's pixels, reduced by PCA.
- ``imagenet``: torchvision's ImageNet ResNet18, only from weights already in the torch hub cache
  (never downloaded here).

Each baseline is ``fit(train) -> self`` then ``transform(cells) -> (n, d) float32``. A new one is
one class with ``@register_baseline(name, scaling)``: the config's ``benchmark.models``, the
protocol, the end-to-end run and the feature scaling before K-means all read this registry.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsi_ccrl.bench.datasets.common import CellSet
from wsi_ccrl.config import BenchmarkConfig
from wsi_ccrl.errors import WsiCcrlError
from wsi_ccrl.io.contours import polygon_edges, polygon_moments
from wsi_ccrl.log import get_logger
from wsi_ccrl.registry import Registry

log = get_logger(__name__)

SCALINGS = ("zscore", "l2", "none")  # how a baseline's features go to K-means


@dataclass(frozen=True)
class Baseline:
    """A registered baseline: how to build it, and how its features are scaled for K-means
    (``zscore``: hand-made features and generative codes, whose scale is arbitrary; ``l2``:
    network embeddings; ``none``: already comparable, e.g. PCA scores)."""

    build: Callable[..., object]  # (seed, imagenet_size, device) -> an unfitted baseline
    scaling: str
    label: str  # its row in the benchmark's tables


# name -> Baseline; the generative ones register in a module imported on first use (torch)
BASELINES = Registry(
    {"dcae": "wsi_ccrl.bench.generative", "infogan": "wsi_ccrl.bench.generative"},
    "unknown baseline {name!r} (known: {known})",
    WsiCcrlError,
)


def register_baseline(name: str, label: str, scaling: str = "zscore") -> Callable[[type], type]:
    """Class decorator: ``@register_baseline("manual", "Manual features (SIFT + LBP)")`` makes ``benchmark.models: [manual]``
    build it, passing whichever of ``seed``, ``size`` (ImageNet input side) and ``device`` its
    ``__init__`` takes."""
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")

    def wrap(cls: type) -> type:
        takes = inspect.signature(cls).parameters

        def build(seed: int = 0, imagenet_size: int = 224, device: str = "cpu"):
            offered = {"seed": seed, "size": imagenet_size, "device": device}
            return cls(**{k: v for k, v in offered.items() if k in takes})

        cls.name = name
        BASELINES[name] = Baseline(build, scaling, label)
        return cls

    return wrap


def baseline_names() -> tuple[str, ...]:
    """Every baseline a config may name, the lazily registered ones included."""
    return BASELINES.names()


def get_baseline(name: str) -> Baseline:
    """The registry entry of ``name`` (importing the module that registers it if need be)."""
    return BASELINES.entry(name)


# --------------------------------------------------------------------------- morphological
def hu_moments(m: dict[str, np.ndarray]) -> np.ndarray:
    """Hu's 7 invariants (n, 7) from raw moments (as ``cv2.HuMoments``)."""
    m00 = np.maximum(m["m00"], 1e-9)
    cx, cy = m["m10"] / m00, m["m01"] / m00
    mu20 = m["m20"] - cx * m["m10"]
    mu02 = m["m02"] - cy * m["m01"]
    mu11 = m["m11"] - cx * m["m01"]
    mu30 = m["m30"] - 3 * cx * m["m20"] + 2 * cx**2 * m["m10"]
    mu03 = m["m03"] - 3 * cy * m["m02"] + 2 * cy**2 * m["m01"]
    mu21 = m["m21"] - 2 * cx * m["m11"] - cy * m["m20"] + 2 * cx**2 * m["m01"]
    mu12 = m["m12"] - 2 * cy * m["m11"] - cx * m["m02"] + 2 * cy**2 * m["m10"]
    s2, s3 = m00**2, m00**2.5
    n20, n02, n11 = mu20 / s2, mu02 / s2, mu11 / s2
    n30, n03, n21, n12 = mu30 / s3, mu03 / s3, mu21 / s3, mu12 / s3
    t0, t1 = n30 + n12, n21 + n03
    q0, q1 = n30 - 3 * n12, 3 * n21 - n03
    return np.stack(
        [
            n20 + n02,
            (n20 - n02) ** 2 + 4 * n11**2,
            q0**2 + q1**2,
            t0**2 + t1**2,
            q0 * t0 * (t0**2 - 3 * t1**2) + q1 * t1 * (3 * t0**2 - t1**2),
            (n20 - n02) * (t0**2 - t1**2) + 4 * n11 * t0 * t1,
            q1 * t0 * (t0**2 - 3 * t1**2) - q0 * t1 * (3 * t0**2 - t1**2),
        ],
        axis=1,
    )


def _convex_hulls(offsets: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convex hull area and perimeter per polygon (one C call per cell: hulls do not vectorise)."""
    import cv2

    n = offsets.size - 1
    area, perim = np.zeros(n), np.zeros(n)
    pts = xy.astype(np.float32)
    for i in range(n):
        poly = pts[offsets[i] : offsets[i + 1]]
        if len(poly) >= 3:
            hull = cv2.convexHull(poly)
            area[i] = cv2.contourArea(hull)
            perim[i] = cv2.arcLength(hull, True)
    return area, perim


MORPH_FEATURES = (
    "area", "perimeter", "equivalent_diameter", "circularity", "major_axis", "minor_axis",
    "eccentricity", "elongation", "box_width", "box_height", "box_aspect", "extent",
    "convex_area", "solidity", "convex_perimeter", "convexity", "radius_mean", "radius_std",
    "radius_min", "radius_max", "radius_ratio", "roughness",
    "hu1", "hu2", "hu3", "hu4", "hu5", "hu6", "hu7",
)  # fmt: skip


def morphological_features(cells: CellSet) -> np.ndarray:
    """(n, 29) shape features of each nucleus polygon (see ``MORPH_FEATURES``)."""
    offsets, xy = cells.contour_offsets, cells.contour_xy.astype(np.float64)
    n = offsets.size - 1
    owner, start, end = polygon_edges(offsets, xy)
    m = polygon_moments(offsets, xy)
    area = np.maximum(np.abs(m["m00"]), 1.0)
    cx, cy = m["m10"] / area, m["m01"] / area
    edge = np.linalg.norm(end - start, axis=1)
    perimeter = np.maximum(np.bincount(owner, edge, minlength=n), 1.0)
    # ellipse of the same second moments
    mu20 = m["m20"] / area - cx**2
    mu02 = m["m02"] / area - cy**2
    mu11 = m["m11"] / area - cx * cy
    common = np.sqrt(np.maximum(((mu20 - mu02) / 2) ** 2 + mu11**2, 0))
    l1 = np.maximum((mu20 + mu02) / 2 + common, 1e-9)
    l2 = np.maximum((mu20 + mu02) / 2 - common, 1e-9)
    major, minor = 4 * np.sqrt(l1), 4 * np.sqrt(l2)
    box_w = (cells.bbox[:, 2] - cells.bbox[:, 0]).astype(np.float64)
    box_h = (cells.bbox[:, 3] - cells.bbox[:, 1]).astype(np.float64)
    hull_area, hull_perim = _convex_hulls(offsets, xy)
    hull_area = np.maximum(hull_area, area)
    hull_perim = np.where(hull_perim > 0, hull_perim, perimeter)
    # radial profile: vertex distance to the centroid, weighted by the edge leaving the vertex
    r = np.hypot(xy[:, 0] - cx[owner], xy[:, 1] - cy[owner])
    w = np.maximum(np.bincount(owner, edge, minlength=n), 1e-9)
    r_mean = np.bincount(owner, r * edge, minlength=n) / w
    r_var = np.bincount(owner, (r - r_mean[owner]) ** 2 * edge, minlength=n) / w
    r_min = np.full(n, np.inf)
    r_max = np.zeros(n)
    np.minimum.at(r_min, owner, r)
    np.maximum.at(r_max, owner, r)
    r_min[~np.isfinite(r_min)] = 0
    hu = hu_moments(m)
    hu = -np.sign(hu) * np.log10(np.abs(hu) + 1e-30)  # the usual log scale
    hu = np.clip(hu, -40, 40)
    feats = np.column_stack(
        [
            area,
            perimeter,
            np.sqrt(4 * area / np.pi),
            4 * np.pi * area / perimeter**2,
            major,
            minor,
            np.sqrt(1 - l2 / l1),
            minor / major,
            box_w,
            box_h,
            np.minimum(box_w, box_h) / np.maximum(np.maximum(box_w, box_h), 1),
            area / np.maximum(box_w * box_h, 1),
            hull_area,
            area / hull_area,
            hull_perim,
            hull_perim / perimeter,
            r_mean,
            np.sqrt(r_var),
            r_min,
            r_max,
            r_min / np.maximum(r_max, 1e-9),
            np.sqrt(r_var) / np.maximum(r_mean, 1e-9),
            hu,
        ]
    )
    return np.nan_to_num(feats).astype(np.float32)


@register_baseline("morphological", "Morphological features")
class Morphological:
    """Shape features need no fitting; they are z-scored later like every hand-made feature."""

    def fit(self, train: CellSet) -> Morphological:
        return self

    def transform(self, cells: CellSet) -> np.ndarray:
        return morphological_features(cells)


# --------------------------------------------------------------------------- shape and colour
@register_baseline("shape_colour", "Shape and colour (7 numbers)")
class ShapeColour:
    """Seven numbers per cell (``label.descriptors``), z-scored later like every hand-made
    feature: the bar any learnt representation has to clear on a cohort."""

    def fit(self, train: CellSet) -> ShapeColour:
        return self

    def __init__(self, mpp: float | None = None):
        self.mpp = mpp  # µm per pixel of the cells' coordinates (None: pixels)

    def transform(self, cells: CellSet) -> np.ndarray:
        from wsi_ccrl.label.descriptors import cell_descriptors

        c = cells
        return cell_descriptors(c.area, c.bbox, c.contour_offsets, c.contour_xy, c.crops, self.mpp)


# --------------------------------------------------------------------------- manual (SIFT + LBP)
def _mosaic(grey: np.ndarray, pad: int, cols: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Lay (n, S, S) crops out in a grid, each with ``pad`` reflected pixels around it.

    Returns the mosaic (H, W) and the (n, 2) x, y of each crop's top-left pixel in it.
    """
    n, s = grey.shape[:2]
    tiles = np.pad(grey, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
    side = s + 2 * pad
    rows = -(-n // cols)
    full = np.zeros((rows * cols, side, side), grey.dtype)
    full[:n] = tiles
    mosaic = full.reshape(rows, cols, side, side).transpose(0, 2, 1, 3).reshape(rows * side, -1)
    idx = np.arange(n)
    origin = np.stack([(idx % cols) * side + pad, (idx // cols) * side + pad], 1)
    return np.ascontiguousarray(mosaic), origin


def _grey(crops: np.ndarray) -> np.ndarray:
    rgb = crops.astype(np.float32)
    return (rgb @ np.array([0.299, 0.587, 0.114], np.float32)).round().astype(np.uint8)


def dense_sift(crops: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """(n, P, 128) upright SIFT descriptors on a fixed grid: the whole crop plus a 3x3 grid.

    A keypoint of size ``s`` describes a square of side about ``6 s`` (OpenCV's 4x4 bins of 3σ):
    size S/6 covers the whole crop, S/12 a quarter of it.
    """
    import cv2

    n, s = crops.shape[:2]
    grid = [(s / 2, s / 2, s / 6)] + [
        (gx, gy, s / 12) for gy in (s / 4, s / 2, 3 * s / 4) for gx in (s / 4, s / 2, 3 * s / 4)
    ]
    sift = cv2.SIFT_create()
    out = np.zeros((n, len(grid), 128), np.float32)
    pad = s  # wider than any descriptor's reach beyond the crop
    for start in range(0, n, chunk):
        grey = _grey(crops[start : start + chunk])
        mosaic, origin = _mosaic(grey, pad)
        kps = [
            cv2.KeyPoint(float(ox + gx - 0.5), float(oy + gy - 0.5), float(size), 0.0)
            for ox, oy in origin
            for gx, gy, size in grid
        ]
        kps_out, desc = sift.compute(mosaic, kps)
        if desc is None or len(kps_out) != len(kps):
            raise WsiCcrlError("SIFT dropped keypoints of the dense grid (crops too small?)")
        out[start : start + len(grey)] = desc.reshape(len(grey), len(grid), 128)
    return out


def lbp_histograms(crops: np.ndarray, radii: tuple[int, ...] = (1, 2), chunk: int = 4096):
    """(n, Σ(8r+2)) uniform LBP histograms (P = 8r neighbours at radius r) over each crop.

    One ``local_binary_pattern`` call per chunk on a mosaic of reflect-padded crops; only each
    crop's own pixels are counted.
    """
    from skimage.feature import local_binary_pattern

    n, s = crops.shape[:2]
    feats = []
    for start in range(0, n, chunk):
        grey = _grey(crops[start : start + chunk])
        m = len(grey)
        pad = max(radii) + 1
        mosaic, origin = _mosaic(grey, pad)
        ys = origin[:, 1, None, None] + np.arange(s)[None, :, None]
        xs = origin[:, 0, None, None] + np.arange(s)[None, None, :]
        hists = []
        for r in radii:
            p = 8 * r
            codes = local_binary_pattern(mosaic, p, r, method="uniform").astype(np.int64)
            own = codes[ys, xs].reshape(m, -1)  # (m, S*S)
            bins = p + 2
            flat = own + (np.arange(m) * bins)[:, None]
            h = np.bincount(flat.ravel(), minlength=m * bins).reshape(m, bins)
            hists.append(h / (s * s))
        feats.append(np.concatenate(hists, axis=1))
    return np.concatenate(feats).astype(np.float32)


@register_baseline("manual", "Manual features (SIFT + LBP)")
class Manual:
    """SIFT bag of visual words (vocabulary fit on the train crops) + LBP histograms."""

    def __init__(self, words: int = 64, seed: int = 0, vocab_sample: int = 100_000):
        self.words, self.seed, self.vocab_sample = words, seed, vocab_sample

    def fit(self, train: CellSet) -> Manual:
        from sklearn.cluster import MiniBatchKMeans

        desc = dense_sift(train.crops).reshape(-1, 128)
        rng = np.random.default_rng(self.seed)
        if len(desc) > self.vocab_sample:
            desc = desc[rng.choice(len(desc), self.vocab_sample, replace=False)]
        self.vocab_ = MiniBatchKMeans(
            self.words, random_state=self.seed, n_init=3, batch_size=4096
        ).fit(desc)
        return self

    def transform(self, cells: CellSet) -> np.ndarray:
        desc = dense_sift(cells.crops)
        n, p = desc.shape[:2]
        words = self.vocab_.predict(desc.reshape(-1, 128)).reshape(n, p)
        flat = words + (np.arange(n) * self.words)[:, None]
        bow = np.bincount(flat.ravel(), minlength=n * self.words).reshape(n, self.words) / p
        return np.concatenate([bow.astype(np.float32), lbp_histograms(cells.crops)], axis=1)


# --------------------------------------------------------------------------- raw pixels
@register_baseline("raw_pixels", "Raw pixels (PCA)", scaling="none")
class RawPixels:
    """PCA of the flattened crops (fit on a sample of the train split)."""

    def __init__(self, components: int = 50, seed: int = 0, fit_sample: int = 20_000):
        self.components, self.seed, self.fit_sample = components, seed, fit_sample

    def fit(self, train: CellSet) -> RawPixels:
        from sklearn.decomposition import PCA

        x = train.crops.reshape(len(train), -1)
        if len(x) > self.fit_sample:
            x = x[np.random.default_rng(self.seed).choice(len(x), self.fit_sample, replace=False)]
        k = min(self.components, *x.shape)
        self.pca_ = PCA(k, random_state=self.seed).fit(x.astype(np.float32) / 255)
        return self

    def transform(self, cells: CellSet) -> np.ndarray:
        x = cells.crops.reshape(len(cells), -1).astype(np.float32) / 255
        return self.pca_.transform(x).astype(np.float32)


# --------------------------------------------------------------------------- ImageNet ResNet18
def imagenet_weights_path() -> Path:
    """Where torchvision keeps ResNet18's ImageNet weights (the torch hub cache)."""
    import torch
    from torchvision.models import ResNet18_Weights

    name = Path(ResNet18_Weights.IMAGENET1K_V1.url).name
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def imagenet_missing_message() -> str | None:
    """None when the weights are present; else how to provide them (we never download)."""
    from torchvision.models import ResNet18_Weights

    path = imagenet_weights_path()
    if path.is_file():
        return None
    return (
        f"ImageNet ResNet18 skipped: no weights at {path} (download "
        f"{ResNet18_Weights.IMAGENET1K_V1.url} elsewhere and copy it there, or set TORCH_HOME)"
    )


@register_baseline("imagenet", "ImageNet pre-trained ResNet18", scaling="l2")
class ImageNet:
    """torchvision ResNet18 with ImageNet weights, pooled 512-d features of upsampled crops."""

    def __init__(self, size: int = 224, batch_size: int = 256, device: str = "cpu"):
        self.size, self.batch_size, self.device = size, batch_size, device

    def fit(self, train: CellSet) -> ImageNet:
        import torch
        from torchvision.models import resnet18

        message = imagenet_missing_message()
        if message:
            raise WsiCcrlError(message)
        net = resnet18()
        net.load_state_dict(torch.load(imagenet_weights_path(), weights_only=True))
        net.fc = torch.nn.Identity()
        self.net_ = net.to(self.device).eval()
        return self

    def transform(self, cells: CellSet) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        mean = torch.tensor([0.485, 0.456, 0.406], device=self.device).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225], device=self.device).view(1, 3, 1, 1)
        out = []
        with torch.no_grad():
            for start in range(0, len(cells), self.batch_size):
                x = torch.from_numpy(cells.crops[start : start + self.batch_size]).to(self.device)
                x = x.permute(0, 3, 1, 2).float() / 255
                x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
                out.append(self.net_((x - mean) / std).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 512), np.float32)


def make_baseline(
    name: str,
    seed: int = 0,
    imagenet_size: int = BenchmarkConfig.imagenet_size,
    device: str = "cpu",
):
    """A fresh, unfitted baseline by name."""
    return get_baseline(name).build(seed, imagenet_size, device)


def scale_features(name: str, fit: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``fit`` and ``x`` scaled by the baseline's rule, with statistics of ``fit`` (the cells
    K-means is fit on); CCRL's embeddings go through ``label.features`` instead (as is)."""
    scaling = get_baseline(name).scaling if name in baseline_names() else "none"
    if scaling == "zscore":
        mean, std = fit.mean(0), fit.std(0)
        std[std < 1e-8] = 1.0
        return (fit - mean) / std, (x - mean) / std
    if scaling == "l2":
        from wsi_ccrl.label.features import l2_normalize

        return l2_normalize(fit), l2_normalize(x)
    return fit, x
