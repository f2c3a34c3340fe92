"""Generated Triton configs: strictly valid, correctly wired, and the checked-in copies are current."""

from pathlib import Path

import numpy as np
import pytest

from tritonclient.grpc import model_config_pb2 as mc

from sessionrec.export.configs import (
    FUSED, HISTORY, SESSION_ENSEMBLE, STEPS, ConfigError, refuse_stateful_cache, WARMUP_K, WARMUP_K_FILE, ServingConfig, all_configs, check_wiring, ensemble_config, ensemble_steps,
    WARMUP_SESSION_LEN, fused_config, parse, render, warmup_files,
)

ROOT = Path(__file__).resolve().parents[2]


def parsed(version=-1, **kw):
    texts = all_configs(ServingConfig(**kw), version)
    return {rel: parse(text) for rel, text in texts.items()}


def test_every_config_parses_strictly_and_names_match_folders():
    for rel, config in parsed().items():
        assert config.name == rel.split("/")[0]


def configs_of(variant, version=-1, **kw):
    """model -> the config Triton reads with this variant (a model without it falls back to config.pbtxt)."""
    texts = parsed(version, **kw)
    out = {rel.split("/")[0]: c for rel, c in texts.items() if rel.endswith("/config.pbtxt")}
    out.update({rel.split("/")[0]: c for rel, c in texts.items() if rel.endswith(variant)})
    return out


@pytest.mark.parametrize("variant,fused,steps", [
    ("config.pbtxt", True, (FUSED,)),
    ("config.pbtxt", False, STEPS),
    ("configs/gpu.pbtxt", True, STEPS),  # the GPU layout always runs the encoder as its own model
])
def test_ensemble_wiring(variant, fused, steps):
    configs = configs_of(variant, 7, fused_cpu=fused)
    assert check_wiring(configs) == []
    ensemble = configs["recommend"].ensemble_scheduling.step
    assert tuple(s.model_name for s in ensemble) == steps == ensemble_steps(ServingConfig(fused_cpu=fused), "gpu" in variant)
    assert {s.model_version for s in ensemble} == {7}


def test_fused_step_takes_the_ensemble_inputs_ragged():
    fused = parsed()[f"{FUSED}/config.pbtxt"]
    assert fused.backend == "python" and fused.input[0].name == "ITEMS" and fused.input[0].allow_ragged_batch
    # the four `recommend` outputs, then the history's: the step serves both ensembles
    assert [t.name for t in fused.output][:4] == [t.name for t in parsed()["recommend/config.pbtxt"].output]
    assert [t.name for t in fused.output] == [t.name for t in parsed()[f"{SESSION_ENSEMBLE}/config.pbtxt"].output]


@pytest.mark.parametrize("fused", [True, False])
def test_wiring_check_catches_mistakes(fused):
    configs = configs_of("config.pbtxt", fused_cpu=fused)
    step = configs["recommend"].ensemble_scheduling.step[-1]
    step.input_map["K"] = "NOT_PRODUCED"
    problems = check_wiring(configs)
    assert any("NOT_PRODUCED" in p for p in problems)


def test_gpu_encoder_uses_onnxruntime_with_tensorrt_and_cpu_uses_python():
    configs = parsed()
    cpu, gpu = configs["session_encoder/config.pbtxt"], configs["session_encoder/configs/gpu.pbtxt"]
    assert cpu.backend == "python" and gpu.platform == "onnxruntime_onnx"
    accel = gpu.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accel.name == "tensorrt" and accel.parameters["precision_mode"] == "FP16"
    assert accel.parameters["trt_engine_cache_enable"] == "true"
    assert [t.name for t in cpu.input] == [t.name for t in gpu.input]
    assert configs["preprocess/config.pbtxt"].input[0].allow_ragged_batch
    for rel, config in configs.items():
        if not rel.startswith("recommend") and not rel.startswith("session_recommender"):
            assert config.dynamic_batching.max_queue_delay_microseconds > 0
            assert config.version_policy.latest.num_versions == 2


def test_response_cache_option():
    assert not ensemble_config(ServingConfig()).response_cache.enable
    assert ensemble_config(ServingConfig(response_cache=True)).response_cache.enable


def test_checked_in_configs_are_current():
    """model_repository/ holds this generator's output; regenerate with `sessionrec configs --write model_repository`."""
    for rel, text in all_configs(ServingConfig()).items():
        assert (ROOT / "model_repository" / rel).read_text() == text, f"{rel} is stale"
    for rel, data in warmup_files().items():
        assert (ROOT / "model_repository" / rel).read_bytes() == data, f"{rel} is stale"


