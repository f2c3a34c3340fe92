"""Helpers shared by the python-backend model.py files (kept here so they are unit-testable).

`pb_utils` (triton_python_backend_utils) exists only inside the Triton stub, so it is passed in.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def version_dir(args: dict) -> Path:
    """The folder of the version being loaded: <repository>/<model>/<version>."""
    return Path(args["model_repository"]) / args["model_version"]


def output_dtypes(args: dict, pb_utils) -> dict[str, np.dtype]:
    config = json.loads(args["model_config"])
    return {o["name"]: pb_utils.triton_string_to_numpy(o["data_type"]) for o in config["output"]}


def max_batch_size(args: dict) -> int:
    return int(json.loads(args["model_config"]).get("max_batch_size", 1)) or 1


def parameter(args: dict, key: str, default: str) -> str:
    params = json.loads(args["model_config"]).get("parameters", {})
    return params.get(key, {}).get("string_value", default)


def error_response(pb_utils, message: str):
    """A per-request INVALID_ARGUMENT: the other requests of the batch are still answered."""
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    error = pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


def response(pb_utils, arrays: dict[str, np.ndarray], dtypes: dict[str, np.dtype]):
    return pb_utils.InferenceResponse(
        output_tensors=[pb_utils.Tensor(name, np.ascontiguousarray(arrays[name], dtype=dtypes[name])) for name in dtypes]
    )


def input_array(pb_utils, request, name: str) -> np.ndarray:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise KeyError(name)
    return tensor.as_numpy()
