"""Helpers shared by the python-backend model.py files (kept here so they are unit-testable).

`pb_utils` (triton_python_backend_utils) exists only inside the Triton stub, so it is passed in.
"""

from __future__ import annotations

import json
import os
import threading
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


LOAD_NICENESS = 19  # the lowest CPU priority: loading yields to every thread that is serving


def load_at_low_priority(load, *args, **kwargs):
    """Run `load(*args, **kwargs)` in a thread at the lowest CPU priority; return what it returns.

    A new version's stub starts while the serving one answers traffic on the same cores; its imports
    (onnxruntime, faiss), checksums and index reads took the CPU from the serving stub and tripled
    p99 during a switch (docs/RELIABILITY.md). Linux keeps a nice value per thread, and a thread may
    always lower its own priority, but an unprivileged process cannot raise it back: so the loading
    runs in a short-lived thread of its own and the stub's main thread, which serves, is untouched.
    Nothing started by `load` may keep threads that serve later (they would inherit the priority):
    the encoder and FAISS run single-threaded on the calling thread (ORT intra_op 1, OpenMP 1).
    """
    outcome: dict = {}

    def run() -> None:
        try:
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOAD_NICENESS)
            except (OSError, AttributeError):  # not Linux, or not permitted: load at normal priority
                pass
            outcome["value"] = load(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="sessionrec-load", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
