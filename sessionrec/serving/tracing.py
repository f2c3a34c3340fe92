"""OpenTelemetry tracing of one request: tritonserver's own spans + the python step's stage spans.

What the tritonserver 2.51 binary here does (checked against tests/tracing/otlp_receiver.py):
`--trace-config mode=opentelemetry` with `level=TIMESTAMPS` exports each traced request as spans
`InferRequest` (the ensemble request) → `recommend` (model) → `session_recommender` (step model) →
`compute`, over **OTLP/HTTP with a JSON body** (hex ids) to `opentelemetry,url=…/v1/traces`, batched
(`bsp_schedule_delay`, default 5 s). It honours an incoming W3C `traceparent` gRPC header: its
`InferRequest` span becomes a child of the caller's span, in the caller's trace. Which requests are
traced is Triton's choice, once per request: `rate=N` traces 1 of every N (a counter, not random).
Nothing was received before because the defaults are `level=OFF` and `rate=1000`.

The python step then gets the traced request's context from `request.trace().get_context()`
(empty for an untraced request) and adds its stages (history lookup, preprocess, encoder, FAISS
search) as children, exported by the OpenTelemetry SDK over OTLP/HTTP (protobuf). With tracing off
(`SESSIONREC_TRACING_ENDPOINT` unset) the SDK is never imported and the stages cost one `None`
check each; with it on, an untraced request costs one `get_context()` call.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass

ENDPOINT_ENV = "SESSIONREC_TRACING_ENDPOINT"  # OTLP/HTTP base URL (http://collector:4318); unset = off
SERVICE_ENV = "SESSIONREC_TRACING_SERVICE"  # service.name of the step's spans


@dataclass(frozen=True)
class TracingConfig:
    """Where traces go and how many requests are traced (EmbeddedServer(tracing=...), chart `tracing`)."""

    endpoint: str  # OTLP/HTTP base URL of a collector, e.g. http://otel-collector:4318 (traces: /v1/traces)
    sample_rate: float = 0.01  # share of requests traced; Triton traces 1 of every round(1/rate)
    service: str = "sessionrec"  # service.name: tritonserver's spans and the step's
    # Triton batches spans for this long before exporting (its default 5000 ms makes tests wait).
    export_delay_ms: int = 1000

    def __post_init__(self) -> None:
        if not self.endpoint.startswith(("http://", "https://")):
            raise ValueError(f"tracing endpoint must be an http(s) OTLP/HTTP URL, got {self.endpoint!r}")
        if not 0 < self.sample_rate <= 1:
            raise ValueError(f"tracing sample_rate must be in (0, 1], got {self.sample_rate}")

    @property
    def traces_url(self) -> str:
        return self.endpoint.rstrip("/") + "/v1/traces"

    @property
    def every(self) -> int:
        """Triton's `rate`: trace 1 request of every this many."""
        return max(1, round(1 / self.sample_rate))

    def server_flags(self) -> list[str]:
        flags = ["mode=opentelemetry", f"rate={self.every}", "level=TIMESTAMPS",
                 f"opentelemetry,url={self.traces_url}",
                 f"opentelemetry,resource=service.name={self.service}",
                 f"opentelemetry,bsp_schedule_delay={self.export_delay_ms}"]
        return [arg for flag in flags for arg in ("--trace-config", flag)]

    def environment(self) -> dict[str, str]:
        return {ENDPOINT_ENV: self.endpoint, SERVICE_ENV: self.service}


# ----------------------------------------------------------------------------- stage clock


class StageClock:
    """Start and end times of the step's stages for one batch (armed only when a request is traced)."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, int, int]] = []  # (stage, start ns, end ns), wall clock

    @contextmanager
    def stage(self, name: str):
        start = time.time_ns()
        try:
            yield
        finally:
            self.marks.append((name, start, time.time_ns()))


@contextmanager
def _nothing():
    yield


_NOTHING = _nothing  # stage() when no clock: a shared no-op context


def stage(clock: StageClock | None, name: str):
    """`with stage(clock, "encoder"):` — times the block when a clock is armed, else does nothing."""
    return clock.stage(name) if clock is not None else _NOTHING()


# ----------------------------------------------------------------------------- the step's spans


def parse_context(text: str | None) -> dict | None:
    """Triton's `InferenceTrace.get_context()` JSON -> a carrier with `traceparent`, or None (untraced)."""
    if not text:
        return None
    try:
        carrier = json.loads(text)
    except ValueError:
        return None
    return carrier if isinstance(carrier, dict) and carrier.get("traceparent") else None


class StepTracer:
    """Emits the step's stage spans as children of each traced request's Triton span."""

    def __init__(self, endpoint: str, service: str = "sessionrec", model_version: str = "", exporter=None):
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
        self.provider = TracerProvider(resource=Resource.create({"service.name": service}))
        # Batched, off the request thread: a slow or absent collector never delays an answer.
        self.provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
        self.tracer = self.provider.get_tracer("sessionrec.serving")
        self.propagator = TraceContextTextMapPropagator()
        self.model_version = str(model_version)

    def contexts(self, carriers: list[dict | None]) -> list:
        return [None if c is None else self.propagator.extract(c) for c in carriers]

    def emit(self, contexts: list, marks: list[tuple[str, int, int]], batch_size: int) -> int:
        """One span per stage per traced request (a batch's stages are shared by its requests)."""
        count = 0
        for context in contexts:
            if context is None:
                continue
            for name, start, end in marks:
                span = self.tracer.start_span(name, context=context, start_time=start,
                                              attributes={"sessionrec.batch_size": batch_size,
                                                          "sessionrec.model_version": self.model_version})
                span.end(end_time=end)
                count += 1
        return count

    def close(self) -> None:
        self.provider.shutdown()  # flushes what is batched


def for_step(model_version: str, environment=None) -> StepTracer | None:
    """The step's tracer when the server was started with tracing on, else None (no SDK import)."""
    environment = os.environ if environment is None else environment
    endpoint = environment.get(ENDPOINT_ENV)
    if not endpoint:
        return None
    return StepTracer(endpoint, environment.get(SERVICE_ENV) or "sessionrec", model_version)


def request_context(request) -> dict | None:
    """The traced request's carrier from a pb_utils InferenceRequest; None when Triton did not trace it."""
    try:
        return parse_context(request.trace().get_context())
    except AttributeError:  # a stub without get_trace/get_context
        return None