def test_fused_step_warms_up_through_triton_with_a_valid_k():
    """Zero or random K would be an invalid request, and a failed warm-up fails the load: K is read
    from a file the repository writer puts beside the config."""
    config = fused_config(ServingConfig(max_batch_size=16, max_len=12))
    assert [(w.name, w.batch_size) for w in config.model_warmup] == [("one_session", 1), ("largest_batch", 16)]
    for warm in config.model_warmup:
        assert set(warm.inputs) == {"ITEMS", "K", "EXCLUDE_SEEN"}
        assert list(warm.inputs["ITEMS"].dims) == [WARMUP_SESSION_LEN] and warm.inputs["ITEMS"].zero_data
        assert warm.inputs["K"].input_data_file == WARMUP_K_FILE
    # The config is shared by every version of the step: a retrain with another max_len must not change
    # it (Triton would reload the serving version too; tests/reliability/test_version_window.py).
    assert render(fused_config(ServingConfig(max_len=4))) == render(fused_config(ServingConfig(max_len=16)))
    assert not fused_config(ServingConfig(triton_warmup=False)).model_warmup  # benchmarks/hotswap.py --no-triton-warmup
    (rel, data), = warmup_files().items()
    assert rel == f"{FUSED}/warmup/{WARMUP_K_FILE}" and np.frombuffer(data, "<i4").tolist() == [WARMUP_K]


def test_write_configs_leaves_unchanged_files_alone(tmp_path):
    # Triton reloads every version of a model whose config.pbtxt changed, even to the same bytes:
    # an export must not touch a config that is already right (the serving stub would restart).
    from sessionrec.export.repository import write_configs

    write_configs(tmp_path, ServingConfig(), version=1)
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file()}
    assert tmp_path / FUSED / "config.pbtxt" in stamps and tmp_path / FUSED / "warmup" / WARMUP_K_FILE in stamps
    write_configs(tmp_path, ServingConfig(), version=1)
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in stamps} == stamps
    write_configs(tmp_path, ServingConfig(max_batch_size=32), version=1)
    fused = tmp_path / FUSED / "config.pbtxt"
    assert (fused.stat().st_ino, fused.stat().st_mtime_ns) != stamps[fused]
    assert "max_batch_size: 32" in fused.read_text()
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("variant,fused,steps", [
    ("config.pbtxt", True, (FUSED,)),  # the fused step looks the history up itself: no extra hop
    ("config.pbtxt", False, (HISTORY, *STEPS)),
    ("configs/gpu.pbtxt", True, (HISTORY, *STEPS)),
])
def test_session_ensemble_wiring(variant, fused, steps):
    configs = configs_of(variant, 7, fused_cpu=fused)
    assert check_wiring(configs, SESSION_ENSEMBLE) == []
    ensemble = configs[SESSION_ENSEMBLE]
    assert tuple(s.model_name for s in ensemble.ensemble_scheduling.step) == steps
    assert {s.model_version for s in ensemble.ensemble_scheduling.step} == {7}
    # a separate recommender reads the history, never the caller's optional ITEMS directly
    first_items = [s.input_map["ITEMS"] for s in ensemble.ensemble_scheduling.step[1:] if "ITEMS" in s.input_map]
    assert first_items == ([] if steps == (FUSED,) else ["_history"])
    assert [t.name for t in ensemble.input if t.optional] == ["ITEMS"]
    assert [t.name for t in ensemble.output][-2:] == ["HISTORY_LENGTH", "HISTORY_STATE"]


def test_response_cache_is_refused_on_the_stateful_ensemble():
    assert ensemble_config(ServingConfig(response_cache=True)).response_cache.enable  # `recommend` may cache
    assert not ensemble_config(ServingConfig(response_cache=True), name=SESSION_ENSEMBLE).response_cache.enable
    with pytest.raises(ConfigError, match="older history"):
        all_configs(ServingConfig(session_response_cache=True))
    cached = ensemble_config(ServingConfig(), name=SESSION_ENSEMBLE)
    cached.response_cache.enable = True  # e.g. a hand-edited config
    with pytest.raises(ConfigError, match="stateful"):
        refuse_stateful_cache(cached)
    gpu = ensemble_config(ServingConfig(), gpu=True, name=SESSION_ENSEMBLE)
    gpu.response_cache.enable = True
    with pytest.raises(ConfigError, match="'session_history' is stateful"):
        refuse_stateful_cache(gpu)


def test_history_step_carries_its_defaults():
    configs = parsed(history_max_len=12, max_len=12, history_ttl_s=60.0)
    for model in (HISTORY, FUSED):
        config = configs[f"{model}/config.pbtxt"]
        assert config.parameters["history_max_len"].string_value == "12"
        assert config.parameters["history_ttl_s"].string_value == "60.0"
    history = configs[f"{HISTORY}/config.pbtxt"]
    assert history.input[0].data_type == mc.TYPE_STRING and history.dynamic_batching.max_queue_delay_microseconds > 0


