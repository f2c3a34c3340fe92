"""The persistent plan store of `build-engine --engine-cache` (export/engine_store.py), without TensorRT:
plans are keyed by ONNX checksum, GPU product and TensorRT version, and a restored plan is checked
like a local one."""
from __future__ import annotations

import json

from sessionrec.export import engine_store
from sessionrec.export.tensorrt import check_plan_compatible
from sessionrec.serving.artifacts import sha256_file

L4 = {"tensorrt_version": "10.5.0.18", "gpu": {"name": "NVIDIA L4", "compute_capability": "8.9"}}
H100 = {"tensorrt_version": "10.5.0.18", "gpu": {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}}


def built_plan(folder, onnx_bytes=b"onnx v1", runtime=L4):
    """A version folder with model.onnx, model.plan and the plan.json build_engine would write."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(onnx_bytes)
    (folder / "model.plan").write_bytes(b"plan for " + onnx_bytes)
    meta = {"format": 1, "tensorrt_version": runtime["tensorrt_version"], "gpu": runtime["gpu"], "fp16": True,
            "onnx": {"file": "model.onnx", "sha256": sha256_file(folder / "model.onnx")},
            "plan": {"file": "model.plan", "sha256": sha256_file(folder / "model.plan")}}
    (folder / "plan.json").write_text(json.dumps(meta))
    return folder


def test_a_stored_plan_is_reused_on_the_same_gpu_and_weights(tmp_path):
    store = tmp_path / "store"
    first = built_plan(tmp_path / "pod-a" / "12")
    engine_store.save(store, first / "model.onnx", first / "model.plan", L4)
    second = tmp_path / "pod-b" / "12"
    second.mkdir(parents=True)
    (second / "model.onnx").write_bytes(b"onnx v1")
    assert engine_store.restore(store, second / "model.onnx", second / "model.plan", L4)
    assert (second / "model.plan").read_bytes() == b"plan for onnx v1"
    assert check_plan_compatible(second / "plan.json", L4) == []


def test_other_weights_or_another_gpu_find_nothing(tmp_path):
    store = tmp_path / "store"
    first = built_plan(tmp_path / "pod-a" / "12")
    engine_store.save(store, first / "model.onnx", first / "model.plan", L4)
    retrained = tmp_path / "pod-b" / "13"
    retrained.mkdir(parents=True)
    (retrained / "model.onnx").write_bytes(b"onnx v2")  # same names, new weights
    assert not engine_store.restore(store, retrained / "model.onnx", retrained / "model.plan", L4)
    assert not engine_store.restore(store, first / "model.onnx", tmp_path / "x" / "model.plan", H100)
    assert engine_store.plan_dir(store, first / "model.onnx", L4) != engine_store.plan_dir(store, first / "model.onnx", H100)


def test_a_tampered_stored_plan_fails_the_local_checks(tmp_path):
    store = tmp_path / "store"
    first = built_plan(tmp_path / "pod-a" / "12")
    saved = engine_store.save(store, first / "model.onnx", first / "model.plan", L4)
    (saved / "model.plan").write_bytes(b"corrupt")
    target = tmp_path / "pod-b" / "12"
    target.mkdir(parents=True)
    (target / "model.onnx").write_bytes(b"onnx v1")
    assert engine_store.restore(store, target / "model.onnx", target / "model.plan", L4)
    assert check_plan_compatible(target / "plan.json", L4)  # checksum mismatch: build-engine rebuilds


def test_timing_caches_are_kept_per_gpu_product_and_tensorrt(tmp_path):
    assert engine_store.timing_cache_path(tmp_path, L4).name == "NVIDIA_L4-trt10.5.0.18.cache"
    assert engine_store.timing_cache_path(tmp_path, L4) != engine_store.timing_cache_path(tmp_path, H100)
