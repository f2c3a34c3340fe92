"""`sessionrec build-engine`: build the session encoder's TensorRT plan and its Triton configuration.

Reads <repository>/session_encoder/<version>/model.onnx, writes model.plan and plan.json beside it
(TensorRT version, GPU, build time, checksums) and <repository>/session_encoder/configs/tensorrt.pbtxt,
which `tritonserver --model-config-name=tensorrt` serves instead of the ONNX config.pbtxt. Run it on
the GPU node that will serve the plan, in the image Triton runs from (the Helm chart's build-engine
init container does): plans load only with the TensorRT version and GPU architecture that built them.
A plan that plan.json shows was built here with the same settings is kept (--force rebuilds it).
With --engine-cache DIR (a persistent volume), a plan stored there for the same ONNX file, GPU
product and TensorRT version is reused after the same checks, a new plan is stored there, and the
timing cache defaults to one per GPU product and TensorRT version in DIR.
L is the manifest's model_config.max_len (or --max-len when the version has no manifest).

Example: sessionrec build-engine --repository /models --version latest --max-batch 128
"""

from __future__ import annotations

import argparse
import json
import sys

from sessionrec.export import engine_store
from sessionrec.export.tensorrt import (
    DEFAULT_QUEUE_DELAY_US,
    DEFAULT_WORKSPACE_BYTES,
    ShapeProfile,
    build_engine,
    check_plan_compatible,
    current_runtime,
    engine_paths,
    plan_metadata_path,
    profile_shapes,
    resolve_max_len,
    tensorrt_config,
    write_atomic,
)

EXIT_OK, EXIT_PROBLEMS = 0, 1
_DEFAULTS = ShapeProfile(max_len=1)  # the dataclass holds the batch defaults (one source)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "build-engine",
        help="build the encoder's TensorRT plan (GPU node)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--repository", required=True, metavar="DIR", help="Triton model repository written by `sessionrec export`")
    parser.add_argument("--version", default="latest", metavar="N|latest", help="session_encoder version folder (default: the highest)")
    parser.add_argument("--max-len", type=_positive, help="L to build for when the version has no manifest.json (must equal the manifest's otherwise)")
    parser.add_argument("--min-len", type=_positive, help="smallest L (default max-len: preprocess pads to max-len; smaller also serves unpadded batches, longer build)")
    parser.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=True, help="let TensorRT run layers in FP16 (default: on; the encoder's masking constant fits FP16)")
    parser.add_argument("--min-batch", type=_positive, default=_DEFAULTS.min_batch, help=f"default {_DEFAULTS.min_batch}: Triton sends a lone request as batch 1")
    parser.add_argument("--opt-batch", type=_positive, default=_DEFAULTS.opt_batch, help=f"batch the kernels are tuned for (default {_DEFAULTS.opt_batch})")
    parser.add_argument("--max-batch", type=_positive, default=_DEFAULTS.max_batch, help=f"largest batch; also Triton's max_batch_size (default {_DEFAULTS.max_batch})")
    parser.add_argument("--workspace-gb", type=float, default=DEFAULT_WORKSPACE_BYTES / 2**30, help="cap on TensorRT's scratch memory while building (default %(default)g)")
    parser.add_argument("--timing-cache", metavar="FILE", help="TensorRT timing cache to read and update (a persistent path makes rebuilds on the same GPU fast)")
    parser.add_argument("--engine-cache", metavar="DIR", help="persistent plan store shared by pods: reuse a plan built for this ONNX file, GPU product and TensorRT version, store new ones, keep timing caches")
    parser.add_argument("--instance-count", type=_positive, default=1, help="Triton instances of the plan per GPU (default 1)")
    parser.add_argument("--queue-delay-us", type=int, default=DEFAULT_QUEUE_DELAY_US, help="dynamic batcher's max queue delay (default %(default)s)")
    parser.add_argument("--force", action="store_true", help="rebuild even if plan.json shows a plan built here with these settings")
    parser.add_argument("--check", action="store_true", help="only say whether the existing plan would load here; exit 1 if not")
    parser.add_argument("--dry-run", action="store_true", help="print the shapes and the configuration that would be written; needs no TensorRT")
    parser.set_defaults(run=run)


def run(args) -> int:
    onnx_path, plan_path, config_path = engine_paths(args.repository, args.version)
    max_len, max_len_source = resolve_max_len(onnx_path.parent, args.max_len)
    profile = ShapeProfile(max_len, args.min_batch, args.opt_batch, args.max_batch, args.min_len).validate()
    config_text = tensorrt_config(profile.max_batch, profile, args.instance_count, args.queue_delay_us)
    plan_json = plan_metadata_path(plan_path)

    if args.dry_run:
        if not onnx_path.is_file():
            print(f"warning: {onnx_path} does not exist yet", file=sys.stderr)
        summary = {
            "onnx": str(onnx_path), "plan": str(plan_path), "config": str(config_path),
            "max_len": max_len, "max_len_from": max_len_source, "fp16": args.fp16,
            "workspace_bytes": int(args.workspace_gb * 2**30),
            "shapes (min, opt, max)": {
                name: " / ".join("x".join(map(str, shape)) for shape in triple)
                for name, triple in profile_shapes(profile).items()
            },
        }
        print(json.dumps(summary, indent=2))
        print(f"--- {config_path} ---")
        print(config_text, end="")
        return EXIT_OK

    if args.check:
        problems = check_plan_compatible(plan_json, profile=profile, fp16=args.fp16)
        for problem in problems:
            print(problem)
        print("plan loads here" if not problems else f"{plan_path}: would not load or is stale here")
        return EXIT_PROBLEMS if problems else EXIT_OK

    runtime = current_runtime()
    problems = ["--force"] if args.force else check_plan_compatible(plan_json, runtime, profile, args.fp16)
    restored = False
    if problems and not args.force and args.engine_cache and engine_store.restore(args.engine_cache, onnx_path, plan_path, runtime):
        problems = check_plan_compatible(plan_json, runtime, profile, args.fp16)
        restored = not problems
        if problems:
            print(f"stored plan not usable ({'; '.join(problems)}): building", file=sys.stderr)
    if problems:
        timing = args.timing_cache
        if timing is None and args.engine_cache:
            timing = engine_store.timing_cache_path(args.engine_cache, runtime)
            timing.parent.mkdir(parents=True, exist_ok=True)
        metadata = build_engine(
            onnx_path, plan_path, profile, fp16=args.fp16,
            workspace_bytes=int(args.workspace_gb * 2**30), timing_cache=timing,
        )
        if args.engine_cache:
            engine_store.save(args.engine_cache, onnx_path, plan_path, runtime)
    else:
        metadata = json.loads(plan_json.read_text())
    write_atomic(config_path, config_text.encode())
    print(json.dumps({"built": bool(problems), "from_engine_cache": restored, "plan": str(plan_path), "config": str(config_path),
                      "tensorrt_version": metadata["tensorrt_version"], "gpu": metadata["gpu"],
                      "build_seconds": metadata["build_seconds"]}, indent=2))
    return EXIT_OK
