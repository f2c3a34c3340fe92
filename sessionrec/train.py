"""Training: Adam with step decay and L2, epochs selected on a time-based validation split.

The test set is never read here. Each epoch trains on every prefix of the training sessions (the
SR-GNN protocol), then scores the validation prefixes over the full catalogue; the checkpoint with
the best validation HR@20 + MRR@20 is kept as `best.pt`, and `last.pt` holds everything needed to
resume (weights, optimizer, scheduler, history).

With `refit`, the epoch count chosen on validation is then used to train again, from scratch, on
all training sessions (validation tail included): the data are in date order, so the most recent
sessions, the closest to the serving period, are then learnt from too. That run's checkpoint becomes
`best.pt`; the selection run's stays as `selected/best.pt`. `valid_fraction=0` is that fixed-epochs
mode on its own (no validation, `best.pt` = the last epoch).

    sessionrec train data/diginetica-sample.csv --out runs/demo --epochs 3 --dim 32   # tiny, CPU, ~1 min
    sessionrec train ../shared/data/diginetica --out runs/digi                         # full split
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from sessionrec import distributed
from sessionrec.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from sessionrec.data import DataError, SessionDataset, earlier_cut, item_counts, load_dataset, prefixes, validation_split
from sessionrec.evaluate import evaluate_model
from sessionrec.families import family_for_config, model_inputs
from sessionrec.model import ModelConfig, searched


@dataclass
class TrainConfig:
    epochs: int = 10  # upper bound; early stopping usually ends sooner
    # 512 with lr 3e-3 (SR-GNN: 100 with 1e-3) matched or beat it in the validation ablation
    # (docs/BENCHMARKS.md section 1: +0.94 HR@20 / +0.35 MRR@20) and costs less per epoch on CPU.
    batch_size: int = searched(512, ("categorical", (100, 256, 512)))
    lr: float = searched(3e-3, ("float", 3e-4, 5e-3, "log"))
    lr_decay: float = 0.1  # multiply the learning rate by this ...
    lr_decay_every: int = 3  # ... every this many epochs (SR-GNN: 0.1 every 3)
    l2: float = searched(1e-5, ("float", 1e-7, 1e-4, "log"))  # Adam weight decay, SR-GNN's value
    patience: int = 2  # stop after this many epochs without a validation gain
    valid_fraction: float = 0.1  # most recent share of training sessions held out for selection
    # 1 = validate on that newest tail; c > 1 = drop the newest c-1 tails first and validate on the one
    # before (an earlier period: checks a recipe on a second cut, so it is not fitted to one period)
    valid_cut: int = 1
    seed: int = 42
    max_train_examples: int = 0  # 0 = all prefixes; >0 samples this many per epoch (quick runs)
    eval_batch_size: int = 500
    threads: int = 0  # torch intra-op threads; 0 = torch's default (all cores)
    bucket_batches: int = 50  # sort each run of this many batches by session length (0 = off): less padding, same epoch
    max_minutes: float = 0.0  # 0 = no limit; else start no epoch expected to end past this budget
    refit: bool = False  # after selection, retrain on all training sessions for the selected epoch count


@dataclass
class TrainResult:
    best_path: Path
    last_path: Path
    best_epoch: int
    valid_metrics: dict
    history: list = field(default_factory=list)
    seconds: float = 0.0


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _length_bucketed(order: np.ndarray, sessions: list, batch_size: int, bucket: int, rng) -> list[np.ndarray]:
    """Batches of a shuffled epoch; within each window of `bucket` batches, examples are grouped by
    session length so a batch pads to a similar length (the GNN's cost grows with the padded length,
    and Diginetica prefixes are mostly short). Batch order is shuffled again, so every example is
    still seen once per epoch in random batches of similar-length sessions."""
    if not bucket:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    window = batch_size * bucket
    lengths = np.fromiter((min(len(sessions[i]), 10**6) for i in order), dtype=np.int64, count=len(order))
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(lengths[start : start + window], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def selection_score(metrics: dict) -> float:
    """One number for epoch selection: both headline metrics count (HR@20 + MRR@20)."""
    return metrics["HR@20"] + metrics["MRR@20"]


def train(
    data: str | Path | SessionDataset,
    out: str | Path,
    model_config=None,  # a family's config (sessionrec.families): ModelConfig (srgnn, default) or SASRecConfig
    config: TrainConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train with validation selection. `on_epoch(row)` sees each epoch's history row (validation
    metrics as valid_*) after it is saved; it may raise to stop early (sessionrec tune prunes so)."""
    config = config or TrainConfig()
    model_config = model_config or ModelConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    _seed(config.seed)

    dataset = data if isinstance(data, SessionDataset) else load_dataset(data)
    if config.refit:
        return _train_then_refit(dataset, out, model_config, config, resume, progress, on_epoch)
    fixed = config.valid_fraction == 0  # no selection: train exactly `epochs` on every training session
    if config.valid_cut < 1:
        raise DataError(f"valid_cut must be >= 1, got {config.valid_cut}")
    if config.valid_cut > 1 and not fixed:
        dataset = earlier_cut(dataset, config.valid_fraction, config.valid_cut - 1)
    fit_sessions, valid_sessions = (dataset.train, []) if fixed else validation_split(dataset.train, config.valid_fraction)
    train_x, train_y = prefixes(fit_sessions)
    valid_x, valid_y = prefixes(valid_sessions)
    if len(train_x) < config.batch_size or not (valid_x or fixed):
        raise DataError(
            f"{data}: too little data to train ({len(train_x)} training and {len(valid_x)} validation "
            f"prefixes; need at least one batch of {config.batch_size} and one validation prefix)"
        )
    counts = item_counts(dataset.train, dataset.n_items)
    model_config.n_items = dataset.n_items
    group = distributed.setup()  # one process, or this rank of a torchrun group (sessionrec.distributed)
    progress = progress and group.main
    family = family_for_config(model_config)
    model = family.model_class(model_config).to(group.device)
    trainer = distributed.wrap(model, group)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.l2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_decay_every, gamma=config.lr_decay)

    history: list[dict] = []
    start_epoch, best_score, best_epoch, bad_epochs = 0, -math.inf, -1, 0
    last_path, best_path = out / "last.pt", out / "best.pt"
    if resume and last_path.exists():
        state = load_checkpoint(last_path)
        model.load_state_dict({k: v.to(group.device) for k, v in state.state_dict.items()})
        optimizer.load_state_dict(state.extra["optimizer"])
        scheduler.load_state_dict(state.extra["scheduler"])
        history = state.history
        start_epoch = int(state.extra["epoch"]) + 1
        best_score, best_epoch = float(state.extra["best_score"]), int(state.extra["best_epoch"])
        bad_epochs = int(state.extra["bad_epochs"])
        torch.set_rng_state(state.extra["torch_rng"])

    def snapshot(epoch: int, metrics: dict, extra: dict | None = None) -> Checkpoint:
        return Checkpoint(
            model_config=model_config,
            state_dict={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            raw_ids=dataset.raw_ids,
            item_counts=counts,
            metrics={"valid": metrics, "epoch": epoch},
            train_config={**asdict(config), "data": None if isinstance(data, SessionDataset) else str(Path(data).resolve())},
            history=history,
            extra=extra or {},
            family=family.name,
        )

    started = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    for epoch in range(start_epoch, config.epochs):
        if bad_epochs >= config.patience and not fixed:
            break
        spent = (time.perf_counter() - started) / 60
        if config.max_minutes and history and spent + history[-1]["seconds"] / 60 > config.max_minutes:
            tqdm.write(f"stopping: another epoch would pass the {config.max_minutes:.0f}-minute budget")
            break
        epoch_started = time.perf_counter()
        model.train()
        order = rng.permutation(len(train_x))
        if config.max_train_examples:
            order = order[: config.max_train_examples]
        batches = distributed.usable(_length_bucketed(order, train_x, config.batch_size, config.bucket_batches, rng), group)
        n_batches = len(batches)
        total, bar = 0.0, tqdm(range(n_batches), desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress)
        for b in bar:
            idx = distributed.shard(batches[b], group)
            inputs = [t.to(group.device) for t in model_inputs(model, [train_x[i] for i in idx], pad_to_longest=True)]
            targets = torch.from_numpy(train_y[idx]).to(group.device)
            loss = trainer(*inputs, targets=targets)  # fused full-catalogue cross-entropy (sessionrec.losses)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
            if b % 50 == 0:
                bar.set_postfix(loss=f"{total / (b + 1):.4f}")
        scheduler.step()
        valid = (evaluate_model(model, valid_x, valid_y, counts, batch_size=config.eval_batch_size, progress=progress)
                 if not fixed else {"HR@20": math.nan, "MRR@20": math.nan})
        row = {
            "epoch": epoch + 1,
            "train_loss": total / n_batches,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - epoch_started,
            **{f"valid_{k}": v for k, v in valid.items()},
        }
        history.append(row)
        score = selection_score(valid) if not fixed else float(epoch)  # fixed: the last epoch is kept
        if score > best_score:
            best_score, best_epoch, bad_epochs = score, epoch + 1, 0
            if group.main:
                save_checkpoint(snapshot(epoch + 1, valid), best_path)
        else:
            bad_epochs += 1
        if not group.main:  # same weights and decisions as rank 0 (sessionrec.distributed); it writes
            continue
        save_checkpoint(
            snapshot(
                epoch + 1,
                valid,
                {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch,
                    "best_score": best_score,
                    "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs,
                    "torch_rng": torch.get_rng_state(),
                },
            ),
            last_path,
        )
        (out / "history.json").write_text(json.dumps(history, indent=2))
        if on_epoch is not None:
            on_epoch(row)
        if progress:
            tqdm.write(
                f"epoch {epoch + 1}: loss {row['train_loss']:.4f}  valid HR@20 {valid['HR@20']:.2f}  "
                f"MRR@20 {valid['MRR@20']:.2f}  ({row['seconds']:.0f} s)"
            )
    distributed.barrier(group)  # rank 0 has written best.pt
    best = load_checkpoint(best_path)
    if group.main:
        plot_history(history, out / "training.png")
    return TrainResult(
        best_path=best_path,
        last_path=last_path,
        best_epoch=best_epoch,
        valid_metrics=best.metrics["valid"],
        history=history,
        seconds=time.perf_counter() - started,
    )


def _train_then_refit(dataset, out, model_config, config, resume, progress, on_epoch) -> TrainResult:
    """Select the epoch count on validation (OUT/selected), then train on everything for that many."""
    import shutil
    from dataclasses import replace

    selected = train(dataset, out / "selected", replace(model_config), replace(config, refit=False),
                     resume, progress, on_epoch)
    epochs = max(selected.best_epoch, 1)
    if progress:
        tqdm.write(f"refit: {epochs} epoch(s) on all {len(dataset.train)} training sessions")
    refit = train(dataset, out / "refit", replace(model_config),
                  replace(config, refit=False, valid_fraction=0.0, epochs=epochs, max_minutes=0.0), resume, progress)
    state = load_checkpoint(refit.best_path)
    state.metrics = {**state.metrics, "valid": selected.valid_metrics, "selected_epoch": selected.best_epoch,
                     "refit": True, "note": "valid = the selection run's validation metrics (the refit saw that data)"}
    save_checkpoint(state, out / "best.pt")
    shutil.copyfile(refit.last_path, out / "last.pt")
    history = selected.history + [{**row, "refit": True} for row in refit.history]
    (out / "history.json").write_text(json.dumps(history, indent=2, default=str))
    plot_history(selected.history, out / "training.png")
    return TrainResult(best_path=out / "best.pt", last_path=out / "last.pt", best_epoch=selected.best_epoch,
                       valid_metrics=selected.valid_metrics, history=history,
                       seconds=selected.seconds + refit.seconds)


def plot_history(history: list[dict], path: Path) -> None:
    """Training loss and validation HR@20 / MRR@20 per epoch (PNG)."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.plot(epochs, [r["train_loss"] for r in history], marker="o")
    left.set(title="training loss", xlabel="epoch")
    right.plot(epochs, [r["valid_HR@20"] for r in history], marker="o", label="HR@20")
    right.plot(epochs, [r["valid_MRR@20"] for r in history], marker="o", label="MRR@20")
    right.set(title="validation (%)", xlabel="epoch")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
