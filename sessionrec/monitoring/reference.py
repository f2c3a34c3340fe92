"""Training-popularity buckets: the reference a served version's input and output drift is measured against.

Items are ranked by training clicks (the same `popularity.npy` the fallback ranking uses) and cut
into buckets of equal training-click mass, most popular first: bucket 0 holds the few head items
that make up the first 1/B of all training clicks, the last bucket the long tail. A training click
lands in each bucket with probability ~1/B (ties at a cut make it uneven; the exact shares are the
reference). Live clicks bucketed the same way give a distribution whose PSI against the reference
rises when the popularity mix shifts: new trends, a catalogue change, a stale model. Equal mass (not
equal item counts) keeps every bucket's expected count large, so PSI's log-ratio is not dominated
by near-empty buckets.

Export writes `bucket_reference(counts)` into the manifest (`monitoring.popularity_buckets`); the
serving step recomputes the item -> bucket map from the same counts (`item_buckets`), so nothing
big goes into the manifest, and `check_reference` proves the two agree at load.
"""

from __future__ import annotations

import numpy as np

N_BUCKETS = 10  # PSI's usual decile bucketing


def item_buckets(counts: np.ndarray, n_buckets: int = N_BUCKETS) -> np.ndarray:
    """(N+1,) int8 bucket of each model id (0 = most popular); padding (id 0) gets bucket -1.

    Items are taken most clicked first (stable: ties keep id order, as the fallback ranking does);
    an item's bucket is where the cumulative click mass *before* it falls, so the head item is
    always in bucket 0 and zero-click items end in the last bucket.
    """
    counts = np.asarray(counts, dtype=np.float64).copy()
    if counts.ndim != 1 or counts.size < 2:
        raise ValueError(f"popularity counts must be (N+1,) with N >= 1, got shape {list(counts.shape)}")
    counts[0] = 0.0
    total = counts[1:].sum()
    order = np.argsort(-counts[1:], kind="stable") + 1
    before = np.cumsum(counts[order]) - counts[order]
    share = before / total if total > 0 else np.arange(order.size) / order.size
    bucket = np.minimum((share * n_buckets).astype(np.int64), n_buckets - 1)
    out = np.full(counts.size, -1, dtype=np.int8)
    out[order] = bucket
    return out


def bucket_reference(counts: np.ndarray, n_buckets: int = N_BUCKETS) -> dict:
    """The manifest's `monitoring.popularity_buckets`: each bucket's share of training clicks and items."""
    counts = np.asarray(counts, dtype=np.float64)
    buckets = item_buckets(counts, n_buckets)
    real = buckets[1:]
    clicks = np.bincount(real, weights=counts[1:], minlength=n_buckets)
    items = np.bincount(real, minlength=n_buckets)
    total = clicks.sum()
    return {
        "buckets": n_buckets,
        "basis": "training clicks per item (retrieval/<N>/popularity.npy), equal click mass, most popular first",
        "click_share": [round(float(c / total), 6) if total > 0 else 0.0 for c in clicks],
        "items": [int(i) for i in items],
    }


def check_reference(counts: np.ndarray, reference: dict) -> None:
    """Raise when the manifest's reference was not computed from these counts (a mixed-up version)."""
    mine = bucket_reference(counts, int(reference["buckets"]))
    if mine["items"] != list(reference["items"]):
        raise ValueError(f"monitoring reference does not match popularity.npy: bucket sizes {mine['items']} "
                         f"vs manifest {list(reference['items'])}")


def psi(reference: np.ndarray, live: np.ndarray, floor: float = 1e-4) -> float:
    """Population stability index sum((p - q) ln(p / q)) of two distributions over the same buckets.

    Shares below `floor` are raised to it (an empty bucket would make the log infinite); the
    Prometheus rule (helm/sessionrec/files/monitoring-rules.yaml) uses the same floor.
    """
    p = np.maximum(np.asarray(live, dtype=np.float64), 0)
    q = np.maximum(np.asarray(reference, dtype=np.float64), 0)
    p = np.maximum(p / max(p.sum(), 1e-300), floor)
    q = np.maximum(q / max(q.sum(), 1e-300), floor)
    return float(np.sum((p - q) * np.log(p / q)))


def score_deciles(top_scores: list[float], n: int = 10) -> dict:
    """Inner edges of the top-1 score's n quantiles on export-time test sessions (each bucket ~1/n)."""
    scores = np.asarray(top_scores, dtype=np.float64)
    if scores.size < n:
        return {"edges": [], "sessions": int(scores.size)}
    edges = np.quantile(scores, np.arange(1, n) / n)
    return {"edges": [round(float(e), 6) for e in edges], "sessions": int(scores.size)}


def monitoring_reference(counts: np.ndarray, top_scores: list[float]) -> dict:
    """The manifest's `monitoring` section, written by export."""
    return {"popularity_buckets": bucket_reference(counts), "top_score": score_deciles(top_scores)}
