"""The encoder contract: what `sessionrec export` needs from any session model, checked before export.

Version 1 (recorded in every manifest as `contract`):

- `module`: a torch nn.Module whose forward takes the tensors of one input schema
  (sessionrec.schemas: `graph` or `sequence`), positionally in the schema's order, batched (B, L, ...),
  and returns (B, d) float32 session vectors. Item ids inside are model ids: 1..N, 0 = padding.
  It must export with torch.onnx (dynamo) for dynamic B and L (plain tensor ops, no per-sample Python).
- `item_table`: (N, d) float32; row i scores model id i+1, and the score of an item is the inner
  product session vector . row (FAISS inner-product search serves exactly that).
- `raw_ids`: (N,) int64 catalogue ids, unique; raw_ids[i] is the catalogue id of table row i.
- `max_len`: sessions keep their last max_len clicks; the padded width L of every served request.
- optional `item_counts`: (N,) training clicks per item, the popularity answer when no id is known
  (default: counted from the training sessions of the export's data).

Everything else (ONNX, parity against this module, precision variants, FAISS, configs, manifest,
canaries, atomic publish) is the same export for a trained checkpoint, a converted reference
state dict, or a user's own model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from sessionrec.errors import SessionrecError
from sessionrec.schemas import InputSchema, get_schema

CONTRACT_VERSION = 1


class ContractError(SessionrecError, ValueError):
    """A model that does not fit the encoder contract; the message names the tensor or value."""


def check_state_dict(expected: dict, given: dict, where: str) -> None:
    """Same parameter names and shapes, or one message naming the first missing / extra / mismatched tensor."""
    if not isinstance(given, dict):
        raise ContractError(f"{where}: expected a state dict (name -> tensor), got {type(given).__name__}")
    missing = [k for k in expected if k not in given]
    extra = [k for k in given if k not in expected]
    if missing:
        raise ContractError(f"{where}: tensor {missing[0]!r} is missing"
                            + (f" (and {len(missing) - 1} more: {', '.join(missing[1:4])}{' ...' if len(missing) > 4 else ''})"
                               if len(missing) > 1 else "")
                            + (f"; unexpected tensors present: {', '.join(extra[:4])}" if extra else ""))
    if extra:
        raise ContractError(f"{where}: unexpected tensor {extra[0]!r} (the model has no parameter of that name"
                            + (f"; {len(extra) - 1} more" if len(extra) > 1 else "") + ")")
    for name, tensor in expected.items():
        got = given[name]
        if not isinstance(got, torch.Tensor):
            raise ContractError(f"{where}: {name!r} is a {type(got).__name__}, not a tensor")
        if tuple(got.shape) != tuple(tensor.shape):
            raise ContractError(f"{where}: tensor {name!r} has shape {list(got.shape)}, the model expects "
                                f"{list(tensor.shape)}")


@dataclass
class EncoderSpec:
    """A model that meets the contract, ready for export (see the module docstring)."""

    module: nn.Module
    item_table: np.ndarray  # (N, d) float32
    raw_ids: np.ndarray  # (N,) int64
    schema: InputSchema
    max_len: int
    item_counts: np.ndarray | None = None  # (N,) int64, or None: counted from the export's data
    source: dict = field(default_factory=dict)  # where it came from (checkpoint path + sha, import route), for the manifest
    model_config: dict = field(default_factory=dict)  # the resolved model configuration, for the manifest
    metrics: dict = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return int(self.item_table.shape[0])

    @property
    def dim(self) -> int:
        return int(self.item_table.shape[1])

    def padded_raw_ids(self) -> np.ndarray:
        """(N+1,) with -1 at model id 0: the layout of item_ids.npy in every version."""
        return np.concatenate([[-1], self.raw_ids]).astype(np.int64)

    @torch.no_grad()
    def encode(self, sessions) -> np.ndarray:
        """Sessions of model ids -> (B, d) session vectors from the PyTorch module (the parity reference)."""
        arrays = self.schema.batch(sessions, self.max_len)
        inputs = [torch.from_numpy(arrays[n]) for n in self.schema.input_names]
        return self.module(*inputs).detach().float().numpy()


def make_spec(module: nn.Module, item_table, raw_ids, schema: str, max_len: int, item_counts=None,
              source: dict | None = None, model_config: dict | None = None, metrics: dict | None = None) -> EncoderSpec:
    """Validate a user's model against the contract: one ContractError naming what does not fit."""
    schema_obj = get_schema(schema)
    if not isinstance(module, nn.Module):
        raise ContractError(f"module must be a torch nn.Module, got {type(module).__name__}")
    table = item_table.detach().cpu().numpy() if isinstance(item_table, torch.Tensor) else np.asarray(item_table)
    if table.ndim != 2 or table.shape[0] < 1 or table.shape[1] < 1:
        raise ContractError(f"item_table must be (N, d) with N, d >= 1, got shape {list(table.shape)}")
    if not np.issubdtype(table.dtype, np.floating) or not np.isfinite(table).all():
        raise ContractError(f"item_table must hold finite floats, got {table.dtype}"
                            + ("" if not np.issubdtype(table.dtype, np.floating) else " with NaN/inf entries"))
    raw = np.asarray(raw_ids)
    if raw.ndim != 1 or raw.shape[0] != table.shape[0]:
        raise ContractError(f"raw_ids must be (N,) = ({table.shape[0]},) to match item_table's rows, got shape {list(raw.shape)}")
    if not np.issubdtype(raw.dtype, np.integer):
        raise ContractError(f"raw_ids must be integer catalogue ids, got {raw.dtype}")
    if np.unique(raw).size != raw.size:
        values, counts = np.unique(raw, return_counts=True)
        raise ContractError(f"raw_ids must be unique: catalogue id {int(values[counts > 1][0])} appears more than once")
    if int(max_len) < 1:
        raise ContractError(f"max_len must be >= 1, got {max_len}")
    counts = None
    if item_counts is not None:
        counts = np.asarray(item_counts, dtype=np.int64)
        if counts.shape != raw.shape:
            raise ContractError(f"item_counts must be (N,) = ({raw.shape[0]},), got shape {list(counts.shape)}")
    spec = EncoderSpec(module.eval(), table.astype(np.float32), raw.astype(np.int64), schema_obj, int(max_len), counts,
                       source or {}, model_config or {}, metrics or {})
    _probe(spec)
    return spec


def _probe(spec: EncoderSpec) -> None:
    """Run the module on two tiny sessions: wrong inputs or output shape fail here, not inside ONNX export."""
    sessions = [[1], list(range(1, min(spec.n_items, spec.max_len) + 1))]
    try:
        out = spec.module(*[torch.from_numpy(a) for a in spec.schema.batch(sessions, spec.max_len).values()])
    except Exception as exc:  # noqa: BLE001 - any failure is the user's module not taking this schema
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ContractError(
            f"the module does not run on schema {spec.schema.name!r} inputs "
            f"({', '.join(f'{t.name} {t.dtype}' for t in spec.schema.inputs)}): {type(exc).__name__}: {first}"
        ) from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, spec.dim):
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ContractError(f"the module must return (B, d) = (2, {spec.dim}) session vectors for 2 sessions "
                            f"(d from item_table), got {shape}")
    if not torch.isfinite(out).all():
        raise ContractError("the module returned NaN/inf session vectors on a 1-click and a full-length session")
