"""Reference DGL implementation of the SR-GNN family, with its weight mapping onto sessionrec's dense model.

Runs in a DGL environment (torch + dgl + numpy; `bash scripts/dgl_env.sh`), without sessionrec.
Message passing with DGL's built-in reducers on each session's graph (unique items; an edge u -> v
for consecutive clicks, repeats once):

- cell "gated" (SR-GNN, Wu et al. 2019): a_in = mean of W_in h over in-neighbours, a_out = mean of
  W_out h over out-neighbours (fn.copy_u + fn.mean on the graph and on its reverse), h' = GRUCell([a_in; a_out], h);
- cell "mean" (the cheaper inference variant): h' = h + tanh(W [mean_in h ; mean_out h]).

Why not dgl.nn.GatedGraphConv: it *sums* per-edge messages (fn.sum), biases included, so a node's
input grows with its degree; SR-GNN (and sessionrec's `graph` schema) normalise each node's edges to a
mean. A model built on GatedGraphConv computes something the dense graph schema does not carry, and
its fixture would be refused by `sessionrec import dgl` (which is what the fixture check is for).

Readout as sessionrec.model (soft attention of the last click over every click, then [s_g ; s_l]),
NISER normalisation optional. Parameter names match sessionrec's except the cell:

    DGL (this file)                 sessionrec.model.SessionModel
    cell.edge_in / cell.edge_out    cell.edge_in / cell.edge_out          (gated)
    cell.gru.weight_ih, bias_ih     cell.w_ih.weight, bias                (GRU gates r, z, n in both)
    cell.gru.weight_hh, bias_hh     cell.w_hh.weight, bias
    cell.proj                       cell.proj                             (mean)
    embedding, readout_*, combine   the same names
"""

from __future__ import annotations

import math

import dgl
import dgl.function as fn
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

WEIGHT_MAP = {  # DGL name -> sessionrec name (anything not listed keeps its name)
    "cell.gru.weight_ih": "cell.w_ih.weight", "cell.gru.bias_ih": "cell.w_ih.bias",
    "cell.gru.weight_hh": "cell.w_hh.weight", "cell.gru.bias_hh": "cell.w_hh.bias",
}


def session_graph(session: list[int]):
    """(DGL graph over the sorted unique items, node item ids, alias: node index of each click)."""
    nodes, alias = np.unique(np.asarray(session, dtype=np.int64), return_inverse=True)
    pairs = sorted({(int(a), int(b)) for a, b in zip(alias[:-1], alias[1:])})
    src = torch.tensor([a for a, _ in pairs], dtype=torch.int64)
    dst = torch.tensor([b for _, b in pairs], dtype=torch.int64)
    return dgl.graph((src, dst), num_nodes=len(nodes)), torch.from_numpy(nodes), torch.from_numpy(alias)


def _mean_over(graph, x, name):
    graph.ndata["x"] = x
    graph.update_all(fn.copy_u("x", "m"), fn.mean("m", name))  # nodes without in-edges get 0
    return graph.ndata.pop(name)


class GatedCell(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.edge_in, self.edge_out = nn.Linear(d, d), nn.Linear(d, d)
        self.gru = nn.GRUCell(2 * d, d)

    def forward(self, graph, reverse, h):
        a = torch.cat([_mean_over(graph, self.edge_in(h), "a"), _mean_over(reverse, self.edge_out(h), "a")], dim=-1)
        return self.gru(a, h)


class MeanCell(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.proj = nn.Linear(2 * d, d)

    def forward(self, graph, reverse, h):
        return h + torch.tanh(self.proj(torch.cat([_mean_over(graph, h, "a"), _mean_over(reverse, h, "a")], dim=-1)))


class SRGNNDGL(nn.Module):
    def __init__(self, n_items: int, dim: int = 32, cell: str = "gated", steps: int = 1, normalize: bool = True,
                 scale: float = 12.0):
        super().__init__()
        self.config = dict(n_items=n_items, dim=dim, cell=cell, steps=steps, normalize=normalize, scale=scale)
        self.embedding = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.cell = GatedCell(dim) if cell == "gated" else MeanCell(dim)
        self.readout_last, self.readout_all = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.readout_score = nn.Linear(dim, 1, bias=False)
        self.combine = nn.Linear(2 * dim, dim)
        bound = 1.0 / math.sqrt(dim)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def table(self):
        w = self.embedding.weight
        return F.normalize(w, dim=-1) if self.config["normalize"] else w

    def item_table(self):
        return self.table()[1:]  # (N, d)

    def encode(self, sessions: list[list[int]]) -> torch.Tensor:
        """Sessions of model ids (1..N) -> (B, d); message passing on the batched DGL graphs."""
        parts = [session_graph(s) for s in sessions]
        graph = dgl.batch([g for g, _, _ in parts])
        reverse = dgl.reverse(graph)
        h = F.embedding(torch.cat([nodes for _, nodes, _ in parts]), self.table())  # (total nodes, d)
        for _ in range(self.config["steps"]):
            h = self.cell(graph, reverse, h)
        offsets = np.cumsum([0] + [g.num_nodes() for g, _, _ in parts[:-1]])
        L = max(len(s) for s in sessions)
        index = torch.zeros(len(sessions), L, dtype=torch.int64)
        mask = torch.zeros(len(sessions), L)
        for row, ((_, _, alias), offset) in enumerate(zip(parts, offsets)):
            index[row, : len(alias)] = alias + int(offset)
            mask[row, : len(alias)] = 1.0
        seq = h[index]  # (B, L, d) per click
        last = seq[torch.arange(len(sessions)), mask.sum(dim=1).long() - 1]  # (B, d)
        weights = self.readout_score(torch.sigmoid(self.readout_last(last).unsqueeze(1) + self.readout_all(seq)))
        session = self.combine(torch.cat([(weights * seq * mask.unsqueeze(-1)).sum(dim=1), last], dim=-1))
        if self.config["normalize"]:
            session = self.config["scale"] * F.normalize(session, dim=-1)
        return session
