"""TensorRT plan building and its Triton configuration, without TensorRT or a GPU.

    .venv/bin/pytest tests/export/test_tensorrt.py -q

What needs no GPU is tested for real: shapes, the config (strictly parsed by Triton's own
model_config_pb2), repository layout, compatibility checks, the CLI. build_engine's call sequence
runs against a stand-in `tensorrt` module that follows the TensorRT 10 Python API; the real build
is only exercised on a GPU node.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import types
from pathlib import Path

import pytest
from google.protobuf import text_format

from sessionrec import cli
from sessionrec.commands import build_engine_cmd
from sessionrec.errors import SessionrecError
from sessionrec.export import tensorrt as engine
from sessionrec.export.tensorrt import (
    EngineBuildError,
    ProfileError,
    ShapeProfile,
    TensorRTUnavailable,
    build_engine,
    check_plan_compatible,
    engine_paths,
    parse_nvidia_smi,
    profile_shapes,
    resolve_max_len,
    resolve_version,
    same_tensorrt_version,
    tensorrt_config,
)

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")

MODULE = "sessionrec.commands.build_engine_cmd"
GPU = {"name": "NVIDIA L4", "compute_capability": "8.9", "source": "test"}
RUNTIME = {"tensorrt_version": "10.5.0", "gpu": GPU}


def parse_config(text: str):
    return text_format.Parse(text, model_config_pb2.ModelConfig())  # strict: unknown fields raise


def make_repository(root: Path, max_len: int | None = 12, onnx: bool = True) -> Path:
    """session_encoder/1 and /3 (3 with a manifest and an ONNX stand-in), plus things `latest` must skip."""
    model_dir = root / "session_encoder"
    for name in ("1", "3", "configs", ".3.tmp-4"):
        (model_dir / name).mkdir(parents=True)
    (model_dir / "10.txt").write_text("a file, not a version")
    if max_len is not None:
        (model_dir / "3" / "manifest.json").write_text(json.dumps({"model_config": {"max_len": max_len, "dim": 8}}))
    if onnx:
        (model_dir / "3" / "model.onnx").write_bytes(b"onnx stand-in")
    return root


def run_cli(argv, monkeypatch, capsys):
    """sessionrec.cli.main with build-engine registered (cli.py does not list it yet)."""
    if MODULE not in cli.COMMANDS:
        monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, MODULE])
    code = cli.main(["build-engine", *argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- shapes ---------------------------------------------------------------------------------


def test_profile_shapes_fix_length_at_max_len():
    shapes = profile_shapes(ShapeProfile(max_len=32))
    assert list(shapes) == ["items", "alias", "adj_in", "adj_out", "mask"]  # the ONNX input order
    assert shapes["items"] == ((1, 32), (16, 32), (128, 32))
    assert shapes["alias"] == shapes["mask"] == shapes["items"]
    assert shapes["adj_in"] == ((1, 32, 32), (16, 32, 32), (128, 32, 32))
    assert shapes["adj_out"] == shapes["adj_in"]


def test_profile_shapes_with_a_smaller_min_len():
    shapes = profile_shapes(ShapeProfile(max_len=20, min_batch=1, opt_batch=8, max_batch=64, min_len=1))
    assert shapes["items"] == ((1, 1), (8, 20), (64, 20))  # opt L stays max_len: what preprocess sends
    assert shapes["adj_in"] == ((1, 1, 1), (8, 20, 20), (64, 20, 20))


@pytest.mark.parametrize(
    "profile",
    [
        ShapeProfile(max_len=8, min_batch=0),
        ShapeProfile(max_len=8, opt_batch=200),
        ShapeProfile(max_len=8, min_batch=4, opt_batch=2),
        ShapeProfile(max_len=0),
        ShapeProfile(max_len=8, min_len=9),
    ],
)
def test_invalid_profiles_are_user_errors(profile):
    with pytest.raises(ProfileError):
        profile_shapes(profile)
    assert issubclass(ProfileError, SessionrecError)


# --- Triton configuration ---------------------------------------------------------------------


def test_config_parses_strictly_and_follows_the_contract():
    config = parse_config(tensorrt_config(128, ShapeProfile(max_len=32), instance_count=2, dynamic_batching_delay_us=250))
    assert config.name == "session_encoder"
    assert config.platform == "tensorrt_plan"
    assert config.max_batch_size == 128
    assert config.default_model_filename == "model.plan"
    assert config.version_policy.latest.num_versions == 2
    TYPE = model_config_pb2.DataType
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("items", TYPE.TYPE_INT64, [32]),
        ("alias", TYPE.TYPE_INT64, [32]),
        ("adj_in", TYPE.TYPE_FP32, [32, 32]),
        ("adj_out", TYPE.TYPE_FP32, [32, 32]),
        ("mask", TYPE.TYPE_FP32, [32]),
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [("session_embedding", TYPE.TYPE_FP32, [-1])]
    assert list(config.dynamic_batching.preferred_batch_size) == [16, 128]
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert [(g.kind, g.count) for g in config.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_GPU, 2)]
    (warmup,) = config.model_warmup
    assert warmup.batch_size == 1
    assert {name: (w.data_type, list(w.dims), w.zero_data) for name, w in warmup.inputs.items()} == {
        i.name: (i.data_type, list(i.dims), True) for i in config.input
    }


def test_config_with_variable_length_uses_wildcards_and_warms_up_at_max_len():
    config = parse_config(tensorrt_config(64, ShapeProfile(max_len=10, opt_batch=64, max_batch=64, min_len=1)))
    assert [list(i.dims) for i in config.input] == [[-1], [-1], [-1, -1], [-1, -1], [-1]]
    assert list(config.dynamic_batching.preferred_batch_size) == [64]
    assert list(config.model_warmup[0].inputs["adj_in"].dims) == [10, 10]


def test_config_rejects_what_triton_could_not_serve():
    with pytest.raises(ProfileError, match="max_batch_size"):
        tensorrt_config(256, ShapeProfile(max_len=8))  # beyond the plan's profile
    with pytest.raises(ProfileError, match="min_batch"):
        tensorrt_config(128, ShapeProfile(max_len=8, min_batch=2))  # a lone request could not run
    # a smaller max_batch_size is allowed (it wastes part of the profile); preferred sizes stay within it
    config = parse_config(tensorrt_config(8, ShapeProfile(max_len=8)))
    assert list(config.dynamic_batching.preferred_batch_size) == [8]


# --- repository layout --------------------------------------------------------------------------


def test_engine_paths_and_latest_version(tmp_path):
    repo = make_repository(tmp_path)
    model_dir = repo / "session_encoder"
    assert resolve_version(repo, "latest") == 3  # 10.txt is a file, .3.tmp-4 and configs are not versions
    assert engine_paths(repo, "latest") == (
        model_dir / "3" / "model.onnx",
        model_dir / "3" / "model.plan",
        model_dir / "configs" / "tensorrt.pbtxt",
    )
    assert engine_paths(repo, 1)[1] == model_dir / "1" / "model.plan"
    assert engine_paths(repo, "1")[0] == model_dir / "1" / "model.onnx"
    with pytest.raises(SessionrecError, match="no such version folder"):
        engine_paths(repo, 2)
    with pytest.raises(SessionrecError, match="positive integer or 'latest'"):
        resolve_version(repo, "newest")
    with pytest.raises(SessionrecError, match="no such folder"):
        resolve_version(tmp_path / "elsewhere")
    (model_dir / "1").rmdir()
    (model_dir / "3").rename(model_dir / "old")
    with pytest.raises(SessionrecError, match="no numbered version"):
        resolve_version(repo)


def test_latest_is_the_live_version_when_the_ensemble_is_there(tmp_path):
    """Version 3 of the encoder alone is an interrupted publish (export.repository): not live."""
    repo = make_repository(tmp_path)
    for model in ("preprocess", "retrieval", "recommend"):
        (repo / model / "1").mkdir(parents=True)
    assert resolve_version(repo, "latest") == 1
    assert resolve_version(repo, 3) == 3  # asked for explicitly: built anyway
    for model in ("preprocess", "retrieval", "recommend"):
        (repo / model / "3").mkdir()
    assert resolve_version(repo, "latest") == 3
    for model in ("preprocess", "retrieval", "recommend", "session_encoder"):
        for v in ("1", "3"):
            shutil.rmtree(repo / model / v)
    with pytest.raises(SessionrecError, match="no live version"):
        resolve_version(repo)


def test_max_len_comes_from_the_manifest_or_the_flag(tmp_path):
    version_dir = make_repository(tmp_path, max_len=12) / "session_encoder" / "3"
    assert resolve_max_len(version_dir) == (12, str(version_dir / "manifest.json"))
    assert resolve_max_len(version_dir, 12)[0] == 12
    with pytest.raises(SessionrecError, match="disagrees"):
        resolve_max_len(version_dir, 20)
    no_manifest = version_dir.parent / "1"
    with pytest.raises(SessionrecError, match="--max-len"):
        resolve_max_len(no_manifest)
    assert resolve_max_len(no_manifest, 20) == (20, "--max-len")
    (no_manifest / "manifest.json").write_text(json.dumps({"model_config": "?"}))  # no usable key: like none
    assert resolve_max_len(no_manifest, 7) == (7, "--max-len")
    (no_manifest / "manifest.json").write_text('{"model_config": {"max_len": "32"}}')
    with pytest.raises(SessionrecError, match="positive integer"):
        resolve_max_len(no_manifest, 32)
    (no_manifest / "manifest.json").write_text("{ not json")
    with pytest.raises(SessionrecError, match="unreadable"):
        resolve_max_len(no_manifest, 32)


# --- the contract with the ONNX export and its configs ------------------------------------------------


def test_inputs_and_output_match_the_onnx_configs():
    from sessionrec.export.configs import ENCODER_OUTPUTS, GRAPH

    assert [(n, d, r) for n, d, r in engine.INPUTS] == [
        (name, model_config_pb2.DataType.Name(dtype), len(dims)) for name, dtype, dims in GRAPH
    ]
    assert [engine.OUTPUT] == [name for name, _, _ in ENCODER_OUTPUTS]


def test_an_exported_repository_resolves_and_its_onnx_passes_the_network_check(exported_repository, monkeypatch, capsys):
    """The real export (tests/conftest.py): live version, manifest max_len, and an ONNX file with the
    names, order, dtypes and ranks build_engine requires."""
    onnx = pytest.importorskip("onnx")
    onnx_path, plan_path, config_path = engine_paths(exported_repository, "latest")
    max_len, source = resolve_max_len(onnx_path.parent)
    assert source.endswith("manifest.json") and max_len == 16  # the fixture's ModelConfig(max_len=16)

    graph = onnx.load(str(onnx_path)).graph
    trt = FakeTensorRT().module
    dtypes = {onnx.TensorProto.INT64: trt.DataType.INT64, onnx.TensorProto.FLOAT: trt.DataType.FLOAT}
    tensor = lambda v: types.SimpleNamespace(name=v.name, dtype=dtypes.get(v.type.tensor_type.elem_type))  # noqa: E731
    network = types.SimpleNamespace(
        num_inputs=len(graph.input), get_input=lambda i: tensor(graph.input[i]),
        num_outputs=len(graph.output), get_output=lambda i: tensor(graph.output[i]),
    )
    engine._check_network_io(trt, network, onnx_path)  # raises on any difference
    ranks = {v.name: len(v.type.tensor_type.shape.dim) - 1 for v in graph.input}
    assert ranks == {name: rank for name, _, rank in engine.INPUTS}

    # The warmup sample (zeros, batch 1, L = max_len) is a valid input: an empty session, finite output.
    ort = pytest.importorskip("onnxruntime")
    import numpy as np

    warmup = {name: np.zeros((1,) + (max_len,) * rank, np.int64 if dtype == "TYPE_INT64" else np.float32)
              for name, dtype, rank in engine.INPUTS}
    (embedding,) = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, warmup)
    assert embedding.shape[0] == 1 and np.isfinite(embedding).all()

    code, out, err = run_cli(["--repository", str(exported_repository), "--dry-run"], monkeypatch, capsys)
    assert code == 0, err
    assert parse_config(out.split("--- ", 1)[1].split("\n", 1)[1]).input[2].dims == [16, 16]
    assert not config_path.exists() and not plan_path.exists()


# --- environment and compatibility ----------------------------------------------------------------


def test_tensorrt_versions_match_through_patch_and_build():
    assert same_tensorrt_version("10.5.0", "10.5.0.18")
    assert same_tensorrt_version("10.5.0.18", "10.5.0.18")
    assert not same_tensorrt_version("10.5.0.18", "10.5.0.26")
    assert not same_tensorrt_version("10.5.0", "10.6.0")
    assert not same_tensorrt_version("10.5.0", "8.6.1")


def test_nvidia_smi_output_picks_the_visible_gpu():
    text = "0, GPU-aaaa-1111, NVIDIA A10G, 8.6\n1, GPU-bbbb-2222, NVIDIA L4, 8.9\n"
    assert parse_nvidia_smi(text) == {"name": "NVIDIA A10G", "compute_capability": "8.6", "source": "nvidia-smi"}
    assert parse_nvidia_smi(text, "1")["name"] == "NVIDIA L4"
    assert parse_nvidia_smi(text, "GPU-bbbb")["compute_capability"] == "8.9"
    assert parse_nvidia_smi(text, "7,1")["name"] == "NVIDIA A10G"  # unknown: the first listed
    assert parse_nvidia_smi("No devices were found\n") is None


def recorded(**changes) -> dict:
    meta = {"tensorrt_version": "10.5.0.18", "gpu": dict(GPU), "fp16": True,
            "profile": {"max_len": 12, "min_batch": 1, "opt_batch": 16, "max_batch": 128, "min_len": None}}
    meta.update(changes)
    return meta


def test_plan_compatibility_checks_tensorrt_version_and_architecture():
    assert check_plan_compatible(recorded(), RUNTIME) == []
    other_model = {"tensorrt_version": "10.5.0", "gpu": {"name": "NVIDIA L40S", "compute_capability": "8.9"}}
    assert check_plan_compatible(recorded(), other_model) == []  # same architecture: loads (TensorRT warns)

    (problem,) = check_plan_compatible(recorded(tensorrt_version="10.3.0.26"), RUNTIME)
    assert "TensorRT 10.3.0.26" in problem and "10.5.0" in problem
    (problem,) = check_plan_compatible(recorded(), {"tensorrt_version": "10.5.0", "gpu": {"name": "NVIDIA A10G", "compute_capability": "8.6"}})
    assert "compute capability 8.9" in problem and "8.6" in problem

    unknown = check_plan_compatible(recorded(), {"tensorrt_version": None, "gpu": {"compute_capability": None}})
    assert len(unknown) == 2 and "not importable" in unknown[0] and "no GPU" in unknown[1]
    assert len(check_plan_compatible({}, RUNTIME)) == 2  # records nothing: cannot be trusted

    asked = ShapeProfile(max_len=12)
    assert check_plan_compatible(recorded(), RUNTIME, asked, True) == []
    (problem,) = check_plan_compatible(recorded(), RUNTIME, ShapeProfile(max_len=12, max_batch=64), True)
    assert "profile" in problem
    (problem,) = check_plan_compatible(recorded(), RUNTIME, asked, False)
    assert "fp16" in problem


def test_plan_compatibility_checks_the_files_beside_plan_json(tmp_path):
    assert "missing" in check_plan_compatible(tmp_path / "plan.json", RUNTIME)[0]
    (tmp_path / "plan.json").write_text("{")
    assert "unreadable" in check_plan_compatible(tmp_path / "plan.json", RUNTIME)[0]
    (tmp_path / "plan.json").write_text("[]")
    assert "not a JSON object" in check_plan_compatible(tmp_path / "plan.json", RUNTIME)[0]

    (tmp_path / "model.plan").write_bytes(b"plan")
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    meta = recorded(plan={"file": "model.plan", "sha256": hashlib.sha256(b"plan").hexdigest()},
                    onnx={"file": "model.onnx", "sha256": hashlib.sha256(b"onnx").hexdigest()})
    (tmp_path / "plan.json").write_text(json.dumps(meta))
    assert check_plan_compatible(tmp_path / "plan.json", RUNTIME) == []

    (tmp_path / "model.onnx").write_bytes(b"retrained")
    (problem,) = check_plan_compatible(tmp_path / "plan.json", RUNTIME)
    assert "model.onnx: changed" in problem
    (tmp_path / "model.plan").write_bytes(b"half a pl")
    assert any("checksum differs" in p for p in check_plan_compatible(tmp_path / "plan.json", RUNTIME))
    (tmp_path / "model.plan").unlink()
    assert any("model.plan: missing" in p for p in check_plan_compatible(tmp_path / "plan.json", RUNTIME))


# --- without TensorRT ---------------------------------------------------------------------------


def test_build_without_tensorrt_explains_where_to_build(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails even where TensorRT exists
    onnx_path, plan_path, _ = engine_paths(make_repository(tmp_path))
    with pytest.raises(TensorRTUnavailable) as caught:
        build_engine(onnx_path, plan_path, ShapeProfile(max_len=12))
    message = str(caught.value)
    assert isinstance(caught.value, SessionrecError)
    assert "TensorRT is needed" in message and "NGC" in message and "init container" in message
    assert "--dry-run" in message
    assert not plan_path.exists()


def test_build_reports_a_missing_onnx_before_tensorrt(tmp_path):
    onnx_path, plan_path, _ = engine_paths(make_repository(tmp_path, onnx=False))
    with pytest.raises(SessionrecError, match="no such ONNX file"):
        build_engine(onnx_path, plan_path, ShapeProfile(max_len=12))


def test_cli_without_tensorrt_is_one_error_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    repo = make_repository(tmp_path)
    code, out, err = run_cli(["--repository", str(repo)], monkeypatch, capsys)
    assert code == cli.EXIT_ERROR
    assert err.startswith("sessionrec build-engine: error: TensorRT is needed")
    assert "Traceback" not in err
    assert not (repo / "session_encoder" / "configs" / "tensorrt.pbtxt").exists()  # nothing half-done


def test_cli_dry_run_prints_shapes_and_config_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    repo = make_repository(tmp_path, max_len=12)
    before = sorted(p.relative_to(repo) for p in repo.rglob("*"))
    code, out, err = run_cli(["--repository", str(repo), "--version", "latest", "--max-batch", "64", "--opt-batch", "8", "--no-fp16", "--dry-run"], monkeypatch, capsys)
    assert code == 0, err
    summary_text, config_text = out.split("--- ", 1)
    summary = json.loads(summary_text)
    assert summary["max_len"] == 12 and summary["fp16"] is False
    assert summary["plan"].endswith("session_encoder/3/model.plan")
    assert summary["shapes (min, opt, max)"]["adj_out"] == "1x12x12 / 8x12x12 / 64x12x12"
    config = parse_config(config_text.split("\n", 1)[1])
    assert config.max_batch_size == 64 and list(config.input[0].dims) == [12]
    assert sorted(p.relative_to(repo) for p in repo.rglob("*")) == before


def test_cli_without_manifest_needs_max_len(tmp_path, monkeypatch, capsys):
    repo = make_repository(tmp_path)
    code, _, err = run_cli(["--repository", str(repo), "--version", "1", "--dry-run"], monkeypatch, capsys)
    assert code == cli.EXIT_ERROR and "pass --max-len" in err
    code, out, err = run_cli(["--repository", str(repo), "--version", "1", "--max-len", "20", "--dry-run"], monkeypatch, capsys)
    assert code == 0 and '"max_len_from": "--max-len"' in out
    code, _, err = run_cli(["--repository", str(repo), "--max-len", "20", "--dry-run"], monkeypatch, capsys)
    assert code == cli.EXIT_ERROR and "disagrees" in err  # version 3's manifest says 12


def test_help_ends_with_an_example():
    import argparse

    sub = argparse.ArgumentParser(prog="sessionrec").add_subparsers()
    build_engine_cmd.add_parser(sub)
    text = sub.choices["build-engine"].format_help()
    assert "Example: sessionrec build-engine --repository" in text
    for flag in ("--fp16", "--no-fp16", "--min-batch", "--opt-batch", "--max-batch", "--workspace-gb", "--dry-run", "--version"):
        assert flag in text
    assert sub.choices["build-engine"].get_default("run") is build_engine_cmd.run


# --- build_engine against a stand-in of the TensorRT 10 Python API --------------------------------


class FakeTensorRT:
    """Just enough of `tensorrt` 10.x for build_engine: records what it was asked, returns a fake plan."""

    def __init__(self, inputs=None, parse_ok=True, build_ok=True, cache_ok=True, version="10.5.0"):
        self.calls = []
        self.inputs = inputs or [(name, "INT64" if dtype == "TYPE_INT64" else "FLOAT") for name, dtype, _ in engine.INPUTS]
        self.parse_ok, self.build_ok, self.cache_ok = parse_ok, build_ok, cache_ok
        self.module = self._module(version)

    def _module(self, version):
        fake, calls = self, self.calls
        trt = types.ModuleType("tensorrt")
        trt.__version__ = version
        trt.DataType = types.SimpleNamespace(INT64="INT64", FLOAT="FLOAT", HALF="HALF")
        trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
        trt.BuilderFlag = types.SimpleNamespace(FP16="FP16")
        trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)

        class Logger:
            WARNING = "WARNING"

            def __init__(self, severity):
                calls.append(("Logger", severity))

        class Tensor:
            def __init__(self, name, dtype):
                self.name, self.dtype = name, dtype

        class Network:
            def __init__(self):
                self.inputs, self.outputs = [], []

            num_inputs = property(lambda self: len(self.inputs))
            num_outputs = property(lambda self: len(self.outputs))
            get_input = lambda self, i: self.inputs[i]  # noqa: E731
            get_output = lambda self, i: self.outputs[i]  # noqa: E731

        class OnnxParser:
            def __init__(self, network, logger):
                self.network = network

            def parse_from_file(self, path):
                calls.append(("parse_from_file", path))
                if fake.parse_ok:
                    self.network.inputs = [Tensor(n, t) for n, t in fake.inputs]
                    self.network.outputs = [Tensor("session_embedding", "FLOAT")]
                return fake.parse_ok

            num_errors = property(lambda self: 0 if fake.parse_ok else 1)

            def get_error(self, i):
                return "In node 3 (Gather): UNSUPPORTED_NODE"

        class Profile:
            def set_shape(self, name, low, opt, high):
                calls.append(("set_shape", name, low, opt, high))

        class TimingCache:
            def serialize(self):
                return b"timings"

        class Config:
            def set_memory_pool_limit(self, pool, size):
                calls.append(("set_memory_pool_limit", pool, size))

            def set_flag(self, flag):
                calls.append(("set_flag", flag))

            def add_optimization_profile(self, profile):
                calls.append(("add_optimization_profile",))
                return 0

            def create_timing_cache(self, data):
                calls.append(("create_timing_cache", bytes(data)))
                return TimingCache()

            def set_timing_cache(self, cache, ignore_mismatch):
                ok, fake.cache_ok = fake.cache_ok, True  # a mismatched cache fails once; a fresh one is fine
                calls.append(("set_timing_cache", ok))
                return ok

            def get_timing_cache(self):
                return TimingCache()

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                calls.append(("create_network", flags))
                return Network()

            create_builder_config = lambda self: Config()  # noqa: E731
            create_optimization_profile = lambda self: Profile()  # noqa: E731

            def build_serialized_network(self, network, config):
                calls.append(("build_serialized_network",))
                return b"PLAN-BYTES" if fake.build_ok else None

        trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, OnnxParser
        return trt


@pytest.fixture
def fake_gpu(monkeypatch):
    monkeypatch.setattr(engine, "detect_gpu", lambda: dict(GPU))


def test_build_engine_follows_the_tensorrt_10_sequence(tmp_path, monkeypatch, fake_gpu):
    fake = FakeTensorRT()
    monkeypatch.setitem(sys.modules, "tensorrt", fake.module)
    onnx_path, plan_path, _ = engine_paths(make_repository(tmp_path))
    profile = ShapeProfile(max_len=12, opt_batch=8, max_batch=32)
    cache = tmp_path / "cache" / "timing.cache"
    meta = build_engine(onnx_path, plan_path, profile, fp16=True, workspace_bytes=1 << 30, timing_cache=cache)

    assert ("create_network", 0) in fake.calls  # explicit batch is the only mode in TensorRT 10
    assert ("parse_from_file", str(onnx_path)) in fake.calls
    assert ("set_memory_pool_limit", "WORKSPACE", 1 << 30) in fake.calls
    assert ("set_flag", "FP16") in fake.calls
    shapes = [c[1:] for c in fake.calls if c[0] == "set_shape"]
    assert shapes == [(name, *triple) for name, triple in profile_shapes(profile).items()]
    assert plan_path.read_bytes() == b"PLAN-BYTES"
    assert cache.read_bytes() == b"timings"
    assert json.loads((plan_path.parent / "plan.json").read_text()) == meta
    assert meta["tensorrt_version"] == "10.5.0" and meta["gpu"]["compute_capability"] == "8.9"
    assert meta["profile"]["max_batch"] == 32 and meta["fp16"] is True and meta["build_seconds"] >= 0
    assert meta["plan"] == {"file": "model.plan", "bytes": 10, "sha256": hashlib.sha256(b"PLAN-BYTES").hexdigest()}
    assert check_plan_compatible(plan_path.parent / "plan.json", RUNTIME, profile, True) == []
    assert not [p for p in plan_path.parent.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_build_engine_without_fp16_leaves_the_flag_off(tmp_path, monkeypatch, fake_gpu):
    fake = FakeTensorRT()
    monkeypatch.setitem(sys.modules, "tensorrt", fake.module)
    onnx_path, plan_path, _ = engine_paths(make_repository(tmp_path))
    build_engine(onnx_path, plan_path, ShapeProfile(max_len=12), fp16=False)
    assert not [c for c in fake.calls if c[0] == "set_flag"]
    assert not [c for c in fake.calls if c[0] == "create_timing_cache"]


def test_timing_cache_from_another_gpu_is_replaced(tmp_path, monkeypatch, fake_gpu):
    fake = FakeTensorRT(cache_ok=False)
    monkeypatch.setitem(sys.modules, "tensorrt", fake.module)
    onnx_path, plan_path, _ = engine_paths(make_repository(tmp_path))
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"A10G timings")
    build_engine(onnx_path, plan_path, ShapeProfile(max_len=12), timing_cache=cache)
    cache_calls = [c for c in fake.calls if "timing_cache" in c[0]]
    assert cache_calls == [("create_timing_cache", b"A10G timings"), ("set_timing_cache", False),
                           ("create_timing_cache", b""), ("set_timing_cache", True)]
    assert cache.read_bytes() == b"timings"


def test_tensorrt_8_gets_the_explicit_batch_flag(tmp_path, monkeypatch, fake_gpu):
    fake = FakeTensorRT(version="8.6.1")
    monkeypatch.setitem(sys.modules, "tensorrt", fake.module)
    onnx_path, plan_path, _ = engine_paths(make_repository(tmp_path))
    build_engine(onnx_path, plan_path, ShapeProfile(max_len=12))
    assert ("create_network", 1 << 0) in fake.calls  # 1 << EXPLICIT_BATCH (0 in TensorRT 8)


@pytest.mark.parametrize(
    "fake, message",
    [
        (FakeTensorRT(parse_ok=False), "cannot parse it:\n  In node 3"),
        (FakeTensorRT(inputs=[("items", "INT32"), ("alias", "INT64")]), "the encoder contract is inputs"),
        (FakeTensorRT(build_ok=False), "failed to build a plan"),
    ],
)
def test_build_engine_failures_name_the_file_and_write_nothing(tmp_path, monkeypatch, fake_gpu, fake, message):
    monkeypatch.setitem(sys.modules, "tensorrt", fake.module)
    onnx_path, plan_path, _ = engine_paths(make_repository(tmp_path))
    with pytest.raises(EngineBuildError, match=message) as caught:
        build_engine(onnx_path, plan_path, ShapeProfile(max_len=12))
    assert str(onnx_path) in str(caught.value)
    assert sorted(p.name for p in plan_path.parent.iterdir()) == ["manifest.json", "model.onnx"]


def test_cli_builds_once_then_keeps_a_plan_that_loads_here(tmp_path, monkeypatch, capsys, fake_gpu):
    fake = FakeTensorRT()
    monkeypatch.setitem(sys.modules, "tensorrt", fake.module)
    repo = make_repository(tmp_path)
    args = ["--repository", str(repo), "--max-batch", "64", "--opt-batch", "16"]

    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    assert json.loads(out)["built"] is True
    config = parse_config((repo / "session_encoder" / "configs" / "tensorrt.pbtxt").read_text())
    assert config.max_batch_size == 64 and list(config.input[2].dims) == [12, 12]

    builds = lambda: sum(c[0] == "build_serialized_network" for c in fake.calls)  # noqa: E731
    code, out, _ = run_cli(args, monkeypatch, capsys)
    assert code == 0 and json.loads(out)["built"] is False and builds() == 1
    code, out, _ = run_cli([*args, "--check"], monkeypatch, capsys)
    assert code == 0 and "plan loads here" in out
    code, out, _ = run_cli([*args[:2], "--check"], monkeypatch, capsys)  # default max batch 128 differs
    assert code == 1 and "profile" in out
    code, out, _ = run_cli([*args, "--force"], monkeypatch, capsys)
    assert code == 0 and builds() == 2
    code, out, _ = run_cli([*args, "--no-fp16"], monkeypatch, capsys)  # other settings: rebuilt
    assert code == 0 and builds() == 3
