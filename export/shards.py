"""Sharded retrieval: the item table split into S contiguous model-id ranges, one FAISS index each,
answers merged by score. The building block of retrieval across nodes (docs/LARGE_CATALOGUES.md,
"Sharded retrieval"): each shard is what one node holds; the merge is what the node in front runs.

    shards = build_shards(item_vectors, 2, IndexSpec(kind="ivf"), tune_queries=session_vectors)
    scores, model_ids = search_shards(shards, session_vectors, k=20)   # same contract as faiss_index.search

Inner-product scores of different shards are comparable (the same session vector against rows of
the same table), so the global top k is the top k of the union of each shard's top k: exact when
every shard is exact, and each ANN shard's recall carries over (a shard tuned to recall r over its
own items keeps the merged recall at about r).
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from sessionrec.export.faiss_index import IndexReport, IndexSpec, build_index, search


@dataclass
class Shard:
    index: faiss.Index
    offset: int  # model id of the shard's first row is offset + 1
    report: IndexReport


def shard_bounds(n_items: int, n_shards: int) -> list[tuple[int, int]]:
    """[start, stop) row ranges of near-equal size."""
    if not 1 <= n_shards <= n_items:
        raise ValueError(f"n_shards must be in 1..{n_items}, got {n_shards}")
    edges = np.linspace(0, n_items, n_shards + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def build_shards(vectors: np.ndarray, n_shards: int, spec: IndexSpec | None = None,
                 tune_queries: np.ndarray | None = None, target_recall: float = 0.95) -> list[Shard]:
    """One index per row range; each is tuned on the same queries against its own rows' exact top 20."""
    out = []
    for start, stop in shard_bounds(len(vectors), n_shards):
        index, report = build_index(vectors[start:stop], spec, tune_queries=tune_queries, target_recall=target_recall)
        out.append(Shard(index, start, report))
    return out


def merge_topk(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-shard (scores (B, k_s), global model ids (B, k_s)) -> the best k overall, best first.
    Padding (model id 0, score -inf) sorts last, as in faiss_index.search."""
    scores = np.concatenate([p[0] for p in parts], axis=1)
    ids = np.concatenate([p[1] for p in parts], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def search_shards(shards: list[Shard], queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss_index.search over all shards: (scores (B, k), model ids (B, k))."""
    parts = []
    for shard in shards:
        scores, ids = search(shard.index, queries, k)
        parts.append((scores, np.where(ids > 0, ids + shard.offset, 0)))
    return merge_topk(parts, k)
