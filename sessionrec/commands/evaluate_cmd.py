"""`sessionrec evaluate`: full-catalogue metrics of checkpoints and baselines, side by side."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

COLUMNS = ["HR@10", "MRR@10", "NDCG@10", "HR@20", "MRR@20", "NDCG@20", "coverage@20", "popularity_bias@20",
           "novelty@20", "diversity@20"]


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "evaluate",
        help="HR/MRR/NDCG@10,20, coverage, popularity bias, novelty and diversity on the test split, baselines alongside",
        description=(
            "Rank the full catalogue for every test prefix (no sampled negatives). Baselines (POP, S-POP, "
            "V-SKNN) are fit on the same training sessions and scored by the same code. Diversity (intra-list, "
            "1 - mean pairwise cosine) uses each model's item table; baselines are scored in the first "
            "checkpoint's table (blank without a checkpoint). "
            "Example: sessionrec evaluate runs/digi/best.pt ../shared/data/diginetica --baselines pop,spop,vsknn"
        ),
    )
    parser.add_argument("checkpoints", nargs="*", help="checkpoints to evaluate (best.pt files)")
    parser.add_argument("--data", required=True, help="SR-GNN folder or raw click log (its test split is used)")
    parser.add_argument("--baselines", default="", help="comma-separated: pop,spop,vsknn")
    parser.add_argument("--latency", action="store_true",
                        help="also measure each model's encoder latency (onnxruntime, 1 thread) at batch 1 and 64")
    parser.add_argument("--json", help="write the results as JSON here")
    parser.set_defaults(run=run)


def _encoder_latency(model, sessions) -> dict:
    from sessionrec.export.onnx_export import TrainedEncoder, export_onnx
    from sessionrec.export.precision import encoder_latency_ms
    from sessionrec.families import schema_of
    from sessionrec.serving.encoder import OnnxEncoder

    schema, max_len = schema_of(model), model.config.max_len
    with tempfile.TemporaryDirectory() as tmp:
        encoder = OnnxEncoder(export_onnx(TrainedEncoder(model), Path(tmp) / "m.onnx", schema, max_len, sessions), threads=1)
        return {"encoder_ms_b1": encoder_latency_ms(encoder, sessions, max_len, 1, 100, schema=schema.name),
                "encoder_ms_b64": encoder_latency_ms(encoder, sessions, max_len, 64, 20, schema=schema.name)}


def _cell(row: dict, column: str) -> str:
    if column not in row:
        return ""
    return f"{row[column]:.3f}" if "bias" in column or "diversity" in column else f"{row[column]:.2f}"


def run(args) -> int:
    from sessionrec.baselines import Pop, SessionPop, VSKNN, evaluate_baseline
    from sessionrec.checkpoint import load_checkpoint
    from sessionrec.data import item_counts, load_dataset, prefixes
    from sessionrec.evaluate import evaluate_model, item_vectors

    dataset = load_dataset(args.data)
    test_x, test_y = prefixes(dataset.test)
    counts = item_counts(dataset.train, dataset.n_items)
    rows, vectors = [], None
    for path in args.checkpoints:
        ckpt = load_checkpoint(path)
        if not np.array_equal(ckpt.raw_ids, dataset.raw_ids):
            from sessionrec.errors import SessionrecError

            raise SessionrecError(f"{path}: its item numbering differs from {args.data}'s; evaluate on the data it was trained on")
        model = ckpt.build_model()
        vectors = item_vectors(model) if vectors is None else vectors
        started = time.perf_counter()
        metrics = evaluate_model(model, test_x, test_y, counts)
        row = {"name": str(path), "family": ckpt.family, "config": ckpt.model_config.to_dict(), "valid": ckpt.metrics.get("valid"),
               "epoch": ckpt.metrics.get("epoch"), "seconds": time.perf_counter() - started, **metrics}
        if args.latency:
            row.update(_encoder_latency(model, test_x[:256]))
        rows.append(row)
    factories = {"pop": Pop, "spop": SessionPop, "vsknn": VSKNN}
    for name in filter(None, (b.strip().lower() for b in args.baselines.split(","))):
        if name not in factories:
            raise SystemExit(f"sessionrec evaluate: error: unknown baseline {name!r} (choose from {sorted(factories)})")
        started = time.perf_counter()
        baseline = factories[name]().fit(dataset.train, dataset.n_items)
        metrics = evaluate_baseline(baseline, test_x, test_y, dataset.n_items, counts, item_vectors=vectors)
        rows.append({"name": baseline.name, "seconds": time.perf_counter() - started, **metrics})
    header = "| model | " + " | ".join(COLUMNS) + " |"
    print(header)
    print("|" + "---|" * (len(COLUMNS) + 1))
    for row in rows:
        print(f"| {row['name']} | " + " | ".join(_cell(row, c) for c in COLUMNS) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str))
    return 0
