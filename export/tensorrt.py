"""Native TensorRT plan for the session encoder, and its Triton `tensorrt_plan` configuration.

The export step writes `<repository>/session_encoder/<version>/model.onnx`. On the GPU node (the Helm
chart's `build-engine` init container, in the NGC image the server runs from) this module builds
`model.plan` next to it with one optimization profile, records how it was built in `plan.json`, and
writes `<repository>/session_encoder/configs/tensorrt.pbtxt`: Triton's custom model configuration,
which `tritonserver --model-config-name=tensorrt` loads instead of `config.pbtxt` (the ONNX one).

Plans are not portable: they load only with the TensorRT version that built them, on GPUs of the
compute capability they were built on. `plan.json` records both and `check_plan_compatible` says why
a recorded plan would not load here (and whether its files changed since).

    from sessionrec.export.tensorrt import ShapeProfile, build_engine, engine_paths, tensorrt_config
    onnx_path, plan_path, config_path = engine_paths("model_repository", "latest")
    build_engine(onnx_path, plan_path, ShapeProfile(max_len=32))          # needs TensorRT + a GPU
    config_path.write_text(tensorrt_config(128, ShapeProfile(max_len=32)))  # runs anywhere

Only `build_engine` needs TensorRT (imported lazily, TensorRT 10.x API); the rest runs and is tested
on CPU. CLI: `sessionrec build-engine` (sessionrec/commands/build_engine_cmd.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from sessionrec.errors import SessionrecError
from sessionrec.export.repository import current_version, versions
from sessionrec.graph import ENCODER_INPUTS
from sessionrec.serving.artifacts import MANIFEST, sha256_file

MODEL_NAME = "session_encoder"
ONNX_FILENAME = "model.onnx"
PLAN_FILENAME = "model.plan"
PLAN_METADATA_FILENAME = "plan.json"
CONFIG_NAME = "tensorrt"  # tritonserver --model-config-name=tensorrt reads configs/tensorrt.pbtxt
# The encoder's inputs in the ONNX export's order (sessionrec.graph): (name, Triton dtype, number of
# L dimensions after B).
_KINDS = {
    "items": ("TYPE_INT64", 1),  # (B, L) model ids of the unique nodes, 0 = padding
    "alias": ("TYPE_INT64", 1),  # (B, L) node index of each click
    "adj_in": ("TYPE_FP32", 2),  # (B, L, L) normalised in-edges
    "adj_out": ("TYPE_FP32", 2),  # (B, L, L) normalised out-edges
    "mask": ("TYPE_FP32", 1),  # (B, L) 1 for real clicks
}
INPUTS = tuple((name, *_KINDS[name]) for name in ENCODER_INPUTS)
OUTPUT = "session_embedding"  # (B, d) FP32
DEFAULT_WORKSPACE_BYTES = 2 << 30  # a cap, not an allocation; the encoder's (B<=128, L, d) GEMMs need far less
DEFAULT_QUEUE_DELAY_US = 100  # a batched encoder call costs ~0.1-1 ms: waiting longer only adds latency
NGC_HINT = "NGC tritonserver/TensorRT images of one release, e.g. 24.10 with TensorRT 10.5"


class TensorRTUnavailable(SessionrecError):
    """TensorRT's Python package cannot be imported in this environment."""


class EngineBuildError(SessionrecError):
    """TensorRT could not parse the ONNX file or build a plan from it."""


class ProfileError(SessionrecError, ValueError):
    """Shapes, batch sizes or versions that cannot make a valid engine or configuration."""


@dataclass
class ShapeProfile:
    """The one optimization profile: batch range and session length L the plan accepts."""

    max_len: int  # L that preprocess pads every session to (manifest model_config.max_len)
    min_batch: int = 1  # Triton runs a lone request as batch 1 whenever the queue holds one
    opt_batch: int = 16  # kernels are tuned for this B: about what the dynamic batcher forms under load
    max_batch: int = 128  # Triton's max_batch_size must equal it: larger fails to load, smaller wastes the range
    # None = max_len: preprocess always pads to max_len, so L is fixed (min = opt = max). A smaller
    # min_len lets one plan also serve unpadded batches (L = longest session) but lengthens the build
    # and tunes kernels for L = max_len only.
    min_len: int | None = None

    @property
    def lengths(self) -> tuple[int, int, int]:
        """(min, opt, max) L."""
        low = self.max_len if self.min_len is None else self.min_len
        return low, self.max_len, self.max_len

    @property
    def fixed_length(self) -> bool:
        return self.lengths[0] == self.max_len

    def validate(self) -> "ShapeProfile":
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ProfileError(
                f"batch sizes must satisfy 1 <= min <= opt <= max, got {self.min_batch} / {self.opt_batch} / {self.max_batch}"
            )
        if not 1 <= self.lengths[0] <= self.max_len:
            raise ProfileError(f"lengths must satisfy 1 <= min_len <= max_len, got {self.lengths[0]} / {self.max_len}")
        return self


