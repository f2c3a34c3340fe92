"""A synthetic large catalogue: a real trained checkpoint whose item table is extended to N items.

What a retailer's 1M- or 10M-item catalogue looks like to the serving path, built from a model
trained on real clicks (e.g. Diginetica, 43k items) without training at that size:

- the encoder's weights and the real items' rows, raw ids and click counts are kept as they are,
  so real test sessions still encode exactly as before and their targets are real items;
- new items (raw ids max(real) + 1, ...) get rows drawn near existing items: a parent row picked in
  proportion to its click count + 1 (popular regions of the space get more neighbours, as product
  variants do), plus Gaussian noise with per-dimension spread `noise` x the real table's spread,
  rescaled to a norm drawn from the real rows' norm distribution. The rows live in the raw
  embedding (before NISER's normalisation), so the model normalises them like the real ones;
- click counts of new items follow the Zipf law fitted to the real counts (log count against log
  rank, least squares over the ranks with at least one click), continued past the real ranks, with
  Poisson noise: a long tail of rarely or never clicked items.

The result is an ordinary `sessionrec` checkpoint, exported with the normal `sessionrec export`.

    from sessionrec.synthetic import SyntheticConfig, extend_checkpoint
    report = extend_checkpoint("runs/digi/best.pt", "/tmp/synth-1m.pt", SyntheticConfig(n_items=1_000_000))

CLI: `sessionrec synthesize-catalogue CHECKPOINT --items 1000000 --out /tmp/synth-1m.pt`.

`write_table` streams the same rows (normalised, as served) into a memory-mapped .npy instead:
what the 10M index measurements are built from without a 4 GB table in memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from sessionrec.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from sessionrec.errors import SessionrecError

EMBEDDING = "embedding.weight"  # the item table's name in every family's state dict
CHUNK = 1 << 18  # rows generated at a time: bounds the temporaries to ~100 MB at d=100


class SyntheticError(SessionrecError, ValueError):
    """The synthetic catalogue cannot be built; the message names the problem."""


@dataclass
class SyntheticConfig:
    n_items: int = 1_000_000  # catalogue size after extension (real items included)
    noise: float = 0.5  # new row = parent + N(0, (noise * per-dimension std of the real table)^2)
    seed: int = 0  # same seed, same catalogue


@dataclass
class SyntheticReport:
    real_items: int
    n_items: int
    dim: int
    zipf_exponent: float  # s in count(rank) ~ C * rank^-s, fitted on the real counts
    zipf_constant: float
    new_clicks: int  # synthetic click counts summed over the new items
    new_items_never_clicked: float  # share of new items with count 0
    config: dict

    def to_dict(self) -> dict:
        return asdict(self)


def fit_zipf(counts: np.ndarray) -> tuple[float, float]:
    """(s, C) of count(rank) = C * rank^-s, least squares in log-log over the items with a click."""
    ranked = np.sort(np.asarray(counts, dtype=np.float64))[::-1]
    ranked = ranked[ranked > 0]
    if ranked.size < 10:
        raise SyntheticError(f"need at least 10 clicked items to fit a popularity law, got {ranked.size}")
    ranks = np.arange(1, ranked.size + 1, dtype=np.float64)
    slope, intercept = np.polyfit(np.log(ranks), np.log(ranked), 1)
    return float(-slope), float(np.exp(intercept))


def extend_table(table: np.ndarray, counts: np.ndarray, n_items: int, noise: float = 0.5,
                 seed: int = 0, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Real raw rows (n, d) + counts (n,) -> (n_items, d) float32 rows and (n_items,) int64 counts.

    The first n rows and counts are the real ones, unchanged (see the module docstring for the rest).
    `out`: an (n_items, d) float32 array to fill (e.g. a view of a padded table: no 4 GB copy at 10M).
    """
    table = np.asarray(table, dtype=np.float32)
    n, d = table.shape
    if n_items < n:
        raise SyntheticError(f"n_items={n_items} is below the real catalogue's {n} items: nothing to extend")
    if noise < 0:
        raise SyntheticError(f"noise must be >= 0, got {noise}")
    s, c = fit_zipf(counts)
    rng = np.random.default_rng(seed)
    if out is None:
        out = np.empty((n_items, d), dtype=np.float32)
    elif out.shape != (n_items, d) or out.dtype != np.float32:
        raise SyntheticError(f"out must be a ({n_items}, {d}) float32 array, got {out.shape} {out.dtype}")
    out[:n] = table
    spread = table.std(axis=0).astype(np.float32) * noise  # (d,)
    norms = np.linalg.norm(table, axis=1)
    weights = np.asarray(counts, dtype=np.float64) + 1.0
    weights /= weights.sum()
    for start in range(n, n_items, CHUNK):
        stop = min(start + CHUNK, n_items)
        parents = rng.choice(n, size=stop - start, p=weights)
        rows = table[parents] + rng.standard_normal((stop - start, d), dtype=np.float32) * spread
        target = rng.choice(norms, size=stop - start).astype(np.float32)
        rows *= (target / np.maximum(np.linalg.norm(rows, axis=1), 1e-12))[:, None]
        out[start:stop] = rows
    ranks = np.arange(n + 1, n_items + 1, dtype=np.float64)
    new_counts = rng.poisson(c * ranks ** -s) if n_items > n else np.zeros(0, np.int64)
    all_counts = np.concatenate([np.asarray(counts, dtype=np.int64), new_counts.astype(np.int64)])
    return out, all_counts, (s, c)


