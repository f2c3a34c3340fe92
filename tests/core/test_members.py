"""`sessionrec train --members 2`: two members side by side, folded into one servable checkpoint."""
from __future__ import annotations

import json

import pytest

from sessionrec.checkpoint import load_checkpoint
from sessionrec.cli import main
from sessionrec.errors import SessionrecError
from sessionrec.members import MemberFailed, member_configs, member_recipes, parse_overrides, train_members
from sessionrec.model import ModelConfig
from sessionrec.train import TrainConfig

TINY = ["--dim", "16", "--max-len", "16", "--epochs", "2", "--batch-size", "50", "--threads", "2", "--seed", "5"]


def test_members_split_the_threads_and_take_consecutive_seeds():
    configs = member_configs(TrainConfig(threads=2, seed=5), 2)
    assert [(c.seed, c.threads) for c in configs] == [(5, 1), (6, 1)]
    assert [c.threads for c in member_configs(TrainConfig(threads=1), 2)] == [1, 1]


def test_the_second_member_takes_its_own_recipe():
    model, train = ModelConfig(dim=16), TrainConfig(threads=2, seed=5)
    second = parse_overrides("position=forward, node-update=mean,lr=0.002", model, train)
    assert second == {"model": {"position": "forward", "node_update": "mean"}, "train": {"lr": 0.002}}
    (m1, t1), (m2, t2) = member_recipes(model, train, 2, second)
    assert (m1.position, m1.node_update, t1.lr) == (model.position, model.node_update, train.lr)
    assert (m2.position, m2.node_update, t2.lr, t2.seed, m2.dim) == ("forward", "mean", 0.002, 6, 16)
    for bad, message in (("colour=red", "'colour' is not a field"), ("lr=fast", "expected a float"),
                         ("position", "is not KEY=VALUE"), ("position=sideways", "position must be one of")):
        with pytest.raises(SessionrecError, match=message):
            member_recipes(model, train, 2, parse_overrides(bad, model, train))


def test_second_member_needs_two_members(sample_path, tmp_path, capsys):
    assert main(["train", str(sample_path), "--out", str(tmp_path / "x"), "--second-member", "position=forward", *TINY]) != 0
    assert "--second-member needs --members 2" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_train_members_2_folds_two_recipes_into_one_checkpoint(sample_path, tmp_path, capsys):
    out = tmp_path / "recipe"
    assert main(["train", str(sample_path), "--out", str(out), "--members", "2", "--second-member", "position=forward",
                 *TINY]) == 0
    printed = capsys.readouterr().out
    for m in (1, 2):
        history = json.loads((out / f"member-{m}" / "history.json").read_text())
        assert len(history) == 2 and f"member-{m} epoch 2: valid HR@20" in printed
    one, two = (load_checkpoint(out / f"member-{m}" / "best.pt") for m in (1, 2))
    assert (one.train_config["seed"], two.train_config["seed"]) == (5, 6)
    assert (one.model_config.position, two.model_config.position) == ("reverse", "forward")
    assert one.train_config["threads"] == two.train_config["threads"] == 1
    folded = load_checkpoint(out / "best.pt")
    assert folded.family == "concat" and folded.model_config.dim == 32  # the two 16-d members side by side
    summary = json.loads((out / "ensemble.json").read_text())
    assert summary["members"] == [str(out / "member-1" / "best.pt"), str(out / "member-2" / "best.pt")]
    assert folded.metrics["valid"]["HR@20"] == pytest.approx(
        max(summary["grid"], key=lambda r: r["valid_HR@20"] + r["valid_MRR@20"])["valid_HR@20"])
    result = json.loads(printed[printed.index("{"):])
    assert result["best"] == str(out / "best.pt") and 0.0 <= result["alpha"] <= 1.0


def test_a_failing_member_names_itself_and_its_log(tmp_path):
    bad = tmp_path / "clicks.csv"
    bad.write_text("not,a,click,log\n")
    with pytest.raises(MemberFailed, match=r"member-1 failed .*member-1/train.log"):
        train_members(bad, tmp_path / "out", ModelConfig(dim=8), TrainConfig(epochs=1, threads=2), progress=False)
    assert not (tmp_path / "out" / "best.pt").exists()