def profile_shapes(profile: ShapeProfile) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """Input name -> (min, opt, max) shape, in the ONNX input order."""
    profile.validate()
    batches = (profile.min_batch, profile.opt_batch, profile.max_batch)
    return {
        name: tuple((batch,) + (length,) * rank for batch, length in zip(batches, profile.lengths))
        for name, _, rank in INPUTS
    }


# ---------------------------------------------------------------------------------------------
# Repository layout


def resolve_version(repository: str | Path, version: int | str = "latest") -> int:
    """A version number of session_encoder. `latest` is the newest live version (all steps and the
    ensemble published: a half-published newer folder is debris); in a repository without the
    ensemble, the highest numbered session_encoder folder."""
    model_dir = Path(repository) / MODEL_NAME
    if not model_dir.is_dir():
        raise SessionrecError(f"{model_dir}: no such folder (is {repository} a model repository written by `sessionrec export`?)")
    if str(version) == "latest":
        if (Path(repository) / "recommend").is_dir():
            live = current_version(Path(repository))
            if live is None:
                raise SessionrecError(f"{repository}: no live version (every step and recommend/<N> published)")
            return live
        numbers = [v for v in versions(Path(repository), MODEL_NAME) if v > 0]
        if not numbers:
            raise SessionrecError(f"{model_dir}: no numbered version folder")
        return max(numbers)
    if not str(version).isdigit() or int(version) < 1:
        raise ProfileError(f"version must be a positive integer or 'latest', got {version!r}")
    if not (model_dir / str(int(version))).is_dir():
        raise SessionrecError(f"{model_dir / str(int(version))}: no such version folder")
    return int(version)


def engine_paths(repository: str | Path, version: int | str = "latest") -> tuple[Path, Path, Path]:
    """(onnx_path, plan_path, config_path); the configuration is model-level, under configs/."""
    model_dir = Path(repository) / MODEL_NAME
    version_dir = model_dir / str(resolve_version(repository, version))
    return version_dir / ONNX_FILENAME, version_dir / PLAN_FILENAME, model_dir / "configs" / f"{CONFIG_NAME}.pbtxt"


def plan_metadata_path(plan_path: str | Path) -> Path:
    return Path(plan_path).with_name(PLAN_METADATA_FILENAME)