@pytest.mark.parametrize("schema, inputs", [("graph", ["items", "alias", "adj_in", "adj_out", "mask"]),
                                            ("sequence", ["items", "mask"])])
@pytest.mark.parametrize("variant", ["config.pbtxt", "configs/gpu.pbtxt"])
def test_step_tensors_follow_the_input_schema(schema, inputs, variant):
    configs = configs_of(variant, 3, fused_cpu=False, schema=schema)
    assert check_wiring(configs) == []
    encoder = configs["session_encoder"]
    assert [t.name for t in encoder.input] == inputs
    assert [t.name for t in configs["preprocess"].output][: len(inputs)] == inputs
    if "gpu" in variant:  # TensorRT warm-up samples at the served shape, one per schema tensor
        assert sorted(encoder.model_warmup[0].inputs) == sorted(inputs)


def test_fused_step_dispatches_a_lone_request_at_once():
    """The fused CPU step's batcher does not wait (one instance: requests queue while it executes and
    batch anyway); the other python steps keep their short wait, and the knob is a setting."""
    from sessionrec.export.configs import preprocess_config

    assert fused_config(ServingConfig()).dynamic_batching.max_queue_delay_microseconds == 0
    assert fused_config(ServingConfig()).dynamic_batching.priority_levels == 2  # probes still overtake traffic
    assert fused_config(ServingConfig(fused_queue_delay_us=150)).dynamic_batching.max_queue_delay_microseconds == 150
    assert preprocess_config(ServingConfig()).dynamic_batching.max_queue_delay_microseconds == 100


def test_fused_instances_option():
    from sessionrec.export.configs import TEMPLATE_FUSED_INSTANCES, ConfigError as Refused, fused_config

    # None (the default) is resolved by the export; a config written without a catalogue gets the template's
    assert ServingConfig().fused_instances is None
    assert fused_config(ServingConfig()).instance_group[0].count == TEMPLATE_FUSED_INSTANCES == 2
    assert fused_config(ServingConfig(fused_instances=1)).instance_group[0].count == 1
    assert fused_config(ServingConfig(fused_instances=2)).instance_group[0].count == 2
    for bad in (0, -1, True, 1.5):
        with pytest.raises(Refused, match="fused_instances"):
            fused_config(ServingConfig(fused_instances=bad))


def test_fused_instances_rule_by_stub_memory():
    """2 instances while one stub's estimate is at most 1.5 GiB (export/instances.py); the 1M-item stub
    measured 0.97-1.03 GiB RSS (docs/BENCHMARKS.md section 6), the Diginetica one is ~0.19 GB."""
    from sessionrec.export import instances

    budget = instances.TWO_INSTANCES_MAX_STUB_BYTES
    assert budget == 3 << 29
    # Diginetica, 43,097 items, d=100, flat: encoder table + index 4*N*d each, ids/popularity 40*N
    digi = instances.stub_bytes(2 * 4 * 43_097 * 100 + 40 * 43_097, one_click_answers=43_097 * 20)
    assert digi < 0.25e9 and instances.choose(digi)["count"] == 2
    # 1M items, d=100, ivf: model.onnx 401 MB + items.faiss 410 MB + ids 24 MB (the measured export)
    million = instances.stub_bytes(401_000_000 + 410_000_000 + 24_000_000)
    assert 0.95e9 < million < 1.05e9 and instances.choose(million)["count"] == 2
    # 10M items, d=100, ivfsq: a 4 GB encoder table + 1 GB of codes + 0.24 GB of ids
    assert instances.choose(instances.stub_bytes(4_000_000_000 + 1_080_000_000 + 240_000_000))["count"] == 1
    chosen = instances.choose(budget)
    assert chosen == {"count": 2, "chosen_by": instances.rule_text(), "stub_estimate_bytes": budget, "budget_bytes": budget}
    assert instances.choose(budget + 1)["count"] == 1
    assert instances.choose(million, requested=1) == {"count": 1, "chosen_by": "requested",
                                                      "stub_estimate_bytes": million, "budget_bytes": budget}
    assert instances.choose(digi, requested=1)["count"] == 1
    for bad in (0, -2, True, 2.0):
        with pytest.raises(ValueError, match="fused_instances"):
            instances.choose(digi, requested=bad)


def test_cli_refuses_a_bad_fused_instances(capsys):
    from sessionrec.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["export", "ckpt.pt", "--repository", "repo", "--fused-instances", "0"])
    assert exit_.value.code == 2 and "--fused-instances: must be a whole number of at least 1, got '0'" in capsys.readouterr().err
