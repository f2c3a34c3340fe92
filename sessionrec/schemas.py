"""Input schemas: what an exported encoder takes, with the preprocessing implemented once per schema.

The encoder contract (docs/ARCHITECTURE.md, "Encoder contract"): an encoder maps the tensors of one
declared schema, batched, to (B, d) session vectors; items are scored by inner product with an (N, d)
table. Each schema's builder turns sessions of model ids (1..N, 0 = padding) into those tensors and is
the only such code: training, export (parity, precision, canaries), the Triton preprocess step, the
fused CPU step and the tests all call `SCHEMAS[name].batch(...)`.

    graph     items, alias, adj_in, adj_out, mask   the SR-GNN family (sessionrec.graph)
    sequence  items, mask                           GRU4Rec / NARM / STAMP / SASRec / CORE-style encoders

A schema is identified by name and version; both travel in the checkpoint and the manifest. Export
refuses a schema this code does not know (`get_schema`), so a server never meets one at load time.
Numpy only: the serving image has no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from sessionrec.errors import SessionrecError
from sessionrec.graph import ENCODER_INPUTS as GRAPH_INPUTS
from sessionrec.graph import build_graph, build_graphs
from sessionrec.sequence import SEQUENCE_INPUTS, build_sequence

DEFAULT_SCHEMA = "graph"  # what checkpoints and manifests written before schemas existed hold


class SchemaError(SessionrecError, ValueError):
    """An unknown schema, or tensors that do not fit the declared one."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name
    rank: int  # dimensions after the batch dimension, each of length L (the padded session width)


@dataclass(frozen=True)
class InputSchema:
    name: str
    version: int  # bumped when a tensor's meaning changes; an export records it, a server checks it
    inputs: tuple[TensorSpec, ...]  # in the encoder's positional order (ONNX input order)
    builder: Callable  # (session, max_len, pad_to) -> one array per input, unbatched
    summary: str
    # (sessions, max_len, pad_to) -> one (B, ...) array per input, equal to stacking `builder`'s;
    # a vectorised form for training, which builds a large batch every step. None = stack builder's.
    batch_builder: Callable | None = None

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    def batch(self, sessions, max_len: int, pad_to_longest: bool = False) -> dict[str, np.ndarray]:
        """Sessions of model ids -> {input name: (B, L, ...) array}, padded to max_len (serving) or,
        if asked, to the batch's longest session (training: less padding, same answers)."""
        pad_to = max_len
        if pad_to_longest and len(sessions):
            pad_to = max(1, min(max_len, max(len(s) for s in sessions)))
        if self.batch_builder is not None:
            return dict(zip(self.input_names, self.batch_builder(sessions, max_len, pad_to)))
        parts = [self.builder(s, max_len, pad_to) for s in sessions]
        if not parts:
            return {t.name: np.zeros((0,) + (pad_to,) * t.rank, dtype=t.dtype) for t in self.inputs}
        return {t.name: np.stack(column) for t, column in zip(self.inputs, zip(*parts))}

    def check(self, tensors: dict[str, np.ndarray], where: str = "encoder inputs") -> None:
        """Every declared tensor present with its dtype and rank (batch dimension included)."""
        for spec in self.inputs:
            if spec.name not in tensors:
                raise SchemaError(f"{where}: schema {self.name!r} needs tensor {spec.name!r}, which is missing "
                                  f"(got {sorted(tensors)})")
            array = np.asarray(tensors[spec.name])
            if array.dtype != np.dtype(spec.dtype) or array.ndim != spec.rank + 1:
                raise SchemaError(
                    f"{where}: tensor {spec.name!r} of schema {self.name!r} must be {spec.dtype} with "
                    f"{spec.rank + 1} dims (B{', L' * spec.rank}), got {array.dtype} with shape {list(array.shape)}"
                )

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version,
                "inputs": [{"name": t.name, "dtype": t.dtype, "dims": ["B"] + ["L"] * t.rank} for t in self.inputs]}


_GRAPH_KINDS = {"items": ("int64", 1), "alias": ("int64", 1), "adj_in": ("float32", 2), "adj_out": ("float32", 2),
                "mask": ("float32", 1)}
_SEQUENCE_KINDS = {"items": ("int64", 1), "mask": ("float32", 1)}

SCHEMAS: dict[str, InputSchema] = {
    "graph": InputSchema(
        name="graph", version=1,
        inputs=tuple(TensorSpec(n, *_GRAPH_KINDS[n]) for n in GRAPH_INPUTS),
        builder=build_graph,
        batch_builder=build_graphs,
        summary="session graph: unique items (sorted, 0-padded), alias (position -> node), "
                "row-normalised in/out adjacency, position mask (sessionrec.graph)",
    ),
    "sequence": InputSchema(
        name="sequence", version=1,
        inputs=tuple(TensorSpec(n, *_SEQUENCE_KINDS[n]) for n in SEQUENCE_INPUTS),
        builder=build_sequence,
        summary="click sequence: last max_len clicks, oldest first, left-aligned and 0-padded, "
                "position mask (sessionrec.sequence)",
    ),
}


def get_schema(name: str | None, version: int | None = None) -> InputSchema:
    """The registered schema, or a SchemaError naming the known ones (None = the pre-schema default)."""
    name = DEFAULT_SCHEMA if name is None else name
    schema = SCHEMAS.get(name)
    if schema is None:
        raise SchemaError(f"input schema {name!r} is not known to this sessionrec (known: {', '.join(SCHEMAS)}); "
                          "the server could not build its inputs, so the export is refused")
    if version is not None and int(version) != schema.version:
        raise SchemaError(f"input schema {name!r} version {version} is not supported (this sessionrec has version "
                          f"{schema.version})")
    return schema
