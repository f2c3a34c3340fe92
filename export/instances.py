"""How many `session_recommender` stubs (fused CPU step instances) an export asks for, by memory.

Two instances remove tritonserver 2.51's ~500 ms dynamic-batcher stalls (a request that arrives while
the only instance is being released waits out the batcher's idle timeout) and measured 2.7x the
capacity at p95 <= 70 ms on the Diginetica catalogue (docs/BENCHMARKS.md section 4). The price is a
second copy of the version in memory: each stub loads the encoder, the FAISS index and the id maps,
and during a switch both versions are loaded, so two instances hold four stubs.

Rule (`ServingConfig.fused_instances = None`, the default): 2 while one stub's estimated memory is at
most TWO_INSTANCES_MAX_STUB_BYTES (1.5 GiB), else 1. The estimate is M_base (python, onnxruntime,
FAISS: ~0.15 GB, docs/LARGE_CATALOGUES.md "Cost model") + the bytes of the files the stub loads (the
served encoder file with its external data, the retrieval folder: index, ids, popularity, one-click
table; the preprocess id map). It matched the measured RSS at 1M items (0.99 GB against 0.97 GiB;
1.03 GiB with the fast-scan index).
The budget: during a switch two versions x two instances are loaded, four stubs, at most 6 GiB at the
budget, inside the chart's 8 GiB memory request for the Triton container. The Diginetica catalogue
(43k items, ~0.19 GB a stub) and a 1M-item one (~1 GB a stub) get 2; 10M items (~5 GB) get 1.
Until 2026-12-08 the budget was 0.5 GiB and 1M items got one instance: measured at 1M on two busy
cores, one instance stalled 70 of 300 sequential requests for ~500 ms and met p95 <= 70 ms at no
load step (docs/BENCHMARKS.md §6). `--fused-instances N` overrides.
"""

from __future__ import annotations

from pathlib import Path

STUB_BASE_BYTES = 150_000_000  # python + numpy + onnxruntime + FAISS imported, no model (cost model M_base)
TWO_INSTANCES_MAX_STUB_BYTES = 3 << 29  # 1.5 GiB: a switch holds four stubs, at most 6 GiB (the chart requests 8)
ONE_CLICK_BYTES_PER_ANSWER = 12  # int64 id + float32 score per (item, rank) of the one-click table


def rule_text(budget: int = TWO_INSTANCES_MAX_STUB_BYTES) -> str:
    """The auto rule in words, recorded in the manifest next to the count it chose."""
    return (f"auto: 2 fused instances while one stub's estimated memory (M_base {STUB_BASE_BYTES} + the files it "
            f"loads) is at most {budget} bytes, else 1")


def files_bytes(paths) -> int:
    return sum(p.stat().st_size for path in paths for p in ([path] if path.is_file() else Path(path).rglob("*"))
               if p.is_file())


def stub_bytes(loaded_files_bytes: int, one_click_answers: int = 0) -> int:
    """Estimated RSS of one fused stub: M_base + what it loads (+ a one-click table not written yet)."""
    return STUB_BASE_BYTES + loaded_files_bytes + ONE_CLICK_BYTES_PER_ANSWER * one_click_answers


def choose(estimate_bytes: int, requested: int | None = None, budget: int = TWO_INSTANCES_MAX_STUB_BYTES) -> dict:
    """{"count", "chosen_by", "stub_estimate_bytes", "budget_bytes"}: `requested` when given (the CLI's
    --fused-instances), else the rule's choice."""
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ValueError(f"fused_instances must be a whole number of at least 1, got {requested!r}")
        count, chosen_by = requested, "requested"
    else:
        count, chosen_by = (2 if estimate_bytes <= budget else 1), rule_text(budget)
    return {"count": count, "chosen_by": chosen_by, "stub_estimate_bytes": int(estimate_bytes), "budget_bytes": budget}
