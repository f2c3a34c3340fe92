"""`sessionrec export --shards S`: shard models written and verified like every artifact.

The bundled sample's model (tests/conftest.py) exported with 2 exact (flat) shards answers exactly
what the unsharded export answers (fixture `sharded_repository`,
tests/conftest.py); its shards are checksummed, its canaries recorded through the
merged shards, and a failed shard build leaves the live version as it was.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from sessionrec.export import repository as repo_lib
from sessionrec.export import shards as shard_lib
from sessionrec.export.exporter import ExportError, ExportOptions, export_version
from sessionrec.serving.artifacts import ArtifactError, read_manifest
from sessionrec.serving.pipeline import LocalPipeline
from sessionrec.serving.shards import ShardConfigError, ShardIndex, addresses_from_env, timeout_from_env

SAMPLE_OPTIONS = dict(index="flat", quality_sessions=300, parity_sessions=200)


def test_sharded_export_writes_shard_models_and_the_manifest_list(sharded_repository):
    repo = sharded_repository
    manifest = read_manifest(repo / "recommend" / "1")
    shards = manifest["retrieval_shards"]
    n_items = manifest["serving"]["n_items"]
    assert [s["model"] for s in shards] == ["retrieval_shard_0", "retrieval_shard_1"]
    assert shards[0]["rows"][0] == 0 and shards[0]["rows"][1] == shards[1]["rows"][0] and shards[1]["rows"][1] == n_items
    assert all(s["index"]["kind"] == "flat" and s["index"]["recall_at_20"] == 1.0 for s in shards)
    assert manifest["index"]["recall_at_20"] == 1.0 and manifest["index"]["params"]["shards"] == 2
    assert not (repo / "retrieval" / "1" / "items.faiss").exists()  # the front never holds the item vectors
    for s in shards:
        folder = repo / s["model"] / "1"
        assert f"{s['model']}/1/items.faiss" in manifest["artifacts"] and (folder / "model.py").is_file()
        assert f'name: "{s["model"]}"' in (repo / s["model"] / "config.pbtxt").read_text()
        shard = ShardIndex.load(folder)  # checksums verified
        assert (shard.start, shard.stop) == tuple(s["rows"])
    assert manifest["pipeline_check"]["top20_agreement_vs_pytorch"] >= manifest["pipeline_check"]["limit"]


def test_exact_shards_answer_what_the_unsharded_export_answers(sharded_repository, exported_repository):
    sharded = read_manifest(sharded_repository / "recommend" / "1")
    plain = read_manifest(exported_repository / "recommend" / "1")
    assert [c["items"] for c in sharded["canaries"]] == [c["items"] for c in plain["canaries"]]
    for a, b in zip(sharded["canaries"], plain["canaries"]):
        assert a["expected_ids"] == b["expected_ids"]
        np.testing.assert_allclose(a["expected_scores"], b["expected_scores"], rtol=1e-5, atol=1e-6)
    # ...and at the deepest K, with exclusion, over more sessions than the canaries
    local = LocalPipeline(sharded_repository, 1, shards="local")
    reference = LocalPipeline(exported_repository, 1)
    for canary in plain["canaries"][:8]:
        got, want = local.recommend(canary["items"], 200, True), reference.recommend(canary["items"], 200, True)
        np.testing.assert_array_equal(got.item_ids, want.item_ids)


def test_a_corrupted_shard_is_refused(sharded_repository, tmp_path):
    import shutil

    repo = tmp_path / "repository"
    shutil.copytree(sharded_repository, repo)
    path = repo / "retrieval_shard_1" / "1" / "items.faiss"
    path.write_bytes(path.read_bytes()[:-8] + b"tampered")
    with pytest.raises(ArtifactError, match="retrieval_shard_1/1/items.faiss: checksum mismatch"):
        ShardIndex.load(path.parent)


def test_a_sharded_version_needs_its_shard_addresses(sharded_repository, monkeypatch):
    monkeypatch.delenv("SESSIONREC_SHARD_ADDRESSES", raising=False)
    with pytest.raises(ShardConfigError, match="split into 2 shards: set SESSIONREC_SHARD_ADDRESSES"):
        LocalPipeline(sharded_repository, 1)  # serving default: remote shards
    with pytest.raises(ShardConfigError, match="their 2 gRPC addresses"):
        addresses_from_env(2, {"SESSIONREC_SHARD_ADDRESSES": "127.0.0.1:1"})
    assert addresses_from_env(2, {"SESSIONREC_SHARD_ADDRESSES": "a:1, b:2"}) == ["a:1", "b:2"]
    with pytest.raises(ShardConfigError, match="SESSIONREC_SHARD_TIMEOUT_MS='-3'"):
        timeout_from_env({"SESSIONREC_SHARD_TIMEOUT_MS": "-3"})


def test_a_failed_shard_build_leaves_the_live_version(fresh_repository, trained_checkpoint, sample_path, monkeypatch):
    before = sorted(p.relative_to(fresh_repository).as_posix() for p in fresh_repository.rglob("*"))
    with pytest.raises(ExportError, match="--shards must be 0 .* or 2.."):
        export_version(trained_checkpoint, fresh_repository, ExportOptions(data=str(sample_path), shards=1), progress=False)

    def disk_full(shards, staged, version):  # the first shard written, then the disk fills up
        shard_lib.save_index(shards[0].index, staged / "partial.faiss")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shard_lib, "save_shards", disk_full)
    with pytest.raises(OSError, match="No space left"):
        export_version(trained_checkpoint, fresh_repository, ExportOptions(data=str(sample_path), shards=2, **SAMPLE_OPTIONS),
                       progress=False)
    after = sorted(p.relative_to(fresh_repository).as_posix() for p in fresh_repository.rglob("*"))
    assert after == before and repo_lib.current_version(fresh_repository) == 1
    assert not list(fresh_repository.parent.glob(".repository.staging-*"))


def test_cli_export_shards(trained_checkpoint, sample_path, tmp_path):
    repo = tmp_path / "repository"
    result = subprocess.run([sys.executable, "-m", "sessionrec.cli", "export", str(trained_checkpoint), "--repository",
                             str(repo), "--data", str(sample_path), "--index", "flat", "--shards", "2",
                             "--quality-sessions", "300", "--quiet"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert [s["model"] for s in summary["retrieval_shards"]] == ["retrieval_shard_0", "retrieval_shard_1"]
    assert all(s["recall_at_20"] == 1.0 for s in summary["retrieval_shards"])
    assert repo_lib.shard_models(repo) == ["retrieval_shard_0", "retrieval_shard_1"]
