"""FAISS retrieval index: flat is exact, IVF/HNSW tuning reaches its recall target and survives
save/load, bad files are named, positions become model ids."""

import faiss
import numpy as np
import pytest

from sessionrec.export.faiss_index import (
    FLAT_MAX_ITEMS,
    FaissIndexError,
    IndexSpec,
    build_index,
    choose_kind,
    ivf_nlist,
    load_index,
    recall_at_k,
    save_index,
    search,
    set_threads,
)


def clustered(n, d, rng, clusters=100, spread=0.7):
    """Unit vectors around `clusters` random centres (NISER-style normalised item table)."""
    centres = rng.standard_normal((clusters, d), dtype=np.float32)
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, d), dtype=np.float32)  # (N, d)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def near_items(vectors, count, rng, noise=0.5):
    """Stand-ins for session vectors: random item vectors plus noise."""
    q = vectors[rng.integers(0, len(vectors), count)]
    return (q + noise / np.sqrt(q.shape[1]) * rng.standard_normal(q.shape, dtype=np.float32)).astype(np.float32)


@pytest.fixture(scope="module")
def catalogue():
    rng = np.random.default_rng(0)
    items = clustered(20_000, 32, rng)
    return items, near_items(items, 300, rng), near_items(items, 300, rng)  # items, tune, held-out


def test_flat_equals_numpy_exact_top_k():
    rng = np.random.default_rng(1)
    items = rng.standard_normal((5_000, 32), dtype=np.float32)
    queries = rng.standard_normal((50, 32), dtype=np.float32)
    index, report = build_index(items, IndexSpec(kind="flat"), tune_queries=queries)
    scores, model_ids = search(index, queries, k=20)

    exact = queries @ items.T  # (B, N)
    positions = np.argsort(-exact, axis=1)[:, :20]
    np.testing.assert_array_equal(model_ids, positions + 1)
    np.testing.assert_allclose(scores, np.take_along_axis(exact, positions, axis=1), rtol=1e-5, atol=1e-5)
    assert report.kind == "flat" and report.recall_at_20 == 1.0 and report.params == {}
    assert report.n_items == 5_000 and report.dim == 32 and report.index_bytes >= 5_000 * 32 * 4


def test_choose_kind_thresholds():
    assert choose_kind(1) == "flat"
    assert choose_kind(FLAT_MAX_ITEMS) == "flat"
    assert choose_kind(FLAT_MAX_ITEMS + 1) == "ivfpqfs"
    assert choose_kind(1_000, flat_max_items=999) == "ivfpqfs"
    with pytest.raises(ValueError, match="n_items"):
        choose_kind(0)
    assert ivf_nlist(1_000_000) == 4_000  # 4·sqrt(N)
    assert ivf_nlist(20_000) == 20_000 // 39  # capped: >= 39 k-means points per list
    index, report = build_index(np.eye(4, dtype=np.float32))  # spec None -> auto -> flat
    assert report.kind == "flat" and isinstance(index, faiss.IndexFlatIP)


# HNSW with M=8 so that efSearch has to rise above its starting point (M=32 is there at ef=20).
@pytest.mark.parametrize("spec", [IndexSpec(kind="ivf"), IndexSpec(kind="hnsw", hnsw_m=8)], ids=["ivf", "hnsw"])
def test_tuned_index_reaches_target_recall_and_keeps_it_through_save_load(spec, catalogue, tmp_path):
    items, tune, held_out = catalogue
    kind = spec.kind
    index, report = build_index(items, spec, tune_queries=tune, target_recall=0.95)
    assert report.kind == kind and report.recall_at_20 >= 0.95
    assert recall_at_k(index, items, tune) == pytest.approx(report.recall_at_20)
    assert recall_at_k(index, items, held_out) >= 0.9  # tuned on other queries: a little slack

    knob = "nprobe" if kind == "ivf" else "ef_search"
    tuned = report.params[knob]
    loaded = load_index(save_index(index, tmp_path / "items.faiss"))
    loaded_knob = loaded.nprobe if kind == "ivf" else loaded.hnsw.efSearch
    assert loaded_knob == tuned
    np.testing.assert_array_equal(search(loaded, held_out, 20)[1], search(index, held_out, 20)[1])

    # tuning found the smallest value that reaches the target, above where it started
    assert tuned > (1 if kind == "ivf" else 20)
    if kind == "ivf":
        index.nprobe = tuned - 1
    else:
        index.hnsw.efSearch = tuned - 1
    assert recall_at_k(index, items, tune) < 0.95


def test_tuning_stops_at_the_maximum_and_defaults_without_queries(catalogue):
    items, tune, _ = catalogue
    _, report = build_index(items, IndexSpec(kind="ivf", nlist=64), tune_queries=tune, target_recall=1.01)
    assert report.params["nprobe"] == 64 and report.recall_at_20 == pytest.approx(1.0)
    _, report = build_index(items, IndexSpec(kind="ivf", nlist=64, nprobe=5))
    assert report.params["nprobe"] == 5 and report.recall_at_20 is None


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    missing = tmp_path / "missing.faiss"
    with pytest.raises(FaissIndexError, match="missing.faiss: no such"):
        load_index(missing)

    garbage = tmp_path / "garbage.faiss"
    garbage.write_bytes(b"not an index at all")
    with pytest.raises(FaissIndexError, match="garbage.faiss: not a readable FAISS index"):
        load_index(garbage)

    index, _ = build_index(np.random.default_rng(2).standard_normal((100, 8), dtype=np.float32))
    whole = save_index(index, tmp_path / "whole.faiss").read_bytes()
    truncated = tmp_path / "truncated.faiss"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="truncated.faiss: not a readable FAISS index"):
        load_index(truncated)

    l2 = tmp_path / "l2.faiss"
    faiss.write_index(faiss.IndexFlatL2(8), str(l2))
    with pytest.raises(FaissIndexError, match="l2.faiss: .*expected inner product"):
        load_index(l2)


def test_search_maps_positions_to_model_ids():
    items = np.array([[1, 0], [0, 1], [2, 0]], dtype=np.float32)  # model ids 1, 2, 3
    index, _ = build_index(items)
    scores, model_ids = search(index, np.array([[1, 0], [1, 3]], dtype=np.float32), k=5)
    assert model_ids.dtype == np.int64 and scores.dtype == np.float32 and model_ids.shape == (2, 5)
    np.testing.assert_array_equal(model_ids[:, :3], [[3, 1, 2], [2, 3, 1]])
    np.testing.assert_allclose(scores[:, :3], [[2, 1, 0], [3, 2, 1]])
    np.testing.assert_array_equal(model_ids[:, 3:], 0)  # k > N: padding id, score -inf
    assert np.isneginf(scores[:, 3:]).all()
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        search(index, np.ones((1, 3), dtype=np.float32), k=1)


def test_set_threads_returns_the_previous_value():
    before = set_threads(1)
    try:
        assert faiss.omp_get_max_threads() == 1
        assert set_threads(before) == 1
    finally:
        set_threads(before)
    with pytest.raises(ValueError):
        set_threads(0)