def manifest_max_len(version_dir: str | Path) -> int | None:
    """model_config.max_len from the version's manifest.json; None when the file or the key is absent."""
    path = Path(version_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SessionrecError(f"{path}: unreadable ({exc})") from exc
    config = manifest.get("model_config") if isinstance(manifest, dict) else None
    value = config.get("max_len") if isinstance(config, dict) else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SessionrecError(f"{path}: model_config.max_len must be a positive integer, got {value!r}")
    return value


def resolve_max_len(version_dir: str | Path, override: int | None = None) -> tuple[int, str]:
    """(max_len, where it came from): the manifest's, or `override` when there is none; they must agree."""
    manifest = Path(version_dir) / MANIFEST
    recorded = manifest_max_len(version_dir)
    if recorded is None:
        if override is None:
            raise SessionrecError(f"{manifest}: missing or without model_config.max_len; pass --max-len (the L preprocess pads to)")
        return override, "--max-len"
    if override is not None and override != recorded:
        raise SessionrecError(
            f"--max-len {override} disagrees with {manifest} (model_config.max_len = {recorded}): preprocess pads to the manifest's"
        )
    return recorded, str(manifest)


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write aside in the same folder, then rename: readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# Environment: TensorRT version and GPU


def _import_tensorrt():
    try:
        import tensorrt
    except (ImportError, OSError) as exc:  # OSError: the package is there but libnvinfer is not
        raise TensorRTUnavailable(
            f"TensorRT is needed to build a plan and cannot be imported here ({exc}). Build on the GPU "
            f"node that will serve it, in the image Triton runs from ({NGC_HINT}): the Helm chart runs "
            "`sessionrec build-engine` in its build-engine init container (engineBuild.enabled=true). "
            "A plan built elsewhere would not load there. `--dry-run` shows the profile and the "
            "configuration without TensorRT."
        ) from exc
    return tensorrt


def parse_nvidia_smi(text: str, visible: str | None = None) -> dict | None:
    """The GPU from `nvidia-smi --query-gpu=index,uuid,name,compute_cap --format=csv,noheader`:
    the first of CUDA_VISIBLE_DEVICES (an index or a UUID prefix), else the first listed."""
    rows = [[c.strip() for c in line.split(",")] for line in text.splitlines() if line.count(",") >= 3]
    if not rows:
        return None
    first = (visible or "").split(",")[0].strip()
    chosen = next((r for r in rows if first and (r[0] == first or r[1].startswith(first))), rows[0])
    return {"name": chosen[2], "compute_capability": chosen[3], "source": "nvidia-smi"}


def _gpu_from_cuda_python() -> dict | None:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python (TensorRT's samples use it)
    err, props = cudart.cudaGetDeviceProperties(0)  # device 0 of the visible ones: where TensorRT builds
    if err != cudart.cudaError_t.cudaSuccess:
        return None
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {"name": name.rstrip("\x00"), "compute_capability": f"{props.major}.{props.minor}", "source": "cuda-python"}


def _gpu_from_nvidia_smi() -> dict | None:
    query = ["nvidia-smi", "--query-gpu=index,uuid,name,compute_cap", "--format=csv,noheader"]
    out = subprocess.run(query, capture_output=True, text=True, timeout=30, check=True).stdout
    return parse_nvidia_smi(out, os.environ.get("CUDA_VISIBLE_DEVICES"))


def detect_gpu() -> dict:
    """{"name", "compute_capability" ("8.9"), "source"} of the GPU TensorRT builds for; None values if none."""
    for probe in (_gpu_from_cuda_python, _gpu_from_nvidia_smi):
        try:
            found = probe()
        except Exception:  # no cuda-python, no driver, no nvidia-smi: try the next way
            found = None
        if found:
            return found
    return {"name": None, "compute_capability": None, "source": None}


def current_runtime() -> dict:
    """What a plan must match here: the importable TensorRT's version (None if none) and the GPU."""
    try:
        import tensorrt

        version = tensorrt.__version__
    except (ImportError, OSError):
        version = None
    return {"tensorrt_version": version, "gpu": detect_gpu()}


def same_tensorrt_version(a: str, b: str) -> bool:
    """Equal through the patch number, and the build number when both give one ("10.5.0" == "10.5.0.18")."""
    pa, pb = a.split("."), b.split(".")
    n = max(3, min(len(pa), len(pb)))
    return pa[:n] == pb[:n]


# ---------------------------------------------------------------------------------------------
# Build


def _network_flags(trt) -> int:
    # TensorRT 10 networks are always explicit batch and its EXPLICIT_BATCH flag is deprecated (ignored);
    # TensorRT 8.x needs it for dynamic shapes.
    if int(trt.__version__.split(".")[0]) >= 10:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def _check_network_io(trt, network, onnx_path: Path) -> None:
    """The parsed network must have the contract's tensors: the plan and the configuration name them."""
    dtypes = {"TYPE_INT64": trt.DataType.INT64, "TYPE_FP32": trt.DataType.FLOAT}
    expected = [(name, dtypes[dtype]) for name, dtype, _ in INPUTS]
    found = [(network.get_input(i).name, network.get_input(i).dtype) for i in range(network.num_inputs)]
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    if found != expected or outputs != [OUTPUT]:
        raise EngineBuildError(
            f"{onnx_path}: inputs {[(n, str(t)) for n, t in found]} and outputs {outputs}; the encoder "
            f"contract is inputs {[(n, d) for n, d, _ in INPUTS]} and output [{OUTPUT!r}]"
        )


def _attach_timing_cache(trt, config, path: Path | None):
    """Reuse measured kernel timings across builds (minutes -> seconds on a rebuild for the same GPU).
    The returned cache must outlive the build (TensorRT does not own it)."""
    if path is None:
        return None
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, False):  # recorded on another GPU model: start afresh
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache


def build_engine(
    onnx_path: str | Path,
    plan_path: str | Path,
    profile: ShapeProfile,
    fp16: bool = True,
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
    timing_cache: str | Path | None = None,
) -> dict:
    """Build `plan_path` from the encoder ONNX with TensorRT 10 and write `plan.json` beside it.

    Returns the metadata written to plan.json: TensorRT version, GPU name and compute capability,
    build seconds, precision, profile, and checksums of the ONNX input and the plan.
    """
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    shapes = profile_shapes(profile)
    if workspace_bytes <= 0:
        raise ProfileError(f"workspace_bytes must be > 0, got {workspace_bytes}")
    if not onnx_path.is_file():
        raise SessionrecError(f"{onnx_path}: no such ONNX file (`sessionrec export` writes it)")
    trt = _import_tensorrt()

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    # parse_from_file (not parse(bytes)) would also find external weights beside the file.
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n  ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"{onnx_path}: TensorRT {trt.__version__} cannot parse it:\n  {errors}")
    _check_network_io(trt, network, onnx_path)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if fp16:  # layers may run in FP16 where faster; I/O stays as declared (INT64 / FP32)
        config.set_flag(trt.BuilderFlag.FP16)
    optimization = builder.create_optimization_profile()
    for name, (low, opt, high) in shapes.items():
        optimization.set_shape(name, low, opt, high)
    if config.add_optimization_profile(optimization) < 0:
        raise EngineBuildError(f"TensorRT rejected the optimization profile {shapes}")
    cache_path = None if timing_cache is None else Path(timing_cache)
    cache = _attach_timing_cache(trt, config, cache_path)

    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise EngineBuildError(f"{onnx_path}: TensorRT {trt.__version__} failed to build a plan (its log above says why)")
    plan = bytes(memoryview(serialized))

    metadata = {
        "format": 1,
        "tensorrt_version": trt.__version__,
        "gpu": detect_gpu(),
        "build_seconds": round(seconds, 1),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "fp16": bool(fp16),
        "workspace_bytes": int(workspace_bytes),
        "profile": asdict(profile),
        "shapes": {name: [list(s) for s in triple] for name, triple in shapes.items()},
        "onnx": {"file": onnx_path.name, "sha256": sha256_file(onnx_path)},
        "plan": {"file": plan_path.name, "bytes": len(plan), "sha256": hashlib.sha256(plan).hexdigest()},
    }
    # Plan first: a crash between the two leaves a plan.json whose checksum no longer matches (rebuilt).
    write_atomic(plan_path, plan)
    write_atomic(plan_metadata_path(plan_path), (json.dumps(metadata, indent=2) + "\n").encode())
    if cache is not None:
        write_atomic(cache_path, bytes(memoryview(cache.serialize())))
    return metadata


