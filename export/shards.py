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

from sessionrec.export.faiss_index import IndexReport, IndexSpec, build_index, save_index, search

SHARD_MODEL = "retrieval_shard_{}"  # the Triton model serving shard s (sessionrec.serving.shards)


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
                 tune_queries: np.ndarray | None = None, target_recall: float = 0.95,
                 progress: bool = False) -> list[Shard]:
    """One index per row range; each is tuned on the same queries against its own rows' exact top 20."""
    out = []
    for start, stop in shard_bounds(len(vectors), n_shards):
        index, report = build_index(vectors[start:stop], spec, tune_queries=tune_queries, target_recall=target_recall,
                                    progress=progress)
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


def merged_recall(shards: list[Shard], vectors: np.ndarray, queries: np.ndarray, k: int = 20,
                  block_rows: int = 64) -> float:
    """recall@k of the merged shard answers against exact search over the whole table."""
    hits = 0
    for i in range(0, len(queries), block_rows):
        block = np.ascontiguousarray(queries[i : i + block_rows], dtype=np.float32)
        exact = np.argsort(-(block @ vectors.T), axis=1, kind="stable")[:, :k] + 1  # (b, k) model ids
        _, merged = search_shards(shards, block, k)
        hits += sum(len(np.intersect1d(a, b)) for a, b in zip(exact, merged))
    return hits / (len(queries) * k)


def save_shards(shards: list[Shard], staged, version: int) -> dict[str, object]:
    """Write retrieval_shard_<s>/<version>/items.faiss under `staged`; return {model: version folder}."""
    from pathlib import Path

    folders = {}
    for number, shard in enumerate(shards):
        model = SHARD_MODEL.format(number)
        folder = Path(staged) / model / str(version)
        folder.mkdir(parents=True, exist_ok=True)
        save_index(shard.index, folder / "items.faiss")
        folders[model] = folder
    return folders


def shards_manifest(shards: list[Shard]) -> list[dict]:
    """The manifest's `retrieval_shards`: per shard its model, rows [start, stop) and index report."""
    return [{"shard": number, "model": SHARD_MODEL.format(number),
             "rows": [shard.offset, shard.offset + shard.report.n_items], "index": shard.report.to_dict()}
            for number, shard in enumerate(shards)]


def combined_report(shards: list[Shard], recall: float) -> IndexReport:
    """One IndexReport for the manifest's `index` (what the gates and the CLI summary read): the
    shards' kind, summed sizes and build time, the slowest shard's query time, the merged recall."""
    first = shards[0].report
    return IndexReport(
        kind=first.kind, params={"shards": len(shards), **first.params},
        n_items=sum(s.report.n_items for s in shards), dim=first.dim,
        build_seconds=sum(s.report.build_seconds for s in shards),
        index_bytes=sum(s.report.index_bytes for s in shards),
        query_ms_p50=max(s.report.query_ms_p50 for s in shards), recall_at_20=recall,
        tune_seconds=sum(s.report.tune_seconds for s in shards),
        chosen_by=f"{first.chosen_by}; {len(shards)} shards (per shard)".lstrip("; "))
