"""A persistent store of native TensorRT plans and timing caches, shared by the pods of a release.

`sessionrec build-engine --engine-cache DIR` (the chart's build-engine init container, DIR on the
engine-cache volume) looks here before building: a plan is stored under the sha256 of the ONNX file
it was built from and the GPU product and TensorRT version that built it, so a scale-out pod on the
same GPU product reuses it (seconds) instead of rebuilding (minutes), and a retrain, another GPU
product or another TensorRT never gets a plan that is not its own. A plan taken from the store is
checked like a local one (check_plan_compatible: versions, GPU, profile, checksums) before it is used.
Timing caches are kept per GPU product and TensorRT version: they make the builds the store cannot
spare faster.

    DIR/plans/<onnx sha256[:16]>/<gpu product>-trt<version>/{model.plan, plan.json}
    DIR/timing/<gpu product>-trt<version>.cache
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from sessionrec.export.tensorrt import PLAN_FILENAME, PLAN_METADATA_FILENAME, write_atomic
from sessionrec.serving.artifacts import sha256_file


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "unknown"


def runtime_key(runtime: dict) -> str:
    """<GPU product>-trt<TensorRT version> of a `current_runtime()` dict."""
    gpu = (runtime.get("gpu") or {}).get("name") or "no-gpu"
    return f"{_slug(gpu)}-trt{_slug(str(runtime.get('tensorrt_version') or 'none'))}"


def plan_dir(store: str | Path, onnx_path: str | Path, runtime: dict) -> Path:
    return Path(store) / "plans" / sha256_file(onnx_path)[:16] / runtime_key(runtime)


def timing_cache_path(store: str | Path, runtime: dict) -> Path:
    return Path(store) / "timing" / f"{runtime_key(runtime)}.cache"


def restore(store: str | Path, onnx_path: str | Path, plan_path: str | Path, runtime: dict) -> bool:
    """Copy a stored plan for this ONNX file and runtime next to the ONNX file; False if none is stored."""
    source = plan_dir(store, onnx_path, runtime)
    if not (source / PLAN_FILENAME).is_file() or not (source / PLAN_METADATA_FILENAME).is_file():
        return False
    plan_path = Path(plan_path)
    for name in (PLAN_FILENAME, PLAN_METADATA_FILENAME):  # plan first, as build_engine writes them
        target = plan_path if name == PLAN_FILENAME else plan_path.with_name(name)
        write_atomic(target, (source / name).read_bytes())
    return True


def save(store: str | Path, onnx_path: str | Path, plan_path: str | Path, runtime: dict) -> Path:
    """Store a freshly built plan (and its plan.json) for the pods that come after this one."""
    target = plan_dir(store, onnx_path, runtime)
    target.mkdir(parents=True, exist_ok=True)
    plan_path = Path(plan_path)
    for source in (plan_path, plan_path.with_name(PLAN_METADATA_FILENAME)):
        staged = target / f".{source.name}.partial"
        shutil.copyfile(source, staged)
        staged.replace(target / source.name)  # readers never see half a plan
    return target
