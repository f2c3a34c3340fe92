"""The fused CPU step's batches: `recommend` requests and `recommend_session` events side by side.

Triton's dynamic batcher hands `session_recommender` requests of both ensembles in one batch. The
events' histories come from Redis in one round trip for the whole batch (SessionHistory.record_many),
then every request goes through the same pipeline call (one ONNX call, one FAISS search), so the
stateful path costs the Redis round trip and no extra Triton step (docs/benchmarks/session.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sessionrec.serving.history import NOT_STORED, ClickEvent, SessionHistory
from sessionrec.serving.pipeline import BatchAnswer, LocalPipeline, PipelineRequest
from sessionrec.serving.preprocess import RequestError
from sessionrec.serving.tracing import stage


@dataclass
class StepRequest:
    """One request as the fused step reads it."""

    items: np.ndarray | None  # (B, n) ITEMS; for an event, the caller's optional full session
    k: np.ndarray
    exclude_seen: np.ndarray
    event: ClickEvent | Exception | None = None  # None: a stateless `recommend` request


@dataclass
class StepAnswer:
    answer: BatchAnswer
    history_length: np.ndarray  # (B, 1) int32: clicks the answer was computed from
    history_state: np.ndarray  # (B, 1) bytes: stored | duplicate | degraded | not_stored


def recommend_with_history(pipeline: LocalPipeline, history: SessionHistory,
                           requests: list[StepRequest]) -> list[StepAnswer | Exception]:
    """One StepAnswer or one error per request, in order."""
    events = [r.event for r in requests if r.event is not None]
    with stage(getattr(pipeline, "clock", None) if events else None, "history_lookup"):
        recorded = iter(history.record_many(events) if events else [])
    sessions: list[tuple[np.ndarray, str] | Exception] = []
    for request in requests:
        if request.event is None:
            if request.items is None:
                sessions.append(RequestError("ITEMS is missing: `recommend` needs the session's item ids"))
            else:
                sessions.append((np.asarray(request.items), NOT_STORED))
            continue
        answer = next(recorded)
        sessions.append(answer if isinstance(answer, Exception) else (answer.items[None, :], answer.state))
    good = [i for i, s in enumerate(sessions) if not isinstance(s, Exception)]
    answers = pipeline.recommend_many([PipelineRequest(sessions[i][0], requests[i].k, requests[i].exclude_seen)
                                       for i in good])
    out: list[StepAnswer | Exception] = list(sessions)  # errors stay in place
    for i, answer in zip(good, answers):
        if isinstance(answer, Exception):
            out[i] = answer
            continue
        items, state = sessions[i]
        rows = answer.item_ids.shape[0]
        out[i] = StepAnswer(answer, np.full((rows, 1), items.shape[-1], dtype=np.int32),
                            np.full((rows, 1), state.encode(), dtype=object))
    return out
