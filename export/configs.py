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

from sessionrec.schemas import DEFAULT_SCHEMA, get_schema

FUSED = "session_recommender"
STEPS = ("preprocess", "session_encoder", "retrieval")  # the three-step ensemble, in order
HISTORY = "session_history"  # the stateful ensemble's first step (Redis), sessionrec.serving.history
SESSION_ENSEMBLE = "recommend_session"  # one click in, the session kept server-side (HISTORY + the steps)
STATEFUL = (HISTORY,)  # steps whose answer depends on more than the request (and any step reading SESSION_ID)
VERSIONED = (*STEPS, FUSED, HISTORY)  # models with a folder per version besides the ensembles'
ENSEMBLES = ("recommend", SESSION_ENSEMBLE)
MODELS = (*VERSIONED, SESSION_ENSEMBLE, "recommend")  # "recommend" last: its version folder marks a version live

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
# recommend_session: the event (session id, its click(s), its sequence number) instead of the session.
# ITEMS is optional there: the caller's full session, answered from instead of the stored history.
EVENT_INPUTS = [("SESSION_ID", mc.TYPE_STRING, [1]), ("NEW_ITEMS", INT64, [-1]), ("CLICK_SEQ", INT64, [1])]
HISTORY_INPUTS = EVENT_INPUTS + [("ITEMS", INT64, [-1])]
HISTORY_OPTIONAL = ("ITEMS",)
HISTORY_OUTPUTS = [("HISTORY", INT64, [-1]), ("HISTORY_LENGTH", INT32, [1]), ("HISTORY_STATE", mc.TYPE_STRING, [1])]
# The multi-step layouts' monitoring flag (sessionrec.monitoring.signals): session_history tells the
# steps after it that a request is an event (its clicks counted there) and whether it is one of the
# server's canary replays (not counted at all). Optional on preprocess and retrieval: `recommend`
# does not map it, the probes do not send it.
CANARY = [("canary", BOOL, [1])]
SESSION_INPUTS = HISTORY_INPUTS + ENSEMBLE_INPUTS[1:]
SESSION_OUTPUTS = ENSEMBLE_OUTPUTS + HISTORY_OUTPUTS[1:]
# The fused CPU step serves both ensembles: `recommend` maps ITEMS/K/EXCLUDE_SEEN and its four outputs;
# `recommend_session` also the event inputs and the history outputs. The history lookup then runs in
# the same stub, with no extra shared-memory hop (docs/benchmarks/session.md measures the overhead).
FUSED_INPUTS = ENSEMBLE_INPUTS + EVENT_INPUTS
FUSED_OPTIONAL = tuple(name for name, _, _ in SESSION_INPUTS if name not in ("K", "EXCLUDE_SEEN"))
FUSED_OUTPUTS = SESSION_OUTPUTS

# Ensemble wiring: step -> ({step input: ensemble tensor}, {step output: ensemble tensor}).
# (The graph schema's; `wiring(schema)` gives any schema's.)
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
        {name: name for name, _, _ in ENSEMBLE_INPUTS},
        {name: name for name, _, _ in ENSEMBLE_OUTPUTS},
    ),
    HISTORY: (
        {name: name for name, _, _ in HISTORY_INPUTS},
        {"HISTORY": "_history", "HISTORY_LENGTH": "HISTORY_LENGTH", "HISTORY_STATE": "HISTORY_STATE",
         "canary": "_canary"},
    ),
}


_TRITON_DTYPES = {"int64": INT64, "int32": INT32, "float32": FP32, "bool": BOOL}


def encoder_tensors(schema: str = DEFAULT_SCHEMA) -> list:
    """The encoder inputs of an input schema (sessionrec.schemas) as config tensors: the preprocess
    step's outputs and the encoder's inputs. Every schema dim is the padded length L (-1 here)."""
    return [(t.name, _TRITON_DTYPES[t.dtype], [-1] * t.rank) for t in get_schema(schema).inputs]


def wiring(schema: str = DEFAULT_SCHEMA) -> dict:
    """WIRING with the preprocess -> encoder tensors of this schema (`_<name>` inside the ensemble)."""
    names = [name for name, _, _ in encoder_tensors(schema)]
    out = dict(WIRING)
    out["preprocess"] = ({"ITEMS": "ITEMS"}, {**{n: f"_{n}" for n in names},
                                              "unknown_count": "UNKNOWN_COUNT", "fallback": "FALLBACK"})
    out["session_encoder"] = ({n: f"_{n}" for n in names}, {"session_embedding": "_embedding"})
    return out


