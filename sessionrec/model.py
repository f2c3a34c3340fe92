"""The session model: SR-GNN (Wu et al., AAAI 2019) with optional self-attention and NISER normalisation.

Follows the SR-GNN reference implementation (github.com/CRIPAC-DIG/SR-GNN, `pytorch_code/model.py`):
a gated graph neural network over the session graph (sessionrec.graph), then a soft-attention
readout of the last item and the whole session. Options, each a field of `ModelConfig`:

- node update: the SR-GNN GRU-style gated cell, or a mean aggregation (one linear map, no gates:
  about a third of the cell's multiply-adds, for cheaper inference);
- multi-head self-attention over the session's nodes (as in GC-SAN, Xu et al. IJCAI 2019), with an
  optional low-rank key/query projection (rank r < d/heads: an approximate attention that costs less);
- NISER (Gupta et al., 2019): L2-normalised item embeddings and session vector, scaled by sigma, which
  counters popularity bias and trains faster;
- NISER+'s other parts (same paper, section 3.3): a learned position embedding added to the GNN
  outputs before the readout (forward positions 1..n, or reversed: the last click is position 1),
  and dropout on the GNN outputs as well as on the inputs;
- dropout on the item table inside the training loss (scores against a dropped-out table, training
  only; serving scores against the full table, as FAISS does).

The search space `sessionrec tune` explores is declared on the fields below (`search=`), next to
the defaults it covers (sessionrec.tune).

The interface that export, serving and tests share (STYLE.md):
    encode(items, alias, adj_in, adj_out, mask) -> (B, d) session vectors   [the only exported part]
    item_embeddings() -> (N, d) scoring table for model ids 1..N (row i-1 is item i)
    scores = encode(...) @ item_embeddings().T       (dot product: FAISS inner-product serves it)
Only tensor operations on padded inputs (no per-sample Python), so encode exports to ONNX with
dynamic batch and length.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sessionrec.losses import full_softmax_cross_entropy, unit_rows

NODE_UPDATES = ("gated", "mean")
POSITIONS = ("none", "forward", "reverse")


def searched(default, space):
    """A config field with the range `sessionrec tune` samples it from (sessionrec.tune.Space)."""
    return field(default=default, metadata={"search": space})
# Masking constant: finite so a fully padded row stays NaN-free, and small enough for FP16 (max 65504).
NEG = -1e4


@dataclass
class ModelConfig:
    n_items: int = 0  # catalogue size N (model ids 1..N, 0 = padding); set from the data
    dim: int = searched(100, ("int", 64, 256, 32))  # embedding / hidden size d; 100 as in SR-GNN
    max_len: int = 32  # sessions keep their last max_len clicks; Diginetica p99.9 is 29
    node_update: str = "gated"  # "gated" (SR-GNN GRU cell) or "mean" (cheaper, no gates)
    steps: int = 1  # propagation steps; SR-GNN found 1 best on Diginetica
    attention_heads: int = 0  # 0 = no self-attention over nodes; else number of heads (must divide dim)
    attention_rank: int = 0  # 0 = full-rank keys/queries (dim/heads per head); r > 0 = low-rank r per head
    normalize: bool = True  # NISER: L2-normalise items and session vector
    scale: float = searched(12.0, ("float", 8.0, 20.0))  # NISER sigma: logit temperature when normalize is on (paper range 10-16)
    dropout: float = searched(0.1, ("float", 0.0, 0.5))  # on node inputs, training only
    # NISER+ position embedding added to the GNN outputs; reversed (last click = 1) paid most in the
    # validation ablation (docs/BENCHMARKS.md section 1: +0.73 HR@20 / +0.56 MRR@20; forward +0.39 / +0.32)
    position: str = searched("reverse", ("categorical", POSITIONS))
    gnn_dropout: float = searched(0.0, ("float", 0.0, 0.5))  # on the GNN outputs, training only (NISER+)
    table_dropout: float = searched(0.0, ("float", 0.0, 0.3))  # on the item table in the training loss only

    def validate(self) -> "ModelConfig":
        if self.n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {self.n_items}")
        if self.node_update not in NODE_UPDATES:
            raise ValueError(f"node_update must be one of {NODE_UPDATES}, got {self.node_update!r}")
        if self.attention_heads and self.dim % self.attention_heads:
            raise ValueError(f"attention_heads={self.attention_heads} must divide dim={self.dim}")
        if self.steps < 1 or self.max_len < 1 or self.dim < 1:
            raise ValueError("steps, max_len and dim must be >= 1")
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {self.position!r}")
        for name in ("dropout", "gnn_dropout", "table_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {getattr(self, name)}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


class GatedCell(nn.Module):
    """SR-GNN's gated graph cell (eq. 1-5): messages along in/out edges, then a GRU-style update."""

    def __init__(self, d: int):
        super().__init__()
        self.edge_in = nn.Linear(d, d)
        self.edge_out = nn.Linear(d, d)
        self.w_ih = nn.Linear(2 * d, 3 * d)
        self.w_hh = nn.Linear(d, 3 * d)

    def forward(self, h, adj_in, adj_out):
        a = torch.cat([adj_in @ self.edge_in(h), adj_out @ self.edge_out(h)], dim=-1)  # (B, L, 2d)
        i_r, i_z, i_n = self.w_ih(a).chunk(3, dim=-1)
        h_r, h_z, h_n = self.w_hh(h).chunk(3, dim=-1)
        reset = torch.sigmoid(i_r + h_r)
        update = torch.sigmoid(i_z + h_z)
        new = torch.tanh(i_n + reset * h_n)
        return new + update * (h - new)  # (B, L, d)


