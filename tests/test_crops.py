import numpy as np

from wsi_ccrl.crops import crop_windows, extract_crops


def test_windows_follow_the_adaptive_rule():
    centroid = np.array([[50.0, 40.0], [10.0, 10.0]])
    bbox = np.array([[45, 30, 55, 50], [9, 9, 11, 11]])  # 10x20 box; a tiny 2x2 box
    w = crop_windows(centroid, bbox, window_scale=2.0, min_window=16)
    np.testing.assert_allclose(w[0], [30, 20, 70, 60])  # 2 x 20 = 40 px square
    np.testing.assert_allclose(w[1], [2, 2, 18, 18])  # min_window wins


def test_identity_resample_and_centering():
    img = np.zeros((64, 64, 3), np.uint8)
    img[30:34, 30:34] = 200  # a bright 4x4 "nucleus" centred at (32, 32)
    crops = extract_crops(img, np.array([[16.0, 16.0, 48.0, 48.0]]), crop_size=32)
    assert crops.shape == (1, 32, 32, 3) and crops.dtype == np.uint8
    np.testing.assert_array_equal(crops[0], img[16:48, 16:48])


def test_downsampling_averages_and_pads_white():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    crops = extract_crops(img, np.array([[0.0, 0.0, 40.0, 40.0], [-20.0, -20.0, 20.0, 20.0]]), 20)
    block_means = img.reshape(20, 2, 20, 2, 3).mean(axis=(1, 3))
    assert np.abs(crops[0].astype(float) - block_means).max() <= 1.0  # 2x2 area average
    assert (crops[1][:9, :9] == 255).all()  # outside the image: white glass
    assert extract_crops(img, np.zeros((0, 4)), 8).shape == (0, 8, 8, 3)
