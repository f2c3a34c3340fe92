"""The served model repository on disk: versions, atomic publishing, pruning, rollback.

Layout (a Triton model repository):
    <repo>/preprocess/{config.pbtxt, configs/gpu.pbtxt, <N>/...}
    <repo>/session_encoder/...   <repo>/retrieval/...
    <repo>/recommend/{config.pbtxt (steps pinned to the live version), <N>/manifest.json}

A version is live once `recommend/<N>/` exists and the ensemble config pins N. Publishing writes
every step's `<N>/` folder first (renames of fully written, verified folders built aside), then the
ensemble config, then `recommend/<N>/` last: an export that fails or is killed at any point leaves
the live version serving, and step folders without `recommend/<N>` are debris that the next export
removes (re-running is safe).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from sessionrec.errors import SessionrecError
from sessionrec.export.configs import (ENSEMBLES, MODELS, SESSION_ENSEMBLE, VERSIONED, ServingConfig, all_configs, ensemble_config,
                                      render, shard_config, warmup_files)
from sessionrec.serving.artifacts import read_manifest

CHECKED_IN = Path(__file__).resolve().parent.parent / "model_repository"
CANDIDATE = "recommend_candidate"  # the experiment's second ensemble (export/candidate.py)


class RepositoryError(SessionrecError):
    pass


def shard_models(repo: Path) -> list[str]:
    """The retrieval shard models of a repository (retrieval_shard_<s>; sharded exports only)."""
    return sorted(p.name for p in Path(repo).glob("retrieval_shard_*") if p.is_dir())


def versions(repo: Path, model: str = "recommend") -> list[int]:
    folder = Path(repo) / model
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def live_versions(repo: Path) -> list[int]:
    """Complete versions (every step and the ensemble folder present), oldest first.

    A model folder absent altogether is not required: the chart's prepare step drops the models the
    pod's ensemble layout does not run (session_recommender on GPU nodes) before build-engine looks
    for the live version, and repositories exported before the fused step existed lack it.
    """
    done = set(versions(repo, "recommend"))
    for model in VERSIONED:
        if (Path(repo) / model).is_dir():
            done &= set(versions(repo, model))
    return sorted(done)


def current_version(repo: Path) -> int | None:
    live = live_versions(repo)
    return live[-1] if live else None


def candidate_version(repo: Path) -> int | None:
    """The version `recommend_candidate` is pinned to, or None when no experiment runs."""
    pinned = versions(repo, CANDIDATE)
    return pinned[-1] if pinned and (Path(repo) / CANDIDATE / "config.pbtxt").is_file() else None


def refuse_while_candidate(repo: Path, action: str) -> None:
    candidate = candidate_version(repo)
    if candidate is not None:
        raise RepositoryError(
            f"{repo}: version {candidate} is pinned as the experiment's candidate; {action} would change the step "
            "versions loaded under it. End the experiment first: sessionrec experiment candidate --promote or --drop")


def write_candidate_config(repo: Path, cfg: ServingConfig, version: int) -> None:
    """recommend_candidate/config.pbtxt and configs/gpu.pbtxt, every step pinned to `version`."""
    for rel, gpu in (("config.pbtxt", False), ("configs/gpu.pbtxt", True)):
        path = Path(repo) / CANDIDATE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(render(ensemble_config(cfg, version, gpu=gpu, name=CANDIDATE)))
        os.replace(tmp, path)


def retired_dir(repo: Path) -> Path:
    return Path(repo).parent / f".{Path(repo).name}.retired"


def next_version(repo: Path) -> int:
    """Never reuse a number, not even a retired one: Triton (and its response cache) identify
    a model's answers by name and version."""
    seen = [v for m in (*MODELS, *shard_models(repo)) for v in versions(repo, m)]
    retired = retired_dir(repo)
    if retired.is_dir():
        seen += [int(p.name) for p in retired.iterdir() if p.name.isdigit()]
    return max(seen, default=0) + 1