class MeanCell(nn.Module):
    """Mean aggregation: h + tanh(W [A_in h ; A_out h]). No gates, one (2d x d) map per step."""

    def __init__(self, d: int):
        super().__init__()
        self.proj = nn.Linear(2 * d, d)

    def forward(self, h, adj_in, adj_out):
        return h + torch.tanh(self.proj(torch.cat([adj_in @ h, adj_out @ h], dim=-1)))


class NodeSelfAttention(nn.Module):
    """Multi-head self-attention over a session's nodes, residual + layer norm (GC-SAN style).

    With rank r > 0 the keys and queries are projected to r dims per head instead of d/heads:
    the score computation shrinks from L*L*d to L*L*r*heads multiply-adds.
    """

    def __init__(self, d: int, heads: int, rank: int = 0):
        super().__init__()
        self.heads = heads
        self.qk_dim = rank if rank > 0 else d // heads
        self.q = nn.Linear(d, heads * self.qk_dim)
        self.k = nn.Linear(d, heads * self.qk_dim)
        self.v = nn.Linear(d, d)
        self.out = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)

    def forward(self, h, node_mask):
        B, L, d = h.shape
        q = self.q(h).view(B, L, self.heads, self.qk_dim).transpose(1, 2)  # (B, H, L, r)
        k = self.k(h).view(B, L, self.heads, self.qk_dim).transpose(1, 2)  # (B, H, L, r)
        v = self.v(h).view(B, L, self.heads, d // self.heads).transpose(1, 2)  # (B, H, L, d/H)
        logits = q @ k.transpose(-1, -2) / math.sqrt(self.qk_dim)  # (B, H, L, L)
        logits = logits.masked_fill(node_mask[:, None, None, :] == 0, NEG)
        att = torch.softmax(logits, dim=-1) @ v  # (B, H, L, d/H)
        att = att.transpose(1, 2).reshape(B, L, d)
        return self.norm(h + self.out(att))


class SessionModel(nn.Module):
    """SR-GNN family encoder + item table; see the module docstring for the interface."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config.validate()
        d = config.dim
        self.embedding = nn.Embedding(config.n_items + 1, d, padding_idx=0)
        cell = GatedCell if config.node_update == "gated" else MeanCell
        self.cell = cell(d)
        self.attention = (
            NodeSelfAttention(d, config.attention_heads, config.attention_rank) if config.attention_heads else None
        )
        self.readout_last = nn.Linear(d, d)  # SR-GNN linear_one
        self.readout_all = nn.Linear(d, d)  # linear_two
        self.readout_score = nn.Linear(d, 1, bias=False)  # linear_three
        self.combine = nn.Linear(2 * d, d)  # linear_transform of [global ; last]
        self.dropout = nn.Dropout(config.dropout)
        self.gnn_dropout = nn.Dropout(config.gnn_dropout)
        self.table_dropout = nn.Dropout(config.table_dropout)
        # Row 0 is padding; rows 1..max_len are positions (forward or reversed).
        self.position = nn.Embedding(config.max_len + 1, d, padding_idx=0) if config.position != "none" else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # SR-GNN initialises every weight uniform(-1/sqrt(d), 1/sqrt(d)).
        bound = 1.0 / math.sqrt(self.config.dim)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)
        if self.attention is not None:
            nn.init.ones_(self.attention.norm.weight)
            nn.init.zeros_(self.attention.norm.bias)
        if self.position is not None:
            with torch.no_grad():
                self.position.weight[0].zero_()

    def _table(self) -> torch.Tensor:
        table = self.embedding.weight  # (N+1, d)
        if not self.config.normalize:
            return table
        if self.training and torch.is_grad_enabled():  # every step: the cheaper backward (sessionrec.losses)
            return unit_rows(table)
        return F.normalize(table, dim=-1)  # evaluation and ONNX export: plain operators

    def item_embeddings(self) -> torch.Tensor:
        """(N, d) scoring vectors of model ids 1..N."""
        return self._table()[1:]

    def encode(self, items, alias, adj_in, adj_out, mask, table=None) -> torch.Tensor:
        """Padded session graphs (sessionrec.graph) -> (B, d) session vectors."""
        table = self._table() if table is None else table
        h = self.dropout(F.embedding(items, table))  # (B, L, d)
        for _ in range(self.config.steps):
            h = self.cell(h, adj_in, adj_out)
        if self.attention is not None:
            h = self.attention(h, (items > 0).to(h.dtype))
        h = self.gnn_dropout(h)
        d = h.shape[-1]
        seq = torch.gather(h, 1, alias.unsqueeze(-1).expand(-1, -1, d))  # (B, L, d) per position
        lengths = mask.sum(dim=1, keepdim=True).long()  # (B, 1) clicks per session
        if self.position is not None:
            forward = torch.cumsum(torch.ones_like(alias), dim=1)  # (B, L) 1..L
            index = forward if self.config.position == "forward" else lengths - forward + 1  # last click = 1
            index = (index * mask.long()).clamp(0, self.config.max_len)  # padding -> row 0 (zeros)
            seq = seq + self.position(index)
        last_index = (lengths.squeeze(1) - 1).clamp(min=0)  # (B,)
        last = torch.gather(seq, 1, last_index.view(-1, 1, 1).expand(-1, 1, d)).squeeze(1)  # (B, d)
        weights = self.readout_score(torch.sigmoid(self.readout_last(last).unsqueeze(1) + self.readout_all(seq)))
        global_ = (weights * seq * mask.unsqueeze(-1)).sum(dim=1)  # (B, d)
        session = self.combine(torch.cat([global_, last], dim=-1))  # (B, d)
        if self.config.normalize:
            session = self.config.scale * F.normalize(session, dim=-1)
        return session

    def forward(self, items, alias, adj_in, adj_out, mask, targets=None) -> torch.Tensor:
        """(B, N) scores over model ids 1..N (column j is item j+1); with `targets` (model ids 1..N)
        the training loss instead, the same as loss(scores, targets) but fused (sessionrec.losses)."""
        table = self._table()  # normalised once per step: it is the whole catalogue
        session = self.encode(items, alias, adj_in, adj_out, mask, table)
        scoring = self.table_dropout(table[1:])  # identity unless training with table_dropout
        if targets is not None:
            return full_softmax_cross_entropy(session, scoring, targets - 1)
        return session @ scoring.T

    def loss(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the full catalogue; targets are model ids 1..N."""
        return F.cross_entropy(scores, targets - 1)


def graph_tensors(graphs) -> list[torch.Tensor]:
    """A sessionrec.graph.SessionGraphs batch as encode()'s positional tensors (ENCODER_INPUTS order).

    Lives here, not in sessionrec.graph, because the graph module must import without torch (the
    serving image has none)."""
    from sessionrec.graph import ENCODER_INPUTS

    return [torch.from_numpy(getattr(graphs, name)) for name in ENCODER_INPUTS]


class EncoderForExport(nn.Module):
    """The export boundary: encode() as forward(), in eval mode (no dropout)."""

    def __init__(self, model: SessionModel):
        super().__init__()
        self.model = model.eval()

    def forward(self, items, alias, adj_in, adj_out, mask):
        return self.model.encode(items, alias, adj_in, adj_out, mask)
