"""Full-catalogue top-K ranking metrics for next-item prediction.

Accuracy follows the SR-GNN protocol (Wu et al., AAAI 2019): one target per test prefix, the whole
catalogue is ranked (no sampled negatives), and HR@K ("P@20" in SR-GNN, "Recall@20" elsewhere), MRR@K
and NDCG@K are reported as percentages. Beyond-accuracy measures follow the session-rec framework
(Ludewig, Latifi & Jannach, "Empirical analysis of session-based recommendation algorithms", UMUAI
2021; `evaluation/metrics/coverage.py` and `popularity.py` of rn5l/session-rec).

Item ids are 1..N; id 0 is padding, so score matrices have N+1 columns and column 0 is never ranked.
"""

from __future__ import annotations

import numpy as np

__all__ = ["topk_from_scores", "RankingMetrics"]


def topk_from_scores(scores: np.ndarray, k: int) -> np.ndarray:
    """Ids of the k best items per row, best first; ties go to the lower item id.

    scores: (B, N+1) with column 0 the padding item, which is never returned.
    Returns (B, k) int64 item ids in 1..N.

    Runs in O(B·N) with `argpartition`; the exact tie rule is enforced afterwards, because
    `argpartition` picks arbitrarily among items tied with the k-th best score (POP's integer counts
    and V-SKNN's many zero scores tie a lot, and an arbitrary pick would make runs irreproducible).
    """
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores must be (B, N+1) with N >= 1, got shape {scores.shape}")
    n_items = scores.shape[1] - 1
    if not 1 <= k <= n_items:
        raise ValueError(f"k={k} must lie in 1..N={n_items}")
    items = scores[:, 1:]                                             # (B, N), column j is item j+1
    if np.isnan(items).any():
        raise ValueError("scores contain NaN; a ranking needs a total order")

    part = np.argpartition(-items, k - 1, axis=1)[:, :k]             # (B, k), any order
    part_scores = np.take_along_axis(items, part, axis=1)
    kth = part_scores.min(axis=1)                                     # (B,) k-th best score
    tied_rows = np.nonzero((items >= kth[:, None]).sum(axis=1) > k)[0]
    for row in tied_rows:
        # Everything strictly better than the k-th score is in; fill up with the lowest-id ties.
        better = np.nonzero(items[row] > kth[row])[0]
        ties = np.nonzero(items[row] == kth[row])[0][: k - better.size]
        part[row] = np.concatenate([better, ties])
        part_scores[row] = items[row, part[row]]

    # Sort the k chosen by score descending, then by id ascending (lexsort: last key is primary).
    order = np.lexsort((part, -part_scores), axis=1)
    return np.take_along_axis(part, order, axis=1).astype(np.int64) + 1