@dataclass
class ServingConfig:
    """Knobs of the generated configs, with the defaults used on the embedded 2-core CPU server."""

    max_batch_size: int = 64  # per model; the encoder's dynamic batcher groups up to this many sessions
    queue_delay_us: int = 100  # dynamic batching wait: <0.1 ms of added latency buys batching under load
    # ...except on the fused CPU step: it has one instance, and requests that arrive while it executes
    # queue and form the next batch anyway, so a wait only delays a lone request (the batcher held
    # every request ~0.2 ms at 100 us, docs/benchmarks/latency_breakdown.md) and buys no batching.
    fused_queue_delay_us: int = 0
    fused_cpu: bool = True  # CPU ensemble = one session_recommender step (False: three python steps)
    # session_recommender stubs. 2 removes tritonserver 2.51's ~500 ms batcher stalls (a request
    # arriving while the only instance is being released waits out the batcher's idle timeout) and
    # measured 2.7x the capacity at p95 <= 70 ms (docs/BENCHMARKS.md section 4) for a second copy of
    # the version in memory. None: chosen at export by the stub's estimated memory (export/instances.py,
    # recorded in the manifest's `fused_instances`); configs written without a catalogue (the checked-in
    # templates, `sessionrec configs`) get TEMPLATE_FUSED_INSTANCES.
    fused_instances: int | None = None
    preprocess_instances: int = 1  # python stub processes; on 2 cores more instances only contend
    encoder_instances: int = 1
    retrieval_instances: int = 1
    versions_kept: int = 2  # version_policy latest N: the current version and the previous one (rollback)
    response_cache: bool = False  # cache `recommend` responses (needs tritonserver --cache-config)
    # recommend_session cannot be cached: Triton's cache keys on the request alone, so a hit would
    # answer from an older history and skip storing the click. True is refused (ConfigError).
    session_response_cache: bool = False
    history_instances: int = 1  # session_history stubs (each waits on Redis at most redis_timeout_ms per batch)
    history_max_len: int = 50  # clicks kept per session in Redis (the model reads its newest max_len)
    history_ttl_s: float = 1800.0  # sliding session expiry; SESSIONREC_HISTORY_TTL_S overrides it at run time
    redis_timeout_ms: float = 20.0  # connect and reply timeout of one batch's round trip (then: degraded)
    triton_warmup: bool = True  # warm-up requests through Triton at each load of the fused step (model_warmup)
    # GPU cluster (configs/gpu.pbtxt):
    gpu_encoder_instances: int = 1
    gpu_cpu_step_instances: int = 4  # preprocess / retrieval are CPU work next to the GPU encoder
    trt_precision: str = "FP16"
    trt_engine_cache: str = "/engine-cache"  # persistent path (the chart mounts a volume there)
    trt_workspace_bytes: int = 1 << 30
    # The exported model's max_len (export sets it): the GPU encoder's warm-up shape (TensorRT builds its engine
    # then) and the floor of history_max_len. The fused step's warm-up does not use it (WARMUP_SESSION_LEN).
    max_len: int = 32
    # Input schema of the encoder (sessionrec.schemas): names the preprocess -> encoder tensors of the
    # three-step layout. The step configs are shared by a model's versions, so a repository serves
    # one schema at a time (export refuses to switch it under a live version).
    schema: str = DEFAULT_SCHEMA
    extra: dict = field(default_factory=dict)


# A config written with no catalogue to size (fused_instances None outside an export): the catalogue
# the checked-in templates stand for is small, and 2 is what the export's rule gives it.
TEMPLATE_FUSED_INSTANCES = 2


class ConfigError(ValueError):
    """A combination of settings the generator refuses to write."""


def _tensors(target, spec, ragged: bool = False, optional: tuple[str, ...] = ()) -> None:
    for name, dtype, dims in spec:
        tensor = target.add()
        tensor.name, tensor.data_type = name, dtype
        tensor.dims.extend(dims)
        if ragged:
            tensor.allow_ragged_batch = True
        if name in optional:
            tensor.optional = True


PROBE_PRIORITY, PRIORITY_LEVELS = 1, 2  # probes ask for level 1; traffic gets the default, level 2


def _common(config: mc.ModelConfig, cfg: ServingConfig, delay_us: int | None = None) -> None:
    config.max_batch_size = cfg.max_batch_size
    config.dynamic_batching.max_queue_delay_microseconds = cfg.queue_delay_us if delay_us is None else delay_us
    config.version_policy.latest.num_versions = cfg.versions_kept
    if config.backend == "python":
        # Two priority levels: the chart's liveness probe sends level 1, so it overtakes queued
        # traffic and overload alone never restarts a pod; requests without a priority get level 2.
        config.dynamic_batching.priority_levels = PRIORITY_LEVELS
        config.dynamic_batching.default_priority_level = PRIORITY_LEVELS


