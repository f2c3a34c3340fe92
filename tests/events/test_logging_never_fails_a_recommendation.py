"""Recommendations through ExperimentClient on the real tritonserver while the event broker dies."""

from __future__ import annotations

import pytest

from sessionrec.clients import RecommendClient
from sessionrec.clients.assignment import Experiment
from sessionrec.clients.experiment import ExperimentClient
from sessionrec.events.redis_streams import RedisStreamSink, RedisStreamSource
from sessionrec.events.schema import validate

pytestmark = pytest.mark.server


def test_redis_down_during_load_recommendations_unaffected_and_drops_counted(embedded_server, redis_server):
    experiment = Experiment("broker-down", salt="broker-down-salt", ramp_bp=10_000)
    sink = RedisStreamSink(redis_server.url, max_events=200, timeout_s=0.2)
    # both variants on the served ensemble: this test is about logging, not about two versions
    clients = {"control": RecommendClient(embedded_server.grpc_url),
               "candidate": RecommendClient(embedded_server.grpc_url)}
    try:
        with ExperimentClient(experiment, clients, sink=sink) as client:
            answers = [client.recommend(f"g{i}", [1, 2, 3], k=10) for i in range(100)]
            assert sink.flush(10) and sink.stats().delivered == 100
            redis_server.stop()
            answers += [client.recommend(f"g{i}", [1, 2, 3], k=10) for i in range(100, 1100)]
            assert all(len(a.recommendation.item_ids) == 10 for a in answers)  # every request answered
            stats = sink.stats()
            assert stats.dropped_full >= 1000 - 200 - sink.batch_size and client.log_failures == 0
    finally:
        sink.close(timeout=0.5)
    redis_server.start()  # a fresh, empty Redis: the first 100 were delivered to the old one
    assert RedisStreamSource(redis_server.url).lag() == 0
    final = sink.stats()
    assert final.delivered + final.dropped == 1100  # every exposure delivered or counted as dropped


class Exploding:
    def emit(self, event):
        validate(event)  # the exposure follows its schema ...
        raise RuntimeError("sink bug")  # ... and then the sink breaks


def test_a_sink_that_raises_does_not_fail_the_recommendation(embedded_server):
    clients = {"control": RecommendClient(embedded_server.grpc_url),
               "candidate": RecommendClient(embedded_server.grpc_url)}
    with ExperimentClient(Experiment("x", "x-salt", ramp_bp=10_000), clients, sink=Exploding()) as client:
        answer = client.recommend("guest", [1, 2, 3], k=5)
    assert len(answer.recommendation.item_ids) == 5 and client.log_failures == 1
    assert answer.model_version == str(embedded_server.version)
