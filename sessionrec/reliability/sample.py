"""A small model and repository from the bundled sample, for runs that need no real data (as the tests).

    checkpoint = small_model(Path("runs/soak/model"))            # ~10 s on 2 cores, reused if there
    repository = sample_repository(Path("runs/soak"), checkpoint)  # version 1, exported fresh
"""

from __future__ import annotations

import shutil
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "diginetica-sample.csv"


def small_model(out: Path, seed: int = 42, epochs: int = 3) -> Path:
    """An SR-GNN (d=32, max_len=16) trained on the bundled sample; reused when out/best.pt exists."""
    from sessionrec.model import ModelConfig
    from sessionrec.train import TrainConfig, train

    if (Path(out) / "best.pt").is_file():
        return Path(out) / "best.pt"
    result = train(SAMPLE, out, ModelConfig(dim=32, max_len=16),
                   TrainConfig(epochs=epochs, batch_size=50, patience=epochs, seed=seed, threads=1), progress=False)
    return result.best_path


def sample_repository(work: Path, checkpoint: Path, data: str | None = None, serving=None) -> Path:
    """`work`/repository with `checkpoint` exported as version 1 (anything there before is removed).

    serving: a sessionrec.export.configs.ServingConfig (default: the defaults).
    """
    from sessionrec.export.configs import ServingConfig
    from sessionrec.export.exporter import ExportOptions, export_version

    repository = Path(work) / "repository"
    for stale in (repository, Path(work) / ".repository.retired"):
        shutil.rmtree(stale, ignore_errors=True)
    export_version(checkpoint, repository, ExportOptions(data=data or str(SAMPLE), serving=serving or ServingConfig()),
                   progress=False)
    return repository
