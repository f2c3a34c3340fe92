"""Triton model configurations, generated from one source of truth (the tensor tables below).

Configs are built as `model_config_pb2.ModelConfig` messages and printed with protobuf's text
format, so every file is valid by construction; tests parse them back strictly and check the
ensemble wiring. The checked-in `model_repository/*/config.pbtxt` files are this module's output
(`sessionrec configs --write model_repository`), and a test keeps them current.

Two ensemble layouts, both generated here:
- CPU (`config.pbtxt`, the embedded default): one step, `session_recommender`, a python model that
  runs preprocess -> onnxruntime -> FAISS in one stub. On a CPU node all three stages are python
  anyway, and each extra python step costs a shared-memory round trip per request (measured in
  docs/benchmarks/serving.md: the fused step serves more requests per core and answers sooner).
- GPU (`configs/gpu.pbtxt`): preprocess -> session_encoder -> retrieval, the encoder on Triton's
  onnxruntime backend with TensorRT, where the GPU step is worth its own model and batcher.
`ServingConfig.fused_cpu = False` gives the CPU server the three-step layout too (benchmarks, debugging).

The session encoder has one ONNX file and two configs:
- `config.pbtxt` (embedded CPU default): python backend running onnxruntime (only the python
  backend ships with the pytriton tritonserver);
- `configs/gpu.pbtxt` (`tritonserver --model-config-name=gpu`): the onnxruntime backend with the
  TensorRT execution accelerator, FP16, engine cache on a persistent path.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

FUSED = "session_recommender"
STEPS = ("preprocess", "session_encoder", "retrieval")  # the three-step ensemble, in order
VERSIONED = (*STEPS, FUSED)  # models with a folder per version besides the ensemble's
MODELS = (*VERSIONED, "recommend")

INT64, INT32, FP32, BOOL = mc.TYPE_INT64, mc.TYPE_INT32, mc.TYPE_FP32, mc.TYPE_BOOL

# (name, dtype, dims without the batch dim). -1 dims keep configs valid across retrains that change
# max_len or the embedding size; preprocess pads every request to the version's max_len, so the
# encoder's dynamic batcher sees equal shapes and batches any mix of session lengths.
ENSEMBLE_INPUTS = [("ITEMS", INT64, [-1]), ("K", INT32, [1]), ("EXCLUDE_SEEN", BOOL, [1])]
ENSEMBLE_OUTPUTS = [("ITEM_IDS", INT64, [-1]), ("SCORES", FP32, [-1]), ("UNKNOWN_COUNT", INT32, [1]), ("FALLBACK", BOOL, [1])]
GRAPH = [("items", INT64, [-1]), ("alias", INT64, [-1]), ("adj_in", FP32, [-1, -1]), ("adj_out", FP32, [-1, -1]), ("mask", FP32, [-1])]
PREPROCESS_OUTPUTS = GRAPH + [("unknown_count", INT32, [1]), ("fallback", BOOL, [1])]
ENCODER_OUTPUTS = [("session_embedding", FP32, [-1])]
RETRIEVAL_INPUTS = [("session_embedding", FP32, [-1]), ("items", INT64, [-1]), ("fallback", BOOL, [1]), ("K", INT32, [1]), ("EXCLUDE_SEEN", BOOL, [1])]
RETRIEVAL_OUTPUTS = [("ITEM_IDS", INT64, [-1]), ("SCORES", FP32, [-1])]
FUSED_INPUTS, FUSED_OUTPUTS = ENSEMBLE_INPUTS, ENSEMBLE_OUTPUTS

# Ensemble wiring: step -> ({step input: ensemble tensor}, {step output: ensemble tensor}).
WIRING = {
    "preprocess": (
        {"ITEMS": "ITEMS"},
        {"items": "_items", "alias": "_alias", "adj_in": "_adj_in", "adj_out": "_adj_out", "mask": "_mask",
         "unknown_count": "UNKNOWN_COUNT", "fallback": "FALLBACK"},
    ),
    "session_encoder": (
        {"items": "_items", "alias": "_alias", "adj_in": "_adj_in", "adj_out": "_adj_out", "mask": "_mask"},
        {"session_embedding": "_embedding"},
    ),
    "retrieval": (
        {"session_embedding": "_embedding", "items": "_items", "fallback": "FALLBACK", "K": "K",
         "EXCLUDE_SEEN": "EXCLUDE_SEEN"},
        {"ITEM_IDS": "ITEM_IDS", "SCORES": "SCORES"},
    ),
    FUSED: (
        {name: name for name, _, _ in FUSED_INPUTS},
        {name: name for name, _, _ in FUSED_OUTPUTS},
    ),
}


@dataclass
class ServingConfig:
    """Knobs of the generated configs, with the defaults used on the embedded 2-core CPU server."""

    max_batch_size: int = 64  # per model; the encoder's dynamic batcher groups up to this many sessions
    queue_delay_us: int = 100  # dynamic batching wait: <0.1 ms of added latency buys batching under load
    fused_cpu: bool = True  # CPU ensemble = one session_recommender step (False: three python steps)
    fused_instances: int = 1  # session_recommender stubs; on 2 cores more instances only contend
    preprocess_instances: int = 1  # python stub processes; on 2 cores more instances only contend
    encoder_instances: int = 1
    retrieval_instances: int = 1
    versions_kept: int = 2  # version_policy latest N: the current version and the previous one (rollback)
    response_cache: bool = False  # cache ensemble responses (needs tritonserver --cache-config)
    triton_warmup: bool = True  # warm-up requests through Triton at each load of the fused step (model_warmup)
    # GPU cluster (configs/gpu.pbtxt):
    gpu_encoder_instances: int = 1
    gpu_cpu_step_instances: int = 4  # preprocess / retrieval are CPU work next to the GPU encoder
    trt_precision: str = "FP16"
    trt_engine_cache: str = "/engine-cache"  # persistent path (the chart mounts a volume there)
    trt_workspace_bytes: int = 1 << 30
    max_len: int = 32  # session length of the warm-up samples (the GPU encoder's: TensorRT builds its engine then)
    extra: dict = field(default_factory=dict)


def _tensors(target, spec, ragged: bool = False) -> None:
    for name, dtype, dims in spec:
        tensor = target.add()
        tensor.name, tensor.data_type = name, dtype
        tensor.dims.extend(dims)
        if ragged:
            tensor.allow_ragged_batch = True


def _common(config: mc.ModelConfig, cfg: ServingConfig, delay_us: int | None = None) -> None:
    config.max_batch_size = cfg.max_batch_size
    config.dynamic_batching.max_queue_delay_microseconds = cfg.queue_delay_us if delay_us is None else delay_us
    config.version_policy.latest.num_versions = cfg.versions_kept


def _instances(config: mc.ModelConfig, count: int, kind=mc.ModelInstanceGroup.KIND_CPU) -> None:
    group = config.instance_group.add()
    group.count, group.kind = count, kind


def preprocess_config(cfg: ServingConfig, gpu: bool = False) -> mc.ModelConfig:
    config = mc.ModelConfig(name="preprocess", backend="python")
    _common(config, cfg)
    # Ragged: sessions of different lengths batch together (python backend sees one tensor each).
    _tensors(config.input, [ENSEMBLE_INPUTS[0]], ragged=True)
    _tensors(config.output, PREPROCESS_OUTPUTS)
    _instances(config, cfg.gpu_cpu_step_instances if gpu else cfg.preprocess_instances)
    warm = config.model_warmup.add(name="random_session", batch_size=1)
    warm.inputs["ITEMS"].data_type, warm.inputs["ITEMS"].random_data = INT64, True
    warm.inputs["ITEMS"].dims.extend([8])
    return config


def encoder_config(cfg: ServingConfig, gpu: bool = False) -> mc.ModelConfig:
    config = mc.ModelConfig(name="session_encoder")
    _common(config, cfg, delay_us=2 * cfg.queue_delay_us if gpu else None)
    _tensors(config.input, GRAPH)
    _tensors(config.output, ENCODER_OUTPUTS)
    if not gpu:
        config.backend = "python"  # model.py runs model.onnx in onnxruntime (sessionrec.serving.encoder)
        _instances(config, cfg.encoder_instances)
        return config
    config.platform = "onnxruntime_onnx"
    config.default_model_filename = "model.onnx"
    _instances(config, cfg.gpu_encoder_instances, mc.ModelInstanceGroup.KIND_GPU)
    trt = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
    trt.parameters.update({
        "precision_mode": cfg.trt_precision,
        "max_workspace_size_bytes": str(cfg.trt_workspace_bytes),
        "trt_engine_cache_enable": "true",
        "trt_engine_cache_path": cfg.trt_engine_cache,
    })
    # Warm up at the served shape so TensorRT builds (or loads from cache) before traffic arrives.
    warm = config.model_warmup.add(name="empty_sessions", batch_size=cfg.max_batch_size)
    for name, dtype, dims in GRAPH:
        sample = warm.inputs[name]
        sample.data_type, sample.zero_data = dtype, True
        sample.dims.extend([cfg.max_len] * len(dims))
    return config


def retrieval_config(cfg: ServingConfig, gpu: bool = False) -> mc.ModelConfig:
    config = mc.ModelConfig(name="retrieval", backend="python")
    _common(config, cfg)
    _tensors(config.input, RETRIEVAL_INPUTS)
    _tensors(config.output, RETRIEVAL_OUTPUTS)
    _instances(config, cfg.gpu_cpu_step_instances if gpu else cfg.retrieval_instances)
    return config


def fused_config(cfg: ServingConfig) -> mc.ModelConfig:
    """`session_recommender`: the whole pipeline in one python model (the CPU ensemble's step)."""
    config = mc.ModelConfig(name=FUSED, backend="python")
    _common(config, cfg)
    _tensors(config.input, [FUSED_INPUTS[0]], ragged=True)  # sessions of any length batch together
    _tensors(config.input, FUSED_INPUTS[1:])
    _tensors(config.output, FUSED_OUTPUTS)
    _instances(config, cfg.fused_instances)
    # Warm-up requests through Triton, before the new version counts as loaded. The stub's own
    # warm-up (LocalPipeline.warm_up) sizes the compute; these warm the path around it (the first
    # executes of a new stub: shared-memory buffers, tensors), which otherwise stalled the first
    # live requests after a switch by 20-30 ms (docs/RELIABILITY.md, hot swap). All-zero ITEMS are
    # unknown items (the fallback answers); K comes from a file, since zero or random K would be an
    # invalid request and a failed warm-up fails the load.
    for name, batch in (("one_session", 1), ("largest_batch", cfg.max_batch_size)) if cfg.triton_warmup else ():
        warm = config.model_warmup.add(name=name, batch_size=batch)
        for tensor, dtype, dims in FUSED_INPUTS:
            sample = warm.inputs[tensor]
            sample.data_type = dtype
            sample.dims.extend([cfg.max_len] if tensor == "ITEMS" else dims)
            if tensor == "K":
                sample.input_data_file = WARMUP_K_FILE
            else:
                sample.zero_data = True
    return config


WARMUP_K, WARMUP_K_FILE = 20, "K"  # K of the warm-up requests, in <model>/warmup/K


def warmup_files() -> dict[str, bytes]:
    """Relative path in a model repository -> the raw input data the warm-up samples read."""
    return {f"{FUSED}/warmup/{WARMUP_K_FILE}": struct.pack("<i", WARMUP_K)}  # one INT32, little-endian


def ensemble_steps(cfg: ServingConfig, gpu: bool = False) -> tuple[str, ...]:
    """The models the `recommend` ensemble runs, in order, in this layout."""
    return (FUSED,) if cfg.fused_cpu and not gpu else STEPS


def ensemble_config(cfg: ServingConfig, version: int = -1, gpu: bool = False, name: str = "recommend") -> mc.ModelConfig:
    """The `recommend` ensemble, every step pinned to `version` (-1 = latest, the template).

    Pinning makes a retrain's switch atomic: the steps load version N next to N-1, then reloading
    this config flips them all at once, so a request never mixes two versions' item numbering.
    `name="recommend_candidate"` is the experiment's second ensemble (export/candidate.py), pinned to
    the candidate version over the same step models.
    """
    config = mc.ModelConfig(name=name, platform="ensemble", max_batch_size=cfg.max_batch_size)
    _tensors(config.input, ENSEMBLE_INPUTS)
    _tensors(config.output, ENSEMBLE_OUTPUTS)
    config.version_policy.latest.num_versions = 1
    if cfg.response_cache:
        config.response_cache.enable = True
    for model in ensemble_steps(cfg, gpu):
        inputs, outputs = WIRING[model]
        step = config.ensemble_scheduling.step.add(model_name=model, model_version=version)
        step.input_map.update(inputs)
        step.output_map.update(outputs)
    return config


def render(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config)


def parse(text: str) -> mc.ModelConfig:
    """Strict parse (unknown fields, bad enums fail with a line number)."""
    return text_format.Parse(text, mc.ModelConfig())


def all_configs(cfg: ServingConfig, version: int = -1) -> dict[str, str]:
    """Relative path in a model repository -> config text."""
    return {
        "preprocess/config.pbtxt": render(preprocess_config(cfg)),
        "preprocess/configs/gpu.pbtxt": render(preprocess_config(cfg, gpu=True)),
        "session_encoder/config.pbtxt": render(encoder_config(cfg)),
        "session_encoder/configs/gpu.pbtxt": render(encoder_config(cfg, gpu=True)),
        "retrieval/config.pbtxt": render(retrieval_config(cfg)),
        "retrieval/configs/gpu.pbtxt": render(retrieval_config(cfg, gpu=True)),
        # No GPU variant: the GPU ensemble does not use it, and without configs/gpu.pbtxt Triton
        # would fall back to this CPU config; the chart loads only what its ensemble needs.
        f"{FUSED}/config.pbtxt": render(fused_config(cfg)),
        "recommend/config.pbtxt": render(ensemble_config(cfg, version)),
        "recommend/configs/gpu.pbtxt": render(ensemble_config(cfg, version, gpu=True)),
    }


def check_wiring(configs: dict[str, mc.ModelConfig]) -> list[str]:
    """Problems in the ensemble's tensor wiring: names, dtypes and producers (empty list = fine)."""
    problems = []
    ensemble = configs["recommend"]
    available = {t.name: t.data_type for t in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = configs[step.model_name]
        model_inputs = {t.name: t.data_type for t in model.input}
        for key, tensor in step.input_map.items():
            if key not in model_inputs:
                problems.append(f"{step.model_name}: input_map key {key!r} is not an input of the model")
            elif tensor not in available:
                problems.append(f"{step.model_name}: input {key!r} reads {tensor!r}, which no earlier step produces")
            elif available[tensor] != model_inputs[key]:
                problems.append(f"{step.model_name}: input {key!r} dtype differs from {tensor!r}")
        missing = set(model_inputs) - set(step.input_map)
        if missing:
            problems.append(f"{step.model_name}: inputs {sorted(missing)} are not mapped")
        model_outputs = {t.name: t.data_type for t in model.output}
        for key, tensor in step.output_map.items():
            if key not in model_outputs:
                problems.append(f"{step.model_name}: output_map key {key!r} is not an output of the model")
            else:
                available[tensor] = model_outputs[key]
    for out in ensemble.output:
        if out.name not in available:
            problems.append(f"recommend: output {out.name!r} is produced by no step")
        elif available[out.name] != out.data_type:
            problems.append(f"recommend: output {out.name!r} dtype differs from its producer")
    return problems
