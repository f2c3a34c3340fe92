"""The one-click answer table: computed at export, identical to the computed answers, checksummed,
served by the fused step, and checked by the canaries (a wrong table keeps the server unhealthy)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sessionrec.serving.artifacts import ArtifactError, verify_model_artifacts
from sessionrec.serving.one_click import IDS_FILE, SCORES_FILE
from sessionrec.serving.pipeline import LocalPipeline


@pytest.fixture(scope="module")
def pipelines(exported_repository):
    return LocalPipeline(exported_repository, 1), LocalPipeline(exported_repository, 1, one_click=False)


def test_every_one_click_answer_equals_the_computed_one(pipelines):
    tabled, computed = pipelines
    assert tabled.one_click is not None and computed.one_click is None
    items = tabled.preprocessor.id_map.raw_ids[1:]
    for item in items:
        a, b = tabled.recommend([int(item)], 20), computed.recommend([int(item)], 20)
        assert a.item_ids.tolist() == b.item_ids.tolist()
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
        assert (a.unknown_count, a.fallback) == (0, False)
    assert tabled.one_click_hits == items.size


def test_other_requests_are_computed(pipelines):
    tabled, _ = pipelines
    item = int(tabled.preprocessor.id_map.raw_ids[1])
    before = tabled.one_click_hits
    tabled.recommend([item], 10)  # another K
    tabled.recommend([item], 20, exclude_seen=True)
    tabled.recommend([item, item], 20)  # two clicks
    answer = tabled.recommend([-7], 20)  # unknown: the fallback path counts it
    assert tabled.one_click_hits == before and answer.unknown_count == 1 and answer.fallback


def test_table_is_a_checksummed_version_artifact_with_canaries(exported_repository):
    manifest = json.loads((exported_repository / "recommend" / "1" / "manifest.json").read_text())
    assert manifest["one_click"]["built"] and manifest["one_click"]["k"] == 20
    for name in (IDS_FILE, SCORES_FILE):
        assert f"retrieval/1/{name}" in manifest["artifacts"]
    one_click = [c for c in manifest["canaries"] if len(c["items"]) == 1 and c["k"] == 20 and not c["exclude_seen"]]
    assert len(one_click) >= 3


def test_a_modified_table_is_refused(fresh_repository):
    path = fresh_repository / "retrieval" / "1" / IDS_FILE
    ids = np.load(path)
    ids[1] = ids[1][::-1]
    np.save(path, ids)
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        verify_model_artifacts(fresh_repository / "retrieval" / "1", "retrieval")


@pytest.mark.server
def test_canaries_catch_a_wrong_table(fresh_repository, tmp_path):
    """A table whose checksum was updated too (a bug in export, not tampering) still fails the canaries."""
    from sessionrec.serving.artifacts import sha256_file
    from sessionrec.serving.embedded import CanaryMismatch, EmbeddedServer

    manifest_path = fresh_repository / "recommend" / "1" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    canary = next(c for c in manifest["canaries"] if len(c["items"]) == 1 and c["k"] == 20)
    path = fresh_repository / "retrieval" / "1" / IDS_FILE
    ids = np.load(path)
    from sessionrec.serving.preprocess import IdMap

    row = int(IdMap(np.load(fresh_repository / "preprocess" / "1" / "item_ids.npy")).to_model(np.array(canary["items"]))[0])
    ids[row] = ids[row][::-1]
    np.save(path, ids)
    manifest["artifacts"][f"retrieval/1/{IDS_FILE}"] = sha256_file(path)
    for folder in fresh_repository.glob("*/1"):
        if (folder / "manifest.json").is_file():
            (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CanaryMismatch):
        EmbeddedServer(fresh_repository, watch_seconds=0, log_file=tmp_path / "triton.log").start()