def write_table(checkpoint: str | Path, out: str | Path, n_items: int, noise: float = 0.5, seed: int = 0,
                normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic catalogue's item table streamed into a .npy file, without holding it in memory.

    Same rows as extend_table (and so as extend_checkpoint's table with the same noise and seed),
    written chunk by chunk into a memory-mapped (n_items, d) float32 .npy; with `normalize` each row
    is divided by its L2 norm (F.normalize, eps 1e-12: what NISER-style models score, the export's
    item table). Returns (the table as a read-only memmap, the (n_items,) click counts). What a 10M
    catalogue's index is built from: 4 GB on disk, a chunk (~100 MB) in memory at a time.
    """
    ckpt = load_checkpoint(checkpoint)
    if EMBEDDING not in ckpt.state_dict:
        raise SyntheticError(f"{checkpoint}: no {EMBEDDING!r} in the weights: not an item-table model")
    weight = ckpt.state_dict[EMBEDDING].numpy()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")  # a reader never sees a half-written table
    table = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(n_items, weight.shape[1]))
    _, counts, _ = extend_table(weight[1:], ckpt.item_counts[1:], n_items, noise, seed, out=table)
    if normalize:
        for start in range(0, n_items, CHUNK):
            rows = table[start : start + CHUNK]
            rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    table.flush()
    del table
    partial.replace(out)
    return np.load(out, mmap_mode="r", allow_pickle=False), counts


def extend_checkpoint(checkpoint: str | Path, out: str | Path, config: SyntheticConfig | None = None) -> SyntheticReport:
    """Write a copy of `checkpoint` whose catalogue has config.n_items items (see the module docstring)."""
    config = config or SyntheticConfig()
    ckpt = load_checkpoint(checkpoint)
    if EMBEDDING not in ckpt.state_dict:
        raise SyntheticError(f"{checkpoint}: no {EMBEDDING!r} in the weights: not an item-table model")
    weight = ckpt.state_dict[EMBEDDING].numpy()  # (n+1, d), row 0 padding
    real = weight.shape[0] - 1
    padded = np.empty((config.n_items + 1, weight.shape[1]), dtype=np.float32)
    padded[0] = weight[0]
    _, counts, (s, c) = extend_table(weight[1:], ckpt.item_counts[1:], config.n_items, config.noise, config.seed,
                                     out=padded[1:])
    raw = np.asarray(ckpt.raw_ids, dtype=np.int64)
    new_raw = np.arange(int(raw.max()) + 1, int(raw.max()) + 1 + config.n_items - real, dtype=np.int64)
    state = dict(ckpt.state_dict)
    state[EMBEDDING] = torch.from_numpy(padded)
    model_config = type(ckpt.model_config)(**{**ckpt.model_config.to_dict(), "n_items": config.n_items})
    report = SyntheticReport(
        real_items=real, n_items=config.n_items, dim=int(weight.shape[1]), zipf_exponent=round(s, 4),
        zipf_constant=round(c, 2), new_clicks=int(counts[real:].sum()),
        new_items_never_clicked=round(float((counts[real:] == 0).mean()) if config.n_items > real else 0.0, 4),
        config=asdict(config))
    extra = {**ckpt.extra, "synthetic_catalogue": report.to_dict()}
    extra.pop("optimizer", None)  # a resumable optimizer state of the real size would not fit the new table
    extra.pop("scheduler", None)
    save_checkpoint(Checkpoint(
        model_config=model_config, state_dict=state, raw_ids=np.concatenate([raw, new_raw]),
        item_counts=np.concatenate([[0], counts]), metrics=ckpt.metrics, train_config=ckpt.train_config,
        history=ckpt.history, extra=extra, family=ckpt.family), out)
    return report
