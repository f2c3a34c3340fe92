"""The served pipeline without Triton: preprocess -> encoder -> retrieval on one version's artifacts.

Export uses it to verify a version before publishing and to compute the canary answers that
`sessionrec serve` replays against the real server; tests use it as the reference of what Triton
must answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sessionrec.serving.artifacts import load_encoder, load_preprocessor, load_retriever


@dataclass
class Recommendation:
    item_ids: np.ndarray  # raw ids, best first
    scores: np.ndarray
    unknown_count: int
    fallback: bool


class LocalPipeline:
    def __init__(self, repository: str | Path, version: int, encoder_file: str | None = None):
        root = Path(repository)
        self.preprocessor = load_preprocessor(root / "preprocess" / str(version))
        self.encoder = load_encoder(root / "session_encoder" / str(version), filename=encoder_file)
        self.retriever = load_retriever(root / "retrieval" / str(version))

    def recommend(self, raw_items, k: int = 20, exclude_seen: bool = False) -> Recommendation:
        pre = self.preprocessor.process(np.asarray(raw_items, dtype=np.int64)[None, :])
        vectors = self.encoder(pre)
        ids, scores = self.retriever.retrieve(vectors, pre["items"], pre["fallback"], [k], [exclude_seen])[0]
        return Recommendation(ids, scores, int(pre["unknown_count"][0, 0]), bool(pre["fallback"][0, 0]))
