"""Tracing overhead: the same exported version served with tracing off and on at 1 % sampling, side by side.

Two embedded tritonservers on one repository: `off` (no trace flags, no SESSIONREC_TRACING_ENDPOINT:
the step never imports the SDK) and `on` (sessionrec.serving.tracing.TracingConfig at --sample-rate:
tritonserver's OpenTelemetry mode traces 1 request in 100 and the step adds its stage spans), both
exporting to a local OTLP/HTTP receiver (tests/tracing/otlp_receiver.py). The `on` arm's clients also
trace: a CLIENT span per call under a 1 % TraceIdRatioBased sampler, traceparent sent on sampled calls.
`--arms on,off,server,client` adds the two halves to find where a cost comes from: `server` (the
traced server, clients without a tracer) and `client` (clients with the tracer, the untraced server).
Traffic as in monitoring_bench.py: open loop at --rate, real test sessions replayed prefix by
prefix, rounds interleaved (on, off, off, on, ...). Result: medians over rounds, p95 on - off, and
the spans the receiver got (to show tracing was really on).

    python benchmarks/tracing_bench.py --repository REPO --data ../shared/data/diginetica --out OUT.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from monitoring_bench import open_loop  # noqa: E402

from sessionrec.data import load_dataset  # noqa: E402
from sessionrec.serving.embedded import EmbeddedServer  # noqa: E402
from sessionrec.serving.tracing import TracingConfig  # noqa: E402
from tests.tracing.otlp_receiver import OTLPReceiver  # noqa: E402


def _serve_receiver(port_queue, stop_event, result_queue) -> None:
    with OTLPReceiver() as receiver:
        port_queue.put(receiver.endpoint)
        stop_event.wait()
        time.sleep(1.5)  # the last batches (Triton's and the SDKs' schedule delays) still arrive
        names: dict[str, int] = {}
        for span in receiver.spans:
            key = f"{span.service}/{span.name}"
            names[key] = names.get(key, 0) + 1
        result_queue.put((names, receiver.errors))


class ReceiverProcess:
    """The OTLP receiver in a process of its own: a collector is not in the client's process, and an
    in-process receiver would decode spans under the client threads' GIL during the traced rounds only."""

    def __enter__(self) -> "ReceiverProcess":
        import multiprocessing as mp

        context = mp.get_context("spawn")
        self._ports, self._stop, self._results = context.Queue(), context.Event(), context.Queue()
        self._process = context.Process(target=_serve_receiver, args=(self._ports, self._stop, self._results),
                                        daemon=True)
        self._process.start()
        self.endpoint = self._ports.get(timeout=60)
        self.url = self.endpoint + "/v1/traces"
        return self

    def finish(self) -> tuple[dict, list]:
        self._stop.set()
        names, errors = self._results.get(timeout=60)
        self._process.join(timeout=10)
        return names, errors

    def __exit__(self, *exc) -> None:
        if self._process.is_alive():
            self._process.terminate()


def client_tracer(url: str, rate: float):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(resource=Resource.create({"service.name": "bench-client"}),
                              sampler=ParentBased(TraceIdRatioBased(rate)))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    return provider, provider.get_tracer("bench")