class RankingMetrics:
    """Streaming accumulator of HR/MRR/NDCG@{10,20}, coverage@20, popularity bias@20, novelty@20 and
    (given item vectors) intra-list diversity@20.

    For one test case with target t and ranked list r_1..r_Kmax, rank = position of t (1-based):
      HR@K   = 1 if rank <= K else 0
      MRR@K  = 1/rank if rank <= K else 0
      NDCG@K = 1/log2(rank + 1) if rank <= K else 0   (one relevant item, so the ideal DCG is 1)
    each averaged over cases and reported x100, as in the SR-GNN and TAGNN tables.

    coverage@20: percentage of catalogue items 1..N that appear in at least one top-20 list
      (session-rec divides by the number of distinct training items; on the SR-GNN split every item
      1..N occurs in training, so the two agree).
    popularity_bias@20: pop(i) = count_train(i) / max_j count_train(j), the item's training click
      count relative to the most clicked item, in [0, 1]; each top-20 list scores the mean pop(i) of
      its items, and the metric is the mean of that over all cases -- session-rec's "Popularity@20".
      Reported as a fraction in [0, 1] like session-rec's tables, not x100 (POP gives values near 0.8
      on Diginetica, personalised models near 0.05-0.1).
    novelty@20: mean self-information of the recommended items, -log2 p(i) with p(i) the item's share
      of training clicks, add-one smoothed ((count_i + 1) / (clicks + N)) so an item never clicked in
      training has a finite value; averaged over the list, then over cases (Zhou et al., PNAS 2010;
      Kaminskas & Bridge, "Diversity, serendipity, novelty, and coverage", ACM TiiS 2016). In bits:
      higher means less popular items are recommended.
    diversity@20 (only with `item_vectors`): intra-list diversity, 1 - mean cosine similarity over
      the K(K-1)/2 pairs of recommended items' vectors (Ziegler et al., WWW 2005), averaged over cases.
      The vectors are the model's item table; baselines are scored in a model's table to compare.
    count: number of test cases seen.
    """

    def __init__(self, n_items: int, train_counts: np.ndarray, cutoffs: tuple[int, ...] = (10, 20),
                 item_vectors: np.ndarray | None = None):
        train_counts = np.asarray(train_counts)
        if train_counts.shape != (n_items + 1,):
            raise ValueError(f"train_counts must have shape (n_items+1,)=({n_items + 1},), "
                             f"got {train_counts.shape}")
        top = train_counts[1:].max()
        if top <= 0:
            raise ValueError("train_counts has no positive count; popularity is undefined")
        self.n_items = n_items
        self.cutoffs = tuple(sorted(cutoffs))
        self.kmax = self.cutoffs[-1]                                  # coverage/popularity cutoff
        self.popularity = train_counts.astype(np.float64) / top       # (N+1,)
        self.covered = np.zeros(n_items + 1, dtype=bool)
        self.hits = {k: 0.0 for k in self.cutoffs}
        self.reciprocal_ranks = {k: 0.0 for k in self.cutoffs}
        self.gains = {k: 0.0 for k in self.cutoffs}
        self.popularity_sum = 0.0
        counts = train_counts.astype(np.float64)
        self.self_information = -np.log2((counts + 1.0) / (counts[1:].sum() + n_items))  # (N+1,) bits
        self.novelty_sum = 0.0
        self.unit_vectors = None
        if item_vectors is not None:
            vectors = np.asarray(item_vectors, dtype=np.float64)
            if vectors.ndim != 2 or vectors.shape[0] != n_items + 1:
                raise ValueError(f"item_vectors must be (n_items+1, d)=({n_items + 1}, d), got {vectors.shape}")
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            self.unit_vectors = vectors / np.where(norms > 0, norms, 1.0)  # a zero vector is similar to nothing
        self.diversity_sum = 0.0
        self.count = 0

    def update(self, topk_ids: np.ndarray, targets: np.ndarray) -> None:
        """Add a batch: topk_ids (B, Kmax) item ids best first (Kmax >= 20), targets (B,)."""
        topk_ids = np.asarray(topk_ids)
        targets = np.asarray(targets)
        if topk_ids.ndim != 2 or topk_ids.shape[1] < self.kmax:
            raise ValueError(f"topk_ids must be (B, >={self.kmax}), got {topk_ids.shape}")
        if targets.shape != (topk_ids.shape[0],):
            raise ValueError(f"targets must be ({topk_ids.shape[0]},), got {targets.shape}")
        if targets.size and (targets.min() < 1 or targets.max() > self.n_items):
            raise ValueError(f"targets must be item ids in 1..{self.n_items}")
        top = topk_ids[:, : self.kmax]
        if top.size and (top.min() < 1 or top.max() > self.n_items):
            raise ValueError(f"topk_ids must be item ids in 1..{self.n_items} (0 is padding)")

        found = top == targets[:, None]                               # (B, Kmax)
        hit = found.any(axis=1)
        rank = np.where(hit, found.argmax(axis=1) + 1, np.iinfo(np.int64).max)  # (B,)
        for k in self.cutoffs:
            within = rank <= k
            self.hits[k] += float(within.sum())
            self.reciprocal_ranks[k] += float((1.0 / rank[within]).sum())
            self.gains[k] += float((1.0 / np.log2(rank[within] + 1.0)).sum())

        self.covered[top.ravel()] = True
        self.popularity_sum += float(self.popularity[top].mean(axis=1).sum())
        self.novelty_sum += float(self.self_information[top].mean(axis=1).sum())
        if self.unit_vectors is not None and top.size:
            unit = self.unit_vectors[top]                              # (B, K, d)
            k = top.shape[1]
            summed = unit.sum(axis=1)                                  # pairwise sum via |sum|^2 = K + 2 sum_{i<j} cos
            pair_sum = ((summed * summed).sum(axis=1) - (unit * unit).sum(axis=(1, 2))) / 2.0
            self.diversity_sum += float((1.0 - pair_sum / (k * (k - 1) / 2.0)).sum())
        self.count += int(targets.size)

    def result(self) -> dict[str, float]:
        """Metrics so far; accuracy and coverage in percent, popularity bias as a fraction."""
        n = max(self.count, 1)
        out: dict[str, float] = {}
        for k in self.cutoffs:
            out[f"HR@{k}"] = 100.0 * self.hits[k] / n
            out[f"MRR@{k}"] = 100.0 * self.reciprocal_ranks[k] / n
            out[f"NDCG@{k}"] = 100.0 * self.gains[k] / n
        out[f"coverage@{self.kmax}"] = 100.0 * float(self.covered[1:].sum()) / self.n_items
        out[f"popularity_bias@{self.kmax}"] = self.popularity_sum / n
        out[f"novelty@{self.kmax}"] = self.novelty_sum / n
        if self.unit_vectors is not None:
            out[f"diversity@{self.kmax}"] = self.diversity_sum / n
        out["count"] = self.count
        return out
