"""An independent forward of the SR-GNN reference model, for tests: numpy, float64, one session at a time.

Written from the paper (Wu et al., "Session-based Recommendation with Graph Neural Networks", AAAI
2019, eq. 1-7) and the parameter list of CRIPAC-DIG/SR-GNN pytorch_code/model.py, where the code is
what trained a state dict and differs from the paper's text:
- eq. 1: a_i = [A_in[i] (V W_in^T + b_in) + b_iah ; A_out[i] (V W_out^T + b_out) + b_oah];
- eq. 2-5 as a PyTorch-style GRU: r = s(W_r a + b_r + U_r v + c_r), z = s(W_z a + b_z + U_z v + c_z),
  n = tanh(W_n a + b_n + r * (U_n v + c_n)), v' = n + z * (v - n)  (the paper writes (1-z) v + z n);
- eq. 6: alpha_i = q^T s(W_1 v_last + b_1 + W_2 v_i + b_2), s_g = sum_i alpha_i v_i, s_l = v_last;
- eq. 7: s_h = W_3 [s_g ; s_l] + b_3 (the code's order; s_h = s_g with nonhybrid); scores = s_h . e_j, j >= 1.
The session graph is built here with loops, not with sessionrec.graph: A_in row v averages v's
in-neighbours, A_out row u averages u's out-neighbours; repeated transitions count once.
Deliberately shares no code with sessionrec.
"""

import numpy as np


def reference_state_dict(n_node: int, d: int, seed: int = 0) -> dict:
    """Random weights under the reference's exact names and shapes (its init: uniform +-1/sqrt(d))."""
    import torch

    rng = np.random.default_rng(seed)
    shapes = {"embedding.weight": (n_node, d), "gnn.w_ih": (3 * d, 2 * d), "gnn.w_hh": (3 * d, d),
              "gnn.b_ih": (3 * d,), "gnn.b_hh": (3 * d,), "gnn.b_iah": (d,), "gnn.b_oah": (d,),
              "gnn.linear_edge_in.weight": (d, d), "gnn.linear_edge_in.bias": (d,),
              "gnn.linear_edge_out.weight": (d, d), "gnn.linear_edge_out.bias": (d,),
              "gnn.linear_edge_f.weight": (d, d), "gnn.linear_edge_f.bias": (d,),
              "linear_one.weight": (d, d), "linear_one.bias": (d,), "linear_two.weight": (d, d), "linear_two.bias": (d,),
              "linear_three.weight": (1, d), "linear_transform.weight": (d, 2 * d), "linear_transform.bias": (d,)}
    bound = 1 / np.sqrt(d)
    return {k: torch.from_numpy(rng.uniform(-bound, bound, size=s).astype(np.float32)) for k, s in shapes.items()}


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def session_vector(state: dict, session: list[int], step: int = 1, nonhybrid: bool = False) -> np.ndarray:
    p = {k: v.numpy().astype(np.float64) for k, v in state.items()}
    d = p["embedding.weight"].shape[1]
    nodes = sorted(set(session))
    k = len(nodes)
    edges = np.zeros((k, k))
    for a, b in zip(session[:-1], session[1:]):
        edges[nodes.index(a), nodes.index(b)] = 1.0
    a_in, a_out = np.zeros((k, k)), np.zeros((k, k))
    for v in range(k):
        incoming = [u for u in range(k) if edges[u, v]]
        for u in incoming:
            a_in[v, u] = 1.0 / len(incoming)
        outgoing = [w for w in range(k) if edges[v, w]]
        for w in outgoing:
            a_out[v, w] = 1.0 / len(outgoing)
    h = p["embedding.weight"][nodes]  # (k, d)
    for _ in range(step):
        h_in = h @ p["gnn.linear_edge_in.weight"].T + p["gnn.linear_edge_in.bias"]
        h_out = h @ p["gnn.linear_edge_out.weight"].T + p["gnn.linear_edge_out.bias"]
        a = np.concatenate([a_in @ h_in + p["gnn.b_iah"], a_out @ h_out + p["gnn.b_oah"]], axis=1)  # (k, 2d)
        gi = a @ p["gnn.w_ih"].T + p["gnn.b_ih"]
        gh = h @ p["gnn.w_hh"].T + p["gnn.b_hh"]
        r = _sigmoid(gi[:, :d] + gh[:, :d])
        z = _sigmoid(gi[:, d : 2 * d] + gh[:, d : 2 * d])
        n = np.tanh(gi[:, 2 * d :] + r * gh[:, 2 * d :])
        h = n + z * (h - n)
    seq = h[[nodes.index(i) for i in session]]  # (n, d) per click
    last = seq[-1]
    alpha = _sigmoid(last @ p["linear_one.weight"].T + p["linear_one.bias"]
                     + seq @ p["linear_two.weight"].T + p["linear_two.bias"]) @ p["linear_three.weight"].T  # (n, 1)
    s_g = (alpha * seq).sum(axis=0)
    if nonhybrid:
        return s_g
    return np.concatenate([s_g, last]) @ p["linear_transform.weight"].T + p["linear_transform.bias"]


def top20(state: dict, session: list[int], **kw) -> np.ndarray:
    """Reference item numbers (1..n_node-1), best first."""
    scores = state["embedding.weight"].numpy().astype(np.float64)[1:] @ session_vector(state, session, **kw)
    return np.argsort(-scores, kind="stable")[:20] + 1
