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

`--paths old,new` times both training paths side by side, interleaved step by step so machine load
hits both alike: `old` builds graphs session by session (stacked build_graph) and takes autograd's
F.cross_entropy of the (B, N) scores of a table normalised by F.normalize, as `sessionrec train`
did before; `new` is what it does now
(vectorised build_graphs, the table normalised by unit_rows and the fused loss of sessionrec.losses). Both start from the same weights and see
the same batches; the relative difference of their first losses is reported (same computation).
`--batching bucketed` draws the length-bucketed batches of a real epoch instead of random ones.
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
from sessionrec.graph import SessionGraphs, build_batch, build_graph
from sessionrec.losses import full_softmax_cross_entropy
from sessionrec.model import ModelConfig, SessionModel, graph_tensors
from sessionrec.train import TrainConfig, _length_bucketed

PHASES = ("graphs", "encode", "scores+softmax", "backward", "optimizer")


def _old_graphs(sessions, max_len: int) -> SessionGraphs:
    """The batch builder before build_graphs: build_graph per session, stacked."""
    pad_to = max(1, min(max_len, max(len(s) for s in sessions)))
    return SessionGraphs(*(np.stack(c) for c in zip(*(build_graph(s, max_len, pad_to) for s in sessions))))


def _step(path, model, optimizer, sessions, targets, marks) -> tuple[float, float]:
    graphs = _old_graphs(sessions, 32) if path == "old" else build_batch(sessions, 32, pad_to_longest=True)
    inputs = graph_tensors(graphs)
    marks.append(time.perf_counter())
    # old: autograd's F.normalize of the whole table; new: model._table() = unit_rows in training
    table = F.normalize(model.embedding.weight, dim=-1) if path == "old" else model._table()
    session = model.encode(*inputs, table=table)
    marks.append(time.perf_counter())
    if path == "old":
        loss = F.cross_entropy(session @ table[1:].T, targets - 1)
    else:
        loss = full_softmax_cross_entropy(session, table[1:], targets - 1)
    marks.append(time.perf_counter())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    marks.append(time.perf_counter())
    touched = float((model.embedding.weight.grad[1:].abs().sum(dim=1) > 0).float().mean())
    optimizer.step()
    marks.append(time.perf_counter())
    return loss.item(), touched


def profile(train_x, train_y, n_items: int, batch: int, threads: int, steps: int, dim: int, seed: int = 0,
            paths=("new",), batching: str = "random") -> list[dict]:
    torch.set_num_threads(threads)
    states = {}
    for path in paths:
        torch.manual_seed(seed)  # same initial weights for every path
        model = SessionModel(ModelConfig(n_items=n_items, dim=dim, max_len=32))
        states[path] = (model, torch.optim.Adam(model.parameters(), lr=1e-3))
    rng = np.random.default_rng(seed)
    if batching == "bucketed":  # the batches of an epoch of `sessionrec train`, in its order
        order = rng.permutation(len(train_x))[: batch * TrainConfig.bucket_batches * 4]
        drawn = _length_bucketed(order, train_x, batch, TrainConfig.bucket_batches, rng)[: steps + 3]
    else:  # random prefixes, sorted, padded to the longest of 512 random ones (usually the full 32)
        drawn = [rng.choice(len(train_x), size=batch, replace=False) for _ in range(steps + 3)]
    times = {path: {phase: [] for phase in PHASES} for path in paths}
    touched, losses = [], {path: [] for path in paths}
    for step, idx in enumerate(drawn):
        idx = idx[np.argsort([len(train_x[i]) for i in idx])]
        sessions, targets = [train_x[i] for i in idx], torch.from_numpy(train_y[idx])
        for path in paths:
            torch.manual_seed(seed + step)  # the same dropout masks for both paths
            marks = [time.perf_counter()]
            loss, rows = _step(path, *states[path], sessions, targets, marks)
            losses[path].append(loss)
            touched.append(rows)
            if step >= 3:
                for phase, (a, b) in zip(PHASES, zip(marks, marks[1:])):
                    times[path][phase].append((b - a) * 1000)
    first, *_ = (abs(a - b) / abs(b) for a, b in zip(losses[paths[0]], losses[paths[-1]]))
    # bucketed batches differ in length (cost), so their mean is the epoch's per-step cost
    average = np.mean if batching == "bucketed" else np.median
    rows = []
    for path in paths:
        medians = {phase: float(average(values)) for phase, values in times[path].items()}
        step_ms = sum(medians.values())
        rows.append({"path": path, "batch": batch, "threads": threads, **medians, "step_ms": step_ms,
                     "touched": float(np.median(touched)), "epoch_min": step_ms * (len(train_x) / batch) / 60000,
                     "loss_rel_diff": first})
    return rows


def _cpu() -> str:
    """The CPU's model name (lscpu's), for the record; the architecture if it cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("--batches", default="100,512", help="batch sizes, comma-separated")
    parser.add_argument("--threads", default="1,2", help="torch thread counts, comma-separated")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--batching", choices=("random", "bucketed"), default="random",
                        help="random: 512 random prefixes per step (the earlier figures); bucketed: the "
                             "length-bucketed batches sessionrec train draws (means, not medians)")
    parser.add_argument("--paths", default="new", help="old and/or new training path, comma-separated (module doc)")
    parser.add_argument("--out", help="write the markdown table here")
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    train_x, train_y = prefixes(dataset.train)
    paths = tuple(args.paths.split(","))
    if not set(paths) <= {"old", "new"}:
        parser.error(f"--paths takes old and/or new, got {args.paths!r}")
    rows = [row for b in args.batches.split(",") for t in args.threads.split(",")
            for row in profile(train_x, train_y, dataset.n_items, int(b), int(t), args.steps, args.dim, paths=paths,
                              batching=args.batching)]
    lines = [f"Command: `python benchmarks/train_profile.py {args.data} --batches {args.batches} --threads "
             f"{args.threads} --steps {args.steps} --dim {args.dim} --paths {args.paths} --batching {args.batching}`; "
             f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {_cpu()}, torch {torch.__version__}; "
             f"{len(train_x):,} training prefixes, {dataset.n_items:,} items. {'Means' if args.batching == 'bucketed' else 'Medians'} of {args.steps} "
             "steps, ms; loss diff: the two paths' first step (same weights, same batch).", "",
             "| path | batch | threads | " + " | ".join(PHASES) + " | step | est. epoch (min) | table rows with grad "
             "| loss rel. diff old/new |",
             "|---|---:|---:|" + "---:|" * (len(PHASES) + 4)]
    for r in rows:
        lines.append(f"| {r['path']} | {r['batch']} | {r['threads']} | " + " | ".join(f"{r[p]:.1f}" for p in PHASES)
                     + f" | {r['step_ms']:.1f} | {r['epoch_min']:.1f} | {100 * r['touched']:.0f} % "
                     f"| {r['loss_rel_diff']:.1e} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
