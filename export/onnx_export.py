"""Encoder -> ONNX with dynamic batch and length, checked by onnx.checker and against PyTorch.

Only `encode` is exported (STYLE.md): the item table for scoring goes to FAISS. The exported graph
takes the item table already normalised (NISER), so inference never re-normalises the catalogue.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sessionrec.graph import ENCODER_INPUTS, build_batch
from sessionrec.model import SessionModel, graph_tensors

OUTPUT = "session_embedding"
OPSET = 18


class _Encoder(nn.Module):
    def __init__(self, model: SessionModel):
        super().__init__()
        self.model = model.eval()
        with torch.no_grad():
            self.register_buffer("table", model._table().detach().clone())  # (N+1, d), normalised once

    def forward(self, items, alias, adj_in, adj_out, mask):
        return self.model.encode(items, alias, adj_in, adj_out, mask, table=self.table)


def export_onnx(model: SessionModel, path: str | Path, example_sessions: list[list[int]]) -> Path:
    """Write a single self-contained ONNX file (no external data) with dynamic B and L."""
    path = Path(path)
    max_len = model.config.max_len
    graphs = build_batch(example_sessions[:4] or [[1]], max_len)
    args = tuple(graph_tensors(graphs))
    batch, length = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("length", min=1, max=max_len)
    dynamic = {
        "items": {0: batch, 1: length},
        "alias": {0: batch, 1: length},
        "adj_in": {0: batch, 1: length, 2: length},
        "adj_out": {0: batch, 1: length, 2: length},
        "mask": {0: batch, 1: length},
    }
    # The exporter logs one warning per torchvision op it cannot register; torchvision is not used.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            _Encoder(model),
            args,
            input_names=list(ENCODER_INPUTS),
            output_names=[OUTPUT],
            dynamic_shapes=dynamic,
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    program.save(str(path), external_data=False)
    import onnx

    onnx.checker.check_model(str(path), full_check=True)
    return path


@dataclass
class ParityReport:
    sessions: int
    max_abs_diff: float
    top20_agreement: float  # mean |top20(onnx) ∩ top20(torch)| / 20 over the sessions
    passed: bool
    max_abs_diff_limit: float
    top20_agreement_limit: float

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def check_parity(
    model: SessionModel,
    encoder,  # callable: dict of encoder inputs -> (B, d), e.g. sessionrec.serving.encoder.OnnxEncoder
    sessions: list[list[int]],
    max_abs_diff_limit: float = 1e-3,
    top20_agreement_limit: float = 0.99,
    batch_size: int = 256,
) -> ParityReport:
    """Session vectors and full-catalogue top-20 of the exported encoder vs PyTorch on real sessions."""
    model.eval()
    table = model.item_embeddings()  # (N, d)
    diffs, agree = [], []
    for start in range(0, len(sessions), batch_size):
        graphs = build_batch(sessions[start : start + batch_size], model.config.max_len)
        ref = model.encode(*graph_tensors(graphs))
        got = torch.from_numpy(np.asarray(encoder(graphs.as_dict()), dtype=np.float32))
        diffs.append((ref - got).abs().max().item())
        top_ref = (ref @ table.T).topk(20, dim=1).indices.numpy()
        top_got = (got @ table.T).topk(20, dim=1).indices.numpy()
        agree += [len(np.intersect1d(a, b)) / 20 for a, b in zip(top_ref, top_got)]
    max_diff, agreement = float(max(diffs)), float(np.mean(agree))
    return ParityReport(
        sessions=len(sessions),
        max_abs_diff=max_diff,
        top20_agreement=agreement,
        passed=max_diff <= max_abs_diff_limit and agreement >= top20_agreement_limit,
        max_abs_diff_limit=max_abs_diff_limit,
        top20_agreement_limit=top20_agreement_limit,
    )
