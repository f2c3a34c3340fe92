"""Shared fixtures: a small model trained on the bundled sample, exported, and a real tritonserver.

Session-scoped: one training (~20 s) and one export for the whole run. Tests that change the
repository (new versions, rollback, corruption) copy it first (`fresh_repository`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sessionrec" / "data" / "diginetica-sample.csv"


@pytest.fixture(scope="session")
def sample_path() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def sample_dataset():
    from sessionrec.data import load_dataset

    return load_dataset(SAMPLE)


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory) -> Path:
    from sessionrec.model import ModelConfig
    from sessionrec.train import TrainConfig, train

    out = tmp_path_factory.mktemp("model")
    result = train(SAMPLE, out, ModelConfig(dim=32, max_len=16), TrainConfig(epochs=3, batch_size=50, patience=3),
                   progress=False)
    return result.best_path


@pytest.fixture(scope="session")
def exported_repository(tmp_path_factory, trained_checkpoint) -> Path:
    from sessionrec.export.exporter import ExportOptions, export_version

    repo = tmp_path_factory.mktemp("served") / "repository"
    export_version(trained_checkpoint, repo, ExportOptions(data=str(SAMPLE)), progress=False)
    return repo


@pytest.fixture(scope="session")
def sharded_repository(tmp_path_factory, trained_checkpoint) -> Path:
    """The same model exported with retrieval split into 2 exact (flat) shards (`export --shards 2`)."""
    from sessionrec.export.exporter import ExportOptions, export_version

    repo = tmp_path_factory.mktemp("sharded") / "repository"
    export_version(trained_checkpoint, repo, ExportOptions(data=str(SAMPLE), shards=2, index="flat"), progress=False)
    return repo


@pytest.fixture
def fresh_repository(tmp_path, exported_repository) -> Path:
    """A private copy of the exported repository, for tests that change it."""
    repo = tmp_path / "repository"
    shutil.copytree(exported_repository, repo)
    return repo


@pytest.fixture(scope="session")
def embedded_server(exported_repository, tmp_path_factory):
    """The real tritonserver serving the exported repository (canaries verified at start)."""
    from sessionrec.serving.embedded import EmbeddedServer

    log = tmp_path_factory.mktemp("logs") / "tritonserver.log"
    server = EmbeddedServer(exported_repository, watch_seconds=0, log_file=log)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sasrec_checkpoint(tmp_path_factory) -> Path:
    """The second model family (sequence schema), trained like trained_checkpoint (~10 s)."""
    from sessionrec.sasrec import SASRecConfig
    from sessionrec.train import TrainConfig, train

    out = tmp_path_factory.mktemp("sasrec")
    result = train(SAMPLE, out, SASRecConfig(dim=32, max_len=16), TrainConfig(epochs=3, batch_size=50, patience=3),
                   progress=False)
    return result.best_path


@pytest.fixture(scope="session")
def sasrec_repository(tmp_path_factory, sasrec_checkpoint) -> Path:
    from sessionrec.export.exporter import ExportOptions, export_version

    repo = tmp_path_factory.mktemp("served-sasrec") / "repository"
    export_version(sasrec_checkpoint, repo, ExportOptions(data=str(SAMPLE)), progress=False)
    return repo