def _instances(config: mc.ModelConfig, count: int, kind=mc.ModelInstanceGroup.KIND_CPU) -> None:
    group = config.instance_group.add()
    group.count, group.kind = count, kind


def preprocess_config(cfg: ServingConfig, gpu: bool = False) -> mc.ModelConfig:
    config = mc.ModelConfig(name="preprocess", backend="python")
    _common(config, cfg)
    # Ragged: sessions of different lengths batch together (python backend sees one tensor each).
    _tensors(config.input, [ENSEMBLE_INPUTS[0]], ragged=True)
    _tensors(config.input, CANARY, optional=("canary",))
    _tensors(config.output, encoder_tensors(cfg.schema) + PREPROCESS_OUTPUTS[len(GRAPH):])
    _instances(config, cfg.gpu_cpu_step_instances if gpu else cfg.preprocess_instances)
    warm = config.model_warmup.add(name="random_session", batch_size=1)
    warm.inputs["ITEMS"].data_type, warm.inputs["ITEMS"].random_data = INT64, True
    warm.inputs["ITEMS"].dims.extend([8])
    return config


def encoder_config(cfg: ServingConfig, gpu: bool = False) -> mc.ModelConfig:
    config = mc.ModelConfig(name="session_encoder")
    if not gpu:
        config.backend = "python"  # model.py runs model.onnx in onnxruntime (sessionrec.serving.encoder)
    _common(config, cfg, delay_us=2 * cfg.queue_delay_us if gpu else None)
    _tensors(config.input, encoder_tensors(cfg.schema))
    _tensors(config.output, ENCODER_OUTPUTS)
    if not gpu:
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
    # Warm up at the served shapes, batch 1 (a lone request at low load) and the largest batch, so
    # TensorRT builds (or loads from the cache) the engines for both ends of the range before
    # traffic arrives and no engine is built inside a live request.
    for name, batch in (("one_session", 1), ("largest_batch", cfg.max_batch_size)):
        warm = config.model_warmup.add(name=name, batch_size=batch)
        for tensor, dtype, dims in encoder_tensors(cfg.schema):
            sample = warm.inputs[tensor]
            sample.data_type, sample.zero_data = dtype, True
            sample.dims.extend([cfg.max_len] * len(dims))
    return config


def retrieval_config(cfg: ServingConfig, gpu: bool = False) -> mc.ModelConfig:
    config = mc.ModelConfig(name="retrieval", backend="python")
    _common(config, cfg)
    _tensors(config.input, RETRIEVAL_INPUTS)
    _tensors(config.input, CANARY, optional=("canary",))
    _tensors(config.output, RETRIEVAL_OUTPUTS)
    _instances(config, cfg.gpu_cpu_step_instances if gpu else cfg.retrieval_instances)
    return config


# A retrieval shard (sessionrec.serving.shards): the front's session vectors in, the shard's top K out
# as global model ids (the front merges by score and maps to raw ids).
SHARD_INPUTS = [("session_embedding", FP32, [-1]), ("K", INT32, [1])]
SHARD_OUTPUTS = [("SCORES", FP32, [-1]), ("MODEL_IDS", INT64, [-1])]


def shard_config(cfg: ServingConfig, shard: int) -> mc.ModelConfig:
    """`retrieval_shard_<s>`, served alone by shard s's tritonserver; the front pins its version."""
    config = mc.ModelConfig(name=f"retrieval_shard_{shard}", backend="python")
    _common(config, cfg)
    _tensors(config.input, SHARD_INPUTS)
    _tensors(config.output, SHARD_OUTPUTS)
    _instances(config, cfg.retrieval_instances)
    return config


