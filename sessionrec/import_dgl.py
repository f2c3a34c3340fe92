"""`sessionrec import dgl`: weights + parity fixture recorded in a DGL environment -> a sessionrec checkpoint.

DGL wheels load only with the torch they were built for (dgl 2.1.0: torch <= 2.2), and DGL message
passing does not export to ONNX, so a DGL model enters as a recording (contrib/dgl/record.py, run in
the DGL environment): its weights (safetensors) and a fixture of sample sessions with the DGL model's
session vectors and top-20. This module maps the reference DGL SR-GNN's weights (contrib/dgl/srgnn_dgl.py,
WEIGHT_MAP there) onto the dense SessionModel and **refuses** unless the dense model reproduces the
fixture:

    max |vector_dense - vector_dgl| <= MAX_ABS_DIFF (1e-4)      both float32; measured ~1e-6
    mean top-20 overlap             >= MIN_TOP20 (0.99)         over all fixture sessions

For a custom DGL model, re-implement it densely on a schema and check it with the same fixture
(`verify_fixture`, `sessionrec export-encoder --fixture DIR`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from sessionrec.checkpoint import Checkpoint
from sessionrec.contract import ContractError, EncoderSpec, check_state_dict
from sessionrec.model import ModelConfig, SessionModel

MAX_ABS_DIFF = 1e-4
MIN_TOP20 = 0.99
WEIGHT_MAP = {  # contrib/dgl/srgnn_dgl.py name -> sessionrec name (others keep theirs)
    "cell.gru.weight_ih": "cell.w_ih.weight", "cell.gru.bias_ih": "cell.w_ih.bias",
    "cell.gru.weight_hh": "cell.w_hh.weight", "cell.gru.bias_hh": "cell.w_hh.bias",
}
CELLS = {"gated": "gated", "mean": "mean"}  # DGL reference cell -> ModelConfig.node_update


class FixtureError(ContractError):
    """The dense model does not reproduce the DGL recording: nothing is written or published."""


@dataclass
class Fixture:
    meta: dict
    sessions: list[list[int]]  # model ids 1..N
    vectors: np.ndarray  # (S, d) the DGL model's session vectors
    top20: np.ndarray  # (S, 20) model ids, best first
    raw_ids: np.ndarray  # (N,)


@dataclass
class FixtureReport:
    sessions: int
    max_abs_diff: float
    top20_agreement: float
    max_abs_diff_limit: float = MAX_ABS_DIFF
    top20_agreement_limit: float = MIN_TOP20

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.max_abs_diff_limit and self.top20_agreement >= self.top20_agreement_limit

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def read_fixture(folder: str | Path) -> Fixture:
    from sessionrec.user_model import read_safetensors

    folder = Path(folder)
    meta_path = folder / "fixture.json"
    if not meta_path.is_file():
        raise FixtureError(f"{meta_path}: missing (record it with contrib/dgl/record.py)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != "sessionrec-dgl-fixture" or meta.get("format_version") != 1:
        raise FixtureError(f"{meta_path}: not a sessionrec DGL fixture (format version 1)")
    tensors = read_safetensors(folder / "fixture.safetensors")
    for name in ("sessions", "lengths", "vectors", "top20", "raw_ids"):
        if name not in tensors:
            raise FixtureError(f"{folder / 'fixture.safetensors'}: tensor {name!r} is missing")
    padded, lengths = tensors["sessions"].numpy(), tensors["lengths"].numpy()
    return Fixture(meta, [padded[i, : lengths[i]].tolist() for i in range(len(lengths))], tensors["vectors"].numpy(),
                   tensors["top20"].numpy(), tensors["raw_ids"].numpy())


def verify_fixture(spec: EncoderSpec, fixture: Fixture) -> FixtureReport:
    """The dense model (any contract model) against the recorded DGL vectors and top-20."""
    if spec.n_items != fixture.raw_ids.size or not np.array_equal(spec.raw_ids, fixture.raw_ids):
        raise FixtureError(f"the model's catalogue ({spec.n_items} items) is not the fixture's ({fixture.raw_ids.size})")
    too_long = [len(s) for s in fixture.sessions if len(s) > spec.max_len]
    if too_long:
        raise FixtureError(f"fixture sessions up to {max(too_long)} clicks exceed max_len {spec.max_len}: "
                           "record with sessions cut to the served max_len")
    vectors = spec.encode(fixture.sessions)
    if vectors.shape != fixture.vectors.shape:
        raise FixtureError(f"session vectors are {list(vectors.shape)}, the fixture's {list(fixture.vectors.shape)}")
    top = np.argsort(-(vectors @ spec.item_table.T), axis=1, kind="stable")[:, :20] + 1
    agreement = float(np.mean([len(np.intersect1d(a, b)) / 20 for a, b in zip(top, fixture.top20)]))
    return FixtureReport(len(fixture.sessions), float(np.abs(vectors - fixture.vectors).max()), agreement)


def convert(weights: dict[str, torch.Tensor], meta: dict, where: str) -> tuple[ModelConfig, dict]:
    if meta.get("model") != "srgnn-dgl":
        raise FixtureError(f"{where}: fixture.json says model {meta.get('model')!r}; `sessionrec import dgl` maps "
                           "the reference 'srgnn-dgl' (contrib/dgl/srgnn_dgl.py). For your own DGL model, "
                           "re-implement it densely and use `sessionrec export-encoder --fixture`")
    if meta.get("cell") not in CELLS:
        raise FixtureError(f"{where}: unknown cell {meta.get('cell')!r} (known: {', '.join(CELLS)})")
    config = ModelConfig(n_items=int(meta["n_items"]), dim=int(meta["dim"]), max_len=int(meta["max_len"]),
                         node_update=CELLS[meta["cell"]], steps=int(meta.get("steps", 1)), attention_heads=0,
                         normalize=bool(meta.get("normalize", True)), scale=float(meta.get("scale", 12.0)),
                         dropout=0.0, position="none").validate()
    ours = {WEIGHT_MAP.get(k, k): v for k, v in weights.items()}
    reverse = {v: k for k, v in WEIGHT_MAP.items()}
    expected = {reverse.get(k, k): v for k, v in SessionModel(config).state_dict().items()}
    check_state_dict(expected, weights, where)  # names as the DGL model has them
    return config, ours


def import_dgl(folder: str | Path, data: str | None = None) -> tuple[Checkpoint, FixtureReport]:
    """Convert, then check against the fixture; a FixtureError (nothing written) unless reproduced."""
    from sessionrec.contract import make_spec
    from sessionrec.export.onnx_export import TrainedEncoder
    from sessionrec.serving.artifacts import sha256_file
    from sessionrec.user_model import read_safetensors

    folder = Path(folder)
    fixture = read_fixture(folder)
    config, state = convert(read_safetensors(folder / "weights.safetensors"), fixture.meta,
                            str(folder / "weights.safetensors"))
    model = SessionModel(config)
    model.load_state_dict(state)
    model.eval()
    spec = make_spec(TrainedEncoder(model), model.item_embeddings().detach(), fixture.raw_ids, "graph", config.max_len)
    report = verify_fixture(spec, fixture)
    if not report.passed:
        raise FixtureError(
            f"{folder}: the dense model does not reproduce the DGL fixture on {report.sessions} sessions: max abs diff "
            f"{report.max_abs_diff:.2e} (limit {MAX_ABS_DIFF:.0e}), top-20 agreement {report.top20_agreement:.4f} "
            f"(limit {MIN_TOP20}); refusing to import"
        )
    ids = np.concatenate([[-1], fixture.raw_ids]).astype(np.int64)
    counts = np.zeros(ids.size, dtype=np.int64)
    if data:
        from sessionrec.data import load_dataset
        from sessionrec.export.exporter import _train_counts

        counts = _train_counts(load_dataset(data), ids)
    ckpt = Checkpoint(
        model_config=config, state_dict={k: v.contiguous() for k, v in model.state_dict().items()}, raw_ids=ids,
        item_counts=counts, train_config={"data": str(Path(data).resolve()) if data else None},
        metrics={"dgl_fixture": report.to_dict()},
        extra={"imported_from": f"dgl ({fixture.meta.get('model')}, cell {fixture.meta.get('cell')}, "
                                f"dgl {fixture.meta.get('dgl')}, torch {fixture.meta.get('torch')})",
               "fixture": str(folder.resolve()), "weights_sha256": sha256_file(folder / "weights.safetensors"),
               "recorded": fixture.meta.get("recorded")},
        family="srgnn",
    )
    return ckpt, report
