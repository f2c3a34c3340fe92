"""Training speed against the SR-GNN reference code, side by side in one run on this machine.

The reference is CRIPAC-DIG/SR-GNN's `pytorch_code` (a checkout you provide; nothing of it is
copied into this project). Its own modules are imported and its training step is run as its
`train_test` loop runs it (forward, cross-entropy over the full catalogue, backward, Adam step) on
the same training prefixes; sessionrec's step is measured by benchmarks/train_profile.py's code.
Epoch time = median step time x steps per epoch over every training prefix. The trainers take turns
(`--rounds` rounds of reference, sessionrec b100, sessionrec b512), so a noisy machine slows all of
them alike; the median over rounds is reported.

    git clone https://github.com/CRIPAC-DIG/SR-GNN /tmp/SR-GNN     # or any checkout
    python benchmarks/reference_epoch.py ../shared/data/diginetica --reference /tmp/SR-GNN \
        --out docs/benchmarks/reference_epoch.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_profile import profile  # noqa: E402  (benchmarks/ is not a package)

from sessionrec.data import load_dataset, prefixes  # noqa: E402


def reference_step_ms(checkout: Path, train_x, train_y, n_items: int, batch: int, steps: int, threads: int) -> dict:
    sys.path.insert(0, str(checkout / "pytorch_code"))
    import model as ref_model  # the reference's model.py
    import utils as ref_utils  # the reference's utils.py

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    opt = SimpleNamespace(hiddenSize=100, batchSize=batch, nonhybrid=False, step=1, lr=1e-3, l2=1e-5,
                          lr_dc_step=3, lr_dc=0.1)
    # The reference numbers items 1..N and sizes its table n_node = N + 1 (Diginetica: 43098).
    net = ref_model.SessionGraph(opt, n_items + 1)
    data = ref_utils.Data((train_x, list(train_y)), shuffle=True)
    slices = data.generate_batch(batch)
    net.train()
    times = []
    for j, i in enumerate(slices[: steps + 3]):
        start = time.perf_counter()
        net.optimizer.zero_grad()
        targets, scores = ref_model.forward(net, i, data)
        loss = net.loss_function(scores, torch.Tensor(targets).long() - 1)
        loss.backward()
        net.optimizer.step()
        if j >= 3:
            times.append((time.perf_counter() - start) * 1000)
    step = float(np.median(times))
    return {"step_ms": step, "epoch_min": step * len(slices) / 60000, "padded_length": int(data.len_max)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("--reference", required=True, type=Path, help="a checkout of CRIPAC-DIG/SR-GNN")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    train_x, train_y = prefixes(dataset.train)
    refs, ours_runs = [], {100: [], 512: []}
    for _ in range(args.rounds):
        refs.append(reference_step_ms(args.reference, train_x, train_y, dataset.n_items, 100, args.steps, args.threads))
        for batch in ours_runs:
            # the batches `sessionrec train` draws (length-bucketed), the training step it runs
            ours_runs[batch].append(profile(train_x, train_y, dataset.n_items, batch, args.threads, args.steps, 100,
                                            batching="bucketed")[0])
    median = lambda rows: min(rows, key=lambda r: abs(r["step_ms"] - float(np.median([x["step_ms"] for x in rows]))))  # noqa: E731
    ref = median(refs)
    ours = [median(rows) for rows in ours_runs.values()]
    lines = [
        f"Command: `python benchmarks/reference_epoch.py {args.data} --reference <SR-GNN checkout> --steps {args.steps} "
        f"--threads {args.threads} --rounds {args.rounds}`; {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads; "
        f"{len(train_x):,} training prefixes. Median step over {args.steps} steps, median round of {args.rounds}.", "",
        "| trainer | batch | step (ms) | est. epoch (min) | epoch speed-up vs reference |", "|---|---:|---:|---:|---:|",
        f"| SR-GNN reference (pytorch_code, pads every batch to {ref['padded_length']}) | 100 | {ref['step_ms']:.1f} | "
        f"{ref['epoch_min']:.1f} | 1.00x |",
    ]
    for row in ours:
        lines.append(f"| sessionrec (length-bucketed, pads to the batch's longest) | {row['batch']} | "
                     f"{row['step_ms']:.1f} | {row['epoch_min']:.1f} | {ref['epoch_min'] / row['epoch_min']:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
