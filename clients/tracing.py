"""Trace context for the `recommend` clients: a CLIENT span per call, its W3C `traceparent` sent as a
gRPC header (tritonserver makes its request span a child of it) and a request id (Triton's request
`id`, on its spans as `triton.request_id`).

    from opentelemetry import trace
    client = RecommendClient(url, tracer=trace.get_tracer("shop"))   # the app's own TracerProvider

Off (`tracer=None`, the default) the client does no tracing work at all. The app's sampler decides
once per call whether the client span records; only a sampled call sends `traceparent` (tritonserver
traces every request carrying one, whatever its flags). tritonserver also traces 1 in `rate` of the
others, in traces of its own (sessionrec.serving.tracing.TracingConfig).
Retries of one call share its span, header and request id.
"""

from __future__ import annotations

from contextlib import contextmanager

SPAN_KIND_CLIENT = "client"


@contextmanager
def call_span(tracer, model: str, url: str):
    """(headers, request_id) for one call: the traceparent of a new CLIENT span, current meanwhile."""
    if tracer is None:
        yield None, ""
        return
    from opentelemetry import propagate, trace

    with tracer.start_as_current_span(f"{model} infer", kind=trace.SpanKind.CLIENT,
                                      attributes={"rpc.system": "grpc", "server.address": url,
                                                  "sessionrec.model": model}) as span:
        headers: dict[str, str] = {}
        context = span.get_span_context()
        if context.trace_flags.sampled:
            # tritonserver 2.51 traces every request that carries a traceparent, whatever its sampled
            # flag (measured: ~all requests traced at rate=100), so only a sampled call sends one.
            propagate.inject(headers)  # W3C traceparent (+ tracestate) of the current span
        request_id = f"{context.trace_id:032x}-{context.span_id:016x}"
        span.set_attribute("sessionrec.request_id", request_id)
        headers["x-request-id"] = request_id
        yield headers, request_id
