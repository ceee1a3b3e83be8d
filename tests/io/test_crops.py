import numpy as np

from wsi_ccrl.io.crops import CROP_RULE, CropSpec, crop_windows, extract_crops, inside


def test_window_is_scale_times_the_longer_side_centred_on_the_box():
    bbox = np.array([[45, 30, 55, 50], [9, 9, 11, 11]])  # 10x20 box; a tiny 2x2 box
    w = crop_windows(bbox, window_scale=2.0, min_window=16)
    np.testing.assert_allclose(w[0], [30, 20, 70, 60])  # 2 x 20 = 40 px square around (50, 40)
    np.testing.assert_allclose(w[1], [2, 2, 18, 18])  # min_window wins
    # the paper's NuCLS window (scale 1): the box's longer side, the short side centred
    np.testing.assert_allclose(crop_windows([[0, 0, 10, 4]], 1.0, 0), [[0, -3, 10, 7]])
    # CoNSeP (scale 2): VOLTA's box padded by half its longer side on each side
    np.testing.assert_allclose(crop_windows([[0, 0, 10, 4]], 2.0, 0), [[-5, -8, 15, 12]])


def test_inside():
    w = np.array([[0.0, 0, 10, 10], [-1, 0, 9, 10], [5, 5, 12, 9]])
    assert inside(w, 12, 10).tolist() == [True, False, True]


def test_identity_resample_and_centering():
    img = np.zeros((64, 64, 3), np.uint8)
    img[30:34, 30:34] = 200  # a bright 4x4 "nucleus" centred at (32, 32)
    crops = extract_crops(img, np.array([[16.0, 16.0, 48.0, 48.0]]), crop_size=32)
    assert crops.shape == (1, 32, 32, 3) and crops.dtype == np.uint8
    np.testing.assert_array_equal(crops[0], img[16:48, 16:48])


def test_downsampling_averages_and_the_outside_is_mirrored_never_filled():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 200, (40, 40, 3), dtype=np.uint8)  # no pure white anywhere
    crops = extract_crops(img, np.array([[0.0, 0.0, 40.0, 40.0], [-20.0, -20.0, 20.0, 20.0]]), 20)
    block_means = img.reshape(20, 2, 20, 2, 3).mean(axis=(1, 3))
    assert np.abs(crops[0].astype(float) - block_means).max() <= 1.0  # 2x2 area average
    assert crops.max() < 200  # nothing white was invented past the edge
    mirrored = img[1:21][::-1, :][:, 1:21][:, ::-1]  # reflect: the edge row is not repeated
    quarter = mirrored.reshape(10, 2, 10, 2, 3).mean(axis=(1, 3))
    assert np.abs(crops[1][:10, :10].astype(float) - quarter).max() <= 1.0
    assert extract_crops(img, np.zeros((0, 4)), 8).shape == (0, 8, 8, 3)


def test_crops_at_image_edges_are_mirrored_image_pixels():
    """Nuclei touching every edge and corner: each crop is the image mirrored past its edge,
    the nucleus stays centred, and no pixel is a fill value."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 230, (64, 80, 3), dtype=np.uint8)
    boxes = np.array(
        [[0, 0, 6, 6], [74, 0, 80, 8], [0, 58, 6, 64], [70, 54, 80, 64], [30, 0, 40, 4]]
    )
    crops = CropSpec(16, 2.0, 16).crops(img, boxes)
    pad = 20
    mirrored = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    windows = crop_windows(boxes, 2.0, 16)
    for crop, (x0, y0, x1, y1) in zip(crops, windows.astype(int), strict=True):
        if x1 - x0 == 16:  # an integer window at crop size: the crop is the mirrored image
            np.testing.assert_array_equal(crop, mirrored[y0 + pad : y1 + pad, x0 + pad : x1 + pad])
    assert crops.max() < 230


def test_crop_spec_travels_through_store_attributes():
    spec = CropSpec(32, 2.0, 16)
    attrs = spec.attrs(window_units="pixels at 0.25 mpp")
    assert attrs["rule"] == CROP_RULE and attrs["crop_size"] == 32
    assert spec.matches(attrs) and spec.matches(dict(attrs, min_window=16.0))
    assert not CropSpec(48, 2.0, 16).matches(attrs) and not CropSpec(32, 3.0, 16).matches(attrs)
    assert not spec.matches(dict(attrs, rule="white fill")) and not spec.matches(None)
