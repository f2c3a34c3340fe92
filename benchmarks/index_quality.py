"""What an approximate index costs in offline quality: HR@20 / MRR@20 of exact search vs IVF tuned to
several recall targets, on real test prefixes, with the batch-1 query time of each.

    python benchmarks/index_quality.py --checkpoint runs/digi-gated/best.pt \
        --data /work/shared/data/diginetica --out docs/benchmarks/index_quality.md      # ~3 min

Session vectors come from the checkpoint's PyTorch encoder (the ONNX export matches it to 1e-3);
the index is built exactly as `sessionrec export --index ivf` builds it (export/faiss_index.py),
tuned on 500 test prefixes that are not scored. HR@20 counts a hit when the next clicked item is
among the 20 items returned (the SR-GNN protocol's P@20).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, help="SR-GNN folder whose test split is scored")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--prefixes", type=int, default=20_000, help="test prefixes scored (random, seeded)")
    parser.add_argument("--targets", default="0.95,0.98,0.99,0.995", help="IVF recall@20 targets")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    import faiss
    import torch

    from sessionrec.checkpoint import load_checkpoint
    from sessionrec.data import load_dataset, prefixes
    from sessionrec.export.faiss_index import IndexSpec, build_index, search
    from sessionrec.graph import build_batch
    from sessionrec.model import graph_tensors

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)  # as served (sessionrec.serving.artifacts.load_retriever)
    began = time.monotonic()
    ckpt = load_checkpoint(args.checkpoint)
    model = ckpt.build_model().eval()
    x, y = prefixes(load_dataset(args.data).test)
    pick = np.random.default_rng(args.seed).choice(len(x), min(args.prefixes + 500, len(x)), replace=False)
    x, y = [x[i] for i in pick], y[pick]
    with torch.no_grad():
        vectors = np.concatenate([
            model.encode(*graph_tensors(build_batch(x[i : i + 512], model.config.max_len))).numpy()
            for i in range(0, len(x), 512)
        ])
    tune, vectors, y = vectors[:500], vectors[500:], y[500:]
    table = model.item_embeddings().detach().numpy()

    def quality(index) -> tuple[float, float]:
        _, ids = search(index, vectors, 20)  # model ids, as the dataset's targets
        hits = ids == y[:, None]
        return 100 * hits.any(1).mean(), 100 * (hits / np.arange(1, 21)).sum(1).mean()

    def query_ms(index) -> float:
        times = []
        for q in vectors[:2000]:
            t0 = time.perf_counter()
            index.search(q[None], 20)
            times.append(time.perf_counter() - t0)
        return 1e3 * float(np.median(times))

    flat = faiss.IndexFlatIP(table.shape[1])
    flat.add(table)
    rows = [("flat (exact)", "", 1.0, *quality(flat), query_ms(flat))]
    print(rows[-1], flush=True)
    for target in (float(t) for t in args.targets.split(",")):
        index, report = build_index(table, IndexSpec(kind="ivf"), tune_queries=tune, target_recall=target)
        params = f"nlist {report.params['nlist']}, nprobe {report.params['nprobe']}"
        rows.append((f"ivf, target {target:g}", params, report.recall_at_20, *quality(index), query_ms(index)))
        print(rows[-1], flush=True)

    exact_hr = rows[0][3]
    lines = [
        "# Exact vs IVF retrieval: offline quality and query time",
        "",
        f"- command: `python benchmarks/index_quality.py --checkpoint {args.checkpoint} --data {args.data} "
        f"--out {args.out}`",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} CPUs; took "
        f"{(time.monotonic() - began) / 60:.1f} min; faiss {faiss.__version__}, 1 OpenMP thread",
        f"- {len(y):,} random test prefixes of `{args.data}` scored; 500 others tune nprobe; "
        f"{table.shape[0]:,} items, d={table.shape[1]}",
        "",
        "| index | parameters | recall@20 vs exact (tune set) | HR@20 | MRR@20 | ΔHR@20 | query ms (batch 1, p50) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, params, recall, hr, mrr, ms in rows:
        lines.append(f"| {name} | {params} | {recall:.4f} | {hr:.2f} | {mrr:.2f} | {hr - exact_hr:+.2f} | {ms:.3f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
