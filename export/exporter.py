"""`sessionrec export`: checkpoint -> verified new version of the Triton model repository.

Any model that meets the encoder contract (sessionrec.contract) takes the same path: a trained or
imported checkpoint (`export_version`), or a user's own module (`export_encoder`, and the CLI's
`sessionrec export-encoder`). Steps (all in a staging folder next to the repository; nothing served changes until the end):
1. load the checkpoint (weights_only) or check the user's module against the contract; real test sessions;
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
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sessionrec.checkpoint import load_checkpoint
from sessionrec.contract import CONTRACT_VERSION, EncoderSpec, make_spec
from sessionrec.data import load_dataset, prefixes
from sessionrec.errors import SessionrecError
from sessionrec.export import instances
from sessionrec.export import repository as repo_lib
from sessionrec.export import shards as shard_lib
from sessionrec.export.configs import MODELS, VERSIONED, ServingConfig, all_configs
from sessionrec.export.faiss_index import IndexSpec, build_index, save_index
from sessionrec.export.onnx_export import (EXTERNAL_DATA_MIN_BYTES, TrainedEncoder, check_parity, data_file, export_onnx,
                                           parameter_bytes)
from sessionrec.export.precision import FILES, PRECISIONS, measure_variants, score_rows
from sessionrec.monitoring.reference import monitoring_reference
from sessionrec.serving.artifacts import MANIFEST, MANIFEST_FORMAT, sha256_file
from sessionrec.serving.encoder import OnnxEncoder
from sessionrec.serving.pipeline import LocalPipeline


class ExportError(SessionrecError):
    """The export was refused; the repository is unchanged."""


@dataclass
class ExportOptions:
    data: str | None = None  # sessions for parity, quality and canaries; default: the checkpoint's data
    precision: str = "fp32"  # which encoder file the CPU server runs (all three are measured)
    index: str = "auto"  # FAISS index kind: auto (by catalogue size) | flat | ivf | ivfsq | ivfpq | ivfpqfs | hnsw
    target_recall: float = 0.95  # ANN indexes are tuned to at least this recall@20 vs exact
    keep_versions: int = 3  # live versions kept on disk (the server loads the newest two)
    max_k: int = 1000  # largest K a request may ask for
    max_request_items: int = 1000  # longest session a request may send (bad input beyond it)
    parity_sessions: int = 500  # real test sessions for the PyTorch vs ONNX gate
    max_abs_diff: float = 1e-3  # gate: session vectors, FP32 ONNX vs PyTorch
    min_top20_agreement: float = 0.99  # gate: top-20 overlap, ONNX vs PyTorch
    quality_sessions: int = 3000  # test prefixes for the precision variants' HR@20/MRR@20
    canaries: int = 12  # real sessions replayed by `sessionrec serve` before it reports healthy
    one_click_k: int = 20  # the one-click answer table's K (sessionrec.serving.one_click); 0 = no table
    one_click_max_items: int = 200_000  # larger catalogues get no table (one request per item to build it)
    # ONNX weights above this many bytes go to an external data file (protobuf's 2 GB limit; the
    # item table of 10M items at d=100 is 4 GB); below it model.onnx is self-contained.
    onnx_external_data_bytes: int = EXTERNAL_DATA_MIN_BYTES
    candidate: bool = False  # publish as the experiment's candidate (recommend_candidate), not live
    # Split retrieval into this many shards (0: one index, the default). Each row range gets its own
    # retrieval_shard_<s> model for its own server; retrieval/<N> then holds no index
    # (sessionrec.serving.shards, docs/LARGE_CATALOGUES.md "Sharded retrieval").
    shards: int = 0
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


def _load_data(options: ExportOptions, default: str | None):
    source = options.data or default
    if not source:
        raise ExportError("no data to verify against: pass --data (a SR-GNN folder or click log with test sessions)")
    return source, load_dataset(source)


def _test_sessions(source: str, dataset, raw_ids: np.ndarray) -> list[list[int]]:
    """Real test sessions in the model's ids (mapped through raw ids, so any log works)."""
    if not dataset.test:
        raise ExportError(f"{source}: has no test sessions to verify the export against")
    from sessionrec.serving.preprocess import IdMap

    to_model = IdMap(raw_ids)
    sessions = []
    for s in dataset.test:
        mapped = to_model.to_model(dataset.raw_ids[np.asarray(s)])
        mapped = mapped[mapped > 0]
        if mapped.size >= 2:
            sessions.append(mapped.tolist())
    if not sessions:
        raise ExportError(f"{source}: none of its test items are in the model's catalogue (wrong data?)")
    return sessions


