"""Non-neural baselines for next-item prediction: POP, S-POP and V-SKNN.

All share one interface so the evaluator never special-cases a model:
  model.fit(train_sessions, n_items) -> model
  model.score(prefixes) -> (B, N+1) float32, higher is better, column 0 (padding) = -inf
  model.name

References: Ludewig & Jannach, "Evaluation of session-based recommendation algorithms", UMUAI 2018
(POP, S-POP, V-SKNN); reference implementation rn5l/session-rec `algorithms/baselines/pop.py`,
`spop.py` and `algorithms/knn/vsknn.py` (class VMContextKNN).

Example (the SR-GNN Diginetica split, see /work/shared/data/README.md):
  model = VSKNN().fit(train_sessions, n_items=43097)
  result = evaluate_baseline(model, prefixes, targets, 43097, train_item_counts(train_sessions, 43097))
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from tqdm import tqdm

from sessionrec.metrics import RankingMetrics, topk_from_scores

__all__ = ["Baseline", "Pop", "SessionPop", "VSKNN", "train_item_counts", "evaluate_baseline"]


class Baseline(Protocol):
    name: str

    def fit(self, train_sessions: list[list[int]], n_items: int) -> "Baseline": ...

    def score(self, prefixes: list[list[int]]) -> np.ndarray: ...


def train_item_counts(train_sessions: list[list[int]], n_items: int) -> np.ndarray:
    """(N+1,) int64 click counts per item id over the training sessions; entry 0 (padding) is 0."""
    clicks = np.fromiter((i for s in train_sessions for i in s), dtype=np.int64)
    if clicks.size and (clicks.min() < 1 or clicks.max() > n_items):
        raise ValueError(f"training item ids must lie in 1..{n_items}")
    return np.bincount(clicks, minlength=n_items + 1)


def _empty_scores(batch: int, n_items: int) -> np.ndarray:
    scores = np.zeros((batch, n_items + 1), dtype=np.float32)
    scores[:, 0] = -np.inf
    return scores


class Pop:
    """POP: every session gets the same list, the most clicked training items."""

    name = "POP"

    def fit(self, train_sessions: list[list[int]], n_items: int) -> "Pop":
        self.n_items = n_items
        # float32 holds integer counts exactly up to 2**24, far above any item's click count here.
        self.counts = train_item_counts(train_sessions, n_items).astype(np.float32)
        return self

    def score(self, prefixes: list[list[int]]) -> np.ndarray:
        scores = np.broadcast_to(self.counts, (len(prefixes), self.n_items + 1)).copy()
        scores[:, 0] = -np.inf
        return scores


class SessionPop:
    """S-POP: items of the current session first, by their count in it; ties and all other items
    by global training popularity (then by lower id, through `topk_from_scores`)."""

    name = "S-POP"

    def fit(self, train_sessions: list[list[int]], n_items: int) -> "SessionPop":
        self.n_items = n_items
        counts = train_item_counts(train_sessions, n_items)
        # Dense popularity rank (0 = least clicked) instead of raw counts, so that
        # count_in_session * (levels) + rank stays an exact integer in float32.
        levels, rank = np.unique(counts, return_inverse=True)
        self.levels = levels.size
        self.pop_rank = rank.astype(np.float32)
        return self

    def score(self, prefixes: list[list[int]]) -> np.ndarray:
        scores = np.broadcast_to(self.pop_rank, (len(prefixes), self.n_items + 1)).copy()
        for row, prefix in enumerate(prefixes):
            items, in_session = np.unique(np.asarray(prefix, dtype=np.int64), return_counts=True)
            scores[row, items] += in_session * np.float32(self.levels)
        scores[:, 0] = -np.inf
        return scores


# Weight of the prefix item at 1-based position i of a prefix of length L (session-rec `weighting`).
_POSITION_WEIGHTS = {
    "same": lambda i, length: np.ones_like(i, dtype=np.float64),
    "div": lambda i, length: i / length,
    "quadratic": lambda i, length: (i / length) ** 2,
    "log": lambda i, length: 1.0 / np.log10(length - i + 1.7),
}
# Decay of a neighbour's contribution by the step (1 = last click) of the most recent prefix item
# it shares (session-rec `weighting_score`, the `*_score` methods).
_STEP_DECAYS = {
    "same": lambda step: np.ones_like(step, dtype=np.float64),
    "div": lambda step: 1.0 / step,
    "quadratic": lambda step: 1.0 / step**2,
    "log": lambda step: 1.0 / np.log10(step + 1.7),
}


class VSKNN:
    """V-SKNN, vector-multiplication session kNN (Ludewig & Jannach 2018, Sect. 3.2), following
    session-rec's `VMContextKNN` with remind=True, extend=False, sampling="recent".

    For a prefix s = (s_1..s_L) with unique items U:
      w(i)        = weighting(last 1-based position of i in s, L)       ("div": pos/L)
      candidates  = training sessions sharing an item with s; if more than `sample_size`, only the
                    `sample_size` most recent (recency = line order of the training file)
      sim(s, n)   = sum_{i in U ∩ n} w(i) / |U|                          (session-rec `vec`)
      neighbours  = the `k` candidates of highest sim (ties: more recent first)
      score(j)    = sum_{n in neighbours, j in n} sim(s, n) * decay(step_n) * (1 + idf_weighting*idf(j))
    where step_n = L + 1 - (last position in s of an item shared with n), decay per `weighting_score`
    ("div": 1/step), and idf(j) = log(#training sessions / #training clicks on j).
    Items of the prefix itself are scored too (session-rec remind=True). session-rec's final
    division by the row maximum (normalize=True) is dropped: it does not change the ranking.

    Defaults are session-rec's Diginetica configuration (conf/save/diginetica/window/
    window_digi_baselines.yml: k=500, "sampling_size"=5000 -- read as sample_size --,
    weighting=quadratic, weighting_score=div, idf_weighting=5), tuned there on a validation split,
    not on this test set. session-rec's class defaults are k=100, sample_size=1000 (its docstring
    says 500), weighting=div, weighting_score=div, idf_weighting=False (pass 0).
    The "linear" weightings are left out: session-rec's versions turn zero or negative past ten
    clicks (`linear` even tests the position from the session start), which breaks sim > 0.
    `similarity` is not a parameter: VMContextKNN ignores it and always uses `vec`.

    Vectorised with numpy over a batch of prefixes: (prefix, item) pairs are expanded into
    (prefix, session) pairs through an item -> sessions index and reduced with sort + reduceat;
    item scores are a bincount over (prefix, item) of the neighbours' items.
    """

    name = "V-SKNN"

    def __init__(self, k: int = 500, sample_size: int = 5000, weighting: str = "quadratic",
                 weighting_score: str = "div", idf_weighting: float = 5.0):
        if weighting not in _POSITION_WEIGHTS:
            raise ValueError(f"weighting={weighting!r}; choose from {sorted(_POSITION_WEIGHTS)}")
        if weighting_score not in _STEP_DECAYS:
            raise ValueError(f"weighting_score={weighting_score!r}; choose from {sorted(_STEP_DECAYS)}")
        if k < 1 or sample_size < 1:
            raise ValueError("k and sample_size must be positive")
        self.k = k
        self.sample_size = sample_size
        self.weighting = weighting
        self.weighting_score = weighting_score
        self.idf_weighting = idf_weighting

    def fit(self, train_sessions: list[list[int]], n_items: int) -> "VSKNN":
        self.n_items = n_items
        self.n_sessions = len(train_sessions)
        unique = [np.unique(np.asarray(s, dtype=np.int64)) for s in train_sessions]
        lengths = np.fromiter((u.size for u in unique), dtype=np.int64, count=len(unique))
        if (lengths == 0).any():
            raise ValueError("training sessions must not be empty")
        # session -> unique items (CSR); session index = recency rank, oldest first.
        self.session_indptr = np.concatenate([[0], np.cumsum(lengths)])
        self.session_items = np.concatenate(unique)
        if self.session_items.min() < 1 or self.session_items.max() > n_items:
            raise ValueError(f"training item ids must lie in 1..{n_items}")
        # item -> sessions (CSR), sessions ascending = oldest first within each item.
        owner = np.repeat(np.arange(self.n_sessions, dtype=np.int64), lengths)
        order = np.argsort(self.session_items, kind="stable")
        self.item_sessions = owner[order]
        self.item_indptr = np.concatenate(
            [[0], np.cumsum(np.bincount(self.session_items, minlength=n_items + 1))])
        clicks = train_item_counts(train_sessions, n_items).astype(np.float64)
        with np.errstate(divide="ignore"):
            idf = np.log(self.n_sessions / clicks)
        self.idf = np.where(clicks > 0, idf, 0.0)                     # (N+1,)
        return self

    def score(self, prefixes: list[list[int]]) -> np.ndarray:
        batch = len(prefixes)
        n_cols = self.n_items + 1
        scores = _empty_scores(batch, self.n_items)
        if batch == 0:
            return scores

        # (prefix, unique item) pairs with the item's last 1-based position in the prefix.
        rows, items, last_pos, lengths = [], [], [], np.zeros(batch, dtype=np.int64)
        for row, prefix in enumerate(prefixes):
            last = {item: pos for pos, item in enumerate(prefix, start=1)}
            rows.extend([row] * len(last))
            items.extend(last.keys())
            last_pos.extend(last.values())
            lengths[row] = len(prefix)
        rows = np.asarray(rows, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        last_pos = np.asarray(last_pos, dtype=np.int64)
        if items.size and (items.min() < 1 or items.max() > self.n_items):
            raise ValueError(f"prefix item ids must lie in 1..{self.n_items}")
        n_unique = np.bincount(rows, minlength=batch)
        weights = _POSITION_WEIGHTS[self.weighting](last_pos.astype(np.float64), lengths[rows])

        # Expand to (prefix, session) pairs through the item -> sessions index.
        starts, stops = self.item_indptr[items], self.item_indptr[items + 1]
        pair_rows, pair_sessions, pair_index = _expand(rows, starts, stops, self.item_sessions)
        if pair_rows.size == 0:
            return scores
        key = pair_rows * self.n_sessions + pair_sessions
        order = np.argsort(key, kind="stable")
        key = key[order]
        first = np.concatenate([[0], np.nonzero(np.diff(key))[0] + 1])
        cand_key = key[first]                                         # sorted: row, then old -> new
        cand_row = cand_key // self.n_sessions
        cand_session = cand_key % self.n_sessions
        cand_sim = np.add.reduceat(weights[pair_index[order]], first) / n_unique[cand_row]
        cand_last = np.maximum.reduceat(last_pos[pair_index[order]], first)

        # Keep each row's sample_size most recent candidates: the last ones of its sorted group.
        group_end = np.cumsum(np.bincount(cand_row, minlength=batch))[cand_row]
        keep = (group_end - 1 - np.arange(cand_key.size)) < self.sample_size
        keep &= cand_sim > 0
        cand_row, cand_session = cand_row[keep], cand_session[keep]
        cand_sim, cand_last = cand_sim[keep], cand_last[keep]

        # Top-k per row by similarity, ties to the more recent session.
        order = np.lexsort((-cand_session, -cand_sim, cand_row))
        cand_row, cand_session = cand_row[order], cand_session[order]
        cand_sim, cand_last = cand_sim[order], cand_last[order]
        group_start = np.concatenate([[0], np.cumsum(np.bincount(cand_row, minlength=batch))])
        top = (np.arange(cand_row.size) - group_start[cand_row]) < self.k
        n_row, n_session = cand_row[top], cand_session[top]
        step = lengths[n_row] + 1 - cand_last[top]
        contribution = cand_sim[top] * _STEP_DECAYS[self.weighting_score](step.astype(np.float64))

        # Every item of every neighbour gets the neighbour's contribution.
        item_rows, item_ids, item_index = _expand(
            n_row, self.session_indptr[n_session], self.session_indptr[n_session + 1],
            self.session_items)
        dense = np.bincount(item_rows * n_cols + item_ids, weights=contribution[item_index],
                            minlength=batch * n_cols).reshape(batch, n_cols)
        if self.idf_weighting:
            dense *= 1.0 + self.idf_weighting * self.idf
        scores[:, 1:] = dense[:, 1:]
        return scores


def _expand(owners: np.ndarray, starts: np.ndarray, stops: np.ndarray,
            values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate values[starts[j]:stops[j]] for all j without a Python loop.

    Returns (owners repeated per element, the gathered values, j per element).
    """
    counts = stops - starts
    total = int(counts.sum())
    source = np.repeat(np.arange(counts.size), counts)
    offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    return owners[source], values[starts[source] + offsets], source


def evaluate_baseline(model: Baseline, prefixes: list[list[int]], targets: np.ndarray,
                      n_items: int, train_counts: np.ndarray, batch_size: int = 256,
                      progress: bool = True, item_vectors: np.ndarray | None = None) -> dict[str, float]:
    """Rank the full catalogue for every prefix and return `RankingMetrics.result()`;
    `item_vectors` (N+1, d), e.g. a trained model's table, adds intra-list diversity."""
    targets = np.asarray(targets, dtype=np.int64)
    if len(prefixes) != targets.size:
        raise ValueError(f"{len(prefixes)} prefixes but {targets.size} targets")
    metrics = RankingMetrics(n_items, train_counts, item_vectors=item_vectors)
    for start in tqdm(range(0, len(prefixes), batch_size), desc=model.name, unit="batch",
                      disable=not progress):
        scores = model.score(prefixes[start:start + batch_size])
        metrics.update(topk_from_scores(scores, metrics.kmax), targets[start:start + batch_size])
    return metrics.result()
