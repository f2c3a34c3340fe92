"""Encoder latency: PyTorch eager vs onnxruntime (FP32 / FP16 / INT8), side by side, one run.

    python benchmarks/encoder_bench.py runs/digi-gated/best.pt --data ../shared/data/diginetica \
        --out docs/benchmarks/encoder.md

Same real test sessions, padded to max_len as served, 1 intra-op thread for both runtimes (the
served configuration: Triton runs instances in parallel). Quality of each precision variant is
HR@20 / MRR@20 on test prefixes with exact scoring against the FP32 item table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sessionrec.checkpoint import load_checkpoint
from sessionrec.data import item_counts, load_dataset, prefixes
from sessionrec.export.onnx_export import TrainedEncoder, export_onnx
from sessionrec.export.precision import measure_variants
from sessionrec.families import model_inputs, schema_of


def torch_latency_ms(model, sessions, max_len, batch, repeats):
    picked = [sessions[i % len(sessions)] for i in range(batch)]
    inputs = model_inputs(model, picked)  # padded to max_len, as served
    with torch.no_grad():
        model.encode(*inputs)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.encode(*inputs)
            times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--data", required=True)
    parser.add_argument("--quality-prefixes", type=int, default=5000)
    parser.add_argument("--out", default="docs/benchmarks/encoder.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = load_dataset(args.data)
    test_x, test_y = prefixes(dataset.test)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(test_x), size=min(args.quality_prefixes, len(test_x)), replace=False)
    counts = item_counts(dataset.train, dataset.n_items)
    started = dt.datetime.now(dt.timezone.utc)
    lines = [
        "# Encoder latency and precision variants",
        "",
        f"- command: `python benchmarks/encoder_bench.py {' '.join(args.checkpoints)} --data {args.data}`",
        f"- machine: {platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores (shared), "
        f"torch {torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}; 1 intra-op thread each",
        f"- date: {started:%Y-%m-%d %H:%M} UTC; inputs padded to max_len as served; medians of repeated calls",
        f"- quality: {len(pick)} random test prefixes, exact full-catalogue scoring with the FP32 item table",
        "",
        "| checkpoint | variant | b1 ms | b64 ms | speed-up vs PyTorch b1 / b64 | HR@20 | MRR@20 | top-20 agreement vs FP32 | file KiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for path in args.checkpoints:
        ckpt = load_checkpoint(path)
        model = ckpt.build_model()
        max_len = model.config.max_len
        eager_b1 = torch_latency_ms(model, test_x, max_len, 1, 200)
        eager_b64 = torch_latency_ms(model, test_x, max_len, 64, 30)
        with tempfile.TemporaryDirectory() as tmp:
            schema = schema_of(model)
            onnx_path = export_onnx(TrainedEncoder(model), Path(tmp) / "model.onnx", schema, max_len, dataset.test)
            table = model.item_embeddings().detach().numpy()
            variants = measure_variants(onnx_path, table, [test_x[i] for i in pick], test_y[pick], counts, max_len,
                                        schema=schema.name)
        name = Path(path).parent.name
        lines.append(f"| {name} | PyTorch eager FP32 | {eager_b1:.3f} | {eager_b64:.2f} | 1.0 / 1.0 | "
                     f"{variants['fp32']['HR@20']:.2f} | {variants['fp32']['MRR@20']:.2f} | 1.000 | |")
        for precision, r in variants.items():
            lines.append(
                f"| {name} | onnxruntime {precision.upper()} | {r['latency_ms_b1']:.3f} | {r['latency_ms_b64']:.2f} | "
                f"{eager_b1 / r['latency_ms_b1']:.1f} / {eager_b64 / r['latency_ms_b64']:.1f} | {r['HR@20']:.2f} | "
                f"{r['MRR@20']:.2f} | {r['top20_agreement_vs_fp32']:.3f} | {r['bytes'] // 1024} |"
            )
        print("\n".join(lines[-4:]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
