"""Generated Triton configs: strictly valid, correctly wired, and the checked-in copies are current."""

from pathlib import Path

import pytest

from sessionrec.export.configs import ServingConfig, all_configs, check_wiring, ensemble_config, parse

ROOT = Path(__file__).resolve().parents[2]


def parsed(version=-1, **kw):
    texts = all_configs(ServingConfig(**kw), version)
    return {rel: parse(text) for rel, text in texts.items()}


def test_every_config_parses_strictly_and_names_match_folders():
    for rel, config in parsed().items():
        assert config.name == rel.split("/")[0]


@pytest.mark.parametrize("variant", ["config.pbtxt", "configs/gpu.pbtxt"])
def test_ensemble_wiring(variant):
    configs = {rel.split("/")[0]: c for rel, c in parsed(7).items() if rel.endswith(variant)}
    assert check_wiring(configs) == []
    assert {s.model_version for s in configs["recommend"].ensemble_scheduling.step} == {7}


def test_wiring_check_catches_mistakes():
    configs = {rel.split("/")[0]: c for rel, c in parsed().items() if rel.endswith("/config.pbtxt")}
    step = configs["recommend"].ensemble_scheduling.step[2]
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
        if not rel.startswith("recommend"):
            assert config.dynamic_batching.max_queue_delay_microseconds > 0
            assert config.version_policy.latest.num_versions == 2


def test_response_cache_option():
    assert not ensemble_config(ServingConfig()).response_cache.enable
    assert ensemble_config(ServingConfig(response_cache=True)).response_cache.enable


def test_checked_in_configs_are_current():
    """model_repository/ holds this generator's output; regenerate with `sessionrec configs --write model_repository`."""
    for rel, text in all_configs(ServingConfig()).items():
        assert (ROOT / "model_repository" / rel).read_text() == text, f"{rel} is stale"
