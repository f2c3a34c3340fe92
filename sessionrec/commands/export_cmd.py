"""`sessionrec export` (run after every retrain), `sessionrec rollback`, `sessionrec configs`."""

from __future__ import annotations

import json
from pathlib import Path

from sessionrec.export.configs import ServingConfig


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "export",
        help="checkpoint -> verified new version of the Triton model repository",
        description=(
            "Export the encoder to ONNX (FP32/FP16/INT8 measured), build the FAISS index, verify parity "
            "with PyTorch on real test sessions, and publish a new numbered version atomically. A failed "
            "export leaves the served versions untouched. "
            "Example: sessionrec export runs/digi/best.pt --repository runs/repository"
        ),
    )
    parser.add_argument("checkpoint", help="a checkpoint written by `sessionrec train` (best.pt)")
    parser.add_argument("--repository", required=True, help="Triton model repository to add the version to")
    parser.add_argument("--data", help="sessions to verify against (default: the data the checkpoint was trained on)")
    parser.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32",
                        help="encoder file the CPU server runs; all three are measured (default fp32)")
    parser.add_argument("--index", choices=["auto", "flat", "ivf", "ivfsq", "ivfpq", "ivfpqfs", "hnsw"], default="auto",
                        help="FAISS index; auto = exact up to 200k items, ivfpqfs (IVF with 4-bit PQ fast-scan codes "
                             "and an exact re-rank) above, IVF with 8-bit codes once a float32 copy of the table would "
                             "pass 2 GiB (default auto; docs/LARGE_CATALOGUES.md)")
    parser.add_argument("--target-recall", type=float, default=0.95,
                        help="ANN indexes are tuned to at least this recall@20 vs exact on real session vectors "
                             "(default 0.95; at 1M synthetic items 0.995 keeps HR@20 within 0.15 points of exact, "
                             "docs/LARGE_CATALOGUES.md)")
    parser.add_argument("--shards", type=int, default=0,
                        help="split retrieval into this many shard models (retrieval_shard_<s>), each served by its own "
                             "tritonserver, the front merging by score; for catalogues beyond one node's memory "
                             "(default 0: one index; docs/LARGE_CATALOGUES.md)")
    parser.add_argument("--quality-sessions", type=int, default=3000,
                        help="test prefixes scored over the full catalogue per precision variant (default 3000; "
                             "fewer makes large-catalogue exports faster)")
    parser.add_argument("--keep-versions", type=int, default=3, help="live versions kept on disk (default 3)")
    parser.add_argument("--max-k", type=int, default=1000, help="largest K a request may ask for (default 1000)")
    parser.add_argument("--response-cache", action="store_true", help="enable Triton's response cache on the ensemble")
    parser.add_argument("--fused-instances", type=_instances, default=None,
                        help="session_recommender stubs on the CPU layout (default: chosen by memory, 2 while one stub's "
                             "estimated memory is at most 1.5 GiB, else 1; recorded in the manifest's fused_instances). "
                             "2 removes tritonserver 2.51's ~500 ms batcher stalls and measured 2.7x the capacity at "
                             "p95 <= 70 ms (docs/BENCHMARKS.md section 4) for a second copy of the version in memory")
    parser.add_argument("--history-max-len", type=int, default=ServingConfig.history_max_len,
                        help="clicks kept per guest session in Redis for recommend_session (default "
                             f"{ServingConfig.history_max_len}); refused below the model's max_len (the clicks it reads). "
                             "The server's SESSIONREC_HISTORY_MAX_LEN (chart: redis.maxLen) overrides it at run time")
    parser.add_argument("--candidate", action="store_true",
                        help="publish as the experiment's candidate (ensemble recommend_candidate) next to the live "
                             "version, instead of switching to it (docs/EXPERIMENTS.md)")
    parser.add_argument("--quiet", action="store_true")
    parser.set_defaults(run=run)

    rollback = sub.add_parser(
        "rollback",
        help="retire the live version and serve the previous one",
        description="Pin the ensemble to the previous version and move the newest aside; a running "
                    "`sessionrec serve` switches within seconds. Example: sessionrec rollback --repository runs/repository",
    )
    rollback.add_argument("--repository", required=True)
    rollback.set_defaults(run=run_rollback)

    configs = sub.add_parser("configs", help="write the generated config.pbtxt files (templates)",
                             description="Example: sessionrec configs --write model_repository")
    configs.add_argument("--write", required=True, help="folder to write <model>/config.pbtxt and configs/gpu.pbtxt into")
    configs.set_defaults(run=run_configs)


def _instances(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def run(args) -> int:
    from sessionrec.export.exporter import ExportOptions, export_version

    options = ExportOptions(data=args.data, precision=args.precision, index=args.index,
                            keep_versions=args.keep_versions, max_k=args.max_k, candidate=args.candidate,
                            quality_sessions=args.quality_sessions, target_recall=args.target_recall,
                            shards=args.shards,
                            serving=ServingConfig(response_cache=args.response_cache,
                                                  fused_instances=args.fused_instances,
                                                  history_max_len=args.history_max_len))
    result = export_version(args.checkpoint, args.repository, options, progress=not args.quiet)
    m = result.manifest
    summary = {
        "version": result.version,
        "candidate": args.candidate,
        "repository": str(result.repository),
        "parity": {k: m["parity"][k] for k in ("max_abs_diff", "top20_agreement", "sessions")},
        "index": {k: m["index"][k] for k in ("kind", "recall_at_20", "build_seconds", "chosen_by")},
        "fused_instances": m["fused_instances"],
        "precision_variants": {p: {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
                               for p, r in m["precision_variants"].items()},
        "retrieval_shards": [{"model": s["model"], "rows": s["rows"], "recall_at_20": s["index"]["recall_at_20"]}
                             for s in m.get("retrieval_shards", [])],
        "pruned_versions": result.pruned,
    }
    print(json.dumps(summary, indent=2))
    return 0


def run_rollback(args) -> int:
    from sessionrec.export.repository import rollback

    retired, live = rollback(Path(args.repository))
    print(f"retired version {retired}; version {live} is live")
    return 0


def run_configs(args) -> int:
    from sessionrec.export.repository import write_configs

    write_configs(Path(args.write), ServingConfig())
    print(f"wrote configs to {args.write}")
    return 0
