"""Baselines on tiny hand-made sessions, and V-SKNN against a loop-based port of session-rec."""

import math
from collections import Counter

import numpy as np
import pytest

from sessionrec.baselines import (
    VSKNN, Pop, SessionPop, _POSITION_WEIGHTS, _STEP_DECAYS, evaluate_baseline, train_item_counts,
)
from sessionrec.metrics import topk_from_scores

# Clicks: item 1 once, 2 three times, 3 three times, 4 never.
TRAIN = [[1, 2], [2, 3], [2, 3, 3]]


def test_pop_ranks_by_training_clicks():
    scores = Pop().fit(TRAIN, 4).score([[1], [4, 4]])
    assert scores.shape == (2, 5) and scores.dtype == np.float32
    assert np.isneginf(scores[:, 0]).all()
    # 2 and 3 tie at 3 clicks -> lower id first; the prefix plays no part.
    assert topk_from_scores(scores, 4).tolist() == [[2, 3, 1, 4], [2, 3, 1, 4]]


def test_session_pop_puts_session_items_first():
    scores = SessionPop().fit(TRAIN, 4).score([[4, 1, 4], [3, 1]])
    assert np.isneginf(scores[:, 0]).all()
    # [4, 1, 4]: 4 twice, 1 once, then the rest by popularity (2, 3 tie -> 2).
    # [3, 1]: both once in the session -> global popularity decides: 3 (3 clicks) before 1 (1).
    assert topk_from_scores(scores, 4).tolist() == [[4, 1, 2, 3], [3, 1, 2, 4]]


# V-SKNN hand case. Training sessions, index = recency (s3 newest):
#   s0 [1, 2]   s1 [2, 3, 4]   s2 [3, 5]   s3 [1, 6]
# Prefix [1, 3] (L = 2), weighting "div": w(1) = 1/2, w(3) = 2/2 = 1, |U| = 2.
# sim = sum of w over shared items / |U|: s0 {1} .25, s1 {3} .5, s2 {3} .5, s3 {1} .25.
# k = 3: s1, s2, then s0 and s3 tie at .25 -> the more recent s3.
# step of the latest shared prefix item: s1, s2 share 3 (position 2) -> step 1, decay 1/1;
# s3 shares 1 (position 1) -> step 2, decay 1/2. Contributions: s1 .5, s2 .5, s3 .125.
# Item scores: 1 .125 (s3), 2 .5 (s1), 3 1.0 (s1+s2), 4 .5 (s1), 5 .5 (s2), 6 .125 (s3).
KNN_TRAIN = [[1, 2], [2, 3, 4], [3, 5], [1, 6]]
PLAIN = dict(weighting="div", weighting_score="div", idf_weighting=0)


def test_vsknn_hand_computed():
    scores = VSKNN(k=3, sample_size=100, **PLAIN).fit(KNN_TRAIN, 6).score([[1, 3]])
    assert scores.dtype == np.float32 and np.isneginf(scores[0, 0])
    np.testing.assert_allclose(scores[0, 1:], [0.125, 0.5, 1.0, 0.5, 0.5, 0.125])


def test_vsknn_samples_the_most_recent_sessions():
    # sample_size 2 keeps s2 (sim .5, decay 1) and s3 (sim .25, decay 1/2) only.
    scores = VSKNN(k=3, sample_size=2, **PLAIN).fit(KNN_TRAIN, 6).score([[1, 3]])
    np.testing.assert_allclose(scores[0, 1:], [0.125, 0.0, 0.5, 0.0, 0.5, 0.125])