def clean_debris(repo: Path) -> list[Path]:
    """Clear step folders of versions that are not live: an interrupted publish (removed), or a
    rolled-back version whose steps were left in place (moved to the retired folder)."""
    live = set(live_versions(repo))
    candidate = candidate_version(repo)  # not live (no recommend/<N>) but served: not debris
    retired = retired_dir(repo)
    removed = []
    for model in (*MODELS, *shard_models(repo)):
        for v in versions(repo, model):
            if v not in live and v > max(live, default=0) and v != candidate:
                source = repo / model / str(v)
                if (retired / str(v)).is_dir():
                    target = retired / str(v) / model
                    shutil.rmtree(target, ignore_errors=True)
                    os.replace(source, target)
                else:
                    shutil.rmtree(source)
                removed.append(source)
    for stale in Path(repo).parent.glob(f".{Path(repo).name}.staging-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return removed


def staging_dir(repo: Path) -> Path:
    """Built next to the repository (same filesystem, so publishing is a rename), never inside it."""
    path = Path(repo).parent / f".{Path(repo).name}.staging-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return path


def write_configs(root: Path, cfg: ServingConfig, version: int = -1, only: tuple[str, ...] = MODELS) -> None:
    """The model configs (and the raw data their warm-up samples read) of the models in `only`.

    A file whose bytes are already there is left alone, mtime included: Triton reloads *every*
    version of a model whose non-version files changed, so rewriting an unchanged config.pbtxt at
    each export made the next switch restart the serving version's stub beside the new one (two
    python stubs starting under live traffic instead of one; docs/RELIABILITY.md, Hot swap).
    """
    files = {rel: text.encode() for rel, text in all_configs(cfg, version).items()} | warmup_files()
    for rel, data in files.items():
        if rel.split("/")[0] in only:
            _write_if_changed(root / rel, data)


def _write_if_changed(path: Path, data: bytes) -> None:
    """Atomic write, skipped when the bytes are already there (an unchanged config keeps its mtime)."""
    if path.is_file() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def copy_model_code(version_root: Path, model: str) -> None:
    """The thin python-backend model.py goes into each version folder (Triton loads it from there).
    Every retrieval_shard_<s> runs the one `retrieval_shard` model.py."""
    source = CHECKED_IN / ("retrieval_shard" if model.startswith("retrieval_shard_") else model) / "model.py"
    if source.is_file():
        shutil.copy2(source, version_root / "model.py")


def publish(repo: Path, staged: Path, version: int, cfg: ServingConfig, candidate: bool = False) -> None:
    """Move a verified staged version into the repository; the ensemble switch comes last.

    `candidate`: the version goes to `recommend_candidate` (pinned to it) instead of `recommend`, so it
    is not live: `recommend` keeps serving the current version and only experiment traffic sees it.
    """
    repo = Path(repo)
    repo.mkdir(parents=True, exist_ok=True)
    write_configs(repo, cfg, version=current_version(repo) or version, only=VERSIONED)
    for model in VERSIONED:
        target = repo / model / str(version)
        if target.exists():
            raise RepositoryError(f"{target}: version folder already exists; refusing to overwrite")
        os.replace(staged / model / str(version), target)
    # A sharded version's shard models (export --shards), before `recommend/<N>` marks it live.
    for model in shard_models(staged):
        _write_if_changed(repo / model / "config.pbtxt", render(shard_config(cfg, int(model.rsplit("_", 1)[1]))).encode())
        target = repo / model / str(version)
        if target.exists():
            raise RepositoryError(f"{target}: version folder already exists; refusing to overwrite")
        os.replace(staged / model / str(version), target)
    if (staged / SESSION_ENSEMBLE / str(version)).is_dir():  # before `recommend`, whose folder marks N live
        (repo / SESSION_ENSEMBLE).mkdir(exist_ok=True)
        os.replace(staged / SESSION_ENSEMBLE / str(version), repo / SESSION_ENSEMBLE / str(version))
    if candidate:
        # recommend_session's config stays pinned to the live version: the experiment is on `recommend`
        # (its folder waits for a promotion, export/candidate.py).
        write_candidate_config(repo, cfg, version)
        os.replace(staged / "recommend" / str(version), repo / CANDIDATE / str(version))
    else:
        write_configs(repo, cfg, version=version, only=ENSEMBLES)
        os.replace(staged / "recommend" / str(version), repo / "recommend" / str(version))
    shutil.rmtree(staged, ignore_errors=True)


def prune(repo: Path, keep: int) -> list[int]:
    """Keep the newest `keep` live versions of every model; return the removed version numbers."""
    live = live_versions(repo)
    removed = live[:-keep] if keep > 0 else []
    for v in removed:
        for model in (*MODELS, *shard_models(repo)):
            shutil.rmtree(repo / model / str(v), ignore_errors=True)
    return removed


def rollback(repo: Path, cfg: ServingConfig | None = None) -> tuple[int, int]:
    """Retire the live version: pin the ensemble to the previous one and move its folder aside.

    Only `recommend/<N>` moves (to `<repo>/../.<repo>.retired/<N>/`, out of the repository so no
    reload picks it up again); that alone makes N not live. The step folders of N stay until the
    next export moves them there too: removing them now would let Triton drop N's steps while a
    running server's ensemble is still being repinned (measured: failed requests during rollback).
    Returns (retired, now live).
    """
    repo = Path(repo)
    refuse_while_candidate(repo, "a rollback")
    live = live_versions(repo)
    if len(live) < 2:
        raise RepositoryError(f"{repo}: no previous version to roll back to (live versions: {live or 'none'})")
    newest, previous = live[-1], live[-2]
    cfg = cfg or ServingConfig(**read_manifest(repo / "recommend" / str(previous)).get("serving_config", {}))
    write_configs(repo, cfg, version=previous, only=ENSEMBLES)
    retired = retired_dir(repo) / str(newest)
    retired.mkdir(parents=True, exist_ok=True)
    target = retired / "recommend"
    if target.exists():
        shutil.rmtree(target)
    os.replace(repo / "recommend" / str(newest), target)
    return newest, previous
