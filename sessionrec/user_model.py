"""Loading a user's own encoder for `sessionrec export-encoder`: an import path plus safetensors files.

Nothing is unpickled: the module's code comes from the user's importable Python package (code they
run anyway), its weights and the item table from safetensors files, which hold tensors only.

    --module pkg.mod:Name       a class or factory; called with --init's JSON object as keyword arguments
    --weights model.safetensors the module's state dict (names and shapes must match the module's)
    --items items.safetensors   item_table (N, d) float, raw_ids (N,) int64, optionally item_counts (N,) int64
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

from sessionrec.contract import ContractError, check_state_dict

ITEM_TENSORS = ("item_table", "raw_ids")  # required in --items; item_counts is optional


def import_object(path: str, search: str | None = None):
    """`package.module:Name` -> the object (search: a folder put first on sys.path, e.g. the working dir)."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ContractError(f"--module {path!r}: expected 'package.module:Name'")
    if search and str(Path(search).resolve()) not in sys.path:
        sys.path.insert(0, str(Path(search).resolve()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ContractError(f"--module {path!r}: cannot import {module_name!r}: {exc}") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ContractError(f"--module {path!r}: {module_name!r} has no attribute {attribute!r}") from None


def read_safetensors(path: str | Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ContractError(f"{path}: no such file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ContractError(f"{path}: not a readable safetensors file: {exc}") from None


def build_module(path: str, init: dict, weights: str | Path, search: str | None = "."):
    """Construct the user's module and load its weights; a name or shape mismatch names the tensor."""
    factory = import_object(path, search)
    try:
        module = factory(**init)
    except TypeError as exc:
        raise ContractError(f"--module {path!r} with --init {json.dumps(init)}: {exc}") from None
    state = read_safetensors(weights)
    check_state_dict(module.state_dict(), state, f"{weights}")
    module.load_state_dict(state)
    return module.eval()


def read_items(path: str | Path) -> dict:
    tensors = read_safetensors(path)
    missing = [name for name in ITEM_TENSORS if name not in tensors]
    if missing:
        raise ContractError(f"{path}: tensor {missing[0]!r} is missing (needs item_table (N, d) and raw_ids (N,); "
                            f"found {sorted(tensors)})")
    out = {name: tensors[name].numpy() for name in ITEM_TENSORS}
    if "item_counts" in tensors:
        out["item_counts"] = tensors["item_counts"].numpy()
    return out
