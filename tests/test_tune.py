"""`sessionrec tune` on the bundled sample: trials train and are pruned, the SQLite study resumes
after a crash (a killed process), the test split is never read, and the report files are written."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sessionrec.data import load_dataset
from sessionrec.model import ModelConfig
from sessionrec.train import TrainConfig
from sessionrec.tune import TuneConfig, open_study, search_space, tune

SAMPLE = Path(__file__).resolve().parents[1] / "sessionrec" / "data" / "diginetica-sample.csv"
TINY_MODEL = ModelConfig(dim=16, max_len=16)
TINY_TRAIN = TrainConfig(batch_size=100, eval_batch_size=500, threads=1)
TINY = dict(epochs=2, max_train_examples=1500, params="dropout,scale,lr,position", startup_trials=2,
            prune_after_epochs=1, heartbeat_seconds=1)


def test_search_space_is_declared_next_to_the_config_fields():
    space = search_space()
    assert space["dim"] == ("model", ("int", 64, 256, 32))
    assert space["lr"][0] == "train" and space["position"][1][0] == "categorical"
    with pytest.raises(ValueError, match="no search range declared"):
        search_space("epochs")


def test_tune_runs_reports_and_never_reads_the_test_split(tmp_path, monkeypatch):
    dataset = load_dataset(SAMPLE)
    seen = []
    import sessionrec.tune as module
    real_train = module.train

    def spy(data, *args, **kwargs):
        seen.append(len(data.test))
        return real_train(data, *args, **kwargs)

    monkeypatch.setattr(module, "train", spy)
    summary = tune(dataset, tmp_path, TuneConfig(trials=3, minutes=10, **TINY), TINY_MODEL, TINY_TRAIN, progress=False)
    assert seen and set(seen) == {0}  # every trial got a dataset without test sessions
    assert summary["trials"] == 3 and summary["complete"] >= 1
    best = json.loads((tmp_path / "best_config.json").read_text())
    assert best["model"]["dim"] == 16 and set(best["valid"]) == {"HR@20", "MRR@20"}
    assert (tmp_path / "trials.md").read_text().count("\n") == 2 + 3
    assert (tmp_path / "optimization_history.png").stat().st_size > 1000
    study = open_study(tmp_path, TuneConfig(**TINY))
    for trial in study.trials:
        if trial.state == TrialState.COMPLETE:
            assert trial.intermediate_values  # the pruner was fed every epoch
    first = study.trials[0]  # the base config itself, so the table shows what the sampler beat
    assert first.user_attrs["baseline"] is True
    assert first.params == {"dropout": TINY_MODEL.dropout, "scale": TINY_MODEL.scale, "lr": TINY_TRAIN.lr,
                            "position": TINY_MODEL.position}
    assert "| 0 | True |" in (tmp_path / "trials.md").read_text()


def test_baseline_params_leave_out_values_outside_the_space():
    from sessionrec.tune import baseline_params
    space = search_space("dropout,lr")
    assert baseline_params(space, ModelConfig(dropout=0.9), TrainConfig(lr=1e-3)) == {"lr": 1e-3}


def test_a_second_validation_cut_scores_an_earlier_period(tmp_path):
    from sessionrec.tune import earlier_cut
    dataset = load_dataset(SAMPLE)
    earlier = earlier_cut(dataset, 0.1, 1)
    assert earlier.train == dataset.train[: len(earlier.train)] and len(earlier.train) < 0.95 * len(dataset.train)
    summary = tune(dataset, tmp_path, TuneConfig(trials=1, minutes=10, cuts=2, **dict(TINY, epochs=1)),
                   TINY_MODEL, TINY_TRAIN, progress=False)
    study = open_study(tmp_path, TuneConfig(**TINY))
    (trial,) = study.trials
    assert set(trial.user_attrs["valid_cut1"]) == {"HR@20", "MRR@20"}
    assert summary["complete"] == 1


def test_a_killed_search_resumes_from_its_sqlite_study(tmp_path):
    """Kill `sessionrec tune` mid-trial; the next run marks that trial failed, retries it and goes on."""
    out = tmp_path / "study"
    command = [sys.executable, "-m", "sessionrec.cli", "tune", str(SAMPLE), "--out", str(out), "--quiet",
               "--trials", "5", "--minutes", "10", "--dim", "16", "--max-len", "16", "--threads", "1",
               *sum(([f"--{k.replace('_', '-')}", str(v)] for k, v in TINY.items()), [])]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # until the second trial is under way
            if (out / "trials" / "0001").is_dir():
                break
            assert process.poll() is None, "tune exited before it could be killed"
            time.sleep(0.2)
        else:
            raise AssertionError("no second trial within 240 s")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    study = optuna.load_study(study_name="sessionrec", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state for t in study.trials].count(TrialState.RUNNING) == 1
    time.sleep(3)  # past the heartbeat grace period (2 x 1 s)
    summary = tune(SAMPLE, out, TuneConfig(trials=4, minutes=10, **TINY), TINY_MODEL, TINY_TRAIN, progress=False)
    study = optuna.load_study(study_name="sessionrec", storage=f"sqlite:///{out / 'study.db'}")
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states and TrialState.FAIL in states  # the killed one
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") is not None]
    assert retried, "the killed trial was not retried"
    assert summary["trials"] >= 4