def fused_config(cfg: ServingConfig) -> mc.ModelConfig:
    """`session_recommender`: the whole pipeline in one python model (the CPU ensemble's step)."""
    config = mc.ModelConfig(name=FUSED, backend="python")
    _common(config, cfg, delay_us=cfg.fused_queue_delay_us)
    # ITEMS ragged: sessions of any length batch together. Optional: a `recommend_session` event
    # may carry only its new click(s) (the `recommend` ensemble still requires ITEMS of its callers).
    _tensors(config.input, [FUSED_INPUTS[0]], ragged=True, optional=FUSED_OPTIONAL)
    _tensors(config.input, FUSED_INPUTS[1:3])
    _tensors(config.input, FUSED_INPUTS[3:], ragged=True, optional=FUSED_OPTIONAL)
    _tensors(config.output, FUSED_OUTPUTS)
    count = TEMPLATE_FUSED_INSTANCES if cfg.fused_instances is None else cfg.fused_instances
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"fused_instances must be a whole number of at least 1, got {count!r}")
    _instances(config, count)
    _history_parameters(config, cfg)
    # Warm-up requests through Triton, before the new version counts as loaded. The stub's own
    # warm-up (LocalPipeline.warm_up) sizes the compute; these warm the path around it (the first
    # executes of a new stub: shared-memory buffers, tensors), which otherwise stalled the first
    # live requests after a switch by 20-30 ms (docs/RELIABILITY.md, hot swap). All-zero ITEMS are
    # unknown items (the fallback answers); K comes from a file, since zero or random K would be an
    # invalid request and a failed warm-up fails the load.
    # The sample's length is a constant, not the model's max_len: this config is shared by every
    # version of the step, and Triton reloads *all* loaded versions of a model whose config changed,
    # so a retrain with another max_len restarted the serving version's stub during its own switch.
    # A constant costs nothing here: the step pads a batch to its longest session (the compute was
    # sized by the stub's own warm-up at its version's max_len, LocalPipeline.warm_up) and all-zero
    # ids of any length are one fallback answer. (The GPU encoder's warm-up cannot do this: TensorRT
    # builds its engine at the shape warmed up, which is the version's max_len; docs/ARCHITECTURE.md.)
    for name, batch in (("one_session", 1), ("largest_batch", cfg.max_batch_size)) if cfg.triton_warmup else ():
        warm = config.model_warmup.add(name=name, batch_size=batch)
        for tensor, dtype, dims in ENSEMBLE_INPUTS:
            sample = warm.inputs[tensor]
            sample.data_type = dtype
            sample.dims.extend([WARMUP_SESSION_LEN] if tensor == "ITEMS" else dims)
            if tensor == "K":
                sample.input_data_file = WARMUP_K_FILE
            else:
                sample.zero_data = True
    return config


def history_config(cfg: ServingConfig, gpu: bool = False) -> mc.ModelConfig:
    """`session_history`: records the event in Redis, hands the session's clicks to the recommender.

    Its dynamic batcher is what makes one Redis round trip per batch. Where Redis is (address, TLS,
    password, key prefix) comes from the server's environment (sessionrec.serving.history), so one
    exported version serves any deployment; the parameters are the defaults the environment overrides.
    """
    config = mc.ModelConfig(name=HISTORY, backend="python")
    _common(config, cfg)
    _tensors(config.input, HISTORY_INPUTS, ragged=True, optional=HISTORY_OPTIONAL)
    _tensors(config.output, HISTORY_OUTPUTS + CANARY)
    _instances(config, cfg.gpu_cpu_step_instances if gpu else cfg.history_instances)
    _history_parameters(config, cfg)
    return config


def _history_parameters(config: mc.ModelConfig, cfg: ServingConfig) -> None:
    from sessionrec.serving.history import shortfall

    problem = shortfall(cfg.history_max_len, cfg.max_len)  # cfg.max_len: the exported model's (exporter sets it)
    if problem:
        raise ConfigError(f"{config.name}: {problem}")
    for key, value in (("history_max_len", cfg.history_max_len), ("history_ttl_s", cfg.history_ttl_s),
                       ("redis_timeout_ms", cfg.redis_timeout_ms)):
        config.parameters[key].string_value = str(value)


WARMUP_K, WARMUP_K_FILE = 20, "K"  # K of the warm-up requests, in <model>/warmup/K
WARMUP_SESSION_LEN = 32  # clicks in the fused step's warm-up sessions, whatever a version's max_len (fused_config)


def warmup_files() -> dict[str, bytes]:
    """Relative path in a model repository -> the raw input data the warm-up samples read."""
    return {f"{FUSED}/warmup/{WARMUP_K_FILE}": struct.pack("<i", WARMUP_K)}  # one INT32, little-endian


def ensemble_steps(cfg: ServingConfig, gpu: bool = False) -> tuple[str, ...]:
    """The models the `recommend` ensemble runs, in order, in this layout."""
    return (FUSED,) if cfg.fused_cpu and not gpu else STEPS


