"""`sessionrec export`: checkpoint -> verified new version of the Triton model repository.

Steps (all in a staging folder next to the repository; nothing served changes until the end):
1. load the checkpoint (weights_only) and real test sessions;
2. ONNX export with dynamic batch/length, onnx.checker, parity vs PyTorch (max abs diff, top-20
   agreement) — refuse to publish on failure;
3. precision variants FP32 / FP16 / INT8, each measured for quality and CPU latency;
4. FAISS index chosen by catalogue size, recall@20 vs exact measured on real session vectors;
5. per-model artifacts, thin model.py files, configs from one source of truth, a manifest with
   checksums, library versions, gate results and resolved configs;
6. end-to-end verification of the staged version through the served code path (checksums
   verified, preprocess -> onnxruntime -> FAISS) against PyTorch, and canary answers recorded;
7. publish atomically (repository.publish) and prune old versions.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import shutil
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sessionrec.checkpoint import load_checkpoint
from sessionrec.data import load_dataset, prefixes
from sessionrec.errors import SessionrecError
from sessionrec.export import repository as repo_lib
from sessionrec.export.configs import MODELS, VERSIONED, ServingConfig, all_configs
from sessionrec.export.faiss_index import IndexSpec, build_index, save_index
from sessionrec.export.onnx_export import check_parity, export_onnx
from sessionrec.export.precision import FILES, PRECISIONS, measure_variants
from sessionrec.graph import build_batch
from sessionrec.model import graph_tensors
from sessionrec.serving.artifacts import MANIFEST, MANIFEST_FORMAT, sha256_file
from sessionrec.serving.encoder import OnnxEncoder
from sessionrec.serving.pipeline import LocalPipeline


class ExportError(SessionrecError):
    """The export was refused; the repository is unchanged."""


@dataclass
class ExportOptions:
    data: str | None = None  # sessions for parity, quality and canaries; default: the checkpoint's data
    precision: str = "fp32"  # which encoder file the CPU server runs (all three are measured)
    index: str = "auto"  # FAISS index kind: auto (by catalogue size) | flat | ivf | hnsw
    target_recall: float = 0.95  # ANN indexes are tuned to at least this recall@20 vs exact
    keep_versions: int = 3  # live versions kept on disk (the server loads the newest two)
    max_k: int = 1000  # largest K a request may ask for
    max_request_items: int = 1000  # longest session a request may send (bad input beyond it)
    parity_sessions: int = 500  # real test sessions for the PyTorch vs ONNX gate
    max_abs_diff: float = 1e-3  # gate: session vectors, FP32 ONNX vs PyTorch
    min_top20_agreement: float = 0.99  # gate: top-20 overlap, ONNX vs PyTorch
    quality_sessions: int = 3000  # test prefixes for the precision variants' HR@20/MRR@20
    canaries: int = 12  # real sessions replayed by `sessionrec serve` before it reports healthy
    candidate: bool = False  # publish as the experiment's candidate (recommend_candidate), not live
    serving: ServingConfig = field(default_factory=ServingConfig)


@dataclass
class ExportResult:
    version: int
    repository: Path
    manifest: dict
    pruned: list = field(default_factory=list)


def library_versions() -> dict[str, str]:
    names = ["sessionrec", "torch", "numpy", "onnx", "onnxruntime", "faiss-cpu", "tritonclient", "nvidia-pytriton"]
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _test_sessions(options: ExportOptions, ckpt) -> list[list[int]]:
    """Real test sessions in the checkpoint's model ids (mapped through raw ids, so any log works)."""
    source = options.data or ckpt.train_config.get("data")
    if not source:
        raise ExportError("no data to verify against: pass --data (a SR-GNN folder or click log with test sessions)")
    dataset = load_dataset(source)
    if not dataset.test:
        raise ExportError(f"{source}: has no test sessions to verify the export against")
    from sessionrec.serving.preprocess import IdMap

    to_model = IdMap(ckpt.raw_ids)
    sessions = []
    for s in dataset.test:
        mapped = to_model.to_model(dataset.raw_ids[np.asarray(s)])
        mapped = mapped[mapped > 0]
        if mapped.size >= 2:
            sessions.append(mapped.tolist())
    if not sessions:
        raise ExportError(f"{source}: none of its test items are in the checkpoint's catalogue (wrong data?)")
    return sessions


