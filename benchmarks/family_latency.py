"""Encoder latency of the two model families side by side: SR-GNN (graph schema) and SASRec (sequence).

    python benchmarks/family_latency.py runs/digi-sasrec/best.pt --data ../shared/data/diginetica

Both exported to ONNX as `sessionrec export` does and run in onnxruntime, 1 intra-op thread (the served
setting), inputs padded to max_len as served, real test sessions, medians of repeated calls, the two
measured alternately in one run. Latency does not depend on weight values, so the SR-GNN encoder is
built at the documented Diginetica configuration (d=100, max_len=32, gated, 1 step, NISER) with fresh
weights unless --srgnn CHECKPOINT is given.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

from sessionrec.checkpoint import load_checkpoint
from sessionrec.data import load_dataset, prefixes
from sessionrec.export.onnx_export import TrainedEncoder, export_onnx
from sessionrec.export.precision import encoder_latency_ms
from sessionrec.families import schema_of
from sessionrec.model import ModelConfig, SessionModel
from sessionrec.serving.encoder import OnnxEncoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sasrec", help="a --model sasrec checkpoint")
    parser.add_argument("--srgnn", help="a --model srgnn checkpoint (default: fresh weights, Diginetica config)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; the median of rounds is reported")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = load_dataset(args.data)
    sessions = prefixes(dataset.test)[0][:2000]
    sasrec = load_checkpoint(args.sasrec).build_model()
    srgnn = (load_checkpoint(args.srgnn).build_model() if args.srgnn
             else SessionModel(ModelConfig(n_items=sasrec.config.n_items, dim=100, max_len=32)).eval())
    with tempfile.TemporaryDirectory() as tmp:
        encoders = {}
        for name, model in (("srgnn (graph)", srgnn), ("sasrec (sequence)", sasrec)):
            schema = schema_of(model)
            path = export_onnx(TrainedEncoder(model), Path(tmp) / f"{schema.name}.onnx", schema, model.config.max_len, sessions)
            encoders[name] = (OnnxEncoder(path, threads=1), model.config.max_len, schema.name)
        results = {name: {"b1": [], "b64": []} for name in encoders}
        for _ in range(args.rounds):
            for name, (encoder, max_len, schema) in encoders.items():
                results[name]["b1"].append(encoder_latency_ms(encoder, sessions, max_len, 1, 200, schema=schema))
                results[name]["b64"].append(encoder_latency_ms(encoder, sessions, max_len, 64, 30, schema=schema))
    print(f"machine: {platform.machine()}, {len(os.sched_getaffinity(0))} cores (shared), onnxruntime 1 thread")
    print("| encoder | max_len | b1 ms | b64 ms |")
    print("|---|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {encoders[name][1]} | {np.median(r['b1']):.3f} | {np.median(r['b64']):.2f} |")
    base = results["srgnn (graph)"]
    other = results["sasrec (sequence)"]
    print(f"ratio sasrec/srgnn: b1 {np.median(other['b1']) / np.median(base['b1']):.2f}, "
          f"b64 {np.median(other['b64']) / np.median(base['b64']):.2f}")


if __name__ == "__main__":
    main()
