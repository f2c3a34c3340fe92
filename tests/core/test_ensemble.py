"""Concatenation ensemble: two trained checkpoints folded into one inner-product model."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sessionrec.checkpoint import load_checkpoint, save_checkpoint
from sessionrec.cli import main
from sessionrec.data import DataError, load_dataset, prefixes, validation_split
from sessionrec.ensemble import ConcatConfig, build_ensemble, mixing_weights
from sessionrec.evaluate import evaluate_model
from sessionrec.families import model_inputs
from sessionrec.model import ModelConfig
from sessionrec.train import TrainConfig, train


@pytest.fixture(scope="module")
def members(tmp_path_factory, sample_path):
    """Two different srgnn models on the same data: plain, and reversed positions at another dim."""
    out = tmp_path_factory.mktemp("members")
    a = train(sample_path, out / "a", ModelConfig(dim=16, max_len=16), TrainConfig(epochs=2, batch_size=50, threads=1),
              progress=False).best_path
    b = train(sample_path, out / "b", ModelConfig(dim=24, max_len=16, position="reverse"),
              TrainConfig(epochs=2, batch_size=50, threads=1, seed=7), progress=False).best_path
    return a, b


def test_folded_scores_are_the_weighted_sum_of_the_members(members, sample_path):
    result = build_ensemble(list(members), sample_path, grid=[0.0, 0.3, 1.0], progress=False)
    model = result.checkpoint.build_model()
    a, b = (load_checkpoint(p).build_model() for p in members)
    sessions = [[1, 2, 3], [4], [5, 6, 5, 7]]
    w = mixing_weights(result.alpha)
    with torch.no_grad():
        got = model(*model_inputs(model, sessions))
        want = w[0] * a(*model_inputs(a, sessions)) + w[1] * b(*model_inputs(b, sessions))
        assert model.encode(*model_inputs(model, sessions)).shape == (3, 16 + 24)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert model.config.dim == 40 and model.item_embeddings().shape == (model.config.n_items, 40)


def test_weight_is_chosen_on_validation_and_alpha_zero_is_member_one(members, sample_path):
    result = build_ensemble(list(members), sample_path, grid=[0.0, 0.5, 1.0], progress=False)
    best = max(result.grid, key=lambda r: r["valid_HR@20"] + r["valid_MRR@20"])
    assert result.alpha == best["alpha"] and len(result.grid) == 3
    # alpha = 0 ranks exactly as member 1 (member 2's vector is multiplied by 0): same validation metrics.
    dataset = load_dataset(sample_path)
    _, valid = validation_split(dataset.train, 0.1)
    x, y = prefixes(valid)
    first = load_checkpoint(members[0])
    own = evaluate_model(first.build_model(), x, y, first.item_counts, progress=False)
    zero = result.grid[0]
    assert zero["alpha"] == 0.0
    assert zero["valid_HR@20"] == pytest.approx(own["HR@20"]) and zero["valid_MRR@20"] == pytest.approx(own["MRR@20"], abs=1e-6)


def test_checkpoint_round_trip_and_cli(members, sample_path, tmp_path, capsys):
    assert main(["ensemble", str(members[0]), str(members[1]), "--data", str(sample_path),
                 "--out", str(tmp_path), "--grid", "0.25,0.75", "--quiet"]) == 0
    summary = json.loads((tmp_path / "ensemble.json").read_text())
    ckpt = load_checkpoint(tmp_path / "best.pt")
    assert ckpt.family == "concat" and summary["alpha"] in (0.25, 0.75)
    assert ckpt.model_config.weights == mixing_weights(summary["alpha"])
    assert ckpt.metrics["valid"]["HR@20"] == pytest.approx(summary["valid"]["HR@20"])
    save_checkpoint(ckpt, tmp_path / "again.pt")
    assert load_checkpoint(tmp_path / "again.pt").model_config.to_dict() == ckpt.model_config.to_dict()


def test_refused_members_name_the_problem(members, sample_path, tmp_path):
    refit = train(sample_path, tmp_path / "fixed", ModelConfig(dim=16, max_len=16),
                  TrainConfig(epochs=1, batch_size=50, threads=1, valid_fraction=0.0), progress=False).best_path
    with pytest.raises(DataError, match="without a validation split"):
        build_ensemble([members[0], refit], sample_path, progress=False)
    other = train(sample_path, tmp_path / "other", ModelConfig(dim=16, max_len=8),
                  TrainConfig(epochs=1, batch_size=50, threads=1), progress=False).best_path
    with pytest.raises(DataError, match="max_len"):
        build_ensemble([members[0], other], sample_path, progress=False)
    with pytest.raises(DataError, match="exactly 2"):
        build_ensemble([members[0]], sample_path, progress=False)
    with pytest.raises(ValueError, match="at least 2 members"):
        ConcatConfig(n_items=5, members=[{"family": "srgnn", "config": ModelConfig(n_items=5).to_dict()}], weights=[1.0]).validate()


def test_export_parity_of_the_folded_model(members, sample_path, tmp_path):
    """The ensemble exports through the normal `sessionrec export` path, parity gate included."""
    from sessionrec.export.exporter import ExportOptions, export_version
    from sessionrec.serving.artifacts import read_manifest

    folded = build_ensemble(list(members), sample_path, grid=[0.5], progress=False).checkpoint
    path = save_checkpoint(folded, tmp_path / "ab.pt")
    repo = tmp_path / "repository"
    export_version(path, repo, ExportOptions(data=str(sample_path)), progress=False)
    manifest = read_manifest(next((repo / "recommend").glob("[0-9]*")))
    parity = manifest["parity"]
    assert parity["passed"] and parity["max_abs_diff"] <= 1e-3
    assert manifest["model_config"]["family"] == "concat"
