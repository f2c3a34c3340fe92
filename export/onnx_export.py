"""Encoder -> ONNX with dynamic batch and length, checked by onnx.checker and against PyTorch.

Only `encode` is exported (STYLE.md): the item table for scoring goes to FAISS. The exported graph
takes the item table already normalised (NISER), so inference never re-normalises the catalogue.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sessionrec.schemas import InputSchema

OUTPUT = "session_embedding"
OPSET = 18


class TrainedEncoder(nn.Module):
    """A sessionrec family model's encode() in eval mode, its scoring table a buffer normalised once
    (NISER), so inference never re-normalises the catalogue. Takes the schema's tensors positionally."""

    def __init__(self, model):
        super().__init__()
        self.model = model.eval()
        with torch.no_grad():
            self.register_buffer("table", model._table().detach().clone())  # (N+1, d), normalised once

    def forward(self, *inputs):
        return self.model.encode(*inputs, table=self.table)


# Above this many bytes of weights the ONNX file keeps its initializers in an external data file
# (`model.onnx.data` next to it): one protobuf message cannot exceed 2 GB, and the item table of a
# 10M-item catalogue at d=100 alone is 4 GB. Below it the file stays self-contained (one artifact).
EXTERNAL_DATA_MIN_BYTES = 1 << 30


def data_file(path: str | Path) -> Path:
    """The external data file of an ONNX file written with external data (may not exist)."""
    path = Path(path)
    return path.with_name(path.name + ".data")


def parameter_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def export_onnx(module: nn.Module, path: str | Path, schema: InputSchema, max_len: int,
                example_sessions: list[list[int]], external_data: bool | None = None) -> Path:
    """Write an ONNX file with dynamic B and L; inputs named and ordered as the schema declares (the
    Triton configs use the same names).

    external_data: None = only when the weights exceed EXTERNAL_DATA_MIN_BYTES; then the
    initializers go to data_file(path) (onnxruntime finds it next to the model file)."""
    if external_data is None:
        external_data = parameter_bytes(module) > EXTERNAL_DATA_MIN_BYTES
    path = Path(path)
    arrays = schema.batch(example_sessions[:4] or [[1]], max_len)
    args = tuple(torch.from_numpy(arrays[name]) for name in schema.input_names)
    batch, length = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("length", min=1, max=max_len)
    dynamic = tuple({0: batch, **{axis: length for axis in range(1, spec.rank + 1)}} for spec in schema.inputs)
    parameters = inspect.signature(module.forward).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        dynamic = (dynamic,)  # forward(*inputs): torch.export sees one argument holding the tuple
    # The exporter logs one warning per torchvision op it cannot register; torchvision is not used.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module.eval(),
            args,
            input_names=list(schema.input_names),
            output_names=[OUTPUT],
            dynamic_shapes=dynamic,
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    program.save(str(path), external_data=external_data)
    if external_data and data_file(path).is_file() is False:
        raise RuntimeError(f"{path}: the exporter wrote no external data file {data_file(path).name}")
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
    spec,  # sessionrec.contract.EncoderSpec: the PyTorch reference
    encoder,  # callable: dict of encoder inputs -> (B, d), e.g. sessionrec.serving.encoder.OnnxEncoder
    sessions: list[list[int]],
    max_abs_diff_limit: float = 1e-3,
    top20_agreement_limit: float = 0.99,
    batch_size: int = 256,
) -> ParityReport:
    """Session vectors and full-catalogue top-20 of the exported encoder vs PyTorch on real sessions."""
    from sessionrec.export.precision import score_rows

    spec.module.eval()
    table = torch.from_numpy(spec.item_table)  # (N, d)
    batch_size = min(batch_size, score_rows(table.shape[0]))  # bounded (B, N) score blocks at any N
    diffs, agree = [], []
    for start in range(0, len(sessions), batch_size):
        chunk = sessions[start : start + batch_size]
        ref = torch.from_numpy(spec.encode(chunk))
        got = torch.from_numpy(np.asarray(encoder(spec.schema.batch(chunk, spec.max_len)), dtype=np.float32))
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
