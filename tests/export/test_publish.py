"""Per-retrain lifecycle on a real server: new versions, refused exports, interruption, corruption, rollback."""

from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from sessionrec.checkpoint import CheckpointError
from sessionrec.export import exporter
from sessionrec.export.exporter import ExportError, ExportOptions, export_version
from sessionrec.export.repository import current_version, live_versions, rollback
from sessionrec.serving.artifacts import ArtifactError, load_retriever, read_manifest
from sessionrec.serving.embedded import EmbeddedServer, replay_canaries

pytestmark = pytest.mark.server
FAST = dict(quality_sessions=200, parity_sessions=100)


def listing(repo: Path) -> dict[str, float]:
    return {str(p.relative_to(repo)): p.stat().st_mtime for p in sorted(repo.rglob("*"))}


def options(sample_path, **kw):
    return ExportOptions(data=str(sample_path), **{**FAST, **kw})


def test_export_twice_serves_newest_and_broken_checkpoint_changes_nothing(
    fresh_repository, trained_checkpoint, sample_path, tmp_path
):
    repo = fresh_repository
    with EmbeddedServer(repo, watch_seconds=0, log_file=tmp_path / "triton.log") as server:
        assert server.version == 1
        result = export_version(trained_checkpoint, repo, options(sample_path), progress=False)
        assert result.version == 2 and live_versions(repo) == [1, 2]
        assert server.sync() and server.version == 2
        client = grpcclient.InferenceServerClient(server.grpc_url)
        for step in server.steps:  # both versions of every step stay loaded (rollback is a repin)
            assert client.is_model_ready(step, "1") and client.is_model_ready(step, "2")
        for v in (1, 2):  # every version keeps its own manifest
            assert read_manifest(repo / "recommend" / str(v))["version"] == v
        assert replay_canaries(client, read_manifest(repo / "recommend" / "2")).ok

        broken = tmp_path / "broken.pt"
        broken.write_bytes(Path(trained_checkpoint).read_bytes()[:1000])
        before = listing(repo)
        with pytest.raises(CheckpointError, match="broken.pt"):
            export_version(broken, repo, options(sample_path), progress=False)
        assert listing(repo) == before and current_version(repo) == 2
        assert not server.sync() and server.version == 2
        assert replay_canaries(client, read_manifest(repo / "recommend" / "2")).ok


def test_parity_gate_refuses_to_publish(fresh_repository, trained_checkpoint, sample_path):
    before = listing(fresh_repository)
    with pytest.raises(ExportError, match="parity gate failed.*refusing to publish"):
        export_version(trained_checkpoint, fresh_repository, options(sample_path, max_abs_diff=-1.0), progress=False)
    assert listing(fresh_repository) == before


def test_interrupted_export_leaves_repository_untouched_and_rerun_is_safe(
    fresh_repository, trained_checkpoint, sample_path, monkeypatch
):
    before = listing(fresh_repository)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as if Ctrl-C arrived halfway

    monkeypatch.setattr(exporter, "build_index", killed)
    with pytest.raises(KeyboardInterrupt):
        export_version(trained_checkpoint, fresh_repository, options(sample_path), progress=False)
    assert listing(fresh_repository) == before
    assert not list(fresh_repository.parent.glob(".repository.staging-*"))
    monkeypatch.undo()
    # A crash between the step renames and the ensemble switch leaves debris: the next export cleans it.
    (fresh_repository / "preprocess" / "2").mkdir()
    result = export_version(trained_checkpoint, fresh_repository, options(sample_path), progress=False)
    assert result.version == 2 and live_versions(fresh_repository) == [1, 2]


def test_corrupted_artifact_is_refused_and_previous_version_keeps_serving(
    fresh_repository, trained_checkpoint, sample_path, tmp_path
):
    repo = fresh_repository
    with EmbeddedServer(repo, watch_seconds=0, log_file=tmp_path / "triton.log") as server:
        export_version(trained_checkpoint, repo, options(sample_path), progress=False)
        index = repo / "retrieval" / "2" / "items.faiss"
        data = bytearray(index.read_bytes())
        data[-20] ^= 0xFF  # one flipped byte, as a bad disk or a partial copy would leave
        index.write_bytes(bytes(data))
        with pytest.raises(ArtifactError, match="checksum mismatch"):
            load_retriever(index.parent)
        assert not server.sync() and server.version == 1
        assert "failed" in server.events[-1]
        client = grpcclient.InferenceServerClient(server.grpc_url)
        assert replay_canaries(client, read_manifest(repo / "recommend" / "1")).ok


def test_rollback_switches_the_server_back(fresh_repository, trained_checkpoint, sample_path, tmp_path):
    repo = fresh_repository
    with EmbeddedServer(repo, watch_seconds=0, log_file=tmp_path / "triton.log") as server:
        export_version(trained_checkpoint, repo, options(sample_path), progress=False)
        assert server.sync() and server.version == 2
        retired, live = rollback(repo)
        assert (retired, live) == (2, 1) and live_versions(repo) == [1]
        assert (repo.parent / ".repository.retired" / "2" / "recommend").is_dir()
        assert server.sync() and server.version == 1
        client = grpcclient.InferenceServerClient(server.grpc_url)
        assert replay_canaries(client, read_manifest(repo / "recommend" / "1")).ok
    with pytest.raises(Exception, match="no previous version"):
        rollback(repo)
    # The next export never reuses the retired number, and moves the retired steps out of the way.
    result = export_version(trained_checkpoint, repo, options(sample_path), progress=False)
    assert result.version == 3 and live_versions(repo) == [1, 3]
    assert not (repo / "preprocess" / "2").exists()
    assert (repo.parent / ".repository.retired" / "2" / "preprocess").is_dir()


def test_versions_are_pruned(fresh_repository, trained_checkpoint, sample_path):
    for _ in range(2):
        export_version(trained_checkpoint, fresh_repository, options(sample_path, keep_versions=2), progress=False)
    assert live_versions(fresh_repository) == [2, 3]
    manifest = read_manifest(fresh_repository / "recommend" / "3")
    assert set(manifest["precision_variants"]) == {"fp32", "fp16", "int8"}
    assert manifest["parity"]["passed"] and manifest["index"]["kind"] == "flat"
    assert all(len(v) == 64 for v in manifest["artifacts"].values())
    assert manifest["libraries"]["numpy"].startswith("1.")
