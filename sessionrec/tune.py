"""Hyper-parameter search: Optuna's TPE sampler over the fields of ModelConfig and TrainConfig that
declare a search range (`searched(default, space)` next to each default), a median pruner fed the
validation score after every epoch, a wall-clock budget, and the study in SQLite so a crashed or
stopped search resumes where it was and can be shared.

Only training sessions are read: each trial trains on the training split minus its time-based
validation tail and is scored on that tail (sessionrec.train); the test split is dropped before the
first trial starts, so no trial can see it.

    sessionrec tune sessionrec/data/diginetica-sample.csv --out runs/tune-demo --minutes 3 --epochs 2   # tiny, CPU
    sessionrec tune ../shared/data/diginetica --out runs/tune --minutes 120 --max-train-examples 200000

Writes OUT/study.db (resumable), OUT/best_config.json (the best trial's full ModelConfig and
TrainConfig, ready for `sessionrec train --config`), OUT/trials.csv and OUT/trials.md (every trial:
state, parameters, validation HR@20 / MRR@20, epochs, seconds), and OUT/optimization_history.png,
OUT/param_importances.png.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from sessionrec.data import SessionDataset, earlier_cut, load_dataset  # noqa: F401 (earlier_cut: tune API)
from sessionrec.model import ModelConfig
from sessionrec.train import TrainConfig, selection_score, train


@dataclass
class TuneConfig:
    minutes: float = 60.0  # wall-clock budget of this run; no trial starts once it is spent
    trials: int = 0  # stop after this many finished trials in the study (0 = until the budget)
    epochs: int = 3  # epochs per trial (the pruner stops weak ones earlier)
    max_train_examples: int = 0  # prefixes sampled per epoch (0 = all): cheaper trials, same ranking mostly
    params: str = ""  # comma-separated fields to search (default: every field that declares a range)
    seed: int = 0  # TPE sampler seed
    study_name: str = "sessionrec"
    startup_trials: int = 5  # random trials before TPE models the space
    prune_after_epochs: int = 1  # the median pruner judges a trial from this many epochs on
    heartbeat_seconds: int = 60  # a trial silent this long (its process died) is marked failed on resume
    # Validation cuts per trial: 2 also trains on the sessions before the newest validation tail and
    # scores on the tail before it, and ranks trials by the mean, so a recipe is not fitted to one
    # period alone (the score of each cut is kept in the trial's attributes).
    cuts: int = 1
    # A new study's first trial is the base config itself (the shipped defaults plus any flags given),
    # so the table always answers "does any sampled config beat the recipe at this budget?".
    baseline_first: bool = True


def search_space(params: str = "") -> dict[str, tuple[str, tuple]]:
    """name -> ("model" | "train", space) for every field with a declared range (or those named)."""
    space = {}
    for owner, cls in (("model", ModelConfig), ("train", TrainConfig)):
        for f in fields(cls):
            if "search" in f.metadata:
                space[f.name] = (owner, f.metadata["search"])
    wanted = [p.strip().replace("-", "_") for p in params.split(",") if p.strip()]
    unknown = sorted(set(wanted) - set(space))
    if unknown:
        raise ValueError(f"no search range declared for {unknown}; searchable: {sorted(space)}")
    return {name: space[name] for name in wanted} if wanted else space


def suggest(trial, name: str, space: tuple):
    kind, *args = space
    if kind == "int":
        low, high, *step = args
        return trial.suggest_int(name, low, high, step=step[0] if step else 1)
    if kind == "float":
        low, high, *log = args
        return trial.suggest_float(name, low, high, log=bool(log and log[0] == "log"))
    if kind == "categorical":
        return trial.suggest_categorical(name, list(args[0]))
    raise ValueError(f"{name}: unknown search space kind {kind!r}")


def in_space(value, space: tuple) -> bool:
    kind, *args = space
    if kind == "categorical":
        return value in args[0]
    return args[0] <= value <= args[1]


def baseline_params(space: dict, base_model: ModelConfig, base_train: TrainConfig) -> dict:
    """The searched fields' values in the base configs, those inside their ranges (a value outside,
    e.g. a flag given on the command line, is left to the sampler rather than stretched into the space)."""
    values = {}
    for name, (owner, spec) in space.items():
        value = getattr(base_model if owner == "model" else base_train, name)
        if in_space(value, spec):
            values[name] = value
    return values


def _training_only(dataset: SessionDataset) -> SessionDataset:
    """The dataset without its test split: tuning must not be able to read it."""
    return replace(dataset, test=[])


def open_study(out: Path, config: TuneConfig):
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    storage = RDBStorage(
        f"sqlite:///{out / 'study.db'}",
        heartbeat_interval=config.heartbeat_seconds,
        grace_period=2 * config.heartbeat_seconds,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),  # a trial a crash cut short runs again once
    )
    return optuna.create_study(
        study_name=config.study_name, storage=storage, load_if_exists=True, direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=config.seed, n_startup_trials=config.startup_trials),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=config.startup_trials,
                                           n_warmup_steps=max(config.prune_after_epochs - 1, 0)),
    )


def tune(data, out: str | Path, config: TuneConfig | None = None, base_model: ModelConfig | None = None,
         base_train: TrainConfig | None = None, progress: bool = True) -> dict:
    """Run (or resume) the study in OUT; returns {"best": {...}, "trials": n, "seconds": s}."""
    import optuna

    config = config or TuneConfig()
    base_model, base_train = base_model or ModelConfig(), base_train or TrainConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = _training_only(data if isinstance(data, SessionDataset) else load_dataset(data))
    space = search_space(config.params)
    study = open_study(out, config)
    if config.baseline_first and not study.trials:
        study.enqueue_trial(baseline_params(space, base_model, base_train), user_attrs={"baseline": True})
    started = time.monotonic()

    def objective(trial) -> float:
        sampled = {name: suggest(trial, name, spec) for name, (_, spec) in space.items()}
        model_config = replace(base_model, **{k: v for k, v in sampled.items() if space[k][0] == "model"})
        train_config = replace(base_train, epochs=config.epochs, patience=config.epochs,
                               max_train_examples=config.max_train_examples or base_train.max_train_examples,
                               **{k: v for k, v in sampled.items() if space[k][0] == "train"})
        if model_config.attention_heads and model_config.dim % model_config.attention_heads:
            raise optuna.TrialPruned(f"dim {model_config.dim} not divisible by {model_config.attention_heads} heads")

        def report(row: dict) -> None:
            metrics = {"HR@20": row["valid_HR@20"], "MRR@20": row["valid_MRR@20"]}
            trial.report(selection_score(metrics), step=row["epoch"])
            trial.set_user_attr(f"epoch_{row['epoch']}", metrics)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {row['epoch']}")

        folder = out / "trials" / f"{trial.number:04d}"
        result = train(dataset, folder, model_config, train_config, progress=False, on_epoch=report)
        trial.set_user_attr("valid", {k: result.valid_metrics[k] for k in ("HR@20", "MRR@20")})
        trial.set_user_attr("best_epoch", result.best_epoch)
        scores, seconds = [selection_score(result.valid_metrics)], result.seconds
        for cut in range(1, config.cuts):
            earlier = earlier_cut(dataset, train_config.valid_fraction, cut)
            extra = train(earlier, folder / f"cut{cut}", replace(model_config), train_config, progress=False)
            trial.set_user_attr(f"valid_cut{cut}", {k: extra.valid_metrics[k] for k in ("HR@20", "MRR@20")})
            scores.append(selection_score(extra.valid_metrics))
            seconds += extra.seconds
        trial.set_user_attr("seconds", round(seconds, 1))
        return float(sum(scores) / len(scores))

    def stop_when_done(study, _trial) -> None:
        finished = [t for t in study.trials if t.state.is_finished()]
        if config.trials and len(finished) >= config.trials:
            study.stop()
        elapsed = time.monotonic() - started
        mean = elapsed / max(len(finished), 1)
        if elapsed + mean > config.minutes * 60:  # the next trial would likely end past the budget
            study.stop()

    optuna.logging.set_verbosity(optuna.logging.INFO if progress else optuna.logging.WARNING)
    remaining = config.trials - len([t for t in study.trials if t.state.is_finished()]) if config.trials else None
    if remaining is None or remaining > 0:
        study.optimize(objective, n_trials=remaining, timeout=config.minutes * 60, callbacks=[stop_when_done],
                       catch=(RuntimeError,), gc_after_trial=True)
    summary = write_report(study, out, base_model, base_train, space)
    summary["seconds"] = round(time.monotonic() - started, 1)
    return summary


def _rows(study, space) -> list[dict]:
    rows = []
    for t in study.trials:
        valid = t.user_attrs.get("valid") or {}
        rows.append({
            "trial": t.number, "baseline": bool(t.user_attrs.get("baseline")), "state": t.state.name,
            "score": None if t.value is None else round(t.value, 3),
            "valid_HR@20": valid.get("HR@20"), "valid_MRR@20": valid.get("MRR@20"),
            "epochs": len([k for k in t.user_attrs if k.startswith("epoch_")]),
            "best_epoch": t.user_attrs.get("best_epoch"), "seconds": t.user_attrs.get("seconds"),
            **{name: t.params.get(name) for name in space},
        })
    return rows


def write_report(study, out: Path, base_model: ModelConfig, base_train: TrainConfig, space) -> dict:
    """best_config.json, trials.csv / trials.md and the two plots, from the study as stored."""
    from optuna.trial import TrialState

    rows = _rows(study, space)
    columns = list(rows[0]) if rows else ["trial"]
    with open(out / "trials.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    fmt = lambda v: "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in columns) + " |" for r in rows]
    (out / "trials.md").write_text("\n".join(lines) + "\n")

    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    summary = {"trials": len(study.trials), "complete": len(complete),
               "pruned": len([t for t in study.trials if t.state == TrialState.PRUNED])}
    if complete:
        best = study.best_trial
        model_config = replace(base_model, **{k: v for k, v in best.params.items() if space.get(k, ("",))[0] == "model"})
        train_config = replace(base_train, **{k: v for k, v in best.params.items() if space.get(k, ("",))[0] == "train"})
        model_dict = asdict(model_config)
        model_dict.pop("n_items", None)
        best_config = {"trial": best.number, "score": best.value, "valid": best.user_attrs.get("valid"),
                       "best_epoch": best.user_attrs.get("best_epoch"), "model": model_dict,
                       "train": asdict(train_config)}
        (out / "best_config.json").write_text(json.dumps(best_config, indent=2))
        summary["best"] = best_config
    _plots(study, out, len(complete))
    return summary


def _plots(study, out: Path, complete: int) -> None:
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.exceptions import ExperimentalWarning
    from optuna.visualization import matplotlib as oviz

    warnings.filterwarnings("ignore", category=ExperimentalWarning)  # the matplotlib plots are "experimental"
    if complete:
        axes = oviz.plot_optimization_history(study)
        axes.figure.set_size_inches(7, 4)
        axes.figure.tight_layout()
        axes.figure.savefig(out / "optimization_history.png", dpi=110)
        plt.close(axes.figure)
    if complete >= 2 and len(study.best_trial.params) >= 2:
        try:
            axes = oviz.plot_param_importances(study)
        except (ValueError, RuntimeError) as exc:  # e.g. every trial sampled the same values
            (out / "param_importances.txt").write_text(f"no importance plot: {exc}\n")
            return
        axes.figure.set_size_inches(7, 4)
        axes.figure.tight_layout()
        axes.figure.savefig(out / "param_importances.png", dpi=110)
        plt.close(axes.figure)

