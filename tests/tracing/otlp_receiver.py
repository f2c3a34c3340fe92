"""A small OTLP/HTTP trace receiver for tests: decodes the official opentelemetry-proto messages.

It stands in for an OpenTelemetry collector (none is installable from PyPI / npm / Debian here):
it accepts what a collector's `otlphttp` receiver accepts on `POST /v1/traces` — an
ExportTraceServiceRequest as binary protobuf (`application/x-protobuf`, what tritonserver and the
Python SDK's exporter send) or as OTLP/JSON — and keeps every span for the test to inspect.
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                       ExportTraceServiceResponse)


@dataclass(frozen=True)
class ReceivedSpan:
    service: str  # resource attribute service.name
    name: str
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str  # "" for a root span
    start_ns: int
    end_ns: int
    attributes: dict


_ID_FIELDS = {"traceId", "spanId", "parentSpanId"}


def _hex_ids_to_base64(node):
    """OTLP/JSON writes trace and span ids as hex (the spec's one exception to protobuf's JSON
    mapping, which reads bytes as base64): convert them before json_format parses the message."""
    if isinstance(node, dict):
        return {k: (base64.b64encode(bytes.fromhex(v)).decode() if k in _ID_FIELDS and isinstance(v, str) and v
                    else _hex_ids_to_base64(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_hex_ids_to_base64(v) for v in node]
    return node


def _value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def decode(request: ExportTraceServiceRequest) -> list[ReceivedSpan]:
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(ReceivedSpan(str(resource.get("service.name", "")), span.name, span.trace_id.hex(),
                                          span.span_id.hex(), span.parent_span_id.hex(), span.start_time_unix_nano,
                                          span.end_time_unix_nano,
                                          {a.key: _value(a.value) for a in span.attributes}))
    return spans


class OTLPReceiver:
    """`with OTLPReceiver() as receiver:` ... `receiver.url` (…/v1/traces), `receiver.spans`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.1 like a collector: exporters keep their connection open between batches, and an
            # HTTP/1.0 server closing it after each answer races their next export on the reused
            # connection (a lost batch); 1.1 also answers `Expect: 100-continue` at once.
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                message = ExportTraceServiceRequest()
                try:
                    if self.path != "/v1/traces":
                        raise ValueError(f"unexpected path {self.path}")
                    if "json" in (self.headers.get("Content-Type") or ""):
                        json_format.ParseDict(_hex_ids_to_base64(json.loads(body)), message)
                    else:
                        message.ParseFromString(body)
                except Exception as exc:  # noqa: BLE001 - report, answer 400 like a collector
                    with receiver._lock:
                        receiver.errors.append(f"{self.path} {self.headers.get('Content-Type')}: {exc}")
                    self.send_response(400)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with receiver._lock:
                    receiver.requests += 1
                    receiver.spans.extend(decode(message))
                payload = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):  # quiet
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def url(self) -> str:
        return self.endpoint + "/v1/traces"

    def wait_for(self, predicate, timeout: float = 20.0) -> list[ReceivedSpan]:
        """Spans once `predicate(spans)` holds (polling); the spans so far when it times out."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                spans = list(self.spans)
            if predicate(spans) or time.monotonic() > deadline:
                return spans
            time.sleep(0.05)

    def __enter__(self) -> "OTLPReceiver":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
