"""Two (or more) trained models folded into one session vector: a concatenation ensemble.

A weighted sum of inner products is one inner product in the concatenated space:

    score(s, i) = sum_m w_m <s_m, v_m,i> = <[w_1 s_1 ; ... ; w_M s_M], [v_1,i ; ... ; v_M,i]>

so an ensemble of M models of dimension d_m is served exactly like one model of dimension
sum(d_m): one encoder (the members run side by side inside one ONNX graph), one item table, one
FAISS inner-product index. Nothing in export, serving or the contract special-cases it.

The weights are chosen on the time-based validation split the members were selected on (the test
set is never read), from a grid of mixing factors alpha: w = 2 * [(1 - alpha), alpha] for two members
(the factor 2 keeps the logit scale of one NISER model at alpha = 0.5). Members must share the item-id
mapping (trained on the same data) and the input schema; a member refit on the validation tail is
refused, since its validation scores would be scores on its own training data.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from sessionrec.data import DataError, earlier_cut, load_dataset, prefixes, validation_split
from sessionrec.metrics import RankingMetrics


@dataclass
class ConcatConfig:
    n_items: int = 0  # catalogue size N, the members' (they share one item-id mapping)
    dim: int = 0  # session-vector size: the sum of the members' dims (derived in validate)
    max_len: int = 32  # the members' max_len (they must agree: one set of padded inputs feeds all)
    members: list = field(default_factory=list)  # [{"family": "srgnn", "config": {...}}, ...]
    weights: list = field(default_factory=list)  # w_m per member, multiplies its session vector

    def validate(self) -> "ConcatConfig":
        from sessionrec.families import get_family

        if len(self.members) < 2:
            raise ValueError(f"a concatenation ensemble needs at least 2 members, got {len(self.members)}")
        if len(self.weights) != len(self.members):
            raise ValueError(f"{len(self.weights)} weights for {len(self.members)} members")
        if any(not math.isfinite(w) or w < 0 for w in self.weights) or not any(self.weights):
            raise ValueError(f"weights must be finite, >= 0 and not all 0, got {self.weights}")
        dims = 0
        for member in self.members:
            family = get_family(member.get("family"))
            if family.schema != "graph":
                raise ValueError(f"member family {family.name!r} takes schema {family.schema!r}; "
                                 "ensembles are built from `graph`-schema (srgnn) members")
            config = family.config_class(**member["config"]).validate()
            if config.n_items != self.n_items or config.max_len != self.max_len:
                raise ValueError(f"members disagree: n_items {config.n_items} / max_len {config.max_len} vs "
                                 f"{self.n_items} / {self.max_len}")
            dims += config.dim
        if self.dim not in (0, dims):
            raise ValueError(f"dim {self.dim} is not the members' total {dims}")
        self.dim = dims
        return self

    def to_dict(self) -> dict:
        return asdict(self)


class ConcatEnsemble(nn.Module):
    """Same interface as sessionrec.model.SessionModel (STYLE.md), on the `graph` schema."""

    def __init__(self, config: ConcatConfig):
        super().__init__()
        from sessionrec.families import get_family

        self.config = config.validate()
        self.members = nn.ModuleList(
            get_family(m["family"]).model_class(get_family(m["family"]).config_class(**m["config"]))
            for m in config.members
        )
        self.register_buffer("weights", torch.tensor(config.weights, dtype=torch.float32), persistent=False)

    def _splits(self) -> list[int]:
        return [member.config.dim for member in self.members]

    def _table(self) -> torch.Tensor:
        """(N+1, sum d) the members' scoring tables side by side."""
        return torch.cat([member._table() for member in self.members], dim=-1)

    def item_embeddings(self) -> torch.Tensor:
        return self._table()[1:]

    def encode(self, items, alias, adj_in, adj_out, mask, table=None) -> torch.Tensor:
        tables = (torch.split(table, self._splits(), dim=-1) if table is not None
                  else [member._table() for member in self.members])
        return torch.cat([
            self.weights[m] * member.encode(items, alias, adj_in, adj_out, mask, tables[m])
            for m, member in enumerate(self.members)
        ], dim=-1)

    def forward(self, items, alias, adj_in, adj_out, mask) -> torch.Tensor:
        table = self._table()
        return self.encode(items, alias, adj_in, adj_out, mask, table) @ table[1:].T

    def loss(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(scores, targets - 1)


def mixing_weights(alpha: float) -> list[float]:
    """Two members: 2 * [(1 - alpha), alpha] (alpha = 0.5: each member at its own logit scale)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    return [2.0 * (1.0 - alpha), 2.0 * alpha]


def _member_checks(ckpts: list, paths: list[str]) -> tuple[float, int]:
    """The members can be folded (same ids, same data, same validation cut); returns that cut
    (valid_fraction, valid_cut)."""
    first = ckpts[0]
    fractions = set()
    for ckpt, path in zip(ckpts, paths):
        if ckpt.schema != "graph":
            raise DataError(f"{path}: family {ckpt.family!r} (schema {ckpt.schema!r}); ensembles take srgnn members")
        if not np.array_equal(ckpt.raw_ids, first.raw_ids):
            raise DataError(f"{path}: its item-id mapping differs from {paths[0]}'s: members must be trained on the same data")
        if ckpt.model_config.max_len != first.model_config.max_len:
            raise DataError(f"{path}: max_len {ckpt.model_config.max_len} differs from {paths[0]}'s {first.model_config.max_len}")
        fraction = float(ckpt.train_config.get("valid_fraction", 0.0) or 0.0)
        if fraction <= 0 or ckpt.metrics.get("refit") or ckpt.train_config.get("refit"):
            raise DataError(f"{path}: trained without a validation split (or refit on it): the ensemble weight "
                            "must be chosen on sessions no member trained on; use the selection run's best.pt")
        fractions.add((fraction, int(ckpt.train_config.get("valid_cut", 1) or 1)))
    if len(fractions) != 1:
        raise DataError(f"members were selected on different validation cuts (valid_fraction, valid_cut) {sorted(fractions)}")
    return fractions.pop()


@torch.no_grad()
def _session_vectors(model, sessions, batch_size: int, progress: bool, label: str) -> torch.Tensor:
    from sessionrec.families import model_inputs

    model.eval()
    out = []
    starts = range(0, len(sessions), batch_size)
    for start in tqdm(starts, desc=f"encode {label}", disable=not progress, leave=False):
        out.append(model.encode(*model_inputs(model, sessions[start : start + batch_size], pad_to_longest=True)))
    return torch.cat(out)


@torch.no_grad()
def _metrics(vectors: torch.Tensor, table: torch.Tensor, targets: np.ndarray, counts, item_table, batch_size: int) -> dict:
    metrics = RankingMetrics(table.shape[0], counts, item_vectors=item_table)
    for start in range(0, len(vectors), batch_size):
        top = (vectors[start : start + batch_size] @ table.T).topk(20, dim=1).indices.numpy() + 1
        metrics.update(top, targets[start : start + batch_size])
    return metrics.result()


@dataclass
class EnsembleResult:
    checkpoint: object  # sessionrec.checkpoint.Checkpoint of the folded model
    alpha: float
    grid: list  # [{"alpha": a, "valid_HR@20": ..., "valid_MRR@20": ...}, ...]


@torch.no_grad()
def build_ensemble(paths: list[str | Path], data: str | Path, grid: list[float] | None = None,
                   batch_size: int = 500, progress: bool = True) -> EnsembleResult:
    """Fold two selection-run checkpoints into one, the mixing factor chosen on their validation split."""
    from sessionrec.checkpoint import Checkpoint, load_checkpoint

    if len(paths) != 2:
        raise DataError(f"an ensemble is built from exactly 2 checkpoints here, got {len(paths)}")
    grid = sorted(set(grid if grid is not None else [i / 10 for i in range(11)]))
    paths = [str(p) for p in paths]
    ckpts = [load_checkpoint(p) for p in paths]
    fraction, cut = _member_checks(ckpts, paths)
    dataset = load_dataset(data)
    if dataset.n_items != ckpts[0].model_config.n_items:
        raise DataError(f"{data}: {dataset.n_items} items, the checkpoints {ckpts[0].model_config.n_items}: not their data")
    if cut > 1:
        dataset = earlier_cut(dataset, fraction, cut - 1)
    _, valid_sessions = validation_split(dataset.train, fraction)
    valid_x, valid_y = prefixes(valid_sessions)
    models = [ckpt.build_model() for ckpt in ckpts]
    vectors = [_session_vectors(m, valid_x, batch_size, progress, f"member {i + 1}") for i, m in enumerate(models)]
    table = torch.cat([m.item_embeddings() for m in models], dim=1)  # (N, d1 + d2)
    item_table = np.vstack([np.zeros((1, table.shape[1]), dtype=np.float32), table.numpy()])  # RankingMetrics' layout
    counts = ckpts[0].item_counts
    rows = []
    for alpha in tqdm(grid, desc="mixing factor", disable=not progress, leave=False):
        w = mixing_weights(alpha)
        joined = torch.cat([w[0] * vectors[0], w[1] * vectors[1]], dim=1)
        result = _metrics(joined, table, valid_y, counts, item_table, batch_size)
        rows.append({"alpha": alpha, **{f"valid_{k}": v for k, v in result.items()}})
    best = max(rows, key=lambda r: r["valid_HR@20"] + r["valid_MRR@20"])  # train.py's selection score
    config = ConcatConfig(
        n_items=ckpts[0].model_config.n_items, max_len=ckpts[0].model_config.max_len,
        members=[{"family": c.family, "config": c.model_config.to_dict()} for c in ckpts],
        weights=mixing_weights(best["alpha"]),
    ).validate()
    state = {f"members.{m}.{k}": v for m, c in enumerate(ckpts) for k, v in c.state_dict.items()}
    valid = {k[len("valid_"):]: v for k, v in best.items() if k.startswith("valid_")}
    ckpt = Checkpoint(
        model_config=config, state_dict=state, raw_ids=ckpts[0].raw_ids, item_counts=counts,
        metrics={"valid": valid, "epoch": None, "ensemble": {"alpha": best["alpha"], "members": paths}},
        train_config={"ensemble_of": paths, "valid_fraction": fraction, "valid_cut": cut, "grid": grid,
                      "data": str(Path(data).resolve())},
        history=rows, family="concat",
    )
    return EnsembleResult(checkpoint=ckpt, alpha=best["alpha"], grid=rows)
