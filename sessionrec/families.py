"""Model families `sessionrec train --model` knows: config class, module, input schema.

Every family has the interface of sessionrec.model.SessionModel (STYLE.md): `config` (with n_items,
dim, max_len), `encode(*schema inputs) -> (B, d)`, `item_embeddings() -> (N, d)`, `forward` =
full-catalogue scores, `loss`, and `_table()` (the scoring table incl. the padding row, as encode
uses it). Trainer, evaluator, checkpoint and exporter go through this table and never special-case
a model.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from sessionrec.ensemble import ConcatConfig, ConcatEnsemble
from sessionrec.model import ModelConfig, SessionModel
from sessionrec.sasrec import SASRec, SASRecConfig
from sessionrec.schemas import InputSchema, get_schema


@dataclass(frozen=True)
class Family:
    name: str
    config_class: type
    model_class: type
    schema: str
    summary: str
    trainable: bool = True  # False: built from trained checkpoints, not by `sessionrec train`


FAMILIES = {
    "srgnn": Family("srgnn", ModelConfig, SessionModel, "graph", "SR-GNN gated GNN + soft attention (default)"),
    "sasrec": Family("sasrec", SASRecConfig, SASRec, "sequence", "SASRec-style self-attentive sequence encoder"),
    # Not trained directly: `sessionrec ensemble` folds two trained srgnn checkpoints into one.
    "concat": Family("concat", ConcatConfig, ConcatEnsemble, "graph", "concatenation of srgnn members (sessionrec ensemble)",
                     trainable=False),
}
TRAINABLE = {name: family for name, family in FAMILIES.items() if family.trainable}
DEFAULT_FAMILY = "srgnn"  # what checkpoints written before families existed hold


def get_family(name: str | None) -> Family:
    family = FAMILIES.get(name or DEFAULT_FAMILY)
    if family is None:
        raise ValueError(f"unknown model family {name!r} (known: {', '.join(FAMILIES)})")
    return family


def family_of(model) -> Family:
    for family in FAMILIES.values():
        if type(model) is family.model_class:
            return family
    raise ValueError(f"{type(model).__name__} is not a sessionrec model family")


def family_for_config(config) -> Family:
    for family in FAMILIES.values():
        if type(config) is family.config_class:
            return family
    raise ValueError(f"{type(config).__name__} is not the config of a sessionrec model family")


def config_fields(family: Family) -> set[str]:
    return {f.name for f in fields(family.config_class)}


def schema_of(model) -> InputSchema:
    return get_schema(family_of(model).schema)


def as_tensors(arrays: dict[str, np.ndarray], schema: InputSchema) -> list[torch.Tensor]:
    """A schema batch (dict of arrays) as the encoder's positional tensors, in the schema's order."""
    return [torch.from_numpy(np.ascontiguousarray(arrays[name])) for name in schema.input_names]


def model_inputs(model, sessions, pad_to_longest: bool = False) -> list[torch.Tensor]:
    """Sessions of model ids -> the positional tensors of this model's encode()/forward()."""
    schema = schema_of(model)
    return as_tensors(schema.batch(sessions, model.config.max_len, pad_to_longest), schema)