def check_plan_compatible(
    plan_json: str | Path | dict,
    runtime: dict | None = None,
    profile: ShapeProfile | None = None,
    fp16: bool | None = None,
) -> list[str]:
    """Why the recorded plan would not load (or would be stale) here; [] when it is fine.

    plan_json: the path of plan.json (then the plan and ONNX checksums are checked too) or its content.
    runtime: {"tensorrt_version", "gpu": {"compute_capability", "name"}}; None detects this machine's.
    profile, fp16: when given, the build settings asked for now must be the recorded ones.
    A different GPU model of the same compute capability is not a problem (TensorRT warns, it loads).
    """
    problems = []
    if isinstance(plan_json, dict):
        meta = plan_json
    else:
        path = Path(plan_json)
        try:
            meta = json.loads(path.read_text())
        except FileNotFoundError:
            return [f"{path}: missing (no plan was built here)"]
        except (OSError, ValueError) as exc:
            return [f"{path}: unreadable ({exc})"]
        if not isinstance(meta, dict):
            return [f"{path}: not a JSON object"]
        problems += _changed_files(path.parent, meta)
    runtime = current_runtime() if runtime is None else runtime

    built, here = meta.get("tensorrt_version"), runtime.get("tensorrt_version")
    if not built:
        problems.append("plan.json records no TensorRT version")
    elif not here:
        problems.append(f"TensorRT is not importable here: cannot confirm the plan's TensorRT {built}")
    elif not same_tensorrt_version(built, here):
        problems.append(f"plan built with TensorRT {built}, this environment has {here}: a plan loads only with the TensorRT version that built it")

    gpu_built, gpu_here = meta.get("gpu") or {}, runtime.get("gpu") or {}
    cc_built, cc_here = gpu_built.get("compute_capability"), gpu_here.get("compute_capability")
    if not cc_built:
        problems.append("plan.json records no GPU compute capability")
    elif not cc_here:
        problems.append(f"no GPU visible here: cannot confirm the plan's compute capability {cc_built}")
    elif cc_built != cc_here:
        problems.append(
            f"plan built for compute capability {cc_built} ({gpu_built.get('name')}), this GPU is {cc_here} "
            f"({gpu_here.get('name')}): a plan loads only on the GPU architecture that built it"
        )

    if profile is not None and meta.get("profile") != asdict(profile):
        problems.append(f"plan built for profile {meta.get('profile')}, asked for {asdict(profile)}")
    if fp16 is not None and meta.get("fp16") != fp16:
        problems.append(f"plan built with fp16={meta.get('fp16')}, asked for fp16={fp16}")
    return problems


