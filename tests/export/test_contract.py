"""Bring your own model: a user's own encoder through the same export gates, and clear refusals."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: examples/ is the user's code
from examples.stamp_encoder import STAMP  # noqa: E402
from sessionrec.cli import main as cli  # noqa: E402
from sessionrec.contract import ContractError, check_state_dict, make_spec  # noqa: E402
from sessionrec.data import prefixes  # noqa: E402
from sessionrec.export.exporter import ExportError, ExportOptions, export_encoder, export_version  # noqa: E402
from sessionrec.schemas import SchemaError, get_schema  # noqa: E402
from sessionrec.serving.artifacts import read_manifest  # noqa: E402
from sessionrec.serving.embedded import EmbeddedServer, infer_recommend, replay_canaries  # noqa: E402
from sessionrec.serving.pipeline import LocalPipeline  # noqa: E402

FAST = dict(quality_sessions=200, parity_sessions=100)


def listing(repo: Path) -> dict:
    return {str(p.relative_to(repo)): p.stat().st_mtime for p in sorted(repo.rglob("*"))} if repo.exists() else {}


@pytest.fixture(scope="module")
def catalogue(sample_dataset):
    """The sample's catalogue in the user's own numbering: table row i = raw id raw_ids[i]."""
    return np.asarray(sample_dataset.raw_ids[1:], dtype=np.int64)


@pytest.fixture(scope="module")
def stamp(catalogue):
    torch.manual_seed(0)
    return STAMP(catalogue.size, dim=16).eval()


@pytest.fixture(scope="module")
def stamp_repository(tmp_path_factory, stamp, catalogue, sample_path):
    repo = tmp_path_factory.mktemp("stamp") / "repository"
    result = export_encoder(stamp, stamp.item_table(), catalogue, "sequence", repo, max_len=12, data=str(sample_path),
                            options=ExportOptions(**FAST))
    assert result.version == 1
    return repo


def torch_top20(module, schema: str, max_len: int, sessions, raw_ids):
    arrays = get_schema(schema).batch(sessions, max_len)
    with torch.no_grad():
        scores = module(*(torch.from_numpy(arrays[n]) for n in get_schema(schema).input_names)) @ module.item_table().T
    return raw_ids[scores.topk(20, dim=1).indices.numpy()]


def test_own_encoder_is_served_by_the_real_server_as_pytorch_ranks(stamp_repository, stamp, catalogue, sample_dataset,
                                                                    tmp_path):
    manifest = read_manifest(stamp_repository / "recommend" / "1")
    assert manifest["schema"]["name"] == "sequence" and manifest["serving"]["schema"] == "sequence"
    assert manifest["contract"] == 1 and "export_encoder" in manifest["source"]["route"]
    assert manifest["parity"]["passed"] and manifest["parity"]["max_abs_diff"] < 1e-4
    every = prefixes(sample_dataset.test)[0] + prefixes(sample_dataset.train[-100:])[0]  # test first, then recent train
    sessions = [s for s in every if len(s) <= 12][:200]
    raw = sample_dataset.raw_ids
    expected = torch_top20(stamp, "sequence", 12, sessions, catalogue)
    with EmbeddedServer(stamp_repository, watch_seconds=0, log_file=tmp_path / "triton.log") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        assert replay_canaries(client, manifest).ok
        for session, want in zip(sessions, expected):
            got = infer_recommend(client, raw[np.asarray(session)], 20, False).as_numpy("ITEM_IDS")[0]
            assert got.tolist() == want.tolist()
    assert len(sessions) == 200


def test_cli_export_encoder_from_safetensors(tmp_path, stamp, catalogue, sample_path):
    save_file(stamp.state_dict(), str(tmp_path / "model.safetensors"))
    save_file({"item_table": stamp.item_table().detach().contiguous(), "raw_ids": torch.from_numpy(catalogue)},
              str(tmp_path / "items.safetensors"))
    repo = tmp_path / "repository"
    args = ["export-encoder", "--module", "examples.stamp_encoder:STAMP", "--init",
            json.dumps({"n_items": int(catalogue.size), "dim": 16}), "--weights", str(tmp_path / "model.safetensors"),
            "--items", str(tmp_path / "items.safetensors"), "--schema", "sequence", "--max-len", "12",
            "--data", str(sample_path), "--repository", str(repo), "--quiet"]
    assert cli(args) == 0
    pipeline = LocalPipeline(repo, 1)
    session = [int(catalogue[3]), int(catalogue[7])]
    want = torch_top20(stamp, "sequence", 12, [[4, 8]], catalogue)[0]
    assert pipeline.recommend(session, 20).item_ids.tolist() == want.tolist()


def test_cli_names_a_mismatched_weight_and_publishes_nothing(tmp_path, stamp, catalogue, sample_path, capsys):
    state = dict(stamp.state_dict())
    state["mlp_b.bias"] = torch.zeros(3)
    save_file(state, str(tmp_path / "model.safetensors"))
    save_file({"item_table": stamp.item_table().detach().contiguous()}, str(tmp_path / "items.safetensors"))
    repo = tmp_path / "repository"
    base = ["export-encoder", "--module", "examples.stamp_encoder:STAMP", "--init",
            json.dumps({"n_items": int(catalogue.size), "dim": 16}), "--schema", "sequence", "--max-len", "12",
            "--data", str(sample_path), "--repository", str(repo), "--quiet", "--items", str(tmp_path / "items.safetensors")]
    assert cli(base + ["--weights", str(tmp_path / "model.safetensors")]) == 1
    assert "tensor 'mlp_b.bias' has shape [3], the model expects [16]" in capsys.readouterr().err
    save_file(stamp.state_dict(), str(tmp_path / "good.safetensors"))
    assert cli(base + ["--weights", str(tmp_path / "good.safetensors")]) == 1
    assert "items.safetensors: tensor 'raw_ids' is missing" in capsys.readouterr().err
    (tmp_path / "pickle.safetensors").write_bytes(b"\x80\x04not a safetensors file")
    assert cli(base + ["--weights", str(tmp_path / "pickle.safetensors")]) == 1
    assert "not a readable safetensors file" in capsys.readouterr().err
    assert not repo.exists()


def test_state_dict_check_names_missing_unexpected_and_mismatched_tensors():
    expected = {"a.weight": torch.zeros(2, 3), "b.bias": torch.zeros(3)}
    with pytest.raises(ContractError, match="'b.bias' is missing"):
        check_state_dict(expected, {"a.weight": torch.zeros(2, 3)}, "w")
    with pytest.raises(ContractError, match="unexpected tensor 'c'"):
        check_state_dict(expected, {**expected, "c": torch.zeros(1)}, "w")
    with pytest.raises(ContractError, match=r"'a.weight' has shape \[3, 2\], the model expects \[2, 3\]"):
        check_state_dict(expected, {**expected, "a.weight": torch.zeros(3, 2)}, "w")


@pytest.mark.parametrize("case, message", [
    ("flat table", r"item_table must be \(N, d\)"),
    ("short raw ids", r"raw_ids must be \(N,\) = \(\d+,\)"),
    ("duplicate raw ids", "catalogue id .* appears more than once"),
    ("graph schema", "does not run on schema 'graph' inputs"),
    ("table of another width", r"must return \(B, d\) = \(2, 8\)"),
    ("unknown schema", "'bag' is not known"),
])
def test_contract_refusals_name_the_problem(stamp, catalogue, case, message):
    kwargs = dict(module=stamp, item_table=stamp.item_table().detach(), raw_ids=catalogue, schema="sequence", max_len=12)
    kwargs.update({
        "flat table": dict(item_table=np.zeros((5,), np.float32)),
        "short raw ids": dict(raw_ids=np.arange(4)),
        "duplicate raw ids": dict(raw_ids=np.concatenate([catalogue[:-1], catalogue[:1]])),
        "graph schema": dict(schema="graph"),
        "table of another width": dict(item_table=np.zeros((catalogue.size, 8), np.float32)),
        "unknown schema": dict(schema="bag"),
    }[case])
    with pytest.raises((ContractError, SchemaError), match=message):
        make_spec(**kwargs)


def test_a_failed_user_export_publishes_nothing(tmp_path, stamp, catalogue, sample_path):
    repo = tmp_path / "repository"
    with pytest.raises(ExportError, match="parity gate failed"):
        export_encoder(stamp, stamp.item_table(), catalogue, "sequence", repo, max_len=12, data=str(sample_path),
                       options=ExportOptions(max_abs_diff=-1.0, **FAST))
    assert listing(repo) == {} and not list(tmp_path.glob(".repository.staging-*"))


def test_switching_schema_under_a_live_version_is_refused(stamp_repository, trained_checkpoint, sample_path, tmp_path):
    import shutil

    repo = tmp_path / "repository"
    shutil.copytree(stamp_repository, repo)
    before = listing(repo)
    with pytest.raises(ExportError, match="live version 1 takes input schema 'sequence', this model 'graph'"):
        export_version(trained_checkpoint, repo, ExportOptions(data=str(sample_path), **FAST), progress=False)
    assert listing(repo) == before
