"""The SR-GNN reference route end to end: its state dict -> import -> export (all gates) -> the real
tritonserver answers the independent reference forward's top-20 (tests/srgnn_reference.py)."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from srgnn_reference import reference_state_dict, top20  # noqa: E402

from sessionrec.cli import main as cli  # noqa: E402
from sessionrec.data import prefixes  # noqa: E402
from sessionrec.serving.artifacts import read_manifest  # noqa: E402
from sessionrec.serving.embedded import EmbeddedServer, infer_recommend, replay_canaries  # noqa: E402

pytestmark = pytest.mark.server


def test_reference_state_dict_is_served_as_the_reference_ranks(tmp_path, sample_dataset, sample_path):
    n_items = sample_dataset.n_items
    state = reference_state_dict(n_node=n_items + 1, d=24, seed=3)
    torch.save(state, tmp_path / "srgnn.pt")
    np.save(tmp_path / "raw_ids.npy", sample_dataset.raw_ids[1:])  # the sample's catalogue ids of items 1..N
    assert cli(["import", "srgnn-reference", str(tmp_path / "srgnn.pt"), "--out", str(tmp_path / "ours.pt"),
                "--data", str(sample_path), "--raw-ids", str(tmp_path / "raw_ids.npy"), "--max-len", "32"]) == 0
    repo = tmp_path / "repository"
    assert cli(["export", str(tmp_path / "ours.pt"), "--repository", str(repo), "--quiet"]) == 0
    manifest = read_manifest(repo / "recommend" / "1")
    assert manifest["parity"]["passed"] and "srgnn-reference" in manifest["source"]["route"]

    every = prefixes(sample_dataset.test)[0] + prefixes(sample_dataset.train[-100:])[0]
    sessions = [s for s in every if len(s) <= 32][:200]
    raw = sample_dataset.raw_ids
    with EmbeddedServer(repo, watch_seconds=0, log_file=tmp_path / "triton.log") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        assert replay_canaries(client, manifest).ok
        same = 0
        for session in sessions:
            got = infer_recommend(client, raw[np.asarray(session)], 20, False).as_numpy("ITEM_IDS")[0]
            same += got.tolist() == raw[top20(state, session)].tolist()
    assert len(sessions) == 200 and same == len(sessions)


def test_dgl_recording_is_served_as_the_dgl_model_ranked(tmp_path, sample_path):
    """The committed DGL recording -> import (fixture reproduced) -> export -> the real server answers
    the DGL model's recorded top-20 for every fixture session."""
    from sessionrec.import_dgl import read_fixture

    folder = Path(__file__).resolve().parents[1] / "fixtures" / "dgl-srgnn"
    assert cli(["import", "dgl", str(folder), "--data", str(sample_path), "--out", str(tmp_path / "dgl.pt")]) == 0
    repo = tmp_path / "repository"
    assert cli(["export", str(tmp_path / "dgl.pt"), "--repository", str(repo), "--quiet"]) == 0
    manifest = read_manifest(repo / "recommend" / "1")
    assert manifest["parity"]["passed"] and manifest["source"]["route"].startswith("dgl")
    fixture = read_fixture(folder)
    raw = np.concatenate([[-1], fixture.raw_ids])
    with EmbeddedServer(repo, watch_seconds=0, log_file=tmp_path / "triton.log") as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        assert replay_canaries(client, manifest).ok
        same = sum(infer_recommend(client, raw[np.asarray(s)], 20, False).as_numpy("ITEM_IDS")[0].tolist()
                   == raw[top].tolist() for s, top in zip(fixture.sessions, fixture.top20))
    assert same == len(fixture.sessions) == 200
