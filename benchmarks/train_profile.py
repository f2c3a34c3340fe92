"""Where a training step's time goes: graph building (data loading), the encoder forward, the
full-catalogue scores + softmax cross-entropy, the backward pass and the optimizer step; per batch
size and thread count, side by side in one run. The epoch-time estimate multiplies the measured
step time by the number of steps of one epoch over every training prefix (SR-GNN protocol).

    python benchmarks/train_profile.py ../shared/data/diginetica --out docs/benchmarks/train_profile.md
    python benchmarks/train_profile.py sessionrec/data/diginetica-sample.csv --steps 5   # quick

Batches are real training prefixes drawn at random and length-bucketed as `sessionrec train` does;
each configuration runs `--steps` measured steps after 3 warm-up steps; the median per phase is
reported. `table rows with grad` is the share of item-table rows a step's gradient touches: the
full-catalogue softmax gives every row a gradient, so sparse embedding gradients (which pay when a
step touches few rows) cannot help this loss; they would need a sampled softmax.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sessionrec.data import load_dataset, prefixes
from sessionrec.graph import build_batch
from sessionrec.model import ModelConfig, SessionModel, graph_tensors

PHASES = ("graphs", "encode", "scores+softmax", "backward", "optimizer")


def profile(train_x, train_y, n_items: int, batch: int, threads: int, steps: int, dim: int, seed: int = 0) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = SessionModel(ModelConfig(n_items=n_items, dim=dim, max_len=32))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    times = {phase: [] for phase in PHASES}
    touched = []
    for step in range(steps + 3):
        idx = rng.choice(len(train_x), size=batch, replace=False)
        idx = idx[np.argsort([len(train_x[i]) for i in idx])]  # one length bucket, as training sorts them
        marks = [time.perf_counter()]
        inputs = graph_tensors(build_batch([train_x[i] for i in idx], 32, pad_to_longest=True))
        targets = torch.from_numpy(train_y[idx])
        marks.append(time.perf_counter())
        table = model._table()
        session = model.encode(*inputs, table=table)
        marks.append(time.perf_counter())
        loss = F.cross_entropy(session @ table[1:].T, targets - 1)
        marks.append(time.perf_counter())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        marks.append(time.perf_counter())
        touched.append(float((model.embedding.weight.grad[1:].abs().sum(dim=1) > 0).float().mean()))
        optimizer.step()
        marks.append(time.perf_counter())
        if step >= 3:
            for phase, (a, b) in zip(PHASES, zip(marks, marks[1:])):
                times[phase].append((b - a) * 1000)
    medians = {phase: float(np.median(values)) for phase, values in times.items()}
    step_ms = sum(medians.values())
    return {"batch": batch, "threads": threads, **medians, "step_ms": step_ms, "touched": float(np.median(touched)),
            "epoch_min": step_ms * (len(train_x) / batch) / 60000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("--batches", default="100,512", help="batch sizes, comma-separated")
    parser.add_argument("--threads", default="1,2", help="torch thread counts, comma-separated")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--out", help="write the markdown table here")
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    train_x, train_y = prefixes(dataset.train)
    rows = [profile(train_x, train_y, dataset.n_items, int(b), int(t), args.steps, args.dim)
            for b in args.batches.split(",") for t in args.threads.split(",")]
    lines = [f"Command: `python benchmarks/train_profile.py {args.data} --batches {args.batches} --threads "
             f"{args.threads} --steps {args.steps} --dim {args.dim}`; {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, "
             f"{platform.processor() or platform.machine()}, torch {torch.__version__}; "
             f"{len(train_x):,} training prefixes, {dataset.n_items:,} items. Medians of {args.steps} steps, ms.", "",
             "| batch | threads | " + " | ".join(PHASES) + " | step | est. epoch (min) | table rows with grad |",
             "|---:|---:|" + "---:|" * (len(PHASES) + 3)]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['threads']} | " + " | ".join(f"{r[p]:.1f}" for p in PHASES)
                     + f" | {r['step_ms']:.1f} | {r['epoch_min']:.1f} | {100 * r['touched']:.0f} % |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