def _train_counts(dataset, raw_ids: np.ndarray) -> np.ndarray:
    """(N+1,) training clicks per model id, counted in the data's training sessions (popularity fallback)."""
    from sessionrec.serving.preprocess import IdMap

    clicks = np.concatenate([np.asarray(s, dtype=np.int64) for s in dataset.train]) if dataset.train else np.zeros(0, np.int64)
    model_ids = IdMap(raw_ids).to_model(dataset.raw_ids[clicks])
    return np.bincount(model_ids[model_ids > 0], minlength=raw_ids.size).astype(np.int64)


def _canaries(pipeline: LocalPipeline, raw: np.ndarray, sessions: list[list[int]], count: int) -> list[dict]:
    """Requests with their expected answers: real sessions, exclusion, an unknown id, all-unknown."""
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


def spec_from_checkpoint(checkpoint: str | Path) -> tuple[EncoderSpec, object]:
    """A `sessionrec train` (or `sessionrec import`) checkpoint as an encoder-contract spec."""
    ckpt = load_checkpoint(checkpoint)
    model = ckpt.build_model()
    spec = make_spec(
        TrainedEncoder(model), model.item_embeddings().detach(), ckpt.raw_ids[1:], ckpt.schema, model.config.max_len,
        item_counts=ckpt.item_counts[1:],
        source={"route": ckpt.extra.get("imported_from", "sessionrec train"), "family": ckpt.family,
                "path": str(Path(checkpoint).resolve()), "sha256": sha256_file(checkpoint), "metrics": ckpt.metrics},
        model_config={"family": ckpt.family, **model.config.to_dict()}, metrics=ckpt.metrics)
    return spec, ckpt


def export_version(checkpoint: str | Path, repository: str | Path, options: ExportOptions | None = None,
                   progress: bool = True) -> ExportResult:
    """A trained checkpoint -> a verified new version (see the module docstring)."""
    spec, ckpt = spec_from_checkpoint(checkpoint)  # before any output: a bad checkpoint is one clean message
    return export_spec(spec, repository, options, progress, default_data=ckpt.train_config.get("data"))


def export_encoder(module, item_table, raw_ids, schema: str, repository: str | Path, *, max_len: int, data: str,
                   item_counts=None, options: ExportOptions | None = None, progress: bool = False,
                   model_config: dict | None = None) -> ExportResult:
    """Any PyTorch session encoder that meets the contract (sessionrec.contract) -> a verified new version.

    `module(*schema tensors) -> (B, d)`; `item_table` (N, d) scored by inner product; `raw_ids` (N,)
    the catalogue id of each table row; `data` a click log or SR-GNN folder whose test sessions the
    parity gate, the served-path check and the canaries use (and whose training clicks give the
    popularity fallback unless `item_counts` is given). Same gates as `sessionrec export`.

        from sessionrec.export.exporter import export_encoder
        export_encoder(my_module, table, raw_ids, "sequence", "runs/repository", max_len=32, data="clicks.csv")
    """
    options = options or ExportOptions(data=data)
    options.data = data
    spec = make_spec(module, item_table, raw_ids, schema, max_len, item_counts,
                     source={"route": "python api (sessionrec.export.exporter.export_encoder)",
                             "module": f"{type(module).__module__}.{type(module).__qualname__}"},
                     model_config=model_config)
    return export_spec(spec, repository, options, progress)


