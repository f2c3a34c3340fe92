"""Refit: the epoch count chosen on validation, retrained from scratch on every training session."""
from __future__ import annotations

import json
from pathlib import Path

from sessionrec.checkpoint import load_checkpoint
from sessionrec.data import load_dataset, prefixes
from sessionrec.model import ModelConfig
from sessionrec.train import TrainConfig, train

SAMPLE = Path(__file__).resolve().parents[2] / "sessionrec" / "data" / "diginetica-sample.csv"


def test_refit_trains_the_selected_epochs_on_all_training_sessions(tmp_path):
    dataset = load_dataset(SAMPLE)
    result = train(dataset, tmp_path, ModelConfig(dim=16, max_len=16),
                   TrainConfig(epochs=2, patience=2, threads=1, refit=True), progress=False)
    selected = load_checkpoint(tmp_path / "selected" / "best.pt")
    refit = load_checkpoint(tmp_path / "best.pt")
    assert refit.metrics["refit"] is True and refit.metrics["selected_epoch"] == result.best_epoch
    assert refit.metrics["valid"] == selected.metrics["valid"]  # the honest numbers are the selection run's
    history = json.loads((tmp_path / "history.json").read_text())
    refit_rows = [row for row in history if row.get("refit")]
    assert len(refit_rows) == result.best_epoch
    assert not (refit.state_dict["embedding.weight"] == selected.state_dict["embedding.weight"]).all()
    # The fixed-epochs run saw every training session (the selection run held out the newest 10%).
    assert refit.train_config["valid_fraction"] == 0.0
    all_prefixes = len(prefixes(dataset.train)[0])
    assert all_prefixes > len(prefixes(dataset.train[: int(len(dataset.train) * 0.9)])[0])


def test_fixed_epochs_mode_keeps_the_last_epoch(tmp_path):
    result = train(SAMPLE, tmp_path, ModelConfig(dim=16, max_len=16),
                   TrainConfig(epochs=2, threads=1, valid_fraction=0.0), progress=False)
    assert result.best_epoch == 2 and len(result.history) == 2


def test_valid_cut_two_validates_on_the_period_before_the_newest_tail(tmp_path):
    from sessionrec.data import earlier_cut, validation_split

    dataset = load_dataset(SAMPLE)
    result = train(dataset, tmp_path, ModelConfig(dim=16, max_len=16),
                   TrainConfig(epochs=1, batch_size=50, threads=1, valid_cut=2), progress=False)
    _, newest = validation_split(dataset.train, 0.1)
    _, earlier = validation_split(earlier_cut(dataset, 0.1, 1).train, 0.1)
    newest_start = len(dataset.train) - len(newest)  # the earlier period ends where the newest tail begins
    assert earlier == dataset.train[newest_start - len(earlier): newest_start]
    assert result.history[0]["valid_count"] == len(prefixes(earlier)[0]) != len(prefixes(newest)[0])
    assert load_checkpoint(result.best_path).train_config["valid_cut"] == 2
