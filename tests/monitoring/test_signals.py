"""The serving monitor's aggregation and flushing, on the real IdMap and a MemorySink (what Triton would expose)."""

from __future__ import annotations

import numpy as np
import pytest

from sessionrec.monitoring.reference import bucket_reference, check_reference, item_buckets, psi, score_deciles
from sessionrec.monitoring.signals import (MONITORING_ENV, MemorySink, MonitorSpec, ServingMonitor,
                                           monitoring_enabled, spec_from_version)
from sessionrec.serving.history import ClickEvent
from sessionrec.serving.pipeline import BatchAnswer
from sessionrec.serving.preprocess import IdMap, RequestError
from sessionrec.serving.stateful import StepAnswer, StepRequest

# 20 items, raw id = 100 + model id; item 1 has half of all training clicks.
COUNTS = np.array([0, 100] + [5] * 10 + [1] * 9 + [0], dtype=np.int64)[:21]
RAW = np.concatenate([[-1], 100 + np.arange(1, 21)])


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def monitor(edges=(1.0, 2.0)):
    clock = Clock()
    spec = MonitorSpec("3", IdMap(RAW), COUNTS, bucket_reference(COUNTS)["click_share"], list(edges))
    sink = MemorySink()
    return ServingMonitor(spec, sink, clock=clock), sink, clock


def test_buckets_have_equal_training_click_mass_head_first():
    buckets = item_buckets(COUNTS)
    assert buckets[0] == -1 and buckets[1] == 0  # padding; the head item
    ref = bucket_reference(COUNTS)
    assert sum(ref["items"]) == 20 and abs(sum(ref["click_share"]) - 1) < 1e-5
    # item 1 holds 100/159 of the clicks: buckets 0..5 are all its own share, so it alone is bucket 0
    assert ref["click_share"][0] == pytest.approx(100 / 159, abs=1e-6)
    assert buckets[-1] == 9  # the zero-click item is in the tail
    # popularity is non-increasing in the bucket number
    order = np.argsort(buckets[1:], kind="stable")
    assert np.all(np.diff(COUNTS[1:][order]) <= 0)


def test_reference_check_refuses_other_counts():
    check_reference(COUNTS, bucket_reference(COUNTS))
    other = COUNTS.copy()
    other[5] = 500
    with pytest.raises(ValueError, match="does not match popularity.npy"):
        check_reference(other, bucket_reference(COUNTS))


def test_psi_zero_for_same_and_large_for_shifted():
    ref = np.full(10, 0.1)
    assert psi(ref, ref * 37) == pytest.approx(0.0)
    shifted = np.array([0.3, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.03, 0.02])
    expected = float(np.sum((shifted - 0.1) * np.log(shifted / 0.1)))
    assert psi(ref, shifted) == pytest.approx(expected)
    assert psi(ref, shifted) > 0.1


def test_score_deciles_split_test_scores_in_tenths():
    scores = list(np.linspace(0, 9.9, 100))
    edges = score_deciles(scores)["edges"]
    assert len(edges) == 9 and edges == sorted(edges)
    assert score_deciles([1.0, 2.0])["edges"] == []  # too few sessions: no score buckets


def test_nothing_is_sent_until_a_second_passed_then_only_increases():
    m, sink, clock = monitor()
    start_calls = sink.calls  # the reference gauges, set once at load
    assert sink.get("sessionrec_reference_click_share", model_version="3", bucket="0") == pytest.approx(100 / 159, abs=1e-6)
    m.observe_clicks(np.array([101, 101, 120, 999]))  # head, head, tail, unknown
    assert not m.maybe_flush() and sink.calls == start_calls
    clock.now = 1.0
    assert m.maybe_flush()
    assert sink.get("sessionrec_input_clicks_total", model_version="3", bucket="0") == 2
    assert sink.get("sessionrec_input_clicks_total", model_version="3", bucket="unknown") == 1
    assert sink.get("sessionrec_input_clicks_total", model_version="3", bucket=str(item_buckets(COUNTS)[20])) == 1
    calls = sink.calls
    clock.now = 2.5
    m.maybe_flush()
    assert sink.calls == calls  # nothing changed: nothing sent
    m.observe_clicks(np.array([101]))
    clock.now = 4.0
    m.maybe_flush()
    assert sink.calls == calls + 1
    assert sink.get("sessionrec_input_clicks_total", model_version="3", bucket="0") == 3


def answer(ids, scores, unknown=0, fallback=False):
    ids = np.asarray([ids], np.int64)
    return BatchAnswer(ids, np.asarray([scores], np.float32), np.array([[unknown]], np.int32), np.array([[fallback]]))