def test_vsknn_idf_and_quadratic_weighting():
    # quadratic: w(1) = (1/2)^2 = .25, w(3) = 1 -> sims s0 .125, s1 .5, s2 .5, s3 .125;
    # k = 3 keeps s1, s2, s3 -> contributions .5, .5, .125 * 1/2 = .0625.
    # idf(j) = log(4 sessions / clicks(j)); clicks 1:2 2:2 3:2 4:1 5:1 6:1; factor 1 + 1 * idf.
    scores = VSKNN(k=3, sample_size=100, weighting="quadratic", weighting_score="div",
                   idf_weighting=1).fit(KNN_TRAIN, 6).score([[1, 3]])
    base = np.array([0.0625, 0.5, 1.0, 0.5, 0.5, 0.0625])
    idf = np.log(4 / np.array([2, 2, 2, 1, 1, 1]))
    np.testing.assert_allclose(scores[0, 1:], base * (1 + idf), rtol=1e-6)


def test_vsknn_prefix_without_known_neighbours_scores_zero():
    scores = VSKNN(**PLAIN).fit(KNN_TRAIN, 7).score([[7], []])
    assert (scores[:, 1:] == 0).all()


def _reference_vsknn(train, prefix, k, sample_size, weighting, weighting_score, idf_weighting):
    """Loop-for-loop port of session-rec VMContextKNN.predict_next (remind=True, recent sampling),
    with ties among neighbours going to the more recent session."""
    sets = [set(s) for s in train]
    clicks = Counter(i for s in train for i in s)
    candidates = sorted({n for n, s in enumerate(sets) if s & set(prefix)})[-sample_size:]
    length = len(prefix)
    weights = {}
    for position, item in enumerate(prefix, start=1):
        weights[item] = _POSITION_WEIGHTS[weighting](position, length)
    neighbours = []
    for n in candidates:
        # Sum over the prefix's items in first-click order, the order the vectorised path uses.
        similarity = sum(weights[i] for i in weights if i in sets[n]) / len(weights)
        if similarity > 0:
            neighbours.append((n, similarity))
    neighbours = sorted(neighbours, key=lambda pair: (-pair[1], -pair[0]))[:k]
    scores = Counter()
    for n, similarity in neighbours:
        step = next(step for step, i in enumerate(reversed(prefix), start=1) if i in sets[n])
        for item in sets[n]:
            idf = math.log(len(train) / clicks[item])
            scores[item] += similarity * _STEP_DECAYS[weighting_score](step) * (1 + idf_weighting * idf)
    return scores


@pytest.mark.parametrize("config", [
    dict(k=5, sample_size=10, weighting="div", weighting_score="div", idf_weighting=0),
    dict(k=4, sample_size=1000, weighting="quadratic", weighting_score="div", idf_weighting=5),
    dict(k=50, sample_size=7, weighting="log", weighting_score="quadratic", idf_weighting=2),
    dict(k=3, sample_size=20, weighting="same", weighting_score="log", idf_weighting=0),
])
def test_vsknn_matches_reference_loop(config):
    rng = np.random.default_rng(1)
    n_items = 15
    train = [rng.integers(1, n_items + 1, size=rng.integers(2, 7)).tolist() for _ in range(60)]
    prefixes = [rng.integers(1, n_items + 1, size=rng.integers(1, 6)).tolist() for _ in range(25)]
    scores = VSKNN(**config).fit(train, n_items).score(prefixes)
    for row, prefix in enumerate(prefixes):
        expected = np.zeros(n_items + 1)
        for item, value in _reference_vsknn(train, prefix, **config).items():
            expected[item] = value
        np.testing.assert_allclose(scores[row, 1:], expected[1:], rtol=1e-5, atol=1e-7)


def test_evaluate_baseline_with_pop():
    # 25 items; POP's list starts 2, 3 (3 clicks each), 1, then 4..25 by id. Targets 2 and 1 sit
    # at ranks 1 and 3: HR@20 100, MRR@20 100 * (1 + 1/3) / 2.
    counts = train_item_counts(TRAIN, 25)
    result = evaluate_baseline(Pop().fit(TRAIN, 25), [[1], [3]], np.array([2, 1]), 25, counts,
                               batch_size=1, progress=False)
    assert result["HR@20"] == pytest.approx(100.0)
    assert result["MRR@20"] == pytest.approx(100 * (1 + 1 / 3) / 2)
    assert result["count"] == 2
