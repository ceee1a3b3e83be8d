import numpy as np

from wsi_ccrl.crops import crop_windows, crops_in_image, extract_crops, fit_windows, inside


def test_window_is_scale_times_the_longer_side_centred_on_the_box():
    bbox = np.array([[45, 30, 55, 50], [9, 9, 11, 11]])  # 10x20 box; a tiny 2x2 box
    w = crop_windows(bbox, window_scale=2.0, min_window=16)
    np.testing.assert_allclose(w[0], [30, 20, 70, 60])  # 2 x 20 = 40 px square around (50, 40)
    np.testing.assert_allclose(w[1], [2, 2, 18, 18])  # min_window wins
    # the paper's NuCLS window (scale 1): the box's longer side, the short side centred
    np.testing.assert_allclose(crop_windows([[0, 0, 10, 4]], 1.0, 0), [[0, -3, 10, 7]])
    # CoNSeP (scale 2): VOLTA's box padded by half its longer side on each side
    np.testing.assert_allclose(crop_windows([[0, 0, 10, 4]], 2.0, 0), [[-5, -8, 15, 12]])


def test_fit_windows_shifts_inside_and_keeps_the_size():
    w = np.array([[-5.0, 10, 15, 30], [90, 95, 110, 115], [40, 40, 60, 60], [-10, 0, 130, 20]])
    fitted = fit_windows(w, 100, 100)
    np.testing.assert_allclose(fitted[:3], [[0, 10, 20, 30], [80, 80, 100, 100], [40, 40, 60, 60]])
    np.testing.assert_allclose(fitted[3], [-20, 0, 120, 20])  # wider than the image: centred
    np.testing.assert_allclose(fitted[:, 2] - fitted[:, 0], w[:, 2] - w[:, 0])
    assert inside(fitted[:3], 100, 100).all() and not inside(fitted[3:], 100, 100).any()


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


def test_crops_at_image_edges_hold_only_image_pixels():
    """Nuclei touching every edge and corner of a tissue image: each crop is a real sub-image."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 230, (64, 80, 3), dtype=np.uint8)
    boxes = np.array(
        [[0, 0, 6, 6], [74, 0, 80, 8], [0, 58, 5, 64], [70, 54, 80, 64], [30, 0, 40, 4]]
    )
    crops = crops_in_image(img, boxes, crop_size=16, window_scale=2.0, min_window=16)
    for crop, box in zip(crops, boxes, strict=True):
        side = max(2 * max(box[2] - box[0], box[3] - box[1]), 16)
        x0 = int(np.clip((box[0] + box[2] - side) / 2, 0, 80 - side))
        y0 = int(np.clip((box[1] + box[3] - side) / 2, 0, 64 - side))
        if side == 16:  # an integer window at crop size: the crop is the image itself
            np.testing.assert_array_equal(crop, img[y0 : y0 + 16, x0 : x0 + 16])
        assert crop.max() < 230
