import itertools

import numpy as np

from wsi_ccrl.segment.evaluate import DetectionScore, detection_score, match_centroids


def _brute_force(pred, true, radius):
    """Largest one-to-one matching within radius (then smallest total distance), exhaustively."""
    best = (0, 0.0)
    n = len(pred)
    for perm in itertools.permutations(range(len(true)), min(n, len(true))):
        for pi in itertools.product([False, True], repeat=len(perm)):
            pairs = [(i, perm[i]) for i in range(len(perm)) if pi[i]]
            d = [np.hypot(*(pred[i] - true[j])) for i, j in pairs]
            if any(x > radius for x in d):
                continue
            key = (len(pairs), -sum(d))
            if key > (best[0], -best[1]):
                best = (len(pairs), sum(d))
    return best


def test_one_to_one_beats_greedy():
    # pred 0 is closest to true 0, but pred 1 can only match true 0: optimal pairs both
    pred = np.array([[10.0, 10.0], [4.0, 10.0]])
    true = np.array([[9.0, 10.0], [14.0, 10.0]])
    pi, ti = match_centroids(pred, true, radius=6)
    assert sorted(zip(pi.tolist(), ti.tolist(), strict=True)) == [(0, 1), (1, 0)]


def test_duplicates_count_once_and_radius_is_inclusive():
    score = detection_score([[0, 0], [1, 0], [50, 50]], [[0.5, 0], [56, 50]], radius=6)
    assert (score.tp, score.fp, score.fn) == (2, 1, 0)
    assert detection_score([[0, 0]], [[6.5, 0]]).tp == 0
    assert detection_score(np.zeros((0, 2)), [[1, 1]]) == DetectionScore(0, 0, 1)


def test_matches_brute_force_on_random_sets():
    rng = np.random.default_rng(0)
    for _ in range(30):
        pred = rng.uniform(0, 20, (rng.integers(0, 5), 2))
        true = rng.uniform(0, 20, (rng.integers(0, 5), 2))
        pi, ti = match_centroids(pred, true, radius=6)
        assert len(set(pi.tolist())) == len(pi) and len(set(ti.tolist())) == len(ti)
        n_best, d_best = _brute_force(pred, true, 6)
        assert len(pi) == n_best
        d = float(np.hypot(*(pred[pi] - true[ti]).T).sum()) if len(pi) else 0.0
        assert d <= d_best + 1e-6


def test_scores_add_up():
    total = DetectionScore(3, 1, 2) + DetectionScore(1, 1, 0)
    assert (total.tp, total.fp, total.fn) == (4, 2, 2)
    assert total.precision == 4 / 6 and total.recall == 4 / 6
    assert abs(total.f1 - 8 / 12) < 1e-12