def _check_schema_switch(repo: Path, schema: str) -> None:
    live = repo_lib.current_version(repo)
    if live is None:
        return
    from sessionrec.serving.artifacts import read_manifest

    served = read_manifest(repo / "recommend" / str(live)).get("serving", {}).get("schema", "graph")
    if served != schema:
        raise ExportError(
            f"{repo}: the live version {live} takes input schema {served!r}, this model {schema!r}; the step configs "
            "(preprocess -> session_encoder tensors) are shared by all versions of a repository, so one repository "
            "serves one schema: export to a new repository and point the server there"
        )


def export_spec(spec: EncoderSpec, repository: str | Path, options: ExportOptions | None = None,
                progress: bool = True, default_data: str | None = None) -> ExportResult:
    """The export itself, for any model that meets the encoder contract."""
    options = options or ExportOptions()
    if options.precision not in PRECISIONS:
        raise ExportError(f"--precision must be one of {PRECISIONS}, got {options.precision!r}")
    if options.shards == 1 or not 0 <= options.shards <= spec.n_items:
        raise ExportError(f"--shards must be 0 (one index) or 2..{spec.n_items} (the catalogue's items), got {options.shards}")
    requested = options.serving.fused_instances
    if requested is not None and (isinstance(requested, bool) or not isinstance(requested, int) or requested < 1):
        raise ExportError(f"fused_instances must be a whole number of at least 1 (or None: chosen by memory), got {requested!r}")
    from sessionrec.serving.history import shortfall

    # Before anything is built or staged: the configs written from options.serving would be refused
    # anyway (configs.ConfigError), but only after minutes of work.
    problem = shortfall(options.serving.history_max_len, spec.max_len)
    if problem:
        raise ExportError(f"refusing to export: {problem}")
    repo = Path(repository).resolve()
    schema = spec.schema
    raw_ids = spec.padded_raw_ids()
    bar = tqdm(total=7, desc="export", disable=not progress)

    def step(text: str) -> None:
        bar.set_postfix_str(text)
        bar.update(1)

    try:
        source, dataset = _load_data(options, default_data)
        sessions = _test_sessions(source, dataset, raw_ids)
        counts = (np.concatenate([[0], spec.item_counts]) if spec.item_counts is not None
                  else _train_counts(dataset, raw_ids))
        if repo.is_dir():
            _check_schema_switch(repo, schema.name)
    except BaseException:
        bar.close()
        raise
    step("model + data")

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

        try:
            external = parameter_bytes(spec.module) > options.onnx_external_data_bytes
            onnx_path = export_onnx(spec.module, dirs["session_encoder"] / FILES["fp32"], schema, spec.max_len, sessions,
                                    external_data=external)
        except OSError:
            raise  # disk full, permissions: the machine's problem, not the model's; reported as it is
        except Exception as exc:  # noqa: BLE001 - torch.onnx raises many kinds; one message names the step
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ExportError(f"ONNX export of the encoder failed (dynamic batch and length, schema {schema.name!r}): "
                              f"{type(exc).__name__}: {first[:400]}") from None
        parity_set = [s[:-1] for s in sessions[: options.parity_sessions]]
        parity = check_parity(spec, OnnxEncoder(onnx_path), parity_set, options.max_abs_diff, options.min_top20_agreement)
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
        table = spec.item_table
        variants = measure_variants(onnx_path, table, [test_x[i] for i in pick], test_y[pick], counts, spec.max_len,
                                    schema=schema.name)
        for precision, file in FILES.items():  # keep only the served variant's file next to FP32
            if precision not in ("fp32", options.precision):
                (dirs["session_encoder"] / file).unlink(missing_ok=True)
                data_file(dirs["session_encoder"] / file).unlink(missing_ok=True)
        step("precision variants")

        tune = spec.encode([s[:-1] for s in sessions[:500]])
        shard_list = []
        if options.shards:
            # One index per row range, each in its own model folder; no full index anywhere.
            built = shard_lib.build_shards(table, options.shards, IndexSpec(kind=options.index), tune_queries=tune,
                                           target_recall=options.target_recall, progress=progress)
            dirs.update(shard_lib.save_shards(built, staged, version))
            shard_list = shard_lib.shards_manifest(built)
            index_report = shard_lib.combined_report(built, shard_lib.merged_recall(built, table, tune))
        else:
            index, index_report = build_index(table, IndexSpec(kind=options.index), tune_queries=tune,
                                              target_recall=options.target_recall, progress=progress)
            save_index(index, dirs["retrieval"] / "items.faiss")
        step("faiss index")

        np.save(dirs["preprocess"] / "item_ids.npy", raw_ids, allow_pickle=False)
        np.save(dirs["retrieval"] / "item_ids.npy", raw_ids, allow_pickle=False)
        np.save(dirs["retrieval"] / "popularity.npy", np.asarray(counts, dtype=np.int64), allow_pickle=False)
        for model_name in (*VERSIONED, *(s["model"] for s in shard_list)):  # session_recommender's: only model.py
            repo_lib.copy_model_code(dirs[model_name], model_name)
        artifacts = {
            str(p.relative_to(staged)): sha256_file(p)
            for d in dirs.values() for p in sorted(d.rglob("*")) if p.is_file()
        }
        options.serving.max_len = spec.max_len
        options.serving.schema = schema.name
        # Stubs of the fused CPU step: by the memory one stub will hold, unless asked (export/instances.py).
        # The resolved count goes into this version's configs and manifest; options.serving keeps None.
        one_click = spec.n_items * options.one_click_k if spec.n_items <= options.one_click_max_items else 0
        encoder = dirs["session_encoder"] / FILES[options.precision]
        loaded = instances.files_bytes([encoder, data_file(encoder), dirs["preprocess"], dirs["retrieval"]])
        fused = instances.choose(instances.stub_bytes(loaded, one_click), options.serving.fused_instances)
        serving = replace(options.serving, fused_instances=fused["count"])
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": version,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "contract": CONTRACT_VERSION,
            "schema": schema.describe(),
            "source": spec.source,
            "model_config": {**spec.model_config, "max_len": spec.max_len, "dim": spec.dim},
            "serving": {"max_len": spec.max_len, "max_k": options.max_k, "dim": spec.dim,
                        "max_request_items": options.max_request_items, "precision": options.precision,
                        "encoder_file": FILES[options.precision], "n_items": spec.n_items, "schema": schema.name,
                        "encoder_external_data": external},
            "serving_config": {k: v for k, v in asdict(serving).items() if k != "extra"},
            "fused_instances": fused,
            "export_options": {k: v for k, v in asdict(options).items() if k != "serving"},
            "libraries": library_versions(),
            "parity": parity.to_dict(),
            "precision_variants": variants,
            "index": index_report.to_dict(),
            "retrieval_shards": shard_list,
            "artifacts": artifacts,
            "configs": all_configs(serving, version),
        }
        if "sha256" in spec.source:  # a checkpoint file: kept under its old key too
            manifest["checkpoint"] = {k: spec.source[k] for k in ("path", "sha256", "metrics")}
        _write_manifest(dirs, manifest)
        step("manifest")

        # The staged version through the served code path: checksums, preprocess, ORT, FAISS (a sharded
        # version: every shard folder searched and merged by the front's code).
        pipeline = LocalPipeline(staged, version, shards="local")
        checked = parity_set[:200]
        served = [pipeline.recommend(raw_ids[np.asarray(s)].tolist(), 20) for s in checked]
        served_top = [answer.item_ids for answer in served]
        ref_vectors, rows = torch.from_numpy(spec.encode(checked)), score_rows(table.shape[0])
        ref_top = raw_ids[np.concatenate([(ref_vectors[i : i + rows] @ torch.from_numpy(table).T).topk(20, dim=1).indices.numpy()
                                          for i in range(0, len(checked), rows)]) + 1]
        agreement = float(np.mean([len(np.intersect1d(a, b)) / 20 for a, b in zip(served_top, ref_top)]))
        floor = options.min_top20_agreement * (index_report.recall_at_20 or 1.0) - 0.01
        manifest["pipeline_check"] = {"sessions": len(served_top), "top20_agreement_vs_pytorch": agreement,
                                      "limit": floor}
        if agreement < floor:
            raise ExportError(
                f"served-path check failed: top-20 agreement with PyTorch {agreement:.4f} < {floor:.4f}; refusing to publish"
            )
        # The monitoring reference (sessionrec.monitoring): training-popularity buckets and the served
        # top scores' deciles on test sessions, what live traffic's drift is measured against.
        manifest["monitoring"] = monitoring_reference(counts, [float(a.scores[0]) for a in served])
        manifest["canaries"] = _canaries(pipeline, raw_ids, sessions, options.canaries)
        manifest["one_click"] = _one_click_table(pipeline, raw_ids, sessions, options, dirs["retrieval"], staged, manifest)
        # The same canaries through recommend_session's step code (no Redis: answered from ITEMS);
        # `sessionrec serve` replays them through the served ensemble and Redis at every load.
        from sessionrec.serving import session_canaries

        failed = session_canaries.check_at_export(pipeline, manifest["canaries"])
        if failed:
            raise ExportError(f"recommend_session canaries: {len(failed)} failed, first: {failed[0]}; refusing to publish")
        manifest["session_canaries"] = {"checked": len(manifest["canaries"]),
                                        "path": "recommend_session step code, ITEMS override, no Redis"}
        _write_manifest(dirs, manifest)
        step("verified")

        repo_lib.publish(repo, staged, version, serving, candidate=options.candidate)
        pruned = repo_lib.prune(repo, options.keep_versions)
        step(f"published v{version}")
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    finally:
        bar.close()
    return ExportResult(version=version, repository=repo, manifest=manifest, pruned=pruned)


