"""Monitoring overhead: the same exported version served with SESSIONREC_MONITORING on and off, side by side.

Two embedded tritonservers on one repository, one with the serving step's monitor on (the default)
and one with it off; both stay up, and traffic goes to one at a time, interleaved in rounds
(on, off, on, off, ...) so drifts of the shared machine hit both alike. Each round offers a fixed
rate (open loop: send times fixed in advance, latency counted from the scheduled send, so a slow
answer is not hidden by the next request waiting) of real test sessions replayed click by click
(every prefix, K=20) through the client library, and reports p50/p95/p99. Result: medians over the
rounds per system and the p95 difference on - off.

    python benchmarks/monitoring_bench.py --repository REPO --data ../shared/data/diginetica --out OUT.json
"""

from __future__ import annotations

import argparse
import json
import platform
import threading
import time
from pathlib import Path

import numpy as np

from sessionrec.clients import NO_RETRY, RecommendClient
from sessionrec.data import load_dataset
from sessionrec.monitoring.signals import MONITORING_ENV
from sessionrec.serving.embedded import EmbeddedServer


def open_loop(url: str, requests: list[list[int]], rate: float, seconds: float, senders: int,
              client_kwargs: dict | None = None) -> dict:
    """`rate` requests/s for `seconds`, shared by `senders` threads; latency from the scheduled send."""
    count = int(rate * seconds)
    start = time.perf_counter() + 0.2
    latencies = np.full(count, np.nan)
    failures = [0]
    lock = threading.Lock()

    def run(worker: int) -> None:
        client = RecommendClient(url, retry=NO_RETRY, **(client_kwargs or {}))
        for i in range(worker, count, senders):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            try:
                client.recommend(requests[i % len(requests)], k=20)
                latencies[i] = (time.perf_counter() - due) * 1000
            except Exception:  # noqa: BLE001 - counted and reported
                with lock:
                    failures[0] += 1

    threads = [threading.Thread(target=run, args=(w,)) for w in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = latencies[~np.isnan(latencies)]
    return {"requests": count, "failures": failures[0],
            **{f"p{p}": float(np.percentile(ok, p)) for p in (50, 95, 99)}}


def observe_cost(repository: Path, dataset, count: int = 3000) -> dict:
    """The monitor's own cost per batch (one request, K=20), in this process on the served version."""
    from sessionrec.export.repository import current_version
    from sessionrec.monitoring.signals import MemorySink, ServingMonitor, spec_from_version
    from sessionrec.serving.artifacts import read_manifest
    from sessionrec.serving.pipeline import LocalPipeline, PipelineRequest
    from sessionrec.serving.stateful import StepAnswer, StepRequest

    version = current_version(repository)
    pipeline = LocalPipeline(repository, version)
    manifest = read_manifest(repository / "preprocess" / str(version))
    spec = spec_from_version(str(version), pipeline.preprocessor.id_map, pipeline.retriever.popularity, manifest)
    monitor = ServingMonitor(spec, MemorySink())
    batches = []
    for s in dataset.test[:200]:
        items = dataset.raw_ids[np.asarray(s)][None, :]
        answer = pipeline.recommend_many([PipelineRequest(items, np.array([[20]]), np.array([[False]]))])[0]
        request = StepRequest(items, np.array([[20]]), np.array([[False]]))
        batches.append(([request], [StepAnswer(answer, np.array([[items.shape[1]]], np.int32),
                                               np.array([[b"not_stored"]], dtype=object))]))
    times = []
    for i in range(count):
        requests, outs = batches[i % len(batches)]
        began = time.perf_counter()
        monitor.observe_step(requests, outs)
        monitor.maybe_flush()
        times.append((time.perf_counter() - began) * 1e6)
    return {"observe_us_median": float(np.median(times)), "observe_us_p95": float(np.percentile(times, 95)),
            "calls": count}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", required=True, help="an exported repository (sessionrec export)")
    parser.add_argument("--data", required=True, help="sessions whose test split is replayed")
    parser.add_argument("--out", required=True, help="results as JSON")
    parser.add_argument("--rate", type=float, default=100.0, help="offered requests per second (default 100)")
    parser.add_argument("--seconds", type=float, default=15.0, help="each round (default 15)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per system (default 4)")
    parser.add_argument("--senders", type=int, default=8, help="client threads sharing the schedule (default 8)")
    args = parser.parse_args(argv)

    dataset = load_dataset(args.data)
    in_process = observe_cost(Path(args.repository), dataset)
    print(f"in process: observe_step + maybe_flush {in_process['observe_us_median']:.1f} us per batch of one request",
          flush=True)
    requests = [dataset.raw_ids[np.asarray(s[:n])].tolist() for s in dataset.test[:3000] for n in range(1, len(s) + 1)]
    logs = Path(args.out).with_suffix("")
    logs.mkdir(parents=True, exist_ok=True)
    servers = {name: EmbeddedServer(args.repository, watch_seconds=0, log_file=logs / f"{name}.log",
                                    environment={MONITORING_ENV: name})
               for name in ("on", "off")}
    rounds: dict[str, list[dict]] = {"on": [], "off": []}
    try:
        for server in servers.values():
            server.start()
        for name, server in servers.items():  # warm both (channels, first batches)
            open_loop(server.grpc_url, requests, args.rate, 3, args.senders)
        for r in range(args.rounds):
            order = ("on", "off") if r % 2 == 0 else ("off", "on")
            for name in order:
                row = open_loop(servers[name].grpc_url, requests, args.rate, args.seconds, args.senders)
                rounds[name].append(row)
                print(f"round {r} monitoring {name:3s}: p50 {row['p50']:.2f}  p95 {row['p95']:.2f}  "
                      f"p99 {row['p99']:.2f} ms  failures {row['failures']}", flush=True)
        metrics = __import__("urllib.request").request.urlopen(servers["on"].metrics_url, timeout=5).read().decode()
        exported = sum(1 for line in metrics.splitlines() if line.startswith("sessionrec_sessions_total"))
    finally:
        for server in servers.values():
            server.stop()
    summary = {name: {p: float(np.median([row[p] for row in rows])) for p in ("p50", "p95", "p99")}
               for name, rows in rounds.items()}
    summary["p95_on_minus_off_ms"] = summary["on"]["p95"] - summary["off"]["p95"]
    summary["p50_on_minus_off_ms"] = summary["on"]["p50"] - summary["off"]["p50"]
    result = {"in_process": in_process, "rate": args.rate, "seconds": args.seconds, "rounds": rounds, "summary": summary,
              "monitor_series_exported_by_on": exported, "requests_replayed": len(requests),
              "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
              "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
