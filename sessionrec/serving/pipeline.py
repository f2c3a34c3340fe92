"""The served pipeline in one process: preprocess -> encoder -> retrieval on one version's artifacts.

Three users share this code:
- Triton's `session_recommender` python model (the CPU ensemble's only step): on a CPU node all
  three stages are python anyway, and one stub instead of three saves two shared-memory hops per
  request (docs/benchmarks/serving.md measures both layouts side by side);
- export, which verifies a staged version through it before publishing and records the canary
  answers `sessionrec serve` replays against the real server;
- tests, as the reference of what Triton must answer.

`recommend_many` batches across requests the way Triton's dynamic batcher hands them over: each
request is checked on its own (a bad one gets its own error, the others still their answers), then
all good sessions go through one ONNX call and one FAISS search.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sessionrec.serving.artifacts import load_encoder, load_preprocessor, load_retriever
from sessionrec.serving.preprocess import RequestError
from sessionrec.serving.shards import ShardUnavailable
from sessionrec.serving.tracing import StageClock, stage


@dataclass
class Recommendation:
    item_ids: np.ndarray  # raw ids, best first
    scores: np.ndarray
    unknown_count: int
    fallback: bool


@dataclass
class BatchAnswer:
    """One request's answer: every row of its ITEMS, as the ensemble's outputs."""

    item_ids: np.ndarray  # (B, K) raw ids
    scores: np.ndarray  # (B, K) float32
    unknown_count: np.ndarray  # (B, 1) int32
    fallback: np.ndarray  # (B, 1) bool


@dataclass
class PipelineRequest:
    items: np.ndarray  # (B, n) raw ids, one session per row (a 1-D array is one session)
    k: np.ndarray  # (B,) or (B, 1)
    exclude_seen: np.ndarray  # (B,) or (B, 1)


class LocalPipeline:
    clock: StageClock | None = None  # set per batch by a tracing step: stage start/end times for spans

    def __init__(self, repository: str | Path, version: int, encoder_file: str | None = None, threads: int = 1,
                 one_click: bool = True, shards: str = "remote"):
        root = Path(repository)
        self.preprocessor = load_preprocessor(root / "preprocess" / str(version))
        self.encoder = load_encoder(root / "session_encoder" / str(version), filename=encoder_file, threads=threads)
        # shards: where a sharded version's retrieval searches (artifacts.load_retriever); ignored otherwise.
        self.retriever = load_retriever(root / "retrieval" / str(version), shards=shards)
        # The version's one-click answer table (sessionrec.serving.one_click), when export wrote one.
        from sessionrec.serving import one_click as one_click_lib

        folder = root / "retrieval" / str(version)
        self.one_click = one_click_lib.load(folder, self.preprocessor.id_map) if one_click else None
        self.one_click_hits = 0  # requests answered from the table (tests, benchmarks)

    def warm_up(self, batch: int) -> None:
        """Answer the largest batch the server may hand over, once, at load.

        Memory for a batch (onnxruntime's arena, the malloc heap, FAISS's result buffers) is kept
        for reuse after the batch; sized by the first bursts of traffic instead, a stub's RSS grew
        in steps for minutes of a soak (docs/RELIABILITY.md). Twice: FAISS allocates a 16 MB block
        for a search of 20 or more sessions; glibc serves the first with mmap and returns it, then
        raises its mmap threshold, so the second comes from the heap and stays there for reuse.
        Once only, the first burst of traffic after a stall grew the heap by that block instead.
        Run it on the thread that will serve: malloc keeps per-thread arenas.
        """
        known = self.preprocessor.id_map.raw_ids[1:]
        session = np.resize(known, (1, self.preprocessor.max_len))  # a full-length graph
        k = np.array([[self.retriever.max_k]])  # the deepest search a request may ask for
        with self.retriever.single_threaded():  # the other core stays with the serving version
            for _ in range(2):
                self.recommend_many([PipelineRequest(session, k, np.array([[i % 2 == 0]])) for i in range(batch)])

    def recommend(self, raw_items, k: int = 20, exclude_seen: bool = False) -> Recommendation:
        request = PipelineRequest(np.asarray(raw_items, dtype=np.int64)[None, :], np.asarray([k]), np.asarray([exclude_seen]))
        answer = self.recommend_many([request])[0]
        if isinstance(answer, Exception):  # RequestError, or ShardUnavailable
            raise answer
        return Recommendation(answer.item_ids[0], answer.scores[0], int(answer.unknown_count[0, 0]), bool(answer.fallback[0, 0]))

    def recommend_many(self, requests: list[PipelineRequest]) -> list[BatchAnswer | RequestError]:
        """One answer or one RequestError per request, in order."""
        answers: list[BatchAnswer | RequestError | None] = [None] * len(requests)
        good, known, ks, excludes = [], [], [], []
        for i, request in enumerate(requests):
            hit = self.one_click.lookup(request.items, request.k, request.exclude_seen) if self.one_click else None
            if hit is not None:  # a one-click session: the export-time answer, no encoder, no search
                self.one_click_hits += 1
                answers[i] = BatchAnswer(hit[0], hit[1], np.zeros((1, 1), np.int32), np.zeros((1, 1), bool))
                continue
            try:
                sessions = self.preprocessor.known(request.items)
                rows = len(sessions.sessions)
                k = self.retriever.check_k(request.k)
                exclude = np.asarray(request.exclude_seen, dtype=bool).reshape(-1)
                if not (k.size == exclude.size == rows):
                    raise RequestError(
                        f"batch sizes differ: {rows} sessions in ITEMS, K for {k.size}, EXCLUDE_SEEN for {exclude.size}"
                    )
                if rows > 1 and np.unique(k).size > 1:
                    # One response carries one rectangular tensor: rows of one request need the same K.
                    raise RequestError("sessions batched in one request asked for different numbers of items (K differs between rows)")
            except RequestError as exc:
                answers[i] = exc
                continue
            good.append(i)
            known.append(sessions)
            ks.append(k)
            excludes.append(exclude)
        if good:
            # One batch padded to its longest session, not to max_len: the same answers (padding is
            # masked), and the encoder's work grows with the padded width (0.22 against 0.38 ms at
            # batch 1 on Diginetica test prefixes; docs/benchmarks/latency_breakdown.md).
            clock = self.clock  # armed by the step only for a batch with a traced request (tracing.py)
            with stage(clock, "preprocess"):
                batch = self.preprocessor.tensors(known, pad_to_longest=True)
            with stage(clock, "encoder"):
                vectors = self.encoder(batch)
            try:
                with stage(clock, "faiss_search"):
                    rows = self.retriever.retrieve(vectors, batch["items"], batch["fallback"], np.concatenate(ks),
                                                   np.concatenate(excludes))
            except ShardUnavailable as exc:  # a shard server is down: every request of the batch gets the error
                for i in good:
                    answers[i] = exc
                return answers  # type: ignore[return-value]
            start = 0
            for i, sessions in zip(good, known):
                size = len(sessions.sessions)
                mine = rows[start : start + size]
                answers[i] = BatchAnswer(
                    item_ids=np.stack([ids for ids, _ in mine]),
                    scores=np.stack([scores for _, scores in mine]),
                    unknown_count=sessions.unknown_count,
                    fallback=sessions.fallback,
                )
                start += size
        return answers  # type: ignore[return-value]