def _session_vectors(model, sessions: list[list[int]]) -> np.ndarray:
    with torch.no_grad():
        graphs = build_batch(sessions, model.config.max_len)
        return model.encode(*graph_tensors(graphs)).numpy()


def _canaries(pipeline: LocalPipeline, ckpt, sessions: list[list[int]], count: int) -> list[dict]:
    """Requests with their expected answers: real sessions, exclusion, an unknown id, all-unknown."""
    raw = ckpt.raw_ids
    unknown = int(raw.max()) + 1  # not in the catalogue by construction
    picked = [raw[np.asarray(s[:-1])].tolist() for s in sessions[:count]]
    requests = [(items, 20, False) for items in picked]
    requests += [(picked[0], 10, True), (picked[1] + [unknown], 20, False), ([unknown, unknown + 1], 5, False)]
    out = []
    for items, k, exclude in requests:
        answer = pipeline.recommend(items, k, exclude)
        out.append({
            "items": [int(i) for i in items], "k": k, "exclude_seen": exclude,
            "expected_ids": answer.item_ids.tolist(), "expected_scores": answer.scores.tolist(),
            "unknown_count": answer.unknown_count, "fallback": answer.fallback,
        })
    return out


def export_version(checkpoint: str | Path, repository: str | Path, options: ExportOptions | None = None,
                   progress: bool = True) -> ExportResult:
    options = options or ExportOptions()
    if options.precision not in PRECISIONS:
        raise ExportError(f"--precision must be one of {PRECISIONS}, got {options.precision!r}")
    repo = Path(repository).resolve()
    ckpt = load_checkpoint(checkpoint)  # before any output: a bad checkpoint is one clean message
    bar = tqdm(total=7, desc="export", disable=not progress)

    def step(text: str) -> None:
        bar.set_postfix_str(text)
        bar.update(1)

    model = ckpt.build_model()
    config = model.config
    try:
        sessions = _test_sessions(options, ckpt)
    except BaseException:
        bar.close()
        raise
    step("checkpoint + data")

    repo.mkdir(parents=True, exist_ok=True)
    repo_lib.refuse_while_candidate(repo, "an export")
    if options.candidate and repo_lib.current_version(repo) is None:
        raise ExportError(f"{repo}: a candidate needs a live version to be compared with; export one first")
    repo_lib.clean_debris(repo)
    version = repo_lib.next_version(repo)
    staged = repo_lib.staging_dir(repo)
    try:
        dirs = {m: staged / m / str(version) for m in MODELS}
        for d in dirs.values():
            d.mkdir(parents=True)

        onnx_path = export_onnx(model, dirs["session_encoder"] / FILES["fp32"], sessions)
        parity_set = [s[:-1] for s in sessions[: options.parity_sessions]]
        parity = check_parity(model, OnnxEncoder(onnx_path), parity_set, options.max_abs_diff, options.min_top20_agreement)
        if not parity.passed:
            raise ExportError(
                f"ONNX parity gate failed on {parity.sessions} test sessions: max abs diff {parity.max_abs_diff:.2e} "
                f"(limit {options.max_abs_diff:.0e}), top-20 agreement {parity.top20_agreement:.4f} "
                f"(limit {options.min_top20_agreement}); refusing to publish"
            )
        step("onnx + parity")

        test_x, test_y = prefixes(sessions)
        rng = np.random.default_rng(0)
        pick = rng.choice(len(test_x), size=min(options.quality_sessions, len(test_x)), replace=False)
        table = model.item_embeddings().detach().numpy()
        variants = measure_variants(onnx_path, table, [test_x[i] for i in pick], test_y[pick], ckpt.item_counts, config.max_len)
        for precision, file in FILES.items():  # keep only the served variant's file next to FP32
            if precision not in ("fp32", options.precision):
                (dirs["session_encoder"] / file).unlink(missing_ok=True)
        step("precision variants")

        tune = _session_vectors(model, [s[:-1] for s in sessions[:500]])
        index, index_report = build_index(table, IndexSpec(kind=options.index), tune_queries=tune,
                                          target_recall=options.target_recall)
        save_index(index, dirs["retrieval"] / "items.faiss")
        step("faiss index")

        raw_ids = np.asarray(ckpt.raw_ids, dtype=np.int64)
        np.save(dirs["preprocess"] / "item_ids.npy", raw_ids, allow_pickle=False)
        np.save(dirs["retrieval"] / "item_ids.npy", raw_ids, allow_pickle=False)
        np.save(dirs["retrieval"] / "popularity.npy", np.asarray(ckpt.item_counts, dtype=np.int64), allow_pickle=False)
        for model_name in VERSIONED:  # session_recommender's version folder holds only its model.py
            repo_lib.copy_model_code(dirs[model_name], model_name)
        artifacts = {
            str(p.relative_to(staged)): sha256_file(p)
            for d in dirs.values() for p in sorted(d.rglob("*")) if p.is_file()
        }
        options.serving.max_len = config.max_len
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": version,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "checkpoint": {"path": str(Path(checkpoint).resolve()), "sha256": sha256_file(checkpoint),
                           "metrics": ckpt.metrics},
            "model_config": config.to_dict(),
            "serving": {"max_len": config.max_len, "max_k": options.max_k, "dim": config.dim,
                        "max_request_items": options.max_request_items, "precision": options.precision,
                        "encoder_file": FILES[options.precision], "n_items": config.n_items},
            "serving_config": {k: v for k, v in asdict(options.serving).items() if k != "extra"},
            "export_options": {k: v for k, v in asdict(options).items() if k != "serving"},
            "libraries": library_versions(),
            "parity": parity.to_dict(),
            "precision_variants": variants,
            "index": index_report.to_dict(),
            "artifacts": artifacts,
            "configs": all_configs(options.serving, version),
        }
        _write_manifest(dirs, manifest)
        step("manifest")

        # The staged version through the served code path: checksums, preprocess, ORT, FAISS.
        pipeline = LocalPipeline(staged, version)
        served_top = [pipeline.recommend(ckpt.raw_ids[np.asarray(s)].tolist(), 20).item_ids for s in parity_set[:200]]
        with torch.no_grad():
            ref = model(*graph_tensors(build_batch(parity_set[:200], config.max_len)))
        ref_top = ckpt.raw_ids[(ref.topk(20, dim=1).indices + 1).numpy()]
        agreement = float(np.mean([len(np.intersect1d(a, b)) / 20 for a, b in zip(served_top, ref_top)]))
        floor = options.min_top20_agreement * (index_report.recall_at_20 or 1.0) - 0.01
        manifest["pipeline_check"] = {"sessions": len(served_top), "top20_agreement_vs_pytorch": agreement,
                                      "limit": floor}
        if agreement < floor:
            raise ExportError(
                f"served-path check failed: top-20 agreement with PyTorch {agreement:.4f} < {floor:.4f}; refusing to publish"
            )
        manifest["canaries"] = _canaries(pipeline, ckpt, sessions, options.canaries)
        _write_manifest(dirs, manifest)
        step("verified")

        repo_lib.publish(repo, staged, version, options.serving, candidate=options.candidate)
        pruned = repo_lib.prune(repo, options.keep_versions)
        step(f"published v{version}")
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    finally:
        bar.close()
    return ExportResult(version=version, repository=repo, manifest=manifest, pruned=pruned)


def _write_manifest(dirs: dict[str, Path], manifest: dict) -> None:
    text = json.dumps(manifest, indent=2, sort_keys=False)
    for d in dirs.values():
        (d / MANIFEST).write_text(text)