def _one_click_table(pipeline: LocalPipeline, raw_ids: np.ndarray, sessions, options: ExportOptions, folder: Path, staged: Path,
                     manifest: dict) -> dict:
    """Write the one-click answer table into the retrieval step's version folder (checksummed) and
    add one-click canaries: their expected answers come from `pipeline`, which computed them (it was
    loaded before the table existed), and the server answers them from the table."""
    from sessionrec.serving import one_click

    n_items = int(raw_ids.size - 1)
    if options.one_click_k <= 0 or n_items > options.one_click_max_items:
        return {"built": False, "reason": "disabled" if options.one_click_k <= 0 else
                f"catalogue of {n_items} items is over one_click_max_items={options.one_click_max_items}"}
    ids, scores = one_click.build(pipeline, options.one_click_k)
    for path in one_click.save(folder, ids, scores):
        manifest["artifacts"][str(path.relative_to(staged))] = sha256_file(path)
    firsts = list(dict.fromkeys(int(raw_ids[s[0]]) for s in sessions))[:3]
    for item in firsts:
        answer = pipeline.recommend([item], ids.shape[1], False)
        manifest["canaries"].append({
            "items": [item], "k": int(ids.shape[1]), "exclude_seen": False, "expected_ids": answer.item_ids.tolist(),
            "expected_scores": answer.scores.tolist(), "unknown_count": answer.unknown_count, "fallback": answer.fallback,
        })
    return {"built": True, "k": int(ids.shape[1]), "items": n_items, "files": [one_click.IDS_FILE, one_click.SCORES_FILE]}


def _write_manifest(dirs: dict[str, Path], manifest: dict) -> None:
    text = json.dumps(manifest, indent=2, sort_keys=False)
    for d in dirs.values():
        (d / MANIFEST).write_text(text)
