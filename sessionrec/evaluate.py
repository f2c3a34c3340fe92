"""Offline evaluation over the full catalogue (no sampled negatives), for the model and baselines alike."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from sessionrec.families import model_inputs
from sessionrec.metrics import RankingMetrics

K_MAX = 20


@torch.no_grad()
def model_topk(model, sessions: list[list[int]], k: int = K_MAX, batch_size: int = 500) -> np.ndarray:
    """(B, k) model ids, best first."""
    model.eval()
    out = []
    for start in range(0, len(sessions), batch_size):
        device = next(model.parameters()).device  # CPU, or the GPU a torchrun rank trains on
        inputs = [t.to(device) for t in model_inputs(model, sessions[start : start + batch_size], pad_to_longest=True)]
        out.append((model(*inputs).topk(k, dim=1).indices + 1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)


@torch.no_grad()
def item_vectors(model) -> np.ndarray:
    """(N+1, d) scoring vectors with a zero row for padding id 0 (RankingMetrics' layout)."""
    table = model.item_embeddings().cpu().numpy()
    return np.vstack([np.zeros((1, table.shape[1]), dtype=table.dtype), table])


@torch.no_grad()
def evaluate_model(
    model,  # any sessionrec.families model
    sessions: list[list[int]],
    targets: np.ndarray,
    train_counts: np.ndarray,
    batch_size: int = 500,
    progress: bool = True,
) -> dict:
    """HR/MRR/NDCG@10,20, coverage@20, popularity bias@20, novelty@20 and diversity@20 (in the model's
    own item table) of the model's full-catalogue ranking."""
    model.eval()
    metrics = RankingMetrics(model.config.n_items, train_counts, item_vectors=item_vectors(model))
    starts = range(0, len(sessions), batch_size)
    for start in tqdm(starts, desc="evaluate", disable=not progress, leave=False):
        top = model_topk(model, sessions[start : start + batch_size], K_MAX, batch_size)
        metrics.update(top, np.asarray(targets[start : start + batch_size]))
    return metrics.result()
