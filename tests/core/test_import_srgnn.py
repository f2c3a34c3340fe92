"""`sessionrec import srgnn-reference`: the converted model computes the reference forward exactly."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the independent reference forward
from srgnn_reference import reference_state_dict, session_vector  # noqa: E402

from sessionrec.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from sessionrec.cli import main as cli  # noqa: E402
from sessionrec.contract import ContractError  # noqa: E402
from sessionrec.families import model_inputs  # noqa: E402
from sessionrec.import_srgnn import convert, import_reference  # noqa: E402
from sessionrec.model import SessionModel  # noqa: E402

SESSIONS = [[5], [3, 3], [7, 2, 7, 9, 2], [1, 2, 3, 4, 5, 6], [9, 8, 9, 8, 9, 1, 1, 4], [11, 12, 13, 11, 14, 12]]


@pytest.mark.parametrize("step, nonhybrid", [(1, False), (2, False), (1, True)])
def test_converted_model_equals_the_independent_reference_forward(step, nonhybrid):
    state = reference_state_dict(n_node=30, d=16, seed=step)
    state["gnn.b_iah"] *= 20  # large hidden biases: a wrong fold would show
    state["gnn.b_oah"] *= -20
    config, ours = convert(state, "test", step=step, nonhybrid=nonhybrid, max_len=10)
    model = SessionModel(config)
    model.load_state_dict(ours)
    model.eval()
    with torch.no_grad():
        got = model.encode(*model_inputs(model, SESSIONS)).numpy()
    want = np.stack([session_vector(state, s, step=step, nonhybrid=nonhybrid) for s in SESSIONS])
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)
    assert np.abs(want).max() > 0.1  # not a trivially small vector
    with torch.no_grad():  # the scores too: the table is the reference's embedding rows 1..n_node-1
        scores = model(*model_inputs(model, SESSIONS)).numpy()
    np.testing.assert_allclose(scores, want @ state["embedding.weight"].numpy()[1:].T, atol=1e-4, rtol=0)


def test_without_the_hidden_bias_fold_the_answer_differs():
    """Guards the test itself: dropping b_iah/b_oah changes the vectors far beyond the tolerance."""
    state = reference_state_dict(n_node=30, d=16)
    state["gnn.b_iah"] *= 20
    config, ours = convert(state, "test", max_len=10)
    ours["cell.w_ih.bias"] = state["gnn.b_ih"].clone()
    model = SessionModel(config)
    model.load_state_dict(ours)
    with torch.no_grad():
        got = model.eval().encode(*model_inputs(model, SESSIONS)).numpy()
    want = np.stack([session_vector(state, s) for s in SESSIONS])
    assert np.abs(got - want).max() > 1e-2


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("gnn.b_iah"), "tensor 'gnn.b_iah' is missing"),
    (lambda s: s.update({"gnn.w_ih": torch.zeros(48, 17)}), r"'gnn.w_ih' has shape \[48, 17\], the model expects \[48, 32\]"),
    (lambda s: s.update({"gnn.extra": torch.zeros(1)}), "unexpected tensor 'gnn.extra'"),
])
def test_mismatched_state_dicts_name_the_tensor(edit, message):
    state = reference_state_dict(n_node=30, d=16)
    edit(state)
    with pytest.raises(ContractError, match=message):
        convert(state, "srgnn.pt")


def test_cli_import_then_checkpoint_loads(tmp_path, capsys):
    state = reference_state_dict(n_node=30, d=16)
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "srgnn.pt")  # DataParallel names too
    assert cli(["import", "srgnn-reference", str(tmp_path / "srgnn.pt"), "--out", str(tmp_path / "ours.pt"),
                "--max-len", "10"]) == 0
    ckpt = load_checkpoint(tmp_path / "ours.pt")
    assert ckpt.family == "srgnn" and ckpt.model_config.n_items == 29 and not ckpt.model_config.normalize
    assert ckpt.raw_ids[0] == -1 and ckpt.raw_ids[1:].tolist() == list(range(1, 30))
    assert "srgnn-reference" in ckpt.extra["imported_from"]


def test_a_pickled_module_is_refused_by_weights_only(tmp_path):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "whole-model.pt")  # a pickle of a class: code on load
    with pytest.raises(CheckpointError, match="weights_only=True.*save model.state_dict"):
        import_reference(tmp_path / "whole-model.pt")
    torch.save({"foo": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ContractError, match="'embedding.weight' is missing"):
        import_reference(tmp_path / "other.pt")
