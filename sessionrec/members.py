"""Two members trained side by side, folded into one checkpoint (`sessionrec train --members 2`).

The concatenation ensemble (sessionrec.ensemble) was the lever that paid most in the validation
ablation (docs/BENCHMARKS.md section 1). This runs it as one command: member m trains with seed
`seed + m - 1` in its own process with half the threads (on 2 cores, two 1-thread members finish an
epoch each in about the time one 2-thread training takes for two), then the mixing factor is chosen
on the same validation split, and OUT/best.pt is the folded `concat` checkpoint, exported
like any other. The members keep their own folders (OUT/member-1, OUT/member-2: best.pt, history.json,
train.log), so a crash resumes with `--resume` and either member can be served alone.

Member 2 may differ from member 1 in its recipe, not only its seed (`--second-member
position=forward`): the ensemble gains more the more its members disagree (two seeds of one recipe
+0.40 HR@20 on validation at full data, two different recipes +1.09 to +2.37 at a reduced budget;
docs/BENCHMARKS.md section 1).

The `max_minutes` budget is each member's, and they run at the same time: the wall-clock budget of
the whole is the same number.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

from sessionrec.errors import SessionrecError


class MemberFailed(SessionrecError):
    """A member's training process exited with an error."""


@dataclass
class MembersResult:
    best_path: Path  # the folded checkpoint
    member_paths: list[Path]  # each member's best.pt
    alpha: float  # mixing factor chosen on validation (score = 2(1-alpha) s1.v1 + 2 alpha s2.v2)
    valid_metrics: dict
    seconds: float


def _member(data: str, out: str, model_config, config, resume: bool) -> None:
    """One member, in its own process: its output goes to OUT/member-m/train.log."""
    from sessionrec.train import train

    Path(out).mkdir(parents=True, exist_ok=True)
    with open(Path(out) / "train.log", "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        sys.stdout, sys.stderr = log, log
        train(data, out, model_config, config, resume=resume, progress=False)


def member_configs(config, members: int) -> list:
    """Each member's TrainConfig: seeds seed, seed + 1, ...; the threads split between them."""
    threads = config.threads or os.cpu_count() or 1
    return [replace(config, seed=config.seed + m, threads=max(1, threads // members)) for m in range(members)]


def parse_overrides(text: str, model_config, config) -> dict:
    """`KEY=VALUE,KEY=VALUE` (config field names, - or _) -> {"model": {...}, "train": {...}}, typed.

    Each key is a field of the model config or of TrainConfig; its value is converted to the field's
    type. An unknown key or a value of the wrong type is a SessionrecError naming it.
    """
    targets = {"model": model_config, "train": config}
    out: dict = {"model": {}, "train": {}}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if "=" not in part:
            raise SessionrecError(f"--second-member {text!r}: {part!r} is not KEY=VALUE")
        key, value = (x.strip() for x in part.split("=", 1))
        name = key.replace("-", "_")
        for section, target in targets.items():
            kinds = {f.name: type(getattr(target, f.name)) for f in fields(target)}
            if name in kinds and name != "n_items":
                out[section][name] = _typed(value, kinds[name], key)
                break
        else:
            raise SessionrecError(f"--second-member: {key!r} is not a field of {type(model_config).__name__} or TrainConfig")
    return out


def _typed(value: str, kind: type, key: str):
    if kind is bool:
        if value.lower() not in ("true", "false", "1", "0"):
            raise SessionrecError(f"--second-member {key}={value!r}: expected true or false")
        return value.lower() in ("true", "1")
    if kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            raise SessionrecError(f"--second-member {key}={value!r}: expected a {kind.__name__}") from None
    return value


def member_recipes(model_config, config, members: int, second: dict | None = None) -> list[tuple]:
    """(model config, TrainConfig) of each member: member_configs, with `second`'s overrides on member 2."""
    recipes = [(model_config, c) for c in member_configs(config, members)]
    if second and members >= 2:
        model, train = recipes[1]
        model = replace(model, **second.get("model", {}))
        try:  # checked here, not after a member's process has started (n_items comes from the data there)
            if hasattr(model, "validate"):
                replace(model, n_items=max(1, getattr(model, "n_items", 1))).validate()
        except ValueError as exc:
            raise SessionrecError(f"--second-member: {exc}") from None
        recipes[1] = (model, replace(train, **second.get("train", {})))
    return recipes


def train_members(data: str | Path, out: str | Path, model_config, config, members: int = 2,
                  resume: bool = False, progress: bool = True, poll_s: float = 5.0,
                  second: dict | None = None) -> MembersResult:
    from sessionrec.checkpoint import save_checkpoint
    from sessionrec.ensemble import build_ensemble

    if members != 2:
        raise SessionrecError(f"--members {members}: an ensemble here has exactly 2 members (1 trains one model)")
    out = Path(out)
    began = time.monotonic()
    folders = [out / f"member-{m + 1}" for m in range(members)]
    context = multiprocessing.get_context("spawn")  # no forked torch thread pools
    processes = []
    for folder, (member_model, member_config) in zip(folders, member_recipes(model_config, config, members, second)):
        process = context.Process(target=_member, name=folder.name,
                                  args=(str(data), str(folder), member_model, member_config, resume))
        process.start()
        processes.append(process)
        if progress:
            print(f"{folder.name}: seed {member_config.seed}, {member_config.threads} thread(s), log {folder / 'train.log'}",
                  flush=True)
    reported = [0] * members
    try:
        while any(p.is_alive() for p in processes):
            time.sleep(poll_s)
            if progress:
                _report(folders, reported, began)
        if progress:
            _report(folders, reported, began)
    except BaseException:  # Ctrl-C or an error here: no member keeps training unattended
        for process in processes:
            process.terminate()
        raise
    for folder, process in zip(folders, processes):
        if process.exitcode != 0:
            tail = (folder / "train.log").read_text(errors="replace")[-800:] if (folder / "train.log").exists() else ""
            raise MemberFailed(f"{folder.name} failed (exit code {process.exitcode}); the end of {folder / 'train.log'}:\n{tail}")
    paths = [folder / "best.pt" for folder in folders]
    result = build_ensemble(paths, data, progress=progress)
    best = save_checkpoint(result.checkpoint, out / "best.pt")
    valid = result.checkpoint.metrics["valid"]
    summary = {"best": str(best), "alpha": result.alpha, "valid": valid, "members": [str(p) for p in paths],
               "grid": [{k: r[k] for k in ("alpha", "valid_HR@20", "valid_MRR@20")} for r in result.grid]}
    (out / "ensemble.json").write_text(json.dumps(summary, indent=2))
    return MembersResult(best, paths, result.alpha, valid, time.monotonic() - began)


def _report(folders: list[Path], reported: list[int], began: float) -> None:
    """Print each member's epochs that finished since the last report (from its history.json)."""
    for m, folder in enumerate(folders):
        try:
            history = json.loads((folder / "history.json").read_text())
        except (OSError, ValueError):  # not written yet, or being written
            continue
        for row in history[reported[m]:]:
            print(f"{folder.name} epoch {row['epoch']}: valid HR@20 {row['valid_HR@20']:.2f} MRR@20 "
                  f"{row['valid_MRR@20']:.2f} ({row['seconds']:.0f} s; {(time.monotonic() - began) / 60:.1f} min in)",
                  flush=True)
        reported[m] = len(history)
