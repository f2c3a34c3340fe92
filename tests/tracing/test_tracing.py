"""Tracing end to end: client span -> tritonserver's spans -> the python step's stage spans, one trace id,
received by a real OTLP/HTTP receiver (tests/tracing/otlp_receiver.py decodes opentelemetry-proto)."""

from __future__ import annotations

import asyncio

import pytest

from sessionrec.serving.tracing import StageClock, TracingConfig, parse_context, stage
from tests.tracing.otlp_receiver import OTLPReceiver

STAGES = {"preprocess", "encoder", "faiss_search"}


def test_config_flags_and_validation():
    config = TracingConfig("http://collector:4318", sample_rate=0.01)
    flags = config.server_flags()
    assert flags[::2] == ["--trace-config"] * (len(flags) // 2)
    assert {"mode=opentelemetry", "rate=100", "level=TIMESTAMPS", "opentelemetry,url=http://collector:4318/v1/traces",
            "opentelemetry,resource=service.name=sessionrec"} <= set(flags[1::2])
    assert config.environment()["SESSIONREC_TRACING_ENDPOINT"] == "http://collector:4318"
    with pytest.raises(ValueError, match="sample_rate"):
        TracingConfig("http://c:4318", sample_rate=0)
    with pytest.raises(ValueError, match="http"):
        TracingConfig("collector:4318")


def test_context_parsing_and_stage_clock():
    assert parse_context("") is None and parse_context(None) is None and parse_context("{}") is None
    assert parse_context("not json") is None
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert parse_context('{"traceparent":"%s"}' % tp) == {"traceparent": tp}
    with stage(None, "encoder"):  # no clock: nothing recorded, no error
        pass
    clock = StageClock()
    with stage(clock, "encoder"):
        pass
    (name, start, end), = clock.marks
    assert name == "encoder" and 0 < start <= end


def _client_tracer(receiver):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.url)))
    return provider, provider.get_tracer("shop")


def _check_one_trace(spans, trace_id: str):
    mine = [s for s in spans if s.trace_id == trace_id]
    by_name = {s.name: s for s in mine}
    client = by_name["recommend infer"]
    assert client.service == "shop" and client.parent_span_id == ""
    request = by_name["InferRequest"]  # tritonserver's request span: a child of the client's span
    assert request.parent_span_id == client.span_id and request.service == "sessionrec-test"
    ensemble, step = by_name["recommend"], by_name["session_recommender"]
    assert ensemble.parent_span_id == request.span_id and step.parent_span_id == ensemble.span_id
    assert ensemble.attributes["triton.request_id"] == client.attributes["sessionrec.request_id"]
    stages = [s for s in mine if s.name in STAGES]
    assert {s.name for s in stages} == STAGES
    for s in stages:  # the python step's spans hang under Triton's span of the step, inside its time
        assert s.parent_span_id == step.span_id
        assert step.start_ns <= s.start_ns <= s.end_ns <= step.end_ns
    assert by_name["preprocess"].end_ns <= by_name["encoder"].start_ns <= by_name["faiss_search"].start_ns


def _complete(spans, *trace_ids) -> bool:
    wanted = {"InferRequest", "session_recommender", *STAGES}
    return all(wanted <= {s.name for s in spans if s.trace_id == t} for t in trace_ids)


def _joined_by_request_id(spans, trace_id: str, ensemble: str) -> bool:
    """The call's tritonserver spans are in a trace of their own, but carry the client's request id.

    tritonserver 2.51 leaves the caller's traceparent aside for a few requests (measured: 7 of 300
    traced calls, each then traced in a new trace; docs/MONITORING.md): the request id the client
    sends with every call (Triton's request `id`, `triton.request_id` on the ensemble's span) is what
    still joins them."""
    client = next(s for s in spans if s.trace_id == trace_id and s.name.endswith(" infer"))
    request_id = client.attributes["sessionrec.request_id"]
    return any(s.name == ensemble and s.trace_id != trace_id and s.attributes.get("triton.request_id") == request_id
               for s in spans)


