"""`sessionrec import dgl` against the committed recordings (made in a real DGL env: contrib/dgl/record.py)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sessionrec.checkpoint import load_checkpoint
from sessionrec.cli import main as cli
from sessionrec.contract import ContractError
from sessionrec.import_dgl import MAX_ABS_DIFF, MIN_TOP20, FixtureError, import_dgl, read_fixture

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.mark.parametrize("name, cell", [("dgl-srgnn", "gated"), ("dgl-srgnn-mean", "mean")])
def test_recorded_dgl_models_are_reproduced_by_the_dense_model(name, cell, tmp_path, sample_path):
    meta = read_fixture(FIXTURES / name).meta
    assert meta["cell"] == cell and meta["dgl"] == "2.1.0" and meta["torch"].startswith("2.2")
    ckpt, report = import_dgl(FIXTURES / name, str(sample_path))
    assert report.passed and report.sessions == 200
    assert report.max_abs_diff <= MAX_ABS_DIFF and report.top20_agreement >= MIN_TOP20
    assert ckpt.model_config.node_update == cell and "dgl 2.1.0" in ckpt.extra["imported_from"]
    assert cli(["import", "dgl", str(FIXTURES / name), "--out", str(tmp_path / "dgl.pt")]) == 0
    assert load_checkpoint(tmp_path / "dgl.pt").metrics["dgl_fixture"]["passed"]


def copy_fixture(tmp_path) -> Path:
    folder = tmp_path / "fixture"
    shutil.copytree(FIXTURES / "dgl-srgnn", folder)
    return folder


def test_a_fixture_the_dense_model_does_not_reproduce_is_refused_and_nothing_written(tmp_path, capsys):
    folder = copy_fixture(tmp_path)
    weights = load_file(folder / "weights.safetensors")
    weights["cell.gru.bias_hh"] = weights["cell.gru.bias_hh"] + 0.05  # as a wrong weight mapping would leave it
    save_file(weights, str(folder / "weights.safetensors"))
    with pytest.raises(FixtureError, match="does not reproduce the DGL fixture.*refusing to import"):
        import_dgl(folder)
    assert cli(["import", "dgl", str(folder), "--out", str(tmp_path / "dgl.pt")]) == 1
    assert "max abs diff" in capsys.readouterr().err and not (tmp_path / "dgl.pt").exists()


def test_recorded_vectors_that_differ_are_refused(tmp_path):
    folder = copy_fixture(tmp_path)
    tensors = load_file(folder / "fixture.safetensors")
    tensors["vectors"] = tensors["vectors"] * 1.01
    save_file(tensors, str(folder / "fixture.safetensors"))
    with pytest.raises(FixtureError, match="max abs diff"):
        import_dgl(folder)


def test_weights_of_another_model_name_the_tensor(tmp_path):
    folder = copy_fixture(tmp_path)
    weights = load_file(folder / "weights.safetensors")
    weights.pop("cell.gru.weight_hh")
    save_file(weights, str(folder / "weights.safetensors"))
    with pytest.raises(ContractError, match="tensor 'cell.gru.weight_hh' is missing"):
        import_dgl(folder)
    meta = json.loads((folder / "fixture.json").read_text())
    (folder / "fixture.json").write_text(json.dumps({**meta, "model": "my-gat"}))
    with pytest.raises(FixtureError, match="export-encoder --fixture"):
        import_dgl(folder)


def test_fixture_sessions_and_shapes():
    fixture = read_fixture(FIXTURES / "dgl-srgnn")
    assert len(fixture.sessions) == 200 and fixture.top20.shape == (200, 20)
    assert all(1 <= len(s) <= fixture.meta["max_len"] for s in fixture.sessions)
    assert fixture.vectors.dtype.name == "float32" and torch.from_numpy(fixture.vectors).isfinite().all()


def test_a_dense_reimplementation_is_checked_against_the_recording_before_export(tmp_path, sample_path, capsys):
    """`export-encoder --fixture`: the generic route for a custom DGL model's dense re-implementation."""
    import sys

    import torch.nn.functional as F

    from sessionrec.import_dgl import convert

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # examples/
    fixture = read_fixture(FIXTURES / "dgl-srgnn")
    _, state = convert(load_file(FIXTURES / "dgl-srgnn" / "weights.safetensors"), fixture.meta, "weights")
    save_file({f"model.{k}": v for k, v in state.items()}, str(tmp_path / "dense.safetensors"))
    table = F.normalize(state["embedding.weight"], dim=-1)[1:].contiguous()  # the recorded model scores with NISER
    save_file({"item_table": table, "raw_ids": torch.from_numpy(fixture.raw_ids)}, str(tmp_path / "items.safetensors"))
    args = ["export-encoder", "--module", "examples.dense_srgnn:DenseSRGNN", "--init",
            json.dumps({"n_items": int(fixture.raw_ids.size), "dim": 16}), "--items", str(tmp_path / "items.safetensors"),
            "--schema", "graph", "--max-len", "16", "--fixture", str(FIXTURES / "dgl-srgnn"), "--data", str(sample_path),
            "--quiet", "--python-path", str(Path(__file__).resolve().parents[2])]
    bad = dict(load_file(tmp_path / "dense.safetensors"))
    bad["model.readout_score.weight"] = bad["model.readout_score.weight"] * 1.5
    save_file(bad, str(tmp_path / "bad.safetensors"))
    assert cli(args + ["--weights", str(tmp_path / "bad.safetensors"), "--repository", str(tmp_path / "r1")]) == 1
    assert "does not reproduce the DGL fixture" in capsys.readouterr().err and not (tmp_path / "r1").exists()
    assert cli(args + ["--weights", str(tmp_path / "dense.safetensors"), "--repository", str(tmp_path / "r2")]) == 0
    assert json.loads(capsys.readouterr().out)["parity"]["top20_agreement"] >= 0.99
