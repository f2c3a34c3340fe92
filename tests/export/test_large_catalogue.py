"""The large-catalogue path at CI size: a synthetic 210k-item catalogue (sessionrec.synthetic) exported
with the normal export (IVF chosen by size, ONNX weights in an external data file) and served by the
real tritonserver; plus the synthetic generator and the size rule on their own."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from sessionrec.export import faiss_index
from sessionrec.synthetic import SyntheticConfig, SyntheticError, extend_checkpoint, extend_table, fit_zipf

CI_ITEMS = 210_000  # just above FLAT_MAX_ITEMS: the smallest catalogue that takes the IVF path


def test_fit_zipf_recovers_the_exponent():
    ranks = np.arange(1, 2001)
    s, c = fit_zipf(np.random.default_rng(0).permutation(np.round(50_000 * ranks ** -1.1)))  # any order
    assert abs(s - 1.1) < 0.02 and 45_000 < c < 55_000


def test_extend_table_keeps_real_rows_and_draws_new_ones_like_them():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((20, 16)).astype(np.float32)
    real = centres[rng.integers(0, 20, 3000)] + 0.1 * rng.standard_normal((3000, 16)).astype(np.float32)
    counts = np.maximum(0, np.round(400 * np.arange(1, 3001) ** -0.9)).astype(np.int64)
    table, all_counts, (s, _) = extend_table(real, counts, 50_000, seed=3)
    assert table.shape == (50_000, 16) and table.dtype == np.float32 and all_counts.shape == (50_000,)
    np.testing.assert_array_equal(table[:3000], real)  # real items unchanged: real sessions encode as before
    np.testing.assert_array_equal(all_counts[:3000], counts)
    norms, new_norms = np.linalg.norm(real, axis=1), np.linalg.norm(table[3000:], axis=1)
    assert norms.min() - 1e-4 <= new_norms.min() and new_norms.max() <= norms.max() + 1e-4  # real norm distribution
    # near existing items: every new row's nearest real row is much closer than a random real row
    sample = table[3000:3500]
    nearest = np.min(((sample[:, None] - real[None]) ** 2).sum(-1), axis=1)
    assert np.median(nearest) < 0.2 * np.median(((sample - real[:500]) ** 2).sum(-1))
    # Zipf tail: new items get fewer clicks than the real head, many none
    assert all_counts[3000:].mean() < counts[:100].mean() and (all_counts[3000:] == 0).mean() > 0.2 and s > 0
    again, _, _ = extend_table(real, counts, 50_000, seed=3)
    np.testing.assert_array_equal(table, again)  # same seed, same catalogue


def test_extend_table_refuses_a_smaller_catalogue():
    with pytest.raises(SyntheticError, match="below the real catalogue"):
        extend_table(np.ones((100, 4), np.float32), np.arange(100), 50)


def test_index_kind_follows_catalogue_size():
    assert faiss_index.choose_kind(faiss_index.FLAT_MAX_ITEMS) == "flat"
    assert faiss_index.choose_kind(1_000_000, dim=100) == "ivfpqfs"  # a 400 MB float32 table to re-rank from
    assert faiss_index.choose_kind(10_000_000, dim=100) == "ivfsq"  # 4 GB: 8-bit codes instead
    assert "ivfsq" in faiss_index.choice_rule()


@pytest.mark.parametrize("kind", ["ivfsq", "ivfpq"])
def test_compressed_indexes_tune_to_the_target(kind):
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((64, 32)).astype(np.float32)
    items = centres[rng.integers(0, 64, 30_000)] + 0.3 * rng.standard_normal((30_000, 32)).astype(np.float32)
    queries = centres[rng.integers(0, 64, 200)] + 0.3 * rng.standard_normal((200, 32)).astype(np.float32)
    index, report = faiss_index.build_index(items, faiss_index.IndexSpec(kind=kind, opq=kind == "ivfpq"),
                                            tune_queries=queries, target_recall=0.9)
    assert report.kind == kind and report.chosen_by == "requested"
    assert report.index_bytes < items.nbytes / 2  # compressed codes
    if kind == "ivfsq":
        assert report.recall_at_20 >= 0.9 and report.params["codes"] == "8-bit scalar"
    else:
        assert report.params["pq_m"] == 8 and report.params["opq"] is True
        assert report.recall_at_20 == faiss_index.recall_at_k(index, items, queries)  # what was measured is served


@pytest.mark.server
def test_synthetic_catalogue_exports_with_ivf_and_serves(trained_checkpoint, sample_path, tmp_path):
    from sessionrec.checkpoint import load_checkpoint
    from sessionrec.export.exporter import ExportOptions, export_version
    from sessionrec.export.onnx_export import data_file
    from sessionrec.serving.embedded import EmbeddedServer, infer_recommend

    synthetic = tmp_path / "synthetic.pt"
    report = extend_checkpoint(trained_checkpoint, synthetic, SyntheticConfig(n_items=CI_ITEMS))
    real = load_checkpoint(trained_checkpoint)
    ckpt = load_checkpoint(synthetic)
    assert ckpt.model_config.n_items == CI_ITEMS and report.real_items == real.model_config.n_items
    assert len(np.unique(ckpt.raw_ids[1:])) == CI_ITEMS  # new raw ids never collide with real ones
    np.testing.assert_array_equal(ckpt.raw_ids[: len(real.raw_ids)], real.raw_ids)

    repo = tmp_path / "repository"
    options = ExportOptions(data=str(sample_path), quality_sessions=200, parity_sessions=200,
                            onnx_external_data_bytes=0)  # the path a >2 GB table takes, at CI size
    result = export_version(synthetic, repo, options, progress=False)
    manifest = result.manifest
    assert manifest["index"]["kind"] == "ivfpqfs" and manifest["index"]["chosen_by"].startswith("auto")
    assert manifest["index"]["n_items"] == CI_ITEMS and manifest["serving"]["n_items"] == CI_ITEMS
    assert manifest["index"]["recall_at_20"] >= 0.95
    assert manifest["serving"]["encoder_external_data"] is True and manifest["parity"]["passed"]
    encoder_dir = repo / "session_encoder" / str(result.version)
    assert data_file(encoder_dir / "model.onnx").is_file()
    assert f"session_encoder/{result.version}/model.onnx.data" in manifest["artifacts"]  # checksummed like the rest
    assert not list(encoder_dir.glob("model.fp16*")) and not list(encoder_dir.glob("model.int8*"))  # unserved variants gone
    assert manifest["one_click"]["built"] is False  # over one_click_max_items: no per-item table at this size
    fused = manifest["fused_instances"]  # chosen by the stub's memory: at least what the index alone takes
    assert fused["chosen_by"].startswith("auto") and fused["count"] == (2 if fused["stub_estimate_bytes"] <= fused["budget_bytes"] else 1)
    assert fused["stub_estimate_bytes"] > (repo / "retrieval" / str(result.version) / "items.faiss").stat().st_size

    with EmbeddedServer(repo, watch_seconds=0, log_file=tmp_path / "tritonserver.log") as server:  # canaries replayed
        canary = manifest["canaries"][0]
        answer = infer_recommend(server.server.client(), canary["items"], 20, False)
        ids = answer.as_numpy("ITEM_IDS").reshape(-1)
        assert ids.tolist() == canary["expected_ids"] and not answer.as_numpy("FALLBACK").reshape(-1)[0]
        assert set(ids.tolist()) <= set(ckpt.raw_ids[1:].tolist())
    json.dumps(manifest["index"])  # the recorded choice is plain JSON


def test_two_exact_shards_answer_exactly_what_one_index_does():
    from sessionrec.export.shards import build_shards, search_shards, shard_bounds

    rng = np.random.default_rng(2)
    items = rng.standard_normal((5001, 16)).astype(np.float32)
    queries = rng.standard_normal((50, 16)).astype(np.float32)
    assert shard_bounds(5001, 2) == [(0, 2500), (2500, 5001)]
    shards = build_shards(items, 2, faiss_index.IndexSpec(kind="flat"))
    scores, ids = search_shards(shards, queries, 20)
    want_scores, want_ids = faiss_index.search(faiss_index.build_index(items)[0], queries, 20)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)
    _, few = search_shards(build_shards(items[:30], 2, faiss_index.IndexSpec(kind="flat")), queries, 40)
    assert (few[:, 30:] == 0).all() and set(few[0, :30].tolist()) == set(range(1, 31))  # k > N pads with id 0


def test_ivf_shards_keep_their_recall_when_merged():
    from sessionrec.export.shards import build_shards, search_shards

    rng = np.random.default_rng(4)
    centres = rng.standard_normal((64, 32)).astype(np.float32)
    items = centres[rng.integers(0, 64, 40_000)] + 0.3 * rng.standard_normal((40_000, 32)).astype(np.float32)
    queries = centres[rng.integers(0, 64, 300)] + 0.3 * rng.standard_normal((300, 32)).astype(np.float32)
    shards = build_shards(items, 2, faiss_index.IndexSpec(kind="ivf"), tune_queries=queries[:150])
    _, ids = search_shards(shards, queries[150:], 20)
    exact = faiss_index.exact_positions(items, queries[150:], 20) + 1
    recall = np.mean([len(np.intersect1d(a, b)) / 20 for a, b in zip(ids, exact)])
    assert recall >= 0.9


def test_tuning_stops_where_compressed_codes_stop_gaining_recall():
    calls, applied = [], []

    def recall_of(value):  # a curve that levels off at 0.9, below the target
        calls.append(value)
        return min(0.9, 0.5 + value / 100)

    value, recall = faiss_index._tune(applied.append, 1, 4000, recall_of, 0.95)
    assert (value, recall) == (128, 0.9) and applied == [128] and max(calls) == 128  # not walked up to 4000


def test_exact_positions_walks_the_items_in_blocks_and_reads_a_memmap(monkeypatch, tmp_path):
    rng = np.random.default_rng(4)
    items = rng.standard_normal((5_000, 16)).astype(np.float32)
    queries = rng.standard_normal((40, 16)).astype(np.float32)
    expected = np.sort(np.argsort(-(queries @ items.T), axis=1)[:, :20], axis=1)
    np.save(tmp_path / "items.npy", items)
    mapped = np.load(tmp_path / "items.npy", mmap_mode="r")
    monkeypatch.setattr(faiss_index, "EXACT_BLOCK_FLOATS", 40 * 700)  # 700 items a block: 8 blocks, a ragged last
    np.testing.assert_array_equal(np.sort(faiss_index.exact_positions(mapped, queries, 20), axis=1), expected)


def test_write_table_streams_the_same_rows_normalised(trained_checkpoint, tmp_path):
    import torch

    from sessionrec.checkpoint import load_checkpoint
    from sessionrec.synthetic import write_table

    ckpt = load_checkpoint(trained_checkpoint)
    table, counts = write_table(trained_checkpoint, tmp_path / "table.npy", 30_000, seed=2)
    assert isinstance(table, np.memmap) and table.shape == (30_000, ckpt.model_config.dim) and not table.flags.writeable
    assert not (tmp_path / "table.npy.partial").exists()  # written under another name, then renamed
    weight = ckpt.state_dict["embedding.weight"].numpy()
    expected, expected_counts, _ = extend_table(weight[1:], ckpt.item_counts[1:], 30_000, seed=2)
    np.testing.assert_array_equal(counts, expected_counts)
    # the rows the model itself scores (F.normalize of the extended raw table), real ones first
    served = torch.nn.functional.normalize(torch.from_numpy(expected), dim=1).numpy()
    np.testing.assert_allclose(table, served, atol=1e-6)
    real = torch.nn.functional.normalize(torch.from_numpy(weight[1:]), dim=1).numpy()
    np.testing.assert_allclose(table[: len(real)], real, atol=1e-6)


def test_ivf_with_an_hnsw_coarse_quantizer_builds_from_a_memmap_and_keeps_its_tuning(tmp_path):
    rng = np.random.default_rng(6)
    centres = rng.standard_normal((64, 32)).astype(np.float32)
    items = centres[rng.integers(0, 64, 40_000)] + 0.3 * rng.standard_normal((40_000, 32)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    queries = items[rng.integers(0, 40_000, 200)] + 0.05 * rng.standard_normal((200, 32)).astype(np.float32)
    np.save(tmp_path / "items.npy", items)
    mapped = np.load(tmp_path / "items.npy", mmap_mode="r")
    spec = faiss_index.IndexSpec(kind="ivfsq", coarse="hnsw", nlist=256)
    index, report = faiss_index.build_index(mapped, spec, tune_queries=queries, target_recall=0.9)
    assert report.params["coarse"] == "hnsw" and report.params["nlist"] == 256 and report.recall_at_20 >= 0.9
    quantizer = faiss.downcast_index(faiss.extract_index_ivf(index).quantizer)
    assert isinstance(quantizer, faiss.IndexHNSWFlat)
    assert quantizer.hnsw.efSearch >= report.params["nprobe"]  # the graph returns every list that is probed
    loaded = faiss_index.load_index(faiss_index.save_index(index, tmp_path / "items.faiss"))
    assert faiss_index.recall_at_k(loaded, items, queries) == report.recall_at_20  # the tuned search is what is served
    with pytest.raises(ValueError, match="coarse quantizer"):
        faiss_index.build_index(items, faiss_index.IndexSpec(kind="ivf", coarse="pq"))


def test_ivfpq_with_an_exact_rerank_answers_with_exact_scores_and_keeps_it_through_save_load(tmp_path):
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((64, 32)).astype(np.float32)
    items = centres[rng.integers(0, 64, 30_000)] + 0.3 * rng.standard_normal((30_000, 32)).astype(np.float32)
    queries = centres[rng.integers(0, 64, 200)] + 0.3 * rng.standard_normal((200, 32)).astype(np.float32)
    plain, plain_report = faiss_index.build_index(items, faiss_index.IndexSpec(kind="ivfpq", nprobe=8, pq_m=4))
    index, report = faiss_index.build_index(items, faiss_index.IndexSpec(kind="ivfpq", nprobe=8, pq_m=4, refine=8))
    assert report.params["refine_k_factor"] == 8 and "refine_k_factor" not in plain_report.params
    # same lists probed; the re-rank recovers what 4-byte codes lose
    assert faiss_index.recall_at_k(index, items, queries) > faiss_index.recall_at_k(plain, items, queries) + 0.1
    scores, model_ids = faiss_index.search(index, queries, 20)
    np.testing.assert_allclose(scores, np.einsum("bd,bkd->bk", queries, items[model_ids - 1]), rtol=1e-5, atol=1e-4)
    loaded = faiss_index.load_index(faiss_index.save_index(index, tmp_path / "items.faiss"))
    np.testing.assert_array_equal(faiss_index.search(loaded, queries, 20)[1], model_ids)
    with pytest.raises(ValueError, match="refine"):
        faiss_index.build_index(items, faiss_index.IndexSpec(kind="ivf", refine=-1))


def test_ivfpq_fast_scan_reranks_exactly_by_default_and_beats_its_codes_alone(tmp_path):
    """ivfpqfs: 4-bit fast-scan codes find candidates, an exact re-rank (FASTSCAN_REFINE x k by default)
    scores them, and the tuned nprobe and the re-rank survive save/load (what the stub serves)."""
    rng = np.random.default_rng(11)
    centres = rng.standard_normal((64, 32)).astype(np.float32)
    items = centres[rng.integers(0, 64, 30_000)] + 0.3 * rng.standard_normal((30_000, 32)).astype(np.float32)
    queries = centres[rng.integers(0, 64, 300)] + 0.3 * rng.standard_normal((300, 32)).astype(np.float32)
    index, report = faiss_index.build_index(items, faiss_index.IndexSpec(kind="ivfpqfs"), tune_queries=queries[:150],
                                            target_recall=0.95)
    assert report.params["pq_bits"] == 4 and report.params["pq_m"] == 16 and report.params["fast_scan"]
    assert report.params["refine_k_factor"] == faiss_index.FASTSCAN_REFINE
    assert report.recall_at_20 >= 0.95
    assert faiss_index.recall_at_k(index, items, queries[150:]) >= 0.9  # held out
    codes_only = faiss_index.build_index(items, faiss_index.IndexSpec(kind="ivfpqfs", refine=1,
                                                                      nprobe=report.params["nprobe"]))[0]
    assert faiss_index.recall_at_k(index, items, queries[150:]) > faiss_index.recall_at_k(codes_only, items, queries[150:])
    scores, model_ids = faiss_index.search(index, queries, 20)
    np.testing.assert_allclose(scores, np.einsum("bd,bkd->bk", queries, items[model_ids - 1]), rtol=1e-5, atol=1e-4)
    # one candidate pool whatever k: a request's top 20 does not change with its K or its batch's
    # largest K + seen items (the served depth), which a plain k_factor x k re-rank would do
    for k in (5, 25, 60):
        deeper = faiss_index.search(index, queries, k)[1]
        np.testing.assert_array_equal(deeper[:, :min(k, 20)], model_ids[:, :min(k, 20)])
    loaded = faiss_index.load_index(faiss_index.save_index(index, tmp_path / "items.faiss"))
    np.testing.assert_array_equal(faiss_index.search(loaded, queries, 20)[1], model_ids)
    with pytest.raises(ValueError, match="pq_m"):
        faiss_index.build_index(items, faiss_index.IndexSpec(kind="ivfpqfs", pq_m=5))