def _diagnose(receiver, spans, trace_ids) -> str:
    """What arrived, per trace: a failure in CI must say which span was missing and from whom."""
    lines = [f"{receiver.requests} OTLP requests, {len(spans)} spans, errors {receiver.errors}"]
    for t in trace_ids:
        lines.append(f"trace {t}: " + ", ".join(sorted(f"{s.service}/{s.name}" for s in spans if s.trace_id == t)))
    others = sorted({s.trace_id for s in spans} - set(trace_ids))
    lines.append(f"{len(others)} other traces: " + "; ".join(
        ",".join(sorted(s.name for s in spans if s.trace_id == t)) for t in others[-6:]))
    return "\n".join(lines)


@pytest.mark.server
def test_traced_request_has_client_server_and_step_spans_in_one_trace(exported_repository, tmp_path):
    from sessionrec.clients import RecommendClient
    from sessionrec.clients.aio import AsyncRecommendClient
    from sessionrec.serving.embedded import EmbeddedServer

    calls = 3  # per client kind: tracing is best-effort (exporters drop under pressure), propagation is not
    with OTLPReceiver() as receiver:
        provider, tracer = _client_tracer(receiver)
        config = TracingConfig(receiver.endpoint, sample_rate=1.0, service="sessionrec-test", export_delay_ms=200)
        with EmbeddedServer(exported_repository, watch_seconds=0, tracing=config,
                            log_file=tmp_path / "tritonserver.log") as server:
            with RecommendClient(server.grpc_url, tracer=tracer) as client:
                for _ in range(calls):
                    assert len(client.recommend([1, 2, 3], k=5)) == 5
            sync_traces = {s.trace_id for s in receiver.spans if s.name == "recommend infer"}
            assert len(sync_traces) == calls  # one trace per call, the client's spans exported at once

            async def async_calls():
                async with AsyncRecommendClient(server.grpc_url, tracer=tracer) as aclient:
                    return [await aclient.recommend([2, 3], k=5) for _ in range(calls)]

            assert [len(a) for a in asyncio.run(async_calls())] == [5] * calls
            async_traces = {s.trace_id for s in receiver.spans if s.name == "recommend infer"} - sync_traces
            assert len(async_traces) == calls
            every = sorted(sync_traces | async_traces)
            spans = receiver.wait_for(lambda s: all(_complete(s, t) for t in every), timeout=30)
        provider.shutdown()
    assert not receiver.errors, receiver.errors
    # Every complete trace has the whole structure, and at least two of each client kind are complete.
    # A call tritonserver traced apart from the caller's trace is still joined by its request id.
    for kind, traces in (("sync", sync_traces), ("asyncio", async_traces)):
        complete = [t for t in traces if _complete(spans, t)]
        assert len(complete) >= calls - 1, (kind, _diagnose(receiver, spans, sorted(traces)))
        for t in complete:
            _check_one_trace(spans, t)
        for t in set(traces) - set(complete):
            assert _joined_by_request_id(spans, t, "recommend"), (kind, _diagnose(receiver, spans, [t]))
    # Untraced by the client (the canaries at start-up): Triton still traces them (rate 1), in its own trace,
    # and the step's spans follow Triton's context there too.
    canary_steps = [s for s in spans if s.name == "session_recommender" and s.trace_id not in every]
    assert canary_steps
    # (a one-click canary is answered from the export-time table: no stage runs, no stage span)
    step_ids = {s.span_id for s in canary_steps}
    assert any(s.name == "encoder" and s.parent_span_id in step_ids for s in spans)