def ensemble_config(cfg: ServingConfig, version: int = -1, gpu: bool = False, name: str = "recommend") -> mc.ModelConfig:
    """The `recommend` ensemble (or `recommend_session`), every step pinned to `version` (-1 = latest, the template).

    Pinning makes a retrain's switch atomic: the steps load version N next to N-1, then reloading
    this config flips them all at once, so a request never mixes two versions' item numbering.
    `recommend_session` is the same steps behind `session_history`, whose HISTORY feeds their ITEMS.
    `name="recommend_candidate"` is the experiment's second ensemble (export/candidate.py), pinned to
    the candidate version over the same step models.
    """
    session = name == SESSION_ENSEMBLE
    config = mc.ModelConfig(name=name, platform="ensemble", max_batch_size=cfg.max_batch_size)
    _tensors(config.input, SESSION_INPUTS if session else ENSEMBLE_INPUTS, optional=HISTORY_OPTIONAL if session else ())
    _tensors(config.output, SESSION_OUTPUTS if session else ENSEMBLE_OUTPUTS)
    config.version_policy.latest.num_versions = 1
    if cfg.session_response_cache if session else cfg.response_cache:
        config.response_cache.enable = True
    steps = ensemble_steps(cfg, gpu)
    if session and steps != (FUSED,):  # the fused step looks the history up itself; else a step of its own
        steps = (HISTORY,) + steps
    for model in steps:
        inputs, outputs = wiring(cfg.schema)[model]
        if session and model == FUSED:
            inputs = {name: name for name, _, _ in SESSION_INPUTS}
            outputs = {name: name for name, _, _ in SESSION_OUTPUTS}
        elif session and "ITEMS" in inputs and model != HISTORY:
            inputs = {**inputs, "ITEMS": "_history", "canary": "_canary"}
        elif session and model == "retrieval":
            inputs = {**inputs, "canary": "_canary"}
        step = config.ensemble_scheduling.step.add(model_name=model, model_version=version)
        step.input_map.update(inputs)
        step.output_map.update(outputs)
    refuse_stateful_cache(config)
    return config


def refuse_stateful_cache(config: mc.ModelConfig) -> None:
    """Raise ConfigError for a cached ensemble with a stateful step.

    Triton's response cache hashes the request's inputs only. On `recommend_session` a hit would
    answer a guest's second click on the same item with the first answer (an older history) and
    skip the history step, so the click would never be stored. What does cache across replicas is
    the one-click answer table (docs/ARCHITECTURE.md, "The stateful request").
    """
    stateful = [s.model_name for s in config.ensemble_scheduling.step
                if s.model_name in STATEFUL or "SESSION_ID" in s.input_map]
    if config.response_cache.enable and stateful:
        raise ConfigError(
            f"{config.name}: response_cache is enabled on an ensemble whose step {stateful[0]!r} is stateful "
            "(it records the click in the session history); "
            "the cache keys on the request alone, so hits would answer from an older history and skip storing "
            "the click. Leave session_response_cache off (response_cache applies to `recommend` only)."
        )


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
        f"{HISTORY}/config.pbtxt": render(history_config(cfg)),  # CPU work on either node kind
        f"{HISTORY}/configs/gpu.pbtxt": render(history_config(cfg, gpu=True)),
        f"{SESSION_ENSEMBLE}/config.pbtxt": render(ensemble_config(cfg, version, name=SESSION_ENSEMBLE)),
        f"{SESSION_ENSEMBLE}/configs/gpu.pbtxt": render(ensemble_config(cfg, version, gpu=True, name=SESSION_ENSEMBLE)),
    }


def check_wiring(configs: dict[str, mc.ModelConfig], ensemble_name: str = "recommend") -> list[str]:
    """Problems in the ensemble's tensor wiring: names, dtypes and producers (empty list = fine)."""
    problems = []
    ensemble = configs[ensemble_name]
    available = {t.name: t.data_type for t in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = configs[step.model_name]
        model_inputs = {t.name: t.data_type for t in model.input}
        required = {t.name for t in model.input if not t.optional}
        optional_ensemble = {t.name for t in ensemble.input if t.optional}
        for key, tensor in step.input_map.items():
            if key not in model_inputs:
                problems.append(f"{step.model_name}: input_map key {key!r} is not an input of the model")
            elif tensor not in available:
                problems.append(f"{step.model_name}: input {key!r} reads {tensor!r}, which no earlier step produces")
            elif available[tensor] != model_inputs[key]:
                problems.append(f"{step.model_name}: input {key!r} dtype differs from {tensor!r}")
            elif tensor in optional_ensemble and key in required:
                problems.append(f"{step.model_name}: required input {key!r} reads the optional {tensor!r}")
        missing = required - set(step.input_map)
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
            problems.append(f"{ensemble_name}: output {out.name!r} is produced by no step")
        elif available[out.name] != out.data_type:
            problems.append(f"{ensemble_name}: output {out.name!r} dtype differs from its producer")
    return problems