def test_a_step_batch_counts_sessions_unknowns_fallbacks_lengths_scores_and_states():
    m, sink, clock = monitor()
    requests = [
        StepRequest(np.array([[101, 105, 999]]), np.array([[2]]), np.array([[False]])),  # stateless
        StepRequest(None, np.array([[2]]), np.array([[False]]), ClickEvent(b"s", np.array([120]), 1)),
        StepRequest(None, np.array([[2]]), np.array([[False]]), ClickEvent(b"s", np.array([120]), 1)),  # retried
        StepRequest(np.array([[998]]), np.array([[2]]), np.array([[False]])),  # all unknown
        StepRequest(np.array([[101]]), np.array([[0]]), np.array([[False]])),  # bad K
    ]
    state = lambda s: np.array([[s.encode()]], dtype=object)  # noqa: E731
    outs = [
        StepAnswer(answer([101, 102], [2.5, 1.0], unknown=1), np.array([[3]], np.int32), state("not_stored")),
        StepAnswer(answer([101, 103], [0.5, 0.1]), np.array([[4]], np.int32), state("stored")),
        StepAnswer(answer([101, 103], [0.5, 0.1]), np.array([[4]], np.int32), state("duplicate")),
        StepAnswer(answer([101, 102], [1.5, 1.4], unknown=1, fallback=True), np.array([[1]], np.int32), state("not_stored")),
        RequestError("K=0 is out of range"),
    ]
    m.observe_step(requests, outs)
    clock.now = 1.0
    m.flush()
    get = lambda name, **kw: sink.get(name, model_version="3", **kw)  # noqa: E731
    assert get("sessionrec_sessions_total") == 4
    assert get("sessionrec_fallback_total") == 1
    assert get("sessionrec_unknown_items_total") == 2 and get("sessionrec_session_items_total") == 12
    assert get("sessionrec_request_errors_total") == 1
    # last ITEMS id of stateless requests (999 unknown, 998 unknown) + the stored event's NEW_ITEMS (not the duplicate)
    assert get("sessionrec_input_clicks_total", bucket="unknown") == 2
    assert get("sessionrec_input_clicks_total", bucket=str(item_buckets(COUNTS)[20])) == 1
    assert get("sessionrec_history_state_total", state="stored") == 1
    assert get("sessionrec_history_state_total", state="duplicate") == 1
    assert get("sessionrec_history_state_total", state="not_stored") == 0  # stateless requests are not events
    assert get("sessionrec_session_length_bucket", le="1") == 1
    assert get("sessionrec_session_length_bucket", le="3") == 2
    assert get("sessionrec_session_length_bucket", le="5") == 4
    assert get("sessionrec_session_length_bucket", le="+Inf") == 4 and get("sessionrec_session_length_sum") == 12
    # top scores 2.5 | 0.5 0.5 | 1.5 against edges (1, 2): buckets 2 | 0 0 | 1
    assert [get("sessionrec_top_score_total", bucket=str(b)) for b in range(3)] == [2, 1, 1]
    assert get("sessionrec_recommended_items_total", bucket="0") == 4  # item 101 in every answer
    assert sum(get("sessionrec_recommended_items_total", bucket=str(b)) for b in range(10)) == 8


def test_close_flushes_the_rest():
    m, sink, clock = monitor()
    m.observe_clicks(np.array([101]))
    m.close()
    assert sink.get("sessionrec_input_clicks_total", model_version="3", bucket="0") == 1


def test_switch_reads_the_environment():
    assert monitoring_enabled({}) is True
    assert monitoring_enabled({MONITORING_ENV: "off"}) is False
    with pytest.raises(ValueError, match=MONITORING_ENV):
        monitoring_enabled({MONITORING_ENV: "maybe"})


def test_a_version_exported_before_monitoring_gets_its_reference_recomputed():
    spec = spec_from_version("1", IdMap(RAW), COUNTS, {})
    assert spec.reference_share == bucket_reference(COUNTS)["click_share"] and spec.score_edges == []


def test_triton_warmup_batches_are_not_counted():
    from sessionrec.monitoring.signals import warmup_batches

    config = {"model_warmup": [{"name": "one", "batch_size": 1}, {"name": "big", "batch_size": 64, "count": 2}]}
    assert warmup_batches(config) == 3 and warmup_batches({}) == 0
    clock = Clock()
    spec = MonitorSpec("3", IdMap(RAW), COUNTS, bucket_reference(COUNTS)["click_share"])
    sink = MemorySink()
    m = ServingMonitor(spec, sink, clock=clock, skip_batches=1)
    request = [StepRequest(np.array([[0] * 4]), np.array([[2]]), np.array([[False]]))]
    out = [StepAnswer(answer([101, 102], [1.0, 0.5], unknown=4, fallback=True), np.array([[4]], np.int32),
                      np.array([[b"not_stored"]], dtype=object))]
    m.observe_step(request, out)  # the warm-up
    m.observe_step(request, out)  # traffic
    m.flush()
    assert sink.get("sessionrec_sessions_total", model_version="3") == 1
    # every input bucket exists from load, at zero
    assert ("sessionrec_input_clicks_total", (("bucket", "5"), ("model_version", "3"))) in sink.values



def test_canary_replays_are_not_counted_as_guest_traffic():
    """The server's own canary sessions (history.CANARY_PREFIX ids, replayed at start and at every
    switch) must not move the drift, state or quality series."""
    from sessionrec.serving.history import CANARY_PREFIX

    m, sink, clock = monitor()
    state = lambda s: np.array([[s.encode()]], dtype=object)  # noqa: E731
    requests = [
        StepRequest(None, np.array([[2]]), np.array([[False]]), ClickEvent(CANARY_PREFIX + b"v1:n:0:click", np.array([120]), 1)),
        StepRequest(None, np.array([[2]]), np.array([[False]]), ClickEvent(b"guest", np.array([120]), 1)),
    ]
    outs = [StepAnswer(answer([101, 103], [0.5, 0.1]), np.array([[1]], np.int32), state("stored"))] * 2
    m.observe_step(requests, outs)
    clock.now = 1.0
    m.flush()
    assert sink.get("sessionrec_history_state_total", model_version="3", state="stored") == 1
    assert sink.get("sessionrec_sessions_total", model_version="3") == 1
