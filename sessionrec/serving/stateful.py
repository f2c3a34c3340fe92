"""The fused CPU step's batches: `recommend` requests and `recommend_session` events side by side.

Triton's dynamic batcher hands `session_recommender` requests of both ensembles in one batch. The
events' histories come from Redis in one round trip for the whole batch (SessionHistory.record_many),
then every request goes through the same pipeline call (one ONNX call, one FAISS search), so the
stateful path costs the Redis round trip and no extra Triton step (docs/benchmarks/session.md).
When the stub can predict every event's history, that round trip overlaps the computation instead
of preceding it (sessionrec.serving.history_cache).
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
    """One StepAnswer or one error per request, in order.

    When every event's history can be predicted (sessionrec.serving.history_cache), the answers are
    computed from the predictions while the Redis round trip travels and kept where Redis returned
    exactly the predicted history; the others are computed again. Otherwise the round trip comes
    first. Either way each answer is computed from the history Redis returned (or, degraded, from
    the request's own clicks).
    """
    events = [r.event for r in requests if r.event is not None]
    clock = getattr(pipeline, "clock", None) if events else None
    predicted = history.predict_many(events) if events else None
    if predicted is None:
        with stage(clock, "history_lookup"):
            recorded = history.record_many(events) if events else []
        sessions = _sessions(requests, recorded)
        return _answers(pipeline, requests, sessions, _compute(pipeline, requests, sessions))
    pending = history.begin_many(events)
    try:
        guessed = _sessions(requests, predicted)
        answers = _compute(pipeline, requests, guessed)
    finally:
        with stage(clock, "history_lookup"):
            recorded = pending.finish()  # the clicks are stored whatever happened above
    sessions = _sessions(requests, recorded)
    wrong = [i for i, (a, b) in enumerate(zip(guessed, sessions))
             if not isinstance(b, Exception) and (isinstance(a, Exception) or not np.array_equal(a[0], b[0]))]
    if wrong:
        history.prediction_wrong(len(wrong))
        again = _compute(pipeline, [requests[i] for i in wrong], [sessions[i] for i in wrong])
        answers = dict(answers)
        answers.update({i: again[j] for j, i in enumerate(wrong)})
    return _answers(pipeline, requests, sessions, answers)


def _sessions(requests: list[StepRequest], histories: list) -> list[tuple[np.ndarray, str] | Exception]:
    """Per request, (the session it is answered from, its history state) or its error.

    `histories`: per event, a HistoryAnswer, a predicted history (ndarray) or an error, in order.
    """
    per_event = iter(histories)
    sessions: list[tuple[np.ndarray, str] | Exception] = []
    for request in requests:
        if request.event is None:
            if request.items is None:
                sessions.append(RequestError("ITEMS is missing: `recommend` needs the session's item ids"))
            else:
                sessions.append((np.asarray(request.items), NOT_STORED))
            continue
        answer = next(per_event)
        if isinstance(answer, Exception):
            sessions.append(answer)
        elif isinstance(answer, np.ndarray):
            sessions.append((answer[None, :], NOT_STORED))  # a prediction: its state comes from Redis
        else:
            sessions.append((answer.items[None, :], answer.state))
    return sessions


def _compute(pipeline: LocalPipeline, requests: list[StepRequest], sessions: list) -> dict:
    """{index: BatchAnswer or error} for the requests whose session is known, in one pipeline call."""
    good = [i for i, s in enumerate(sessions) if not isinstance(s, Exception)]
    answers = pipeline.recommend_many([PipelineRequest(sessions[i][0], requests[i].k, requests[i].exclude_seen)
                                       for i in good])
    return dict(zip(good, answers))


def _answers(pipeline: LocalPipeline, requests: list[StepRequest], sessions: list,
             answers: dict) -> list[StepAnswer | Exception]:
    out: list[StepAnswer | Exception] = list(sessions)  # errors stay in place
    for i, answer in answers.items():
        if isinstance(sessions[i], Exception):
            continue
        if isinstance(answer, Exception):
            out[i] = answer
            continue
        items, state = sessions[i]
        rows = answer.item_ids.shape[0]
        out[i] = StepAnswer(answer, np.full((rows, 1), items.shape[-1], dtype=np.int32),
                            np.full((rows, 1), state.encode(), dtype=object))
    return out
