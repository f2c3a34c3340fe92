"""The experiment's second ensemble: `recommend_candidate` pinned to version M beside `recommend` on N.

    sessionrec export best.pt --repository R --candidate     # new version M, published as the candidate
    pin_candidate(R, M)        # or an existing version (e.g. an older one, to re-test it)
    promote_candidate(R)       # M becomes the live version (the server switches as after an export)
    drop_candidate(R)          # the experiment ends without M; its folders go to the retired folder

Both ensembles run the same step models (one set of python stubs), each pinned to its own version, so
Triton reports per-variant latency and errors under its own `model` label (`recommend` vs
`recommend_candidate`) and one pod serves both arms; the client assigns units (clients/assignment.py).

Which step versions are loaded: steps keep `version_policy latest 2`. With the usual order (the
candidate exported after the live version) the two newest step versions are exactly {N, M}. When they
are not (the candidate is an older version, or an interrupted export left something newer on disk), the
steps would not load one of the two, and that arm would fail every request: then pinning rewrites the
step configs to `version_policy specific {N, M}` and promotion or drop restores `latest 2`. While a
candidate is pinned, `sessionrec export` and `sessionrec rollback` refuse (they would change the step
versions under the running experiment); end the experiment first.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from sessionrec.export import repository as repo_lib
from sessionrec.export.configs import ENSEMBLES, SESSION_ENSEMBLE, VERSIONED, ServingConfig, all_configs, parse, render
from sessionrec.export.repository import CANDIDATE, RepositoryError
from sessionrec.serving.artifacts import MANIFEST, read_manifest


@dataclass(frozen=True)
class CandidatePlan:
    control: int  # what `recommend` serves
    candidate: int  # what `recommend_candidate` serves
    specific_steps: bool  # step configs pinned to {control, candidate} (not the two newest)


def _serving_config(folder: Path) -> ServingConfig:
    return ServingConfig(**read_manifest(folder).get("serving_config", {}))


def step_versions(repo: Path) -> list[int]:
    """Versions every step model present has on disk."""
    sets = [set(repo_lib.versions(repo, m)) for m in VERSIONED if (Path(repo) / m).is_dir()]
    return sorted(set.intersection(*sets)) if sets else []


def needs_specific_policy(on_disk: list[int], control: int, candidate: int, keep: int = 2) -> bool:
    """True when `version_policy latest keep` would not load both versions."""
    return not {control, candidate} <= set(sorted(on_disk)[-keep:])


def write_step_policy(repo: Path, cfg: ServingConfig, versions: list[int] | None) -> None:
    """Step configs with `specific {versions}`, or the generated default (`latest`) when None."""
    for rel, text in all_configs(cfg).items():
        if rel.split("/")[0] not in VERSIONED:
            continue
        if versions is not None:
            config = parse(text)
            config.version_policy.ClearField("latest")
            config.version_policy.specific.versions.extend(sorted(versions))
            text = render(config)
        path = Path(repo) / rel
        if path.is_file() and path.read_text() == text:
            continue  # unchanged bytes: Triton does not reload (repository.write_configs says why)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def _manifest_folder(repo: Path, version: int) -> Path:
    for folder in (Path(repo) / "recommend" / str(version), Path(repo) / CANDIDATE / str(version),
                   repo_lib.retired_dir(repo) / str(version) / "recommend"):
        if (folder / MANIFEST).is_file():
            return folder
    raise RepositoryError(f"{repo}: version {version} has no manifest (recommend/{version} or "
                          f"{CANDIDATE}/{version}); export it first")


def plan(repo: Path) -> CandidatePlan | None:
    candidate = repo_lib.candidate_version(repo)
    if candidate is None:
        return None
    control = repo_lib.current_version(repo)
    return CandidatePlan(control, candidate, needs_specific_policy(step_versions(repo), control, candidate))


def pin_candidate(repo: str | Path, version: int) -> CandidatePlan:
    """Serve `version` as recommend_candidate next to the live version (which stays on recommend)."""
    repo = Path(repo)
    control = repo_lib.current_version(repo)
    if control is None:
        raise RepositoryError(f"{repo}: no live version to compare a candidate with")
    if version == control:
        raise RepositoryError(f"{repo}: version {version} is the live version; a candidate must differ "
                              "(publish a new one with `sessionrec export --candidate`)")
    missing = [m for m in VERSIONED if (repo / m).is_dir() and not (repo / m / str(version)).is_dir()]
    if missing:
        raise RepositoryError(f"{repo}: version {version} has no step folder(s) for {missing}")
    pinned = repo_lib.candidate_version(repo)
    if pinned is not None and pinned != version:
        raise RepositoryError(f"{repo}: version {pinned} is already the candidate; promote or drop it first")
    source = _manifest_folder(repo, version)
    cfg = _serving_config(source)
    target = repo / CANDIDATE / str(version)
    if not target.is_dir():
        target.mkdir(parents=True)
        shutil.copy2(source / MANIFEST, target / MANIFEST)
    specific = needs_specific_policy(step_versions(repo), control, version)
    if specific:
        write_step_policy(repo, cfg, [control, version])
    repo_lib.write_candidate_config(repo, cfg, version)
    return CandidatePlan(control, version, specific)


def promote_candidate(repo: str | Path) -> int:
    """The candidate becomes the live version: recommend pinned to it, then recommend/<M> appears."""
    repo = Path(repo)
    current = plan(repo)
    if current is None:
        raise RepositoryError(f"{repo}: no candidate is pinned")
    if current.candidate < current.control:
        raise RepositoryError(f"{repo}: candidate {current.candidate} is older than live {current.control}; "
                              "to serve it to everybody use `sessionrec rollback` after dropping the experiment")
    folder = repo / CANDIDATE / str(current.candidate)
    cfg = _serving_config(folder)
    if current.specific_steps:
        write_step_policy(repo, cfg, None)  # back to latest 2: {candidate, control} are the newest two
    repo_lib.write_configs(repo, cfg, version=current.candidate, only=ENSEMBLES)  # recommend_session follows
    target = repo / "recommend" / str(current.candidate)
    if not target.is_dir():
        os.replace(folder, target)
    shutil.rmtree(repo / CANDIDATE)
    return current.candidate


def drop_candidate(repo: str | Path) -> int:
    """End the experiment without the candidate; a never-live candidate's folders move to the retired folder."""
    repo = Path(repo)
    current = plan(repo)
    if current is None:
        raise RepositoryError(f"{repo}: no candidate is pinned")
    cfg = _serving_config(repo / CANDIDATE / str(current.candidate))
    shutil.rmtree(repo / CANDIDATE)
    if current.specific_steps:
        write_step_policy(repo, cfg, None)
    if current.candidate not in repo_lib.live_versions(repo):
        retired = repo_lib.retired_dir(repo) / str(current.candidate)  # its number is never reused
        retired.mkdir(parents=True, exist_ok=True)
        for model in (*VERSIONED, SESSION_ENSEMBLE):
            source = repo / model / str(current.candidate)
            if source.is_dir():
                shutil.rmtree(retired / model, ignore_errors=True)
                os.replace(source, retired / model)
    return current.candidate
