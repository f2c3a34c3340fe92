"""Helpers shared by the python-backend model.py files (kept here so they are unit-testable).

`pb_utils` (triton_python_backend_utils) exists only inside the Triton stub, so it is passed in.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

T = TypeVar("T")


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


# Outputs added to a step's config after versions were exported, with the value an older version's
# copied model.py (which does not produce them) answers: step configs are shared by a model's
# versions, so a rollback serves the old model.py under the new config. `canary` (session_history,
# the monitoring flag): an older version's events count as guest traffic.
LATER_OUTPUTS = {"canary": np.zeros((1, 1), dtype=bool)}


def error_for(pb_utils, exc: Exception):
    """A per-request error for `exc`: UNAVAILABLE when a retrieval shard server did not answer (the
    request may be retried; sessionrec.serving.shards), INVALID_ARGUMENT for everything else."""
    from sessionrec.serving.shards import ShardUnavailable

    if isinstance(exc, ShardUnavailable):
        code = getattr(pb_utils.TritonError, "UNAVAILABLE", None)
        error = pb_utils.TritonError(str(exc), code) if code is not None else pb_utils.TritonError(str(exc))
        return pb_utils.InferenceResponse(output_tensors=[], error=error)
    return error_response(pb_utils, str(exc))


def response(pb_utils, arrays: dict[str, np.ndarray], dtypes: dict[str, np.dtype], wanted=None):
    """The response with the outputs in `wanted` (requested_outputs(); None: all of `dtypes`)."""
    return pb_utils.InferenceResponse(
        output_tensors=[pb_utils.Tensor(name, np.ascontiguousarray(arrays[name] if name in arrays else LATER_OUTPUTS[name],
                                                                   dtype=dtypes[name]))
                        for name in dtypes if wanted is None or name in wanted]
    )


def requested_outputs(request) -> frozenset[str] | None:
    """The outputs this request asked for, or None (all). An ensemble asks its step for the outputs
    its output_map uses, and Triton drops the others after the stub has sent them over shared memory:
    `recommend` through the fused step never reads HISTORY_LENGTH / HISTORY_STATE (a BYTES tensor)."""
    names = getattr(request, "requested_output_names", None)
    return frozenset(names()) if names is not None else None


def input_array(pb_utils, request, name: str) -> np.ndarray:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise KeyError(name)
    return tensor.as_numpy()


# Niceness of the thread that imports and loads a python step (19: the lowest CPU priority; 0: off).
# From the server's environment, so an operator can turn it off without a new export.
LOAD_NICENESS_ENV = "SESSIONREC_LOAD_NICENESS"


def load_niceness() -> int:
    value = os.environ.get(LOAD_NICENESS_ENV, "19")
    try:
        return min(19, max(0, int(value)))
    except ValueError:
        raise ValueError(f"{LOAD_NICENESS_ENV}={value!r}: expected an integer 0..19") from None


def load_at_low_priority(load: Callable[[], T], niceness: int | None = None) -> T:
    """Run `load()` in a short-lived thread at a low CPU priority; return (or raise) what it does.

    A new version's stub starts while the serving stub answers live traffic on the same cores. Its
    imports (onnxruntime, FAISS) and artifact loading are most of its start-up CPU, so `load` should
    do them: model.py imports only this module at the top. Linux keeps a nice value per thread, and
    any thread may lower its own priority, but an unprivileged process cannot raise it back: so the
    loading runs in a thread of its own, and the stub's main thread, which serves, keeps its priority.
    Nothing `load` starts may keep threads that serve later (they would inherit the priority): the
    encoder runs on the calling thread (ONNX Runtime intra-op 1), and FAISS's OpenMP workers belong
    to the thread that started them (libgomp keeps a pool per thread), which ends here. Warm-ups go
    on the serving thread afterwards: they size its memory (malloc keeps per-thread arenas).
    """
    niceness = load_niceness() if niceness is None else niceness
    outcome: dict = {}

    def run() -> None:
        try:
            if niceness > 0:
                try:
                    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
                except (OSError, AttributeError):  # not Linux, or not permitted: load at normal priority
                    pass
            outcome["value"] = load()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="sessionrec-load", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def optional_array(pb_utils, request, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def click_event(pb_utils, request, event_type):
    """One recommend_session request -> a history ClickEvent (one event per request: one row), or
    a ValueError naming the tensors when a request batches several rows: each event's history has
    its own length, and one response carries one rectangular tensor."""
    session = input_array(pb_utils, request, "SESSION_ID").reshape(-1)
    new_items = input_array(pb_utils, request, "NEW_ITEMS")
    seq = input_array(pb_utils, request, "CLICK_SEQ").reshape(-1)
    full = pb_utils.get_input_tensor_by_name(request, "ITEMS")  # optional: None when not sent
    items = None if full is None else full.as_numpy()
    if session.size != 1 or seq.size != 1 or new_items.shape[0] != 1 or (items is not None and items.shape[0] != 1):
        return ValueError("recommend_session takes one event per request: SESSION_ID, CLICK_SEQ, NEW_ITEMS "
                         f"(and ITEMS) with one row each, got SESSION_ID {list(session.shape)}, NEW_ITEMS "
                         f"{list(new_items.shape)}")
    raw = session[0]
    return event_type(raw if isinstance(raw, bytes) else str(raw).encode(), new_items[0], int(seq[0]),
                      None if items is None else items[0])
