"""`sessionrec import srgnn-reference`: a state dict of the public SR-GNN code -> a sessionrec checkpoint.

Source: github.com/CRIPAC-DIG/SR-GNN, `pytorch_code/model.py` (classes `SessionGraph` and `GNN`),
read for its semantics, not copied. Its parameters and how they map onto sessionrec.model.SessionModel
(node_update "gated", 1 step by default, no self-attention, no NISER normalisation):

    reference name                      shape        sessionrec                      note
    embedding.weight                    (n_node, d)  embedding.weight                row 0 unused by scores, as ours
    gnn.linear_edge_in.{weight,bias}    (d, d), (d)  cell.edge_in                    H_in = A_in (h W + b)
    gnn.linear_edge_out.{weight,bias}   (d, d), (d)  cell.edge_out
    gnn.b_iah, gnn.b_oah                (d)          folded into cell.w_ih.bias      see below
    gnn.w_ih, gnn.b_ih                  (3d, 2d), (3d) cell.w_ih                     gates r, z (its "input gate"), n
    gnn.w_hh, gnn.b_hh                  (3d, d), (3d)  cell.w_hh
    gnn.linear_edge_f.{weight,bias}     (d, d), (d)  (dropped)                       defined, never used in forward
    linear_one / linear_two             (d, d), (d)  readout_last / readout_all      q1 (last click), q2 (every click)
    linear_three.weight                 (1, d)       readout_score                   alpha = w3 sigmoid(q1 + q2)
    linear_transform.{weight,bias}      (d, 2d), (d) combine                         of [s_g ; s_l]; identity-on-s_g if nonhybrid

Hidden biases: the reference adds b_iah after the in-edge aggregation and b_oah after the out-edge one,
whatever the node's degree: a = [A_in H_in + b_iah ; A_out H_out + b_oah]. Since they enter the cell
only through w_ih, w_ih a + b_ih = w_ih [A_in H_in ; A_out H_out] + (b_ih + w_ih[:, :d] b_iah +
w_ih[:, d:] b_oah): an exact fold into our w_ih bias, no model change.

Adjacency: the reference's `get_slice` builds A = [A_in | A_out] (k x 2k) with A_in = (E / in-degree
per column)^T and A_out = (E^T / out-degree)^T, which is row v of A_in averaging v's in-neighbours and
row u of A_out averaging u's out-neighbours: sessionrec.graph's adj_in / adj_out, exactly.

Things the state dict cannot tell (flags): `step` (GNN propagation steps, reference default 1),
`nonhybrid` (reference flag: the session vector is s_g alone), and the item numbering (the reference
numbers items 1..n_node-1 in its preprocessing; by default raw id = that number, as in SR-GNN folders).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from sessionrec.checkpoint import Checkpoint, CheckpointError
from sessionrec.contract import ContractError, check_state_dict
from sessionrec.model import ModelConfig, SessionModel

UNUSED = ("gnn.linear_edge_f.weight", "gnn.linear_edge_f.bias")


def reference_shapes(n_node: int, d: int) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of SessionGraph(hiddenSize=d, n_node) (any step count: weights are shared)."""
    shapes = {"embedding.weight": (n_node, d),
              "gnn.w_ih": (3 * d, 2 * d), "gnn.w_hh": (3 * d, d), "gnn.b_ih": (3 * d,), "gnn.b_hh": (3 * d,),
              "gnn.b_iah": (d,), "gnn.b_oah": (d,)}
    for name in ("gnn.linear_edge_in", "gnn.linear_edge_out", "gnn.linear_edge_f", "linear_one", "linear_two"):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (d, d), (d,)
    shapes["linear_three.weight"] = (1, d)
    shapes["linear_transform.weight"], shapes["linear_transform.bias"] = (d, 2 * d), (d,)
    return shapes


