"""Hand-checked cases for sessionrec.metrics (expected values worked out in the comments)."""

import math

import numpy as np
import pytest

from sessionrec.metrics import RankingMetrics, topk_from_scores


def test_topk_skips_padding_and_breaks_ties_by_lower_id():
    # Column 0 is padding: its score 100 must never surface. Items 2 and 3 tie at 0.5 -> 2 first.
    scores = np.array([[100.0, 0.1, 0.5, 0.5, 0.2]], dtype=np.float32)
    assert topk_from_scores(scores, 3).tolist() == [[2, 3, 4]]


def test_topk_ties_at_the_cut_take_the_lowest_ids():
    scores = np.array([
        [0, 1, 1, 1, 1, 2],          # 5 is best, then 4 items tie at 1 for 2 places -> 1, 2
        [0, 0, 0, 0, 0, 0],          # all tied -> 1, 2, 3
        [-np.inf, 3, -np.inf, 2, 1, 0],  # no ties -> 1, 3, 4
    ], dtype=np.float32)
    assert topk_from_scores(scores, 3).tolist() == [[5, 1, 2], [1, 2, 3], [1, 3, 4]]


def test_topk_matches_a_full_stable_sort():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(50, 31)).astype(np.float32)   # many ties on purpose
    for k in (1, 5, 30):
        items = scores[:, 1:]
        # Reference: sort every row by (-score, id), keep k.
        reference = np.stack([np.lexsort((np.arange(30), -row))[:k] for row in items]) + 1
        np.testing.assert_array_equal(topk_from_scores(scores, k), reference)


def test_topk_rejects_bad_input():
    with pytest.raises(ValueError):
        topk_from_scores(np.zeros((2, 4)), 4)      # only 3 real items
    with pytest.raises(ValueError):
        topk_from_scores(np.array([[0.0, np.nan, 1.0]]), 1)


# n_items = 5; train counts 10, 5, 5, 0, 2 -> pop = count / 10 = [-, 1, .5, .5, 0, .2].
COUNTS = np.array([0, 10, 5, 5, 0, 2])
#   case A: list [1, 2, 3], target 2 -> rank 2
#   case B: list [3, 4, 2], target 1 -> miss
#   case C: list [2, 1, 3], target 2 -> rank 1
LISTS = np.array([[1, 2, 3], [3, 4, 2], [2, 1, 3]])
TARGETS = np.array([2, 1, 2])
EXPECTED = {
    "HR@1": 100 / 3,                                    # only C
    "MRR@1": 100 / 3,
    "NDCG@1": 100 / 3,
    "HR@3": 200 / 3,                                    # A and C
    "MRR@3": 100 * (1 / 2 + 0 + 1) / 3,                 # = 50
    "NDCG@3": 100 * (1 / math.log2(3) + 0 + 1) / 3,     # = 54.364
    "coverage@3": 80.0,                                 # items {1, 2, 3, 4} of 5
    # per list: A (1+.5+.5)/3 = 2/3, B (.5+0+.5)/3 = 1/3, C 2/3 -> mean 5/9
    "popularity_bias@3": 5 / 9,
    # p(i) = (count + 1) / (22 clicks + 5 items) = 11, 6, 6, 1, 3 over 27 for items 1..5;
    # self-information log2(27 / (count + 1)); A and C hold {1, 2, 3}, B holds {3, 4, 2}.
    "novelty@3": (2 * (math.log2(27 / 11) + 2 * math.log2(27 / 6)) / 3
                  + (2 * math.log2(27 / 6) + math.log2(27)) / 3) / 3,
    "count": 3,
}


def test_ranking_metrics_hand_computed():
    metrics = RankingMetrics(5, COUNTS, cutoffs=(1, 3))
    metrics.update(LISTS, TARGETS)
    result = metrics.result()
    assert result.keys() == EXPECTED.keys()
    for key, value in EXPECTED.items():
        assert result[key] == pytest.approx(value), key


def test_intra_list_diversity_hand_computed():
    # item vectors 1:(1,0) 2:(0,1) 3:(1,1) 4:(-1,0) 5:(0,2); cosines 1-2 0, 1-3 and 2-3 1/sqrt2, 3-4 -1/sqrt2, 2-4 0.
    vectors = np.array([[0, 0], [1, 0], [0, 1], [1, 1], [-1, 0], [0, 2]], dtype=float)
    metrics = RankingMetrics(5, COUNTS, cutoffs=(1, 3), item_vectors=vectors)
    metrics.update(LISTS, TARGETS)
    r = 1 / math.sqrt(2)
    a = 1 - (0 + r + r) / 3        # lists A and C: {1, 2, 3}
    b = 1 - (-r + r + 0) / 3       # list B: {3, 4, 2} -> 1
    assert metrics.result()["diversity@3"] == pytest.approx((2 * a + b) / 3)
    assert metrics.result()["novelty@3"] == pytest.approx(EXPECTED["novelty@3"])
    with pytest.raises(ValueError):
        RankingMetrics(5, COUNTS, item_vectors=vectors[:3])


def test_ranking_metrics_streams_batches():
    metrics = RankingMetrics(5, COUNTS, cutoffs=(1, 3))
    metrics.update(LISTS[:2], TARGETS[:2])
    metrics.update(LISTS[2:], TARGETS[2:])
    assert metrics.result() == pytest.approx(EXPECTED)


def test_ranking_metrics_default_keys():
    # 30 items, count(i) = i -> pop(i) = i/30. One list 1..20 with the target 15 at rank 15:
    # HR@10 0, HR@20 100, MRR@20 100/15, NDCG@20 100/log2(16) = 25, coverage 20/30,
    # popularity mean(1..20)/30 = 10.5/30 = 0.35.
    metrics = RankingMetrics(30, np.arange(31))
    metrics.update(np.arange(1, 21)[None, :], np.array([15]))
    assert metrics.result() == pytest.approx({
        "HR@10": 0.0, "MRR@10": 0.0, "NDCG@10": 0.0,
        "HR@20": 100.0, "MRR@20": 100 / 15, "NDCG@20": 25.0,
        "coverage@20": 200 / 3, "popularity_bias@20": 0.35, "count": 1,
        # p(i) = (i + 1) / (465 + 30): novelty = mean over i = 1..20 of log2(495 / (i + 1))
        "novelty@20": float(np.mean([math.log2(495 / (i + 1)) for i in range(1, 21)])),
    })


def test_ranking_metrics_rejects_padding_and_short_lists():
    metrics = RankingMetrics(30, np.arange(31))
    with pytest.raises(ValueError):
        metrics.update(np.arange(0, 20)[None, :], np.array([3]))   # contains padding id 0
    with pytest.raises(ValueError):
        metrics.update(np.arange(1, 11)[None, :], np.array([3]))   # shorter than 20
