"""Checkpoint format: a torch.save dict of tensors and plain values, loaded with weights_only=True.

weights_only=True refuses any pickled object other than tensors and builtin containers, so a
checkpoint from an untrusted source cannot run code. Everything needed to serve is inside: model
config, weights, the raw-id mapping, training popularity (fallback answers), metrics, and the model
family with its input schema (sessionrec.families, sessionrec.schemas; absent in checkpoints written
before a second family existed, which are all `srgnn` on the `graph` schema).
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sessionrec.errors import SessionrecError
from sessionrec.families import DEFAULT_FAMILY, get_family
from sessionrec.schemas import get_schema

FORMAT = "sessionrec-checkpoint"
FORMAT_VERSION = 1
# Config fields whose default changed after they were added: a checkpoint that lacks the field was
# trained before it existed, i.e. with this value (position embeddings became the default in issue 14).
LEGACY_VALUES = {"srgnn": {"position": "none"}}


class CheckpointError(SessionrecError, ValueError):
    """A checkpoint cannot be used; the message names the file and the problem."""


@dataclass
class Checkpoint:
    model_config: object  # the family's config dataclass (sessionrec.model.ModelConfig for srgnn)
    state_dict: dict[str, torch.Tensor]
    raw_ids: np.ndarray  # (N+1,) raw catalogue id of each model id; [0] = -1
    item_counts: np.ndarray  # (N+1,) training clicks per model id
    metrics: dict = field(default_factory=dict)  # validation (and test) metrics of this checkpoint
    train_config: dict = field(default_factory=dict)
    history: list = field(default_factory=list)  # per-epoch losses and validation metrics
    extra: dict = field(default_factory=dict)  # optimizer/scheduler state for resuming
    family: str = DEFAULT_FAMILY  # sessionrec.families key: which module the weights belong to

    @property
    def schema(self) -> str:
        return get_family(self.family).schema

    def build_model(self):
        model = get_family(self.family).model_class(self.model_config)
        model.load_state_dict(self.state_dict)
        return model.eval()


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> Path:
    """Write atomically (temp file + rename): an interrupted save never leaves a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "family": ckpt.family,
        "schema": {"name": ckpt.schema, "version": get_schema(ckpt.schema).version},
        "model_config": ckpt.model_config.to_dict(),
        "state_dict": ckpt.state_dict,
        "raw_ids": torch.from_numpy(np.asarray(ckpt.raw_ids, dtype=np.int64)),
        "item_counts": torch.from_numpy(np.asarray(ckpt.item_counts, dtype=np.int64)),
        "metrics": ckpt.metrics,
        "train_config": ckpt.train_config,
        "history": ckpt.history,
        "extra": ckpt.extra,
    }
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError, io.UnsupportedOperation) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a loadable sessionrec checkpoint (corrupted, truncated, or it holds objects "
            f"other than tensors, which are refused for safety): {first}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a sessionrec checkpoint (missing format marker {FORMAT!r})")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {payload.get('format_version')} is not supported "
            f"(this sessionrec reads version {FORMAT_VERSION})"
        )
    try:
        family = get_family(payload.get("family"))
        schema = payload.get("schema") or {}
        if schema and schema.get("name") != family.schema:
            raise ValueError(f"family {family.name!r} takes schema {family.schema!r}, checkpoint says {schema.get('name')!r}")
        get_schema(family.schema, schema.get("version"))
        # A field added after a checkpoint was written takes the value that checkpoint was trained with.
        config = family.config_class(**{**LEGACY_VALUES.get(family.name, {}), **payload["model_config"]}).validate()
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: incompatible model config: {exc}") from None
    ckpt = Checkpoint(
        model_config=config,
        state_dict=payload["state_dict"],
        raw_ids=payload["raw_ids"].numpy(),
        item_counts=payload["item_counts"].numpy(),
        metrics=payload.get("metrics", {}),
        train_config=payload.get("train_config", {}),
        history=payload.get("history", []),
        extra=payload.get("extra", {}),
        family=family.name,
    )
    if ckpt.raw_ids.shape != (config.n_items + 1,):
        raise CheckpointError(
            f"{path}: item-id mapping has {ckpt.raw_ids.shape[0]} entries, model has {config.n_items} items (+1 padding)"
        )
    from sessionrec.contract import check_state_dict

    try:
        check_state_dict(family.model_class(config).state_dict(), ckpt.state_dict,
                         f"{path}: weights do not match the {family.name} model config")
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    return ckpt
