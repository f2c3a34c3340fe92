"""The session graph: one builder shared by training, the Triton preprocess model and the tests.

A session s = [i1, ..., in] (model ids, oldest first) becomes a directed graph over its unique items
with an edge u -> v for every consecutive pair (repeats of an edge count once, as in SR-GNN).
Worked example, s = [5, 3, 5, 7]: nodes are the sorted unique items [3, 5, 7]; edges 5->3, 3->5,
5->7; alias (position -> node index) = [1, 0, 1, 2].

    adjacency E      in-degree  out-degree   adj_in = E.T / in-degree  adj_out = E / out-degree
        3  5  7                              (row v: mean over u->v)   (row u: mean over u->v)
    3 [ 0  1  0 ]    3: 1       3: 1         3 [ 0   1   0 ]           3 [ 0   1   0  ]
    5 [ 1  0  1 ]    5: 1       5: 2         5 [ 1   0   0 ]           5 [ .5  0   .5 ]
    7 [ 0  0  0 ]    7: 1       7: 0         7 [ 0   1   0 ]           7 [ 0   0   0  ]

This equals SR-GNN's `get_slice` (u_A_in = A / colsum, u_A_out = A.T / rowsum, concatenated and
transposed). Tensors are padded to `max_len` so every request has the same shape: the encoder's
dynamic batcher (Triton) and TensorRT profiles then batch any mix of session lengths.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SessionGraphs:
    """A batch of padded session graphs: the encoder's complete input."""

    items: np.ndarray  # (B, L) int64 node item ids, 0 = padding node
    alias: np.ndarray  # (B, L) int64 node index of each session position (0 where masked)
    adj_in: np.ndarray  # (B, L, L) float32
    adj_out: np.ndarray  # (B, L, L) float32
    mask: np.ndarray  # (B, L) float32, 1 for real session positions

    def as_dict(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in ENCODER_INPUTS}


# Encoder input order: the ONNX graph, the Triton configs and the python models all use it.
ENCODER_INPUTS = ("items", "alias", "adj_in", "adj_out", "mask")


def build_graph(session: list[int] | np.ndarray, max_len: int, pad_to: int | None = None):
    """One session (model ids, no zeros) -> (items, alias, adj_in, adj_out, mask), padded.

    Sessions longer than max_len keep their last max_len clicks (the most recent ones matter most).
    Tensors are padded to `pad_to` (default max_len; training pads to the batch's longest session
    to save work, serving always to max_len). An empty session gives an all-zero graph (mask all 0):
    callers decide what that means.
    """
    seq = np.asarray(session, dtype=np.int64)[-max_len:]
    n = seq.size
    max_len = max_len if pad_to is None else pad_to
    if n > max_len:
        raise ValueError(f"pad_to={max_len} is shorter than the session ({n} clicks)")
    items = np.zeros(max_len, dtype=np.int64)
    alias = np.zeros(max_len, dtype=np.int64)
    adj_in = np.zeros((max_len, max_len), dtype=np.float32)
    adj_out = np.zeros((max_len, max_len), dtype=np.float32)
    mask = np.zeros(max_len, dtype=np.float32)
    if n == 0:
        return items, alias, adj_in, adj_out, mask
    nodes, index = np.unique(seq, return_inverse=True)
    items[: nodes.size] = nodes
    alias[:n] = index
    mask[:n] = 1.0
    edges = np.zeros((nodes.size, nodes.size), dtype=np.float32)
    edges[index[:-1], index[1:]] = 1.0  # binary: a repeated transition is still one edge
    in_degree = edges.sum(axis=0)
    out_degree = edges.sum(axis=1)
    k = nodes.size
    adj_in[:k, :k] = edges.T / np.maximum(in_degree, 1.0)[:, None]
    adj_out[:k, :k] = edges / np.maximum(out_degree, 1.0)[:, None]
    return items, alias, adj_in, adj_out, mask


def build_graphs(sessions, max_len: int, pad_to: int) -> tuple[np.ndarray, ...]:
    """build_graph over a batch at once, padded to `pad_to`: the same arrays as stacking
    build_graph(s, max_len, pad_to) (tests/core/test_graph.py checks it), without a Python loop
    per session beyond copying the clicks in. Training builds a 512-session batch every step, and
    the per-session loop cost ~3 % of that step (docs/BENCHMARKS.md section 1)."""
    B, P = len(sessions), pad_to
    seqs = [np.asarray(s, dtype=np.int64)[-max_len:] for s in sessions]
    lengths = np.fromiter((s.size for s in seqs), dtype=np.int64, count=B)
    if B and lengths.max() > P:
        raise ValueError(f"pad_to={P} is shorter than the session ({int(lengths.max())} clicks)")
    valid = np.arange(P)[None, :] < lengths[:, None]  # (B, P) real positions
    seq = np.zeros((B, P), dtype=np.int64)
    if B:
        seq[valid] = np.concatenate(seqs)
    # Nodes = sorted unique items per row; padding sorts last (it is given the largest key).
    key = np.where(valid, seq, np.iinfo(np.int64).max)
    order = np.argsort(key, axis=1, kind="stable")
    ranked = np.take_along_axis(key, order, axis=1)
    first = np.ones((B, P), dtype=bool)
    first[:, 1:] = ranked[:, 1:] != ranked[:, :-1]  # first occurrence of each value in sorted order
    first &= np.take_along_axis(valid, order, axis=1)
    node = np.cumsum(first, axis=1) - 1  # node index of each sorted entry
    items = np.zeros((B, P), dtype=np.int64)
    rows, cols = np.nonzero(first)
    items[rows, node[rows, cols]] = ranked[rows, cols]
    alias = np.zeros((B, P), dtype=np.int64)
    np.put_along_axis(alias, order, node, axis=1)
    alias[~valid] = 0
    # Binary edges alias[t] -> alias[t+1] for consecutive clicks (a repeated transition is one edge).
    edges = np.zeros((B, P, P), dtype=np.float32)
    pair = valid[:, 1:]
    rows = np.nonzero(pair)[0]
    edges[rows, alias[:, :-1][pair], alias[:, 1:][pair]] = 1.0
    in_degree = np.maximum(edges.sum(axis=1), np.float32(1.0))  # (B, P): column sums
    out_degree = np.maximum(edges.sum(axis=2), np.float32(1.0))  # (B, P): row sums
    adj_in = edges.transpose(0, 2, 1) / in_degree[:, :, None]
    adj_out = edges / out_degree[:, :, None]
    return items, alias, adj_in, adj_out, valid.astype(np.float32)


def build_batch(sessions: list[list[int]], max_len: int, pad_to_longest: bool = False) -> SessionGraphs:
    """build_graph over a batch (padded to max_len, or to the longest session if asked)."""
    pad_to = max_len
    if pad_to_longest and sessions:
        pad_to = max(1, min(max_len, max(len(s) for s in sessions)))
    return SessionGraphs(*build_graphs(sessions, max_len, pad_to))
