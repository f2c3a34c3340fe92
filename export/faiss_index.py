"""FAISS inner-product index over the item table: choose, build, tune, save, load, search.

The `retrieval` step scores a session vector against every item vector by inner product
(docs/ARCHITECTURE.md). Row r of the (N, d) item matrix is model id r + 1; model id 0 is padding,
so FAISS positions are shifted by one on the way out and "no result" (-1) becomes 0.

Index kinds, all scoring by inner product (METRIC_INNER_PRODUCT):

- flat: IndexFlatIP, exact. The default up to FLAT_MAX_ITEMS.
- ivf:  IndexIVFFlat, nlist ≈ 4·sqrt(N) lists, nprobe tuned on sample queries to recall@20 >= 0.95.
        Only on request since ivfpqfs answered 2.5-3.9x sooner at the same recall (choose_kind).
- ivfsq: IndexIVFScalarQuantizer with 8-bit codes (d bytes an item instead of 4d), nprobe tuned the
        same way. The default when a float32 copy of the table would exceed IVF_FLAT_MAX_BYTES (10M
        items at d=100: 1 GB of codes instead of 4 GB): what fits beside the server.
- ivfpq: IndexIVFPQ (m = d/4 sub-quantizers of 8 bits: d/4 bytes an item), optionally behind an
        OPQ rotation (IndexSpec.opq), nprobe tuned the same way. Only on request: at recall@20 0.95
        it needs a re-rank the 8-bit scalar codes do not (docs/BENCHMARKS.md, large catalogues).
- ivfpqfs: IndexIVFPQFastScan (m = d/2 sub-quantizers of 4 bits, scanned 32 codes at a time with
        SIMD table look-ups: many times more codes a millisecond than IVF-Flat's float scan), always
        behind an exact re-rank of FASTSCAN_REFINE x k candidates (4-bit codes alone rank too
        coarsely to serve). The default above FLAT_MAX_ITEMS while the float copy of the table that
        the re-rank reads fits IVF_FLAT_MAX_BYTES.
- hnsw: IndexHNSWFlat, M=32, efSearch tuned the same way. Only on request (see choose_kind).

IVF kinds can re-rank their candidates by exact inner product (IndexSpec.refine: IndexRefineFlat)
and find their lists through an HNSW graph over the centroids (IndexSpec.coarse="hnsw": adding
10M items without comparing each with every centroid).

Tuned search parameters are set on the index itself (IVF `nprobe`, HNSW `hnsw.efSearch`), which
faiss.write_index stores, so a loaded index searches exactly as the tuned one did.

    from sessionrec.export.faiss_index import build_index, save_index, load_index, search
    index, report = build_index(item_vectors, tune_queries=session_vectors)  # (N, d), (Q, d) float32
    save_index(index, version_dir / "items.faiss")
    scores, model_ids = search(load_index(version_dir / "items.faiss"), session_vectors, k=20)

Benchmarks of the three kinds on this machine: benchmarks/faiss_bench.py, docs/benchmarks/faiss.md.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import faiss
import numpy as np
from tqdm import tqdm

from sessionrec.errors import SessionrecError

# Up to this many items exact search is both exact and fast enough. A batch-1 flat query scans N·d
# floats on one core: 0.26 ms at 43k items and 29 ms at 1M (d=100, memory-bound once the table
# outgrows the cache; docs/benchmarks/faiss.md), so ~6 ms at 200k, inside the request budget. Above
# it an approximate index pays off: IVF answers in 0.05 ms at 1M.
FLAT_MAX_ITEMS = 200_000
# Recall is measured and tuned at K=20: the cut-off of the offline metrics (P@20, MRR@20).
TUNE_K = 20
# Tuning stops here (1.5 ms a query at 1M, M=16): a graph that needs more is built too sparse, and
# a larger M / efConstruction is the fix, not a longer search.
MAX_EF_SEARCH = 1024
DEFAULT_NPROBE = 16  # used when no tune queries are given
# Tuning stops doubling when recall@20 gained less than this from the last doubling (at 64 or more):
# 8-bit or PQ codes cap recall below a high target, and walking nprobe up to nlist then costs
# minutes at 1M items for nothing.
PLATEAU = 0.002
DEFAULT_EF_SEARCH = 64  # used when no tune queries are given
KINDS = ("flat", "ivf", "ivfsq", "ivfpq", "ivfpqfs", "hnsw")
IVF_KINDS = ("ivf", "ivfsq", "ivfpq", "ivfpqfs")
# ivfpqfs re-ranks this many x k candidates by exact inner product unless IndexSpec.refine says otherwise
# (measured on clustered data with 2 dimensions a 4-bit code: 10 x k left recall@20 at 0.87, 20 x k 0.998)
FASTSCAN_REFINE = 20
# Above this many bytes of IVF-Flat codes (4·N·d) auto picks 8-bit scalar codes: 2 GiB is 5.4M
# items at d=100; the serving stub holds the index once per loaded version (two during a switch).
IVF_FLAT_MAX_BYTES = 2 << 30
ADD_CHUNK = 100_000  # vectors added per call, one progress-bar tick each
COARSE = ("flat", "hnsw")
COARSE_HNSW_M = 32  # links per centroid in an HNSW coarse quantizer
# efSearch of an HNSW coarse quantizer: at least this, and at least nprobe (it must return nprobe lists)
COARSE_EF_SEARCH = 64
EXACT_BLOCK_FLOATS = 64 << 20  # exact search scores at most this many (query, item) pairs at a time


class FaissIndexError(SessionrecError, ValueError):
    """An index file cannot be used; the message names the file and the problem."""


def choose_kind(n_items: int, flat_max_items: int = FLAT_MAX_ITEMS, dim: int = 100,
                ivf_flat_max_bytes: int = IVF_FLAT_MAX_BYTES) -> str:
    """'flat' up to flat_max_items, 'ivfpqfs' above, 'ivfsq' once the float32 table that ivfpqfs
    re-ranks from (4·N·d bytes, + N·d/4 of codes) would exceed ivf_flat_max_bytes.

    Why IVF-PQ fast-scan with an exact re-rank above the threshold (docs/BENCHMARKS.md §6, third
    pass: 1M synthetic items, d=100, real held-out session vectors, one thread as served): at every
    recall target from 0.95 to 0.99 it had the same held-out recall and HR@20 loss as IVF-Flat and
    answered 2.5-3.9x sooner (0.67 against 1.66 ms at 0.95, 1.70 against 6.69 ms at 0.99), for 6 %
    more bytes; its 4-bit codes are scanned 32 at a time with SIMD look-ups while IVF-Flat computes
    every float inner product. Why IVF and not HNSW: HNSW built in 15 min at 1M and needed 3.5 ms
    for recall 0.95 on this geometry (dense near-duplicate regions); the export runs on every
    retrain. The other kinds stay available with IndexSpec(kind=...).
    """
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    if n_items <= flat_max_items:
        return "flat"
    return "ivfpqfs" if 4 * n_items * dim <= ivf_flat_max_bytes else "ivfsq"


def choice_rule(flat_max_items: int = FLAT_MAX_ITEMS, ivf_flat_max_bytes: int = IVF_FLAT_MAX_BYTES) -> str:
    """The auto rule in words, recorded in the manifest next to the kind it chose."""
    return (f"auto: flat up to {flat_max_items} items; ivfpqfs (IVF-PQ fast-scan + exact re-rank) up to "
            f"{ivf_flat_max_bytes} bytes of float32 table (4*N*d); ivfsq (IVF, 8-bit scalar codes) above")


def ivf_nlist(n_items: int) -> int:
    """round(4·sqrt(N)) lists (faiss guidance: 4-16·sqrt(N)), capped at N/39 so that k-means has
    the 39 points per centroid below which faiss warns that clustering is unreliable."""
    return max(1, min(round(4 * math.sqrt(n_items)), n_items // 39))


@dataclass
class IndexSpec:
    kind: str = "auto"  # "auto" = choose_kind(N); or "flat" | "ivf" | "hnsw"
    nlist: int | None = None  # IVF lists; None = ivf_nlist(N)
    # Lists visited per query. None: tuned upward from 1 when tune queries are given, else
    # DEFAULT_NPROBE. A number is a floor: tuning only raises it.
    nprobe: int | None = None
    hnsw_m: int = 32  # neighbours per node; 16 halves link memory and build time, at some recall
    ef_construction: int = 40  # faiss default; build time grows about linearly with it
    # Candidate list per query. None: tuned upward from TUNE_K when tune queries are given, else
    # DEFAULT_EF_SEARCH. A number is a floor. faiss searches with max(efSearch, k) anyway.
    ef_search: int | None = None
    # IVF k-means sample per list. faiss's default, 256, makes k-means on 1M items x 4000 lists
    # ~1e13 flops (minutes on 2 cores); 64 keeps k-means a fraction of the build, and the coarser
    # centroids are paid back by the nprobe tuning.
    train_points_per_list: int = 64
    # IVF k-means iterations (faiss default 25). One iteration at 1M items x 4000 lists costs ~4.5 s
    # on 2 cores. Measured at 100k clustered items, d=100: 39/10, 64/10, 64/25 and 256/25
    # (points per list / iterations) all tune to the same nprobe with held-out recall@20 0.96-0.97,
    # building in 4.4, 6.1, 15.6 and 17.8 s.
    kmeans_iterations: int = 10
    # ivfpq sub-quantizers (d must be a multiple); None = d/4 of 8 bits (ivfpq), d/2 of 4 bits (ivfpqfs)
    pq_m: int | None = None
    opq: bool = False  # ivfpq behind an OPQ rotation (learned; helps PQ on correlated dimensions)
    # The IVF kinds' coarse quantizer: "flat" compares every vector with all nlist centroids
    # (N·nlist·d flops to add N items: 1e13 at 10M x 12.6k lists, hours on 2 cores); "hnsw" finds the
    # nearest centroids through an HNSW graph over them (COARSE_HNSW_M), so adding and searching cost
    # ~log(nlist) comparisons. k-means itself still assigns with a flat index (exact centroids).
    coarse: str = "flat"
    # IVF kinds: re-rank the best refine x k candidates of the index by exact inner product
    # (IndexRefineFlat, which keeps a float32 copy of the table: 4·N·d bytes more). 0 = no re-rank.
    # What lets PQ codes scan many lists fast and still answer with exact scores.
    refine: int = 0


@dataclass
class IndexReport:
    kind: str
    params: dict  # resolved parameters: nlist/nprobe (ivf); M/ef_construction/ef_search (hnsw)
    n_items: int
    dim: int
    build_seconds: float  # train + add; tuning excluded
    index_bytes: int  # serialized size, ~ resident size
    query_ms_p50: float  # batch 1, on the tune queries (or item vectors when none were given)
    recall_at_20: float | None  # vs exact, on the tune queries; 1.0 for flat; None if not measured
    tune_seconds: float = 0.0
    threads: int = field(default_factory=faiss.omp_get_max_threads)
    chosen_by: str = ""  # the auto rule when kind was chosen by size, else "requested"

    def to_dict(self) -> dict:
        return asdict(self)


def set_threads(n: int) -> int:
    """Set faiss's OpenMP threads for the whole process; returns the previous value.

    Process-wide: in Triton each python-backend model instance is its own process, so the retrieval
    model sets it once in initialize. faiss parallelises over queries, so batch-1 search gains
    nothing from more threads, and on a busy machine loses: flat, 50k items, d=100, shared 2 cores:
    0.39 ms at 1 thread, 0.78 ms at 2 (OpenMP threads wait for a core). Threads help batches and
    building.
    """
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    return previous


def _as_matrix(x: np.ndarray, name: str, dim: int | None = None) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or (dim is not None and x.shape[1] != dim):
        want = f"(B, {dim})" if dim is not None else "(N, d)"
        raise ValueError(f"{name} must be a non-empty {want} matrix, got shape {x.shape}")
    return x


def exact_positions(vectors: np.ndarray, queries: np.ndarray, k: int = TUNE_K) -> np.ndarray:
    """(B, k) positions of the exact top-k by inner product (unordered within the k); brute force.

    Walks the items in blocks (at most EXACT_BLOCK_FLOATS scores at a time) keeping a running top-k,
    so the table is read once and may be a memory-mapped file (a 10M-item table is 4 GB)."""
    n = len(vectors)
    k = min(k, n)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    block = max(k, EXACT_BLOCK_FLOATS // max(1, len(queries)))
    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best = np.empty((len(queries), 0), dtype=np.int64)
    for start in range(0, n, block):
        scores = queries @ np.asarray(vectors[start : start + block], dtype=np.float32).T  # (B, block)
        scores = np.concatenate([best_scores, scores], axis=1)
        positions = np.concatenate([best, np.broadcast_to(np.arange(start, start + scores.shape[1] - best.shape[1]),
                                                          (len(queries), scores.shape[1] - best.shape[1]))], axis=1)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        best_scores = np.take_along_axis(scores, top, axis=1)
        best = np.take_along_axis(positions, top, axis=1)
    return best


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    hits = (found[:, :, None] == exact[:, None, :]).any(axis=2)  # (B, k)
    return float(hits.sum() / exact.size)


def recall_at_k(
    index: faiss.Index,
    vectors: np.ndarray,
    queries: np.ndarray,
    k: int = TUNE_K,
    exact: np.ndarray | None = None,
) -> float:
    """Share of the exact top-k (numpy matmul over `vectors`) that the index returns in its top-k.

    `exact`: exact_positions(vectors, queries, k), when the caller already has it.
    """
    vectors = _as_matrix(vectors, "vectors")
    queries = _as_matrix(queries, "queries", vectors.shape[1])
    _, found = index.search(queries, k)
    return _recall(found, exact_positions(vectors, queries, k) if exact is None else exact)


def query_latency_ms(
    index: faiss.Index, queries: np.ndarray, batch: int = 1, max_calls: int = 200, budget_s: float = 2.0
) -> np.ndarray:
    """Wall time of index.search(k=TUNE_K) per call, in ms, cycling through `queries` in batches.

    Stops after max_calls or budget_s (at least 5 calls), after one untimed warm-up call.
    """
    queries = _as_matrix(queries, "queries", index.d)
    starts = np.arange(0, max(1, len(queries) - batch + 1), batch)
    index.search(queries[:batch], TUNE_K)
    times, t_end = [], time.perf_counter() + budget_s
    for i in range(max_calls):
        start = starts[i % len(starts)]
        t0 = time.perf_counter()
        index.search(queries[start : start + batch], TUNE_K)
        times.append((time.perf_counter() - t0) * 1e3)
        if i >= 4 and time.perf_counter() > t_end:
            break
    return np.asarray(times)


def served_query_ms_p50(index: faiss.Index, queries: np.ndarray) -> float:
    """Batch-1 p50 at one OpenMP thread, as the retrieval step serves (set_threads(1)). With more
    threads on busy cores a batch-1 search waits for the others: ~8 ms whatever nprobe was measured
    at 1M items for IVF-PQ fast-scan on two shared cores, against 0.7-1.7 ms at one."""
    previous = set_threads(1)
    try:
        return round(float(np.median(query_latency_ms(index, queries))), 4)
    finally:
        faiss.omp_set_num_threads(previous)


def _tune(apply, start: int, maximum: int, recall_of, target: float) -> tuple[int, float]:
    """Smallest value in [start, maximum] whose recall reaches target (doubling, then bisection;
    recall grows with nprobe and efSearch). Returns (value, recall); if none reaches it, the maximum or
    the value where doubling stopped gaining recall (PLATEAU)."""
    value, failed = min(start, maximum), None
    recall = recall_of(value)
    while recall < target and value < maximum:
        before = recall
        failed, value = value, min(2 * value, maximum)
        recall = recall_of(value)
        if recall - before < PLATEAU and value >= 64:
            break  # compressed codes cap recall below the target: more lists only cost time
    if recall < target:
        apply(value)
        return value, recall
    if recall >= target and failed is not None:
        low, high, high_recall = failed, value, recall
        while high - low > 1:
            mid = (low + high) // 2
            mid_recall = recall_of(mid)
            if mid_recall >= target:
                high, high_recall = mid, mid_recall
            else:
                low = mid
        value, recall = high, high_recall
    apply(value)
    return value, recall


def _ivf(index: faiss.Index):
    """The IVF index itself (also inside an OPQ IndexPreTransform), or None (flat, HNSW)."""
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _set_search_knob(index: faiss.Index, value: int) -> None:
    """IVF nprobe or HNSW efSearch, set on the index so that faiss.write_index stores it."""
    ivf = _ivf(index)
    if ivf is not None:
        ivf.nprobe = value
        quantizer = faiss.downcast_index(ivf.quantizer)
        if isinstance(quantizer, faiss.IndexHNSWFlat):  # the graph must return nprobe centroids
            quantizer.hnsw.efSearch = max(COARSE_EF_SEARCH, value)
    else:
        index.hnsw.efSearch = value


def _new_ivf(kind: str, d: int, nlist: int, spec: IndexSpec) -> faiss.Index:
    if spec.coarse not in COARSE:
        raise ValueError(f"unknown coarse quantizer {spec.coarse!r}; expected one of {COARSE}")
    if spec.coarse == "hnsw":
        quantizer = faiss.IndexHNSWFlat(d, COARSE_HNSW_M, faiss.METRIC_INNER_PRODUCT)
    else:
        quantizer = faiss.IndexFlatIP(d)
    if kind == "ivf":
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    elif kind == "ivfsq":
        index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT)
    elif kind == "ivfpqfs":
        m = spec.pq_m or max(1, d // 2)
        if d % m:
            raise ValueError(f"ivfpqfs: d={d} is not a multiple of pq_m={m}")
        index = faiss.IndexIVFPQFastScan(quantizer, d, nlist, m, 4, faiss.METRIC_INNER_PRODUCT)
        index.by_residual = True  # off by default here; codes of the offset from the list's centroid are finer
    else:
        m = spec.pq_m or max(1, d // 4)
        if d % m:
            raise ValueError(f"ivfpq: d={d} is not a multiple of pq_m={m}")
        index = faiss.IndexIVFPQ(quantizer, d, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
    index.cp.max_points_per_centroid = spec.train_points_per_list  # faiss samples this many
    index.cp.niter = spec.kmeans_iterations
    if spec.coarse == "hnsw":
        # k-means on a flat index (exact assignments), its centroids then added to the HNSW graph
        index.clustering_index = faiss.IndexFlatIP(d)
    if kind == "ivfpq" and spec.opq:
        index = faiss.IndexPreTransform(faiss.OPQMatrix(d, index.pq.M), index)
    refine = _refine(kind, spec)
    if refine:
        index = faiss.IndexRefineFlat(index)
        index.k_factor = float(refine)
    return index


def _refine(kind: str, spec: IndexSpec) -> int:
    if spec.refine < 0:
        raise ValueError(f"refine must be 0 (no re-rank) or >= 1 candidates per result, got {spec.refine}")
    return spec.refine or (FASTSCAN_REFINE if kind == "ivfpqfs" else 0)


def retune(index: faiss.Index, vectors: np.ndarray, queries: np.ndarray, target_recall: float,
           exact: np.ndarray | None = None) -> tuple[int, float]:
    """Set an ANN index's nprobe / efSearch to the smallest value whose recall@20 on `queries` reaches
    target_recall (its maximum if none does); returns (value, recall). Flat: (0, 1.0)."""
    ivf = _ivf(index)
    if ivf is None and not hasattr(index, "hnsw"):
        return 0, 1.0
    exact = exact_positions(vectors, queries, TUNE_K) if exact is None else exact
    floor, maximum = (1, ivf.nlist) if ivf is not None else (TUNE_K, MAX_EF_SEARCH)

    def recall_of(value: int) -> float:
        _set_search_knob(index, value)
        return _recall(index.search(queries, TUNE_K)[1], exact)

    return _tune(lambda v: _set_search_knob(index, v), floor, maximum, recall_of, target_recall)


def build_index(
    vectors: np.ndarray,
    spec: IndexSpec | None = None,
    tune_queries: np.ndarray | None = None,
    target_recall: float = 0.95,
    progress: bool = False,
) -> tuple[faiss.Index, IndexReport]:
    """Build an inner-product index over item vectors (N, d) float32; row r is model id r + 1.

    With tune_queries (Q, d) (held-out session vectors, a few hundred), IVF nprobe / HNSW efSearch
    is raised until recall@20 against exact search reaches target_recall, or its maximum (nlist /
    MAX_EF_SEARCH). The tuned value is set on the index, so save_index keeps it.
    """
    spec = IndexSpec() if spec is None else spec
    vectors = _as_matrix(vectors, "vectors")
    n, d = vectors.shape
    if not all(np.isfinite(vectors[i : i + ADD_CHUNK]).all() for i in range(0, n, ADD_CHUNK)):  # chunked: a memmap
        raise ValueError("vectors contain NaN or inf: the item table is not servable")
    kind = choose_kind(n, dim=d) if spec.kind == "auto" else spec.kind
    if kind not in KINDS:
        raise ValueError(f"unknown index kind {kind!r}; expected 'auto' or one of {KINDS}")
    queries = None if tune_queries is None else _as_matrix(tune_queries, "tune_queries", d)

    t0 = time.perf_counter()
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind in IVF_KINDS:
        nlist = min(spec.nlist or ivf_nlist(n), n)
        index = _new_ivf(kind, d, nlist, spec)
        # k-means samples train_points_per_list x nlist rows anyway; passing only a sample keeps
        # the PQ / OPQ / SQ trainers (which would use every row) bounded too
        sample = min(n, max(nlist * spec.train_points_per_list, 65_536))
        picked = np.sort(np.random.default_rng(0).choice(n, size=sample, replace=False)) if sample < n else slice(None)
        index.train(vectors[picked])
    else:
        index = faiss.IndexHNSWFlat(d, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = spec.ef_construction
    with tqdm(total=n, desc=f"faiss {kind}: add", unit="item", unit_scale=True, disable=not progress) as bar:
        for start in range(0, n, ADD_CHUNK):
            index.add(vectors[start : start + ADD_CHUNK])
            bar.update(min(ADD_CHUNK, n - start))
    build_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    recall: float | None = 1.0 if kind == "flat" else None
    if kind != "flat":
        # the knob's value without tune queries, where tuning starts, and its maximum
        if kind in IVF_KINDS:
            default, floor, maximum = spec.nprobe or DEFAULT_NPROBE, spec.nprobe or 1, _ivf(index).nlist
        else:
            default, floor = spec.ef_search or DEFAULT_EF_SEARCH, spec.ef_search or TUNE_K
            maximum = MAX_EF_SEARCH
        if queries is None:
            _set_search_knob(index, default)
        else:
            exact = exact_positions(vectors, queries, TUNE_K)

            def recall_of(value: int) -> float:
                _set_search_knob(index, value)
                return _recall(index.search(queries, TUNE_K)[1], exact)

            _, recall = _tune(lambda v: _set_search_knob(index, v), floor, maximum, recall_of, target_recall)
    if kind in IVF_KINDS:
        ivf = _ivf(index)
        params = {"nlist": int(ivf.nlist), "nprobe": int(ivf.nprobe),
                  "train_points_per_list": spec.train_points_per_list,
                  "kmeans_iterations": spec.kmeans_iterations, "coarse": spec.coarse}
        if kind == "ivfsq":
            params["codes"] = "8-bit scalar"
        if kind == "ivfpq":
            params.update({"pq_m": int(faiss.downcast_index(ivf).pq.M), "pq_bits": 8, "opq": spec.opq})
        if kind == "ivfpqfs":
            params.update({"pq_m": int(faiss.downcast_index(ivf).pq.M), "pq_bits": 4, "fast_scan": True})
        refine = _refine(kind, spec)
        if refine:
            params["refine_k_factor"] = refine
    elif kind == "hnsw":
        params = {"M": spec.hnsw_m, "ef_construction": int(index.hnsw.efConstruction),
                  "ef_search": int(index.hnsw.efSearch)}
    else:
        params = {}
    tune_seconds = time.perf_counter() - t0

    latency_queries = queries if queries is not None else vectors[:200]
    report = IndexReport(
        kind=kind,
        params=params,
        n_items=n,
        dim=d,
        build_seconds=round(build_seconds, 3),
        index_bytes=int(faiss.serialize_index(index).nbytes),
        query_ms_p50=served_query_ms_p50(index, latency_queries),
        recall_at_20=recall,
        tune_seconds=round(tune_seconds, 3),
        chosen_by=choice_rule() if spec.kind == "auto" else "requested",
    )
    return index, report


def save_index(index: faiss.Index, path: str | Path) -> Path:
    """Write atomically (temp file + rename): a reader never sees half an index."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        faiss.write_index(index, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_index(path: str | Path) -> faiss.Index:
    """Read an index written by save_index, with its tuned nprobe / efSearch."""
    path = Path(path)
    if not path.is_file():
        raise FaissIndexError(f"{path}: no such FAISS index file")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as e:
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise FaissIndexError(f"{path}: not a readable FAISS index (corrupt or truncated): {reason}") from e
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise FaissIndexError(f"{path}: index metric is {index.metric_type}, expected inner product")
    return index


