"""SASRec-style self-attentive session encoder (Kang & McAuley, ICDM 2018) on the `sequence` schema.

The second model family, chosen over GRU4Rec because (1) it is the stronger sequence baseline on
Diginetica in the published comparisons (GRU4Rec: HR@20 29.45 in the SR-GNN paper's table, while
self-attentive encoders reach the SR-GNN range), (2) every position is computed in parallel (matmuls,
softmax, layer norm: no recurrence), which exports to ONNX with dynamic batch and length as plain ops
and batches well in onnxruntime / TensorRT, and (3) it exercises what the graph schema does not: the
raw click order with repeats and position embeddings.

    items (B, L) left-aligned clicks, mask (B, L)  ->  item + position embeddings
    -> `layers` pre-norm transformer blocks, causal self-attention (position t sees clicks <= t)
    -> final layer norm -> the hidden state at the last click -> (B, d) session vector
    [NISER (Gupta et al. 2019), as in sessionrec.model: L2-normalised item table and session vector x scale]

Same interface as sessionrec.model.SessionModel (STYLE.md): encode(items, mask) -> (B, d) [the exported
part], item_embeddings() -> (N, d), forward = encode @ table.T, loss = full-catalogue cross-entropy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sessionrec.losses import full_softmax_cross_entropy, unit_rows
from sessionrec.model import NEG


@dataclass
class SASRecConfig:
    n_items: int = 0  # catalogue size N (model ids 1..N, 0 = padding); set from the data
    dim: int = 100  # embedding / hidden size d, as the SR-GNN model's (same table size, fair comparison)
    max_len: int = 32  # clicks kept (the last ones); also the number of position embeddings
    layers: int = 2  # transformer blocks; SASRec's default
    heads: int = 2  # attention heads (must divide dim)
    dropout: float = 0.2  # embeddings, attention and feed-forward, training only (SASRec: 0.2-0.5)
    normalize: bool = True  # NISER: L2-normalise items and session vector
    scale: float = 12.0  # NISER sigma (logit temperature)

    def validate(self) -> "SASRecConfig":
        if self.n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {self.n_items}")
        if self.dim < 1 or self.max_len < 1 or self.layers < 1 or self.heads < 1:
            raise ValueError("dim, max_len, layers and heads must be >= 1")
        if self.dim % self.heads:
            raise ValueError(f"heads={self.heads} must divide dim={self.dim}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN x), then x + FFN(LN x) (SASRec eq. 4-6)."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm_attention = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.norm_ffn = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d, d))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, causal):
        B, L, d = x.shape
        q, k, v = self.qkv(self.norm_attention(x)).view(B, L, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        logits = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)  # (B, H, L, L)
        att = self.dropout(torch.softmax(logits.masked_fill(causal, NEG), dim=-1)) @ v  # (B, H, L, d/H)
        x = x + self.dropout(self.out(att.transpose(1, 2).reshape(B, L, d)))
        return x + self.dropout(self.ffn(self.norm_ffn(x)))


class SASRec(nn.Module):
    schema = "sequence"

    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.config = config.validate()
        d = config.dim
        self.embedding = nn.Embedding(config.n_items + 1, d, padding_idx=0)
        self.position = nn.Embedding(config.max_len, d)
        self.blocks = nn.ModuleList(Block(d, config.heads, config.dropout) for _ in range(config.layers))
        self.norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(config.dropout)
        bound = 1.0 / math.sqrt(d)  # the same uniform init as the SR-GNN model's table
        nn.init.uniform_(self.embedding.weight, -bound, bound)

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

    def encode(self, items, mask, table=None) -> torch.Tensor:
        """(B, L) left-aligned clicks + mask (sessionrec.sequence) -> (B, d) session vectors."""
        table = self._table() if table is None else table
        L = items.shape[1]
        positions = self.position.weight[:L]  # (L, d)
        x = self.dropout((F.embedding(items, table) + positions) * mask.unsqueeze(-1))  # (B, L, d)
        index = torch.arange(L, device=items.device)
        causal = index[None, :] > index[:, None]  # (L, L) True above the diagonal: a later click
        for block in self.blocks:
            x = block(x, causal)
        x = self.norm(x)
        last = (mask.sum(dim=1).long() - 1).clamp(min=0)  # (B,)
        session = torch.gather(x, 1, last.view(-1, 1, 1).expand(-1, 1, x.shape[-1])).squeeze(1)  # (B, d)
        if self.config.normalize:
            session = self.config.scale * F.normalize(session, dim=-1)
        return session

    def forward(self, items, mask, targets=None) -> torch.Tensor:
        """(B, N) scores over model ids 1..N (column j is item j+1); with `targets` (model ids 1..N)
        the training loss instead, the same as loss(scores, targets) but fused (sessionrec.losses)."""
        table = self._table()
        session = self.encode(items, mask, table)
        if targets is not None:
            return full_softmax_cross_entropy(session, table[1:], targets - 1)
        return session @ table[1:].T

    def loss(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(scores, targets - 1)
