"""The one-click answer table: the answer to every one-click session, computed at export.

A guest's first click is a session of one item, and those requests are about a fifth of real
traffic (docs/benchmarks/session.md measures it on Diginetica). Their answers depend on the item
alone, so export computes them once per version and the fused step answers them from this table
without running the encoder or FAISS. It is a version artifact like the index (checksummed in the
manifest, swapped with the version), identical on every replica, and the canaries replay
one-click requests against it. Unlike Triton's response cache, which keys on the request, it
stays correct on `recommend_session`: the click is still recorded, only the computation is skipped.

Only the default request shape is tabled (K = `k`, EXCLUDE_SEEN false); anything else is computed.
Each row is computed as a request of its own (batch 1), exactly as a live one-click request is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

IDS_FILE, SCORES_FILE = "one_click_ids.npy", "one_click_scores.npy"


@dataclass
class OneClickTable:
    ids: np.ndarray  # (N+1, K) raw ids, row = model id of the clicked item (row 0 unused)
    scores: np.ndarray  # (N+1, K) float32
    id_map: object  # preprocess.IdMap

    @property
    def k(self) -> int:
        return self.ids.shape[1]

    def lookup(self, items: np.ndarray, k: np.ndarray, exclude_seen: np.ndarray):
        """(ids (1, K), scores (1, K)) for a one-row, one-item request of the tabled shape, else None."""
        items = np.asarray(items)
        if items.shape != (1, 1) or not np.issubdtype(items.dtype, np.integer) or np.asarray(k).size != 1 or np.asarray(exclude_seen).size != 1:
            return None
        if int(np.asarray(k).reshape(-1)[0]) != self.k or bool(np.asarray(exclude_seen).reshape(-1)[0]):
            return None
        model_id = int(self.id_map.to_model(items.reshape(-1))[0])
        if model_id <= 0:  # unknown item: the fallback path counts it
            return None
        return self.ids[model_id][None, :], self.scores[model_id][None, :]


def build(pipeline, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every known item's one-click answer through `pipeline` (a LocalPipeline without a table)."""
    raw_ids = pipeline.preprocessor.id_map.raw_ids
    k = min(k, pipeline.retriever.max_k)
    ids = np.full((raw_ids.size, k), -1, dtype=np.int64)
    scores = np.zeros((raw_ids.size, k), dtype=np.float32)
    for model_id in range(1, raw_ids.size):
        answer = pipeline.recommend([int(raw_ids[model_id])], k, False)
        ids[model_id], scores[model_id] = answer.item_ids, answer.scores
    return ids, scores


def save(folder: Path, ids: np.ndarray, scores: np.ndarray) -> list[Path]:
    paths = [Path(folder) / IDS_FILE, Path(folder) / SCORES_FILE]
    np.save(paths[0], ids, allow_pickle=False)
    np.save(paths[1], scores, allow_pickle=False)
    return paths


def load(folder: Path, id_map) -> OneClickTable | None:
    """The version's table, or None when export wrote none (an older version, or a catalogue too large)."""
    from sessionrec.serving.artifacts import load_array

    folder = Path(folder)
    if not (folder / IDS_FILE).is_file():
        return None
    return OneClickTable(load_array(folder / IDS_FILE), load_array(folder / SCORES_FILE), id_map)