@pytest.mark.server
def test_sampling_rate_traces_one_request_in_n(exported_repository, tmp_path):
    """rate 0.25: Triton traces 1 of every 4 requests; the step adds spans only to those."""
    from sessionrec.clients import RecommendClient
    from sessionrec.serving.embedded import EmbeddedServer

    with OTLPReceiver() as receiver:
        config = TracingConfig(receiver.endpoint, sample_rate=0.25, export_delay_ms=200)
        with EmbeddedServer(exported_repository, watch_seconds=0, tracing=config,
                            log_file=tmp_path / "tritonserver.log") as server:
            before = receiver.wait_for(lambda s: False, timeout=1.5)  # canaries' traces flushed
            seen = {s.trace_id for s in before}
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

            # A client whose sampler says no sends no traceparent: Triton would trace every request
            # carrying one, whatever its flags, and the 1-in-4 would become 4-in-4.
            unsampled = TracerProvider(sampler=ALWAYS_OFF).get_tracer("shop")
            with RecommendClient(server.grpc_url) as client, RecommendClient(server.grpc_url, tracer=unsampled) as other:
                for i in range(40):
                    (client if i % 2 else other).recommend([1, 2, 3], k=5)
            spans = receiver.wait_for(lambda s: len({x.trace_id for x in s if x.name == "faiss_search"} - seen) >= 10,
                                      timeout=15)
            spans = receiver.wait_for(lambda s: False, timeout=1.0)  # nothing more in flight
    new = [s for s in spans if s.trace_id not in seen]
    requests = {s.trace_id for s in new if s.name == "InferRequest"}
    searched = {s.trace_id for s in new if s.name == "faiss_search"}
    assert 9 <= len(requests) <= 11, len(requests)  # 40 requests / 4, give or take the canary counter
    assert searched == requests


@pytest.mark.server
def test_click_is_traced_with_its_history_lookup(exported_repository, tmp_path):
    """click() (recommend_session, guest history in a real Redis): the Redis round trip is a span too."""
    import numpy as np

    from sessionrec.clients import RecommendClient
    from sessionrec.serving.embedded import EmbeddedServer
    from sessionrec.serving.redis_local import LocalRedis

    known = np.load(exported_repository / "preprocess" / "1" / "item_ids.npy")[1:4].tolist()
    with OTLPReceiver() as receiver, LocalRedis() as redis:
        provider, tracer = _client_tracer(receiver)
        config = TracingConfig(receiver.endpoint, sample_rate=1.0, export_delay_ms=200)
        with EmbeddedServer(exported_repository, watch_seconds=0, tracing=config, log_file=tmp_path / "triton.log",
                            environment={"SESSIONREC_REDIS_URL": redis.url}) as server:
            with RecommendClient(server.grpc_url, tracer=tracer) as client:
                for seq in (1, 2, 3):
                    assert client.click("guest-t", [known[seq - 1]], k=5, seq=seq).state == "stored"
            traces = [s.trace_id for s in receiver.spans if s.name == "recommend_session infer"]
            assert len(traces) == 3
            wanted = {"InferRequest", "session_recommender", "history_lookup", "preprocess", "encoder"}

            def whole(s, t):
                return wanted <= {x.name for x in s if x.trace_id == t}

            spans = receiver.wait_for(lambda s: all(whole(s, t) for t in traces), timeout=30)
        provider.shutdown()
    complete = [t for t in traces if whole(spans, t)]
    assert len(complete) >= 2, _diagnose(receiver, spans, traces)
    for t in set(traces) - set(complete):  # traced apart from the caller's trace: joined by the request id
        assert _joined_by_request_id(spans, t, "recommend_session"), _diagnose(receiver, spans, [t])
    trace_id = complete[0]
    mine = {s.name: s for s in spans if s.trace_id == trace_id}
    assert mine["InferRequest"].parent_span_id == mine["recommend_session infer"].span_id
    step = mine["session_recommender"]
    assert mine["history_lookup"].parent_span_id == step.span_id
    assert mine["history_lookup"].end_ns <= mine["preprocess"].start_ns