def refine_params(index: faiss.Index, k: int):
    """For a re-ranking index: search parameters that re-rank the same candidates whatever k is.

    IndexRefine re-ranks k_factor x k candidates, so on its own a request's top 20 would depend on its
    K and, in a batch searched at the largest K + seen items, on its neighbours': answers that
    differ from the canaries' and from one batch to the next. Here the pool is fixed at
    k_factor x TUNE_K (what the recall was tuned with) or k if larger, so every k up to the pool gets
    the top k of one exactly re-ranked candidate list. None for other indexes.
    """
    if not isinstance(index, faiss.IndexRefine):
        return None
    pool = max(int(round(index.k_factor * TUNE_K)), k)
    return faiss.IndexRefineSearchParameters(k_factor=(pool + 0.5) / k)  # int(k * factor) == pool


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k items per session vector: (scores (B, k) float32, model_ids (B, k) int64), best first.

    Model id = FAISS position + 1. Slots FAISS cannot fill (k > N, or too few candidates in the
    probed IVF lists) come back as model id 0 (padding) with score -inf.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    queries = _as_matrix(queries, "queries", index.d)
    scores, positions = index.search(queries, k, params=refine_params(index, k))  # (B, k), (B, k)
    missing = positions < 0
    model_ids = np.where(missing, 0, positions + 1).astype(np.int64)
    scores = np.where(missing, -np.inf, scores).astype(np.float32)
    return scores, model_ids