def load_reference_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """torch.load with weights_only=True (tensors and containers only: no code runs). Accepts the bare
    state dict, or one under "state_dict" / "model", and strips DataParallel's "module." prefix."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError, io.UnsupportedOperation) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: not loadable with weights_only=True (corrupted, or it pickles objects other "
                              f"than tensors, e.g. the whole model: save model.state_dict() instead): {first}") from None
    for key in ("state_dict", "model"):
        if isinstance(payload, dict) and isinstance(payload.get(key), dict):
            payload = payload[key]
    if not isinstance(payload, dict) or "embedding.weight" not in {k.removeprefix("module.") for k in payload}:
        raise ContractError(f"{path}: not an SR-GNN reference state dict: tensor 'embedding.weight' is missing")
    return {k.removeprefix("module."): v for k, v in payload.items()}


def convert(state: dict[str, torch.Tensor], where: str, step: int = 1, nonhybrid: bool = False,
            max_len: int = 32) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Reference state dict -> (ModelConfig, sessionrec state dict); names and shapes checked first."""
    embedding = state.get("embedding.weight")
    if not isinstance(embedding, torch.Tensor) or embedding.ndim != 2 or embedding.shape[0] < 2:
        raise ContractError(f"{where}: tensor 'embedding.weight' must be (n_node, hiddenSize) with n_node >= 2")
    n_node, d = embedding.shape
    expected = {name: torch.empty(shape) for name, shape in reference_shapes(n_node, d).items()}
    given = dict(state)
    for name in UNUSED:  # harmless if a user's export dropped them
        if name not in given:
            expected.pop(name)
    check_state_dict(expected, given, f"{where} (SR-GNN reference, n_node={n_node}, hiddenSize={d})")
    s = {k: v.detach().float() for k, v in given.items()}
    w_ih = s["gnn.w_ih"]
    fold = s["gnn.b_ih"] + w_ih[:, :d] @ s["gnn.b_iah"] + w_ih[:, d:] @ s["gnn.b_oah"]  # exact: see module docstring
    if nonhybrid:  # session vector = s_g: combine([s_g; s_l]) = [I 0] [s_g; s_l]
        combine_w, combine_b = torch.cat([torch.eye(d), torch.zeros(d, d)], dim=1), torch.zeros(d)
    else:
        combine_w, combine_b = s["linear_transform.weight"], s["linear_transform.bias"]
    ours = {
        "embedding.weight": s["embedding.weight"],
        "cell.edge_in.weight": s["gnn.linear_edge_in.weight"], "cell.edge_in.bias": s["gnn.linear_edge_in.bias"],
        "cell.edge_out.weight": s["gnn.linear_edge_out.weight"], "cell.edge_out.bias": s["gnn.linear_edge_out.bias"],
        "cell.w_ih.weight": w_ih, "cell.w_ih.bias": fold,
        "cell.w_hh.weight": s["gnn.w_hh"], "cell.w_hh.bias": s["gnn.b_hh"],
        "readout_last.weight": s["linear_one.weight"], "readout_last.bias": s["linear_one.bias"],
        "readout_all.weight": s["linear_two.weight"], "readout_all.bias": s["linear_two.bias"],
        "readout_score.weight": s["linear_three.weight"],
        "combine.weight": combine_w, "combine.bias": combine_b,
    }
    config = ModelConfig(n_items=n_node - 1, dim=d, max_len=max_len, node_update="gated", steps=step,
                         attention_heads=0, normalize=False, dropout=0.0, position="none").validate()
    SessionModel(config).load_state_dict(ours)  # same names and shapes by construction; fails loudly if not
    return config, {k: v.contiguous() for k, v in ours.items()}


def import_reference(path: str | Path, data: str | None = None, step: int = 1, nonhybrid: bool = False,
                     max_len: int = 32, raw_ids: np.ndarray | None = None) -> Checkpoint:
    """The whole import: load (weights_only), check, convert, attach the item numbering and popularity.

    `data`: the click log / SR-GNN folder the model was trained on; its training clicks give the
    popularity fallback and it is the export's default verification data. `raw_ids`: (n_node - 1,)
    catalogue id of reference items 1..n_node-1 (default: the reference number itself)."""
    from sessionrec.export.exporter import _train_counts  # the same count as export_encoder's default
    from sessionrec.serving.artifacts import sha256_file

    config, state = convert(load_reference_state_dict(path), str(path), step, nonhybrid, max_len)
    if raw_ids is None:
        ids = np.arange(config.n_items + 1, dtype=np.int64)
    else:
        raw_ids = np.asarray(raw_ids, dtype=np.int64)
        if raw_ids.shape != (config.n_items,):
            raise ContractError(f"--raw-ids must hold {config.n_items} ids (reference items 1..{config.n_items}), "
                                f"got shape {list(raw_ids.shape)}")
        ids = np.concatenate([[0], raw_ids])
    ids[0] = -1
    counts = np.zeros(config.n_items + 1, dtype=np.int64)
    if data:
        from sessionrec.data import load_dataset

        counts = _train_counts(load_dataset(data), ids)
    return Checkpoint(
        model_config=config, state_dict=state, raw_ids=ids, item_counts=counts,
        train_config={"data": str(Path(data).resolve()) if data else None},
        extra={"imported_from": "srgnn-reference (CRIPAC-DIG/SR-GNN pytorch_code state dict)",
               "source": str(Path(path).resolve()), "source_sha256": sha256_file(path),
               "step": step, "nonhybrid": nonhybrid},
        family="srgnn",
    )
