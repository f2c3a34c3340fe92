"""The three-step layout's monitors (session_history -> preprocess -> retrieval), without Triton.

Each step observes what it sees with ServingMonitor's primitives; on the server their series add up
(Triton's core hands every stub the same counter for a name and label set). Here the three monitors
share one MemorySink, which adds up the same way, and must end with exactly the fused step's
series for the same requests: the same names, labels and values, whichever layout serves.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from sessionrec.monitoring.reference import bucket_reference
from sessionrec.monitoring.signals import (STEP_ROLES, MemorySink, MonitorSpec, ServingMonitor, for_three_step,
                                           is_canary)
from sessionrec.serving.history import CANARY_PREFIX, ClickEvent, HistoryAnswer
from sessionrec.serving.pipeline import BatchAnswer
from sessionrec.serving.preprocess import IdMap, Preprocessor, RequestError
from sessionrec.serving.stateful import StepAnswer, StepRequest
from tests.monitoring.test_signals import COUNTS, RAW, Clock

EDGES = [1.0, 2.0]
PREPROCESSOR = Preprocessor(IdMap(RAW), max_len=5, max_request_items=6)


def spec() -> MonitorSpec:
    return MonitorSpec("3", IdMap(RAW), COUNTS, bucket_reference(COUNTS)["click_share"], EDGES)


def state_of(s: str) -> np.ndarray:
    return np.array([[s.encode()]], dtype=object)


# One batch of both ensembles' requests, with what each step answers. Per request: the event (None for
# `recommend`), the ITEMS the recommender gets (an event: its history), the history state, the answer
# (ids, scores) or an error, and where the error happens.
CASES = [
    # recommend: last click 999 is unknown
    dict(event=None, items=[101, 105, 999], state="not_stored", answer=([101, 102], [2.5, 1.0])),
    # recommend_session: a stored event, then the same event retried (its click not recounted)
    dict(event=ClickEvent(b"guest", np.array([120]), 1), items=[104, 120], state="stored", answer=([101, 103], [0.5, 0.1])),
    dict(event=ClickEvent(b"guest", np.array([120]), 1), items=[104, 120], state="duplicate", answer=([101, 103], [0.5, 0.1])),
    # an event of two clicks answered from the request's own clicks (Redis down)
    dict(event=ClickEvent(b"other", np.array([107, 998]), 1), items=[107, 998], state="degraded", answer=([101, 104], [1.5, 1.4])),
    # all unknown: the popularity fallback
    dict(event=None, items=[998], state="not_stored", answer=([101, 102], [1.5, 1.4])),
    # the server's canary replay: nothing counted anywhere
    dict(event=ClickEvent(CANARY_PREFIX + b"v3:n:0:click", np.array([101]), 1), items=[101], state="stored",
         answer=([102, 103], [3.0, 2.0])),
    # errors where they happen: preprocess (too long), session_history (bad CLICK_SEQ)
    dict(event=None, items=[101] * 7, error="preprocess"),
    dict(event=ClickEvent(b"bad", np.array([101]), 0), items=None, error="session_history"),
]
# Refused by retrieval (K out of range): the three-step layout's preprocess has counted its session by
# then (it does not see K); the fused step checks K before anything is counted.
BAD_K = dict(event=None, items=[101], error="retrieval")


def fused_batch(cases=CASES):
    requests, outs = [], []
    for case in cases:
        event = case["event"]
        requests.append(StepRequest(None if event is not None else np.array([case["items"]]), np.array([[2]]),
                                    np.array([[False]]), event))
        if "error" in case:
            outs.append(RequestError(f"fails in {case['error']}"))
            continue
        ids, scores = case["answer"]
        processed = PREPROCESSOR.process(np.array([case["items"]]))
        answer = BatchAnswer(np.array([ids]), np.array([scores], np.float32), processed["unknown_count"],
                             processed["fallback"])
        outs.append(StepAnswer(answer, np.array([[len(case["items"])]], np.int32), state_of(case["state"])))
    return requests, outs


def three_step_batches(cases=CASES):
    """What session_history, preprocess and retrieval each see of the same requests (Triton's ensemble
    sends a request on only when its step answered; `canary` only on recommend_session's requests)."""
    events = [c for c in cases if c["event"] is not None]
    history = ([c["event"] for c in events],
               [RequestError("bad CLICK_SEQ") if c.get("error") == "session_history"
                else HistoryAnswer(np.array(c["items"]), c["state"], len(c["items"])) for c in events])
    reached = [c for c in cases if c.get("error") != "session_history"]
    canary = [None if c["event"] is None else np.array([[is_canary(c["event"])]]) for c in reached]
    preprocess = ([(np.array([c["items"]]), flag) for c, flag in zip(reached, canary)],
                  [RequestError("too long") if c.get("error") == "preprocess" else PREPROCESSOR.process(np.array([c["items"]]))
                   for c in reached])
    answered = [(c, flag) for c, flag in zip(reached, canary) if c.get("error") != "preprocess"]
    retrieval = ([flag for _, flag in answered],
                 [RequestError("bad K") if c.get("error") == "retrieval"
                  else (np.array([c["answer"][0]]), np.array([c["answer"][1]], np.float32)) for c, _ in answered])
    return history, preprocess, retrieval


def test_the_three_steps_together_emit_exactly_the_fused_steps_series():
    fused_sink = MemorySink()
    fused = ServingMonitor(spec(), fused_sink, clock=Clock())
    fused.observe_step(*fused_batch())
    fused.flush()
    steps_sink = run_three_steps(CASES)
    values = lambda sink: {k: v.value for k, v in sink.values.items()}  # noqa: E731
    assert values(steps_sink) == values(fused_sink)
    get = lambda name, **kw: steps_sink.get(name, model_version="3", **kw)  # noqa: E731
    # and those are the values the requests imply (the canary replay left out)
    assert get("sessionrec_request_errors_total") == 2
    assert get("sessionrec_sessions_total") == 5 and get("sessionrec_fallback_total") == 1
    assert get("sessionrec_session_items_total") == 3 + 2 + 2 + 2 + 1
    assert get("sessionrec_unknown_items_total") == 1 + 0 + 0 + 1 + 1
    # clicks: 999 (unknown), 120 (stored event; not its retry), 107 and 998 (degraded event), 998 (fallback)
    assert get("sessionrec_input_clicks_total", bucket="unknown") == 3
    assert sum(get("sessionrec_input_clicks_total", bucket=str(b)) for b in range(10)) == 2
    assert {s: get("sessionrec_history_state_total", state=s) for s in ("stored", "duplicate", "degraded")} == \
        {"stored": 1, "duplicate": 1, "degraded": 1}
    # top scores 2.5 | 0.5 0.5 | 1.5 | 1.5 against edges (1, 2)
    assert [get("sessionrec_top_score_total", bucket=str(b)) for b in range(3)] == [2, 2, 1]
    assert get("sessionrec_recommended_items_total", bucket="0") == 5


def run_three_steps(cases) -> MemorySink:
    sink = MemorySink()
    monitors = {step: ServingMonitor(spec(), sink, clock=Clock(), **STEP_ROLES[step]) for step in STEP_ROLES}
    history, preprocess, retrieval = three_step_batches(cases)
    monitors["session_history"].observe_history(*history)
    monitors["preprocess"].observe_preprocess(*preprocess)
    monitors["retrieval"].observe_retrieval(*retrieval)
    for m in monitors.values():
        m.flush()
    return sink


def test_a_request_retrieval_refuses_is_one_error_after_its_inputs_were_counted():
    sink = run_three_steps([BAD_K])
    get = lambda name, **kw: sink.get(name, model_version="3", **kw)  # noqa: E731
    assert get("sessionrec_request_errors_total") == 1
    assert get("sessionrec_sessions_total") == 1 and get("sessionrec_input_clicks_total", bucket="0") == 1
    assert sum(get("sessionrec_recommended_items_total", bucket=str(b)) for b in range(10)) == 0
    fused = ServingMonitor(spec(), MemorySink(), clock=Clock())
    fused.observe_step(*fused_batch([BAD_K]))
    fused.flush()
    assert fused.sink.get("sessionrec_request_errors_total", model_version="3") == 1
    assert fused.sink.get("sessionrec_sessions_total", model_version="3") == 0


def test_each_step_sets_up_only_the_series_it_writes():
    for step, role in STEP_ROLES.items():
        sink = MemorySink()
        ServingMonitor(spec(), sink, **role)
        names = {name for name, _ in sink.values}
        expected = set()
        if role["inputs"]:
            expected |= {"sessionrec_input_clicks_total", "sessionrec_reference_click_share"}
        if role["scores"]:
            expected |= {"sessionrec_reference_score_share"}
        assert names == expected, step


def test_preprocess_skips_tritons_warmup_batch():
    sink = MemorySink()
    m = ServingMonitor(spec(), sink, skip_batches=1, **STEP_ROLES["preprocess"])
    items = np.array([[0] * 8])
    for _ in range(2):  # the warm-up (random ITEMS), then traffic
        m.observe_preprocess([(items, None)], [PREPROCESSOR.process(items[:, :6])])
    m.flush()
    assert sink.get("sessionrec_sessions_total", model_version="3") == 1


def test_a_three_step_version_reads_its_buckets_from_retrieval_checked(exported_repository, tmp_path):
    """for_three_step loads the bucket map from retrieval/<N>'s item ids and popularity, verified against
    the manifest's checksums, and answers None when monitoring is off."""
    import shutil

    import sessionrec.monitoring.signals as signals

    created = []

    class FakeFamily:  # stands in for the stub's pb_utils only here: what matters is what gets created
        COUNTER, GAUGE = "counter", "gauge"

        def __init__(self, name, description, kind):
            self.name = name

        def Metric(self, labels):  # noqa: N802 - pb_utils' name
            created.append((self.name, labels))
            return signals._Value()

    pb = type("pb", (), {"MetricFamily": FakeFamily})
    folder = exported_repository / "preprocess" / "1"
    assert signals.for_three_step("preprocess", folder, pb, environ={"SESSIONREC_MONITORING": "off"}) is None
    monitor = signals.for_three_step("preprocess", folder, pb, environ={})
    popularity = np.load(exported_repository / "retrieval" / "1" / "popularity.npy")
    assert monitor.spec.version == "1" and np.array_equal(monitor.spec.popularity, popularity)
    stub = str(os.getpid())  # every series names its stub: two stubs never share one (signals.TritonSink)
    assert ("sessionrec_input_clicks_total", {"model_version": "1", "bucket": "unknown", "stub": stub}) in created
    assert all(labels["stub"] == stub for _, labels in created)
    broken = tmp_path / "repository"
    shutil.copytree(exported_repository, broken)
    np.save(broken / "retrieval" / "1" / "popularity.npy", popularity + 1)
    with pytest.raises(Exception, match="checksum mismatch"):
        signals.for_three_step("session_history", broken / "session_history" / "1", pb, environ={})
