"""A dense re-implementation of a DGL model, checked against its DGL recording before export.

For a custom DGL model, `sessionrec import dgl` has no weight mapping: re-implement its forward on a
schema with plain tensor ops (so it exports to ONNX), load the recorded weights under your names, and
let `sessionrec export-encoder --fixture DIR` refuse unless it reproduces the DGL model's vectors and
top-20. Here the "custom" model is the reference DGL SR-GNN, re-implemented on sessionrec's dense cell:

    sessionrec export-encoder --module examples.dense_srgnn:DenseSRGNN --init '{"n_items": 6774, "dim": 16}' \\
        --weights dense.safetensors --items items.safetensors --schema graph --max-len 16 \\
        --fixture tests/fixtures/dgl-srgnn --data sessionrec/data/diginetica-sample.csv --repository runs/repository
"""

from __future__ import annotations

from torch import nn

from sessionrec.model import ModelConfig, SessionModel


class DenseSRGNN(nn.Module):
    """forward(items, alias, adj_in, adj_out, mask) -> (B, d): the `graph` schema."""

    def __init__(self, n_items: int, dim: int, max_len: int = 16, node_update: str = "gated"):
        super().__init__()
        self.model = SessionModel(ModelConfig(n_items=n_items, dim=dim, max_len=max_len, node_update=node_update,
                                              dropout=0.0, position="none"))

    def forward(self, items, alias, adj_in, adj_out, mask):
        return self.model.encode(items, alias, adj_in, adj_out, mask)
