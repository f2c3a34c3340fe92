"""`sessionrec train` under torchrun: 2 processes (gloo, CPU) reach the single-process result."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


from sessionrec.checkpoint import load_checkpoint
from sessionrec.data import load_dataset
from sessionrec.model import ModelConfig
from sessionrec.train import TrainConfig, train

SAMPLE = Path(__file__).resolve().parents[2] / "sessionrec" / "data" / "diginetica-sample.csv"
# Dropout off: each rank draws the masks of its own half, so with dropout the two runs differ by
# design (as any data-parallel run does), not by a bug.
FLAGS = ["--dim", "16", "--max-len", "16", "--dropout", "0", "--epochs", "2", "--batch-size", "64", "--threads", "1",
         "--seed", "7", "--quiet"]


def test_two_processes_match_one(tmp_path):
    single = train(load_dataset(SAMPLE), tmp_path / "one", ModelConfig(dim=16, max_len=16, dropout=0.0),
                   TrainConfig(epochs=2, batch_size=64, threads=1, seed=7), progress=False)
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_"))}
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "sessionrec.cli", "train", str(SAMPLE),
         "--out", str(tmp_path / "two"), *FLAGS],
        capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = load_checkpoint(single.best_path), load_checkpoint(tmp_path / "two" / "best.pt")
    assert one.metrics["epoch"] == two.metrics["epoch"]
    # Same global batches, gradients averaged over the two halves: equal up to float summation order
    # (and the unequal halves of odd-sized batches), over two epochs of Adam.
    worst = max(float((two.state_dict[name] - weight).abs().max()) for name, weight in one.state_dict.items())
    assert worst < 2e-3, worst
    for key in ("HR@20", "MRR@20"):
        assert abs(one.metrics["valid"][key] - two.metrics["valid"][key]) < 1.0, key