def _changed_files(folder: Path, meta: dict) -> list[str]:
    problems = []
    plan = folder / (meta.get("plan") or {}).get("file", PLAN_FILENAME)
    if not plan.is_file():
        problems.append(f"{plan}: missing")
    elif sha256_file(plan) != (meta.get("plan") or {}).get("sha256"):
        problems.append(f"{plan}: checksum differs from plan.json (replaced or partly written)")
    onnx = folder / (meta.get("onnx") or {}).get("file", ONNX_FILENAME)
    if onnx.is_file() and sha256_file(onnx) != (meta.get("onnx") or {}).get("sha256"):
        problems.append(f"{onnx}: changed since the plan was built from it")
    return problems


# ---------------------------------------------------------------------------------------------
# Triton configuration


def _dims(values) -> str:
    return "[ " + ", ".join(str(v) for v in values) + " ]"


def tensorrt_config(
    max_batch_size: int,
    profile: ShapeProfile,
    instance_count: int = 1,
    dynamic_batching_delay_us: int = DEFAULT_QUEUE_DELAY_US,
) -> str:
    """config.pbtxt text of the `session_encoder` model served from model.plan (platform tensorrt_plan)."""
    profile.validate()
    if profile.min_batch != 1:
        raise ProfileError(f"min_batch must be 1 to serve through Triton (a lone request is a batch of 1), got {profile.min_batch}")
    if not 1 <= max_batch_size <= profile.max_batch:
        raise ProfileError(f"max_batch_size must be 1..{profile.max_batch} (the profile's max batch), got {max_batch_size}")
    if instance_count < 1 or dynamic_batching_delay_us < 0:
        raise ProfileError("instance_count must be >= 1 and dynamic_batching_delay_us >= 0")

    length = profile.max_len if profile.fixed_length else -1  # -1: Triton checks L against the profile
    preferred = sorted({b for b in (profile.opt_batch, max_batch_size) if b <= max_batch_size})
    lines = [
        "# Generated by sessionrec.export.tensorrt (sessionrec build-engine); regenerate, do not edit.",
        "# Served with `tritonserver --model-config-name=tensorrt` (instead of config.pbtxt, the ONNX one).",
        f'name: "{MODEL_NAME}"',
        'platform: "tensorrt_plan"',
        f"max_batch_size: {max_batch_size}  # at most the plan's profile max batch",
        f'default_model_filename: "{PLAN_FILENAME}"',
        "version_policy { latest { num_versions: 2 } }",
        "input [",
        ",\n".join(
            f'  {{ name: "{name}" data_type: {dtype} dims: {_dims([length] * rank)} }}' for name, dtype, rank in INPUTS
        ),
        "]",
        "output [",
        f'  {{ name: "{OUTPUT}" data_type: TYPE_FP32 dims: [ -1 ] }}',
        "]",
        "dynamic_batching {",
        f"  preferred_batch_size: {_dims(preferred)}",
        f"  max_queue_delay_microseconds: {dynamic_batching_delay_us}",
        "}",
        f"instance_group [ {{ kind: KIND_GPU count: {instance_count} }} ]",
        "# One zero-filled request at load time: an all-zero mask is a valid empty session for this",
        "# encoder, and it makes TensorRT create its execution context before the first real request.",
        "model_warmup [",
        "  {",
        '    name: "empty_session_batch_1"',
        "    batch_size: 1",
    ]
    for name, dtype, rank in INPUTS:
        dims = _dims([profile.max_len] * rank)
        lines.append(f'    inputs {{ key: "{name}" value {{ data_type: {dtype} dims: {dims} zero_data: true }} }}')
    lines += ["  }", "]"]
    return "\n".join(lines) + "\n"