def in_process_costs(url: str, rate: float, calls: int) -> dict:
    """The work tracing adds per request, timed in process (µs): what the end-to-end rounds cannot resolve.

    client: sessionrec.clients.tracing.call_span with the benchmark's 1 % tracer against none;
    step: the stub's per-request context check (an untraced request) and, for a traced batch of one,
    building the context and emitting its three stage spans (StepTracer into a batch processor).
    """
    from sessionrec.clients.tracing import call_span
    from sessionrec.serving.tracing import StageClock, StepTracer, parse_context

    provider, tracer = client_tracer(url, rate)
    step = StepTracer(url.rsplit("/v1/traces", 1)[0], model_version="1")
    carrier = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    text = json.dumps(carrier)

    def per_call(fn, n=calls) -> float:
        for _ in range(min(n, 500)):  # warm
            fn()
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - start) / n * 1e6

    def client_call(t):
        def run():
            with call_span(t, "recommend", "127.0.0.1:1"):
                pass
        return run

    def traced_batch():
        clock = StageClock()
        for name in ("preprocess", "encoder", "faiss_search"):
            with clock.stage(name):
                pass
        step.emit(step.contexts([parse_context(text)]), clock.marks, 1)

    try:
        costs = {"client_no_tracer_us": per_call(client_call(None)),
                 "client_1pct_tracer_us": per_call(client_call(tracer)),
                 "step_untraced_request_us": per_call(lambda: parse_context("")),
                 "step_traced_batch_us": per_call(traced_batch, max(calls // 10, 100))}
    finally:
        provider.shutdown()
        step.close()
    # per request at the sampling rate: every request pays the untraced costs, 1 in 1/rate the traced batch
    costs["per_request_added_us"] = (costs["client_1pct_tracer_us"] - costs["client_no_tracer_us"]
                                     + costs["step_untraced_request_us"] + rate * costs["step_traced_batch_us"])
    return costs


# arm -> (server traced, clients trace)
ARMS = {"on": (True, True), "off": (False, False), "server": (True, False), "client": (False, True)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", required=True, help="an exported repository (sessionrec export)")
    parser.add_argument("--data", required=True, help="sessions whose test split is replayed")
    parser.add_argument("--out", required=True, help="results as JSON")
    parser.add_argument("--sample-rate", type=float, default=0.01, help="share of requests traced (default 0.01)")
    parser.add_argument("--rate", type=float, default=100.0, help="offered requests per second (default 100)")
    parser.add_argument("--seconds", type=float, default=15.0, help="each round (default 15)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per system (default 4)")
    parser.add_argument("--senders", type=int, default=8, help="client threads sharing the schedule (default 8)")
    parser.add_argument("--in-process-calls", type=int, default=20000, help="calls per in-process cost (0: skip)")
    parser.add_argument("--arms", default="on,off",
                        help="on (server + client tracing), off, server (server only), client (client only)")
    args = parser.parse_args(argv)
    arms = args.arms.split(",")
    if not {"on", "off"} <= set(arms) or not set(arms) <= set(ARMS):
        parser.error(f"--arms: a subset of {','.join(ARMS)} including on and off")

    dataset = load_dataset(args.data)
    requests = [dataset.raw_ids[np.asarray(s[:n])].tolist() for s in dataset.test[:3000] for n in range(1, len(s) + 1)]
    logs = Path(args.out).with_suffix("")
    logs.mkdir(parents=True, exist_ok=True)
    rounds: dict[str, list[dict]] = {arm: [] for arm in arms}
    with ReceiverProcess() as receiver:
        provider, tracer = client_tracer(receiver.url, args.sample_rate)
        config = TracingConfig(receiver.endpoint, sample_rate=args.sample_rate)
        servers = {arm: EmbeddedServer(args.repository, watch_seconds=0, log_file=logs / f"{arm}.log",
                                       tracing=config if ARMS[arm][0] else None) for arm in arms}
        clients = {arm: {"tracer": tracer} if ARMS[arm][1] else {} for arm in arms}
        try:
            for server in servers.values():
                server.start()
            for name, server in servers.items():  # warm every arm (channels, first batches)
                open_loop(server.grpc_url, requests, args.rate, 3, args.senders, clients[name])
            for r in range(args.rounds):
                order = arms if r % 2 == 0 else arms[::-1]  # ABBA: a drift over the run weighs on every arm alike
                for name in order:
                    row = open_loop(servers[name].grpc_url, requests, args.rate, args.seconds, args.senders,
                                    clients[name])
                    rounds[name].append(row)
                    print(f"round {r} tracing {name:6s}: p50 {row['p50']:.2f}  p95 {row['p95']:.2f}  "
                          f"p99 {row['p99']:.2f} ms  failures {row['failures']}", flush=True)
        finally:
            for server in servers.values():
                server.stop()
            provider.shutdown()
        costs = in_process_costs(receiver.url, args.sample_rate, args.in_process_calls) if args.in_process_calls else {}
        names, receiver_errors = receiver.finish()
    summary = {name: {p: float(np.median([row[p] for row in rows])) for p in ("p50", "p95", "p99")}
               for name, rows in rounds.items()}
    summary["p95_on_minus_off_ms"] = summary["on"]["p95"] - summary["off"]["p95"]  # difference of the medians
    summary["p50_on_minus_off_ms"] = summary["on"]["p50"] - summary["off"]["p50"]
    for arm in arms:
        if arm != "off":  # paired: the median over rounds of each round's difference to that round's off
            for p in ("p50", "p95"):
                summary[f"paired_{p}_{arm}_minus_off_ms"] = float(np.median(
                    [a[p] - b[p] for a, b in zip(rounds[arm], rounds["off"])]))
    result = {"sample_rate": args.sample_rate, "rate": args.rate, "seconds": args.seconds, "rounds": rounds,
              "summary": summary, "in_process": costs, "spans_received": names, "receiver_errors": receiver_errors,
              "requests_replayed": len(requests),
              "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
              "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({"summary": summary, "in_process": costs, "spans_received": names}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
