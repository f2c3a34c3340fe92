"""Retrieval: session vectors -> top-K raw item ids and scores (FAISS inner product).

Runs inside Triton's `retrieval` python model and in the offline pipeline. Scores are the same
dot products the PyTorch model computes (session vector · item vector).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field

import faiss
import numpy as np

from sessionrec.export.faiss_index import search, set_threads
from sessionrec.serving.preprocess import IdMap, RequestError

DEFAULT_K = 20


@dataclass
class Retriever:
    index: object  # faiss.Index over model ids 1..N (row r = model id r+1), or a sharded version's shards
    id_map: IdMap
    popularity: np.ndarray  # (N+1,) training clicks per model id: the fallback ranking
    max_k: int = 1000  # largest K a request may ask for
    max_len: int = 1  # session width the preprocess step sends (the deepest EXCLUDE_SEEN search; warm-up)
    # FAISS OpenMP threads. One: batch-1 searches got slower with 2 threads here (docs/benchmarks/
    # faiss.md), and Triton already runs requests in parallel. OpenMP keeps this setting per thread,
    # so it is applied by the thread that searches, whichever thread built the retriever.
    threads: int = 1
    # ...but a batch of many sessions is searched with more threads: the table scan is memory-bound
    # and splits across cores, and the fused stub, which waits for the search, is what limits
    # throughput on a CPU node (docs/benchmarks/serving.md).
    batch_threads: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))
    batch_threads_from: int = 16  # sessions in one search

    def __post_init__(self) -> None:
        self._threads_cap: int | None = None  # set while warming up (single_threaded)
        counts = np.asarray(self.popularity, dtype=np.float64)
        counts[0] = -1  # never recommend padding
        self._popular = np.argsort(-counts, kind="stable")[:-1]  # model ids, most clicked first
        self._share = (counts / max(counts[1:].sum(), 1.0)).astype(np.float32)
        self.max_k = min(self.max_k, self.id_map.n_items)
        # A sharded version's index is the fan-out to its shards (sessionrec.serving.shards), which
        # searches and merges by score itself; decided once here, not per request.
        self._search_topk = getattr(self.index, "search_topk", None)

    def check_k(self, k: np.ndarray) -> np.ndarray:
        k = np.asarray(k).reshape(-1)
        if k.size == 0:
            raise RequestError("K is empty: send one integer per session")
        bad = k[(k < 1) | (k > self.max_k)]
        if bad.size:
            raise RequestError(f"K={int(bad[0])} is out of range: must be between 1 and {self.max_k}")
        return k.astype(np.int64)

    def warm_up(self, batch: int) -> None:
        """Search the largest batch at the deepest K, twice, at load, on the thread that will serve.

        Sizes FAISS's result buffers and the malloc heap before traffic does: sized by the first
        bursts instead, a stub's RSS grew in steps during a soak. Twice because glibc serves the
        first 16 MB block of a 20+ query search with mmap and only then moves it onto the heap
        (LocalPipeline.warm_up, docs/RELIABILITY.md).
        """
        dim = self.index.d
        vectors = np.zeros((batch, dim), dtype=np.float32)
        vectors[:, 0] = 1.0
        items = np.ones((batch, self.max_len), dtype=np.int64)
        with self.single_threaded():
            for _ in range(2):
                self.retrieve(vectors, items, np.zeros(batch, dtype=bool), np.full(batch, self.max_k),
                              np.arange(batch) % 2 == 0)

    @contextmanager
    def single_threaded(self):
        """Searches inside use one OpenMP thread, whatever their size.

        For the warm-ups: a new version warms up while the serving one answers traffic on the same
        cores, and its deepest searches on two threads took both of them (the slowest requests of a
        switch came in those milliseconds, docs/RELIABILITY.md). One core is left to serving.
        """
        self._threads_cap = 1
        try:
            yield self
        finally:
            self._threads_cap = None

    def retrieve(self, embeddings, items, fallback, k, exclude_seen) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per row: (raw ids (K,), scores (K,)), best first. items = (B, L) model ids of the session."""
        k = self.check_k(k)
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        items = np.asarray(items)
        fallback = np.asarray(fallback, dtype=bool).reshape(-1)
        exclude = np.asarray(exclude_seen, dtype=bool).reshape(-1)
        rows = embeddings.shape[0]
        if not (k.size == fallback.size == exclude.size == items.shape[0] == rows):
            raise RequestError(
                f"batch sizes differ: {rows} session vectors, K for {k.size}, EXCLUDE_SEEN for {exclude.size}"
            )
        extra = items.shape[1] if exclude.any() else 0  # room for seen items filtered out below
        depth = int(min(k.max() + extra, self.id_map.n_items))
        threads = self.batch_threads if rows >= self.batch_threads_from else self.threads
        if self._threads_cap is not None:
            threads = min(threads, self._threads_cap)
        if faiss.omp_get_max_threads() != threads:
            set_threads(threads)
        if self._search_topk is not None:
            scores, ids = self._search_topk(embeddings, depth)
        else:
            scores, ids = search(self.index, embeddings, depth)
        out = []
        for r in range(rows):
            if fallback[r]:
                row_ids, row_scores = self._popular[: k[r] + extra], self._share[self._popular[: k[r] + extra]]
            else:
                keep = ids[r] > 0
                row_ids, row_scores = ids[r][keep], scores[r][keep]
            if exclude[r]:
                keep = ~np.isin(row_ids, items[r][items[r] > 0])
                row_ids, row_scores = row_ids[keep], row_scores[keep]
            out.append((self.id_map.to_raw(row_ids[: k[r]]), row_scores[: k[r]].astype(np.float32)))
        return out

    def retrieve_request(self, embeddings, items, fallback, k, exclude_seen) -> tuple[np.ndarray, np.ndarray]:
        """One request's (B, K) raw ids and scores (the retrieval step's outputs), or a RequestError."""
        rows = self.retrieve(embeddings, items, fallback, k, exclude_seen)
        if len({len(ids) for ids, _ in rows}) > 1:
            # One response carries one rectangular tensor: rows of one request need the same K.
            raise RequestError("sessions batched in one request returned different numbers of items")
        return np.stack([ids for ids, _ in rows]), np.stack([scores for _, scores in rows])
