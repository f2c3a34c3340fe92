"""Where one `recommend` request's time goes, stage by stage, at low load (one request at a time).

    python benchmarks/latency_breakdown.py --checkpoint runs/digi/best.pt --data /work/shared/data/diginetica \
        --out docs/benchmarks/latency_breakdown.md                                  # ~3 min on 2 cores

One export of the checkpoint, served by the embedded tritonserver (the CPU layout: `recommend` ->
`session_recommender`, one python stub) started with Triton's request tracing on (TIMESTAMPS, every
request). Real Diginetica test prefixes, K=20, sent one at a time by a plain client. Measured:

- client side: the whole call through `sessionrec.clients.RecommendClient`, the same request through
  tritonclient's `infer` with the inputs built once, and through the raw gRPC stub with the request
  protobuf built once (what the library's request building and response parsing cost); a gRPC
  `ServerLive` call (the floor of one round trip on this machine);
- server side, from Triton's trace timestamps per request: gRPC receive -> ensemble start, ensemble
  -> step queue, step queue wait (the dynamic batcher's `max_queue_delay`), the python backend's
  input / execute / output phases (shared-memory IPC to the stub and back, and the stub's
  `execute`), step end -> ensemble end, ensemble end -> gRPC response sent;
- in process, no Triton: the fused step's library code (preprocess, encoder, FAISS, answer)
  on the same requests, i.e. the python work inside `execute`;
- the same requests sent straight to `session_recommender` (no ensemble hop), and with the step's
  `max_queue_delay_microseconds` set to 0 and to 100 (model reloaded with the config override).

Medians (and p95) over --requests requests; the machine is shared, so run it through the benchmark
wrapper and read ratios rather than absolute figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving_bench import _cpu_model, export  # noqa: E402 - the same export as the serving benchmark

from sessionrec.load_tests.runner import sessions_for  # noqa: E402
from sessionrec.load_tests.sessions import read_replay_file  # noqa: E402

STEP = "session_recommender"


def stat(values) -> dict:
    values = np.asarray(values, dtype=np.float64)
    return {"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)), "n": int(values.size)}


def timed(fn, requests, warm: int = 20) -> list[float]:
    """ms per call of fn(request), one at a time; the first `warm` calls are not counted."""
    out = []
    for i, request in enumerate(requests[:warm] + requests):
        began = time.perf_counter()
        fn(request)
        if i >= warm:
            out.append((time.perf_counter() - began) * 1000)
    return out


# ----------------------------------------------------------------------------- in process


def in_process(repository: Path, requests: list[list[int]], k: int) -> dict:
    """The fused step's library code on one request at a time, stage by stage (no Triton)."""
    from sessionrec.export.repository import current_version
    from sessionrec.serving.pipeline import LocalPipeline, PipelineRequest

    pipeline = LocalPipeline(repository, current_version(repository))
    pipeline.warm_up(4)
    stages = {"one-click table lookup": [], "preprocess (ids -> graph)": [], "encoder (onnxruntime)": [],
              "retrieval (FAISS + answer)": [], "whole recommend_many": [],
              "encoder, graph padded to max_len (before issue 15)": []}
    kk, ex = np.array([[k]], dtype=np.int32), np.array([[False]])
    for i, items in enumerate(requests[:20] + requests):
        rows = np.asarray(items, dtype=np.int64)[None, :]
        t0 = time.perf_counter()
        pipeline.one_click.lookup(rows, kk, ex) if pipeline.one_click else None
        t1 = time.perf_counter()
        graph = pipeline.preprocessor.process(rows, pad_to_longest=True)
        t2 = time.perf_counter()
        vectors = pipeline.encoder(graph)
        t3 = time.perf_counter()
        pipeline.retriever.retrieve(vectors, graph["items"], graph["fallback"], pipeline.retriever.check_k(kk), ex.reshape(-1))
        t4 = time.perf_counter()
        pipeline.recommend_many([PipelineRequest(rows, kk, ex)])
        t5 = time.perf_counter()
        full = pipeline.preprocessor.process(rows)
        t6 = time.perf_counter()
        pipeline.encoder(full)
        t7 = time.perf_counter()
        if i >= 20:
            for name, a, b in zip(stages, (t0, t1, t2, t3, t4, t6), (t1, t2, t3, t4, t5, t7)):
                stages[name].append((b - a) * 1000)
    return {name: stat(v) for name, v in stages.items()}


# ----------------------------------------------------------------------------- traces


def read_traces(path: Path) -> list[dict]:
    text = path.read_text().strip()
    if not text:
        return []
    try:
        return json.loads(text)
    except json.JSONDecodeError:  # several flushes: concatenated JSON arrays
        out, decoder, i = [], json.JSONDecoder(), 0
        while i < len(text):
            chunk, i = decoder.raw_decode(text, i)
            out += chunk
            while i < len(text) and text[i] in " \n\r\t,":
                i += 1
        return out


def trace_stages(traces: list[dict], ensemble: str = "recommend") -> dict:
    """Per request (a top-level trace of `ensemble` and its child trace of the step): stage -> ms."""
    by_id: dict = {}
    for t in traces:
        entry = by_id.setdefault(t["id"], {"parent": t.get("parent_id"), "model": None, "ts": {}})
        if "model_name" in t:
            entry["model"] = t["model_name"]
        for stamp in t.get("timestamps", []):
            entry["ts"][stamp["name"]] = int(stamp["ns"])
    children = {}
    for tid, entry in by_id.items():
        if entry["parent"] is not None:
            children[entry["parent"]] = entry
    rows = []
    for tid, entry in by_id.items():
        if entry["model"] != ensemble or entry["parent"] is not None:
            continue
        top, step = entry["ts"], (children.get(tid) or {}).get("ts", {})
        if ensemble == STEP:  # sent straight to the step: the step's trace is the top one
            step = top
        need_top = ("GRPC_WAITREAD_END", "REQUEST_START", "REQUEST_END", "GRPC_SEND_START", "GRPC_SEND_END")
        need_step = ("REQUEST_START", "QUEUE_START", "COMPUTE_START", "COMPUTE_INPUT_END", "COMPUTE_OUTPUT_START",
                     "COMPUTE_END", "REQUEST_END")
        if not all(n in top for n in need_top) or not all(n in step for n in need_step):
            continue
        ms = lambda a, b: (b - a) / 1e6  # noqa: E731
        rows.append({
            "gRPC read -> request start": ms(top["GRPC_WAITREAD_END"], top["REQUEST_START"]),
            "ensemble start -> step queued": ms(top["REQUEST_START"], step["QUEUE_START"]),
            "step queue (dynamic batcher)": ms(step["QUEUE_START"], step["COMPUTE_START"]),
            "step compute input (to stub)": ms(step["COMPUTE_START"], step["COMPUTE_INPUT_END"]),
            "step compute infer (stub execute)": ms(step["COMPUTE_INPUT_END"], step["COMPUTE_OUTPUT_START"]),
            "step compute output (from stub)": ms(step["COMPUTE_OUTPUT_START"], step["COMPUTE_END"]),
            "step end -> request end": ms(step["COMPUTE_END"], top["REQUEST_END"]),
            "request end -> gRPC sent": ms(top["REQUEST_END"], top["GRPC_SEND_END"]),
            "server total (read end -> sent)": ms(top["GRPC_WAITREAD_END"], top["GRPC_SEND_END"]),
        })
    return {name: stat([r[name] for r in rows]) for name in (rows[0] if rows else {})}


# ----------------------------------------------------------------------------- client side


def request_proto(model: str, inputs: list, outputs: list | None = None):
    """The ModelInferRequest tritonclient's infer() builds from these inputs."""
    from tritonclient.grpc._utils import _get_inference_request

    return _get_inference_request(model_name=model, inputs=inputs, model_version="", request_id="", outputs=outputs,
                                  sequence_id=0, sequence_start=False, sequence_end=False, priority=0, timeout=None,
                                  parameters=None)


def client_side(url: str, requests: list[list[int]], k: int, model: str = "recommend") -> dict:
    import tritonclient.grpc as grpcclient
    from tritonclient.grpc import service_pb2

    from sessionrec.clients import RecommendClient
    from sessionrec.clients.client import build_inputs, parse_result

    out = {}
    with RecommendClient(url) as client:
        if model == "recommend":
            out["RecommendClient.recommend (whole call)"] = stat(timed(lambda r: client.recommend(r, k=k), requests))
        raw = client._current()
        prebuilt = [build_inputs(grpcclient, np.asarray(r, dtype=np.int64)[None, :], k, False) for r in requests]
        index = iter(range(10**9))
        pairs = list(zip(requests[:20] + requests, prebuilt[:20] + prebuilt))
        out[f"tritonclient infer, inputs prebuilt ({model})"] = stat(timed(lambda p: raw.infer(model, p[1]), pairs))
        # the raw stub with the protobuf built once: gRPC + server only
        protos = [request_proto(model, p) for p in prebuilt]
        stub = raw._client_stub
        qs = list(zip(requests[:20] + requests, protos[:20] + protos))
        out[f"raw gRPC stub, request prebuilt ({model})"] = stat(timed(lambda p: stub.ModelInfer(p[1]), qs))
        if model == STEP:  # the four outputs `recommend` uses, asked for by name (the ensemble's request)
            four = [grpcclient.InferRequestedOutput(n) for n in ("ITEM_IDS", "SCORES", "UNKNOWN_COUNT", "FALLBACK")]
            protos4 = [request_proto(model, p, four) for p in prebuilt]
            q4 = list(zip(requests[:20] + requests, protos4[:20] + protos4))
            out[f"raw gRPC stub, request prebuilt ({model}, 4 outputs asked)"] = stat(timed(lambda p: stub.ModelInfer(p[1]), q4))
        live = service_pb2.ServerLiveRequest()
        out["gRPC ServerLive round trip (floor)"] = stat(timed(lambda _: stub.ServerLive(live), requests))
        if model == "recommend":
            # library work alone, no network: building the inputs + protobuf, and parsing one answer
            out["client: build inputs + request protobuf"] = stat(timed(
                lambda r: request_proto(model, build_inputs(grpcclient, np.asarray(r, dtype=np.int64)[None, :], k, False)),
                requests))
            result = raw.infer(model, prebuilt[0])
            out["client: parse answer (as_numpy, lists)"] = stat(timed(lambda _: parse_result(result, 1, k, "x"), requests))
        del index
    return out


# ----------------------------------------------------------------------------- report


def table(title: str, rows: dict, note: str = "") -> list[str]:
    lines = [f"## {title}", ""] + ([note, ""] if note else [])
    lines += ["| stage | p50 ms | p95 ms | n |", "|---|---:|---:|---:|"]
    for name, s in rows.items():
        lines.append(f"| {name} | {s['p50']:.3f} | {s['p95']:.3f} | {s['n']} |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, help="SR-GNN folder: its test sessions are replayed")
    parser.add_argument("--out", required=True, help="Markdown report (JSON beside it)")
    parser.add_argument("--work", help="export and traces (default runs/latency-breakdown)")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--delays", default="0,100,0,100,0x2,100x2",
                        help="step max_queue_delay_microseconds to compare, in order; DxN: with N instances")
    args = parser.parse_args(argv)

    from sessionrec.serving.embedded import EmbeddedServer

    began = time.monotonic()
    work = Path(args.work or ROOT / "runs" / "latency-breakdown").resolve()
    work.mkdir(parents=True, exist_ok=True)
    sessions = read_replay_file(sessions_for(args.data, work))
    # one request per click of each test session, skipping one-click prefixes (the table answers those
    # without the encoder): the path this breakdown is about; the one-click share is measured separately
    requests = [s[:i] for s in sessions for i in range(2, len(s) + 1)][: args.requests]
    one_click = [s[:1] for s in sessions][: args.requests]
    repository = export(Path(args.checkpoint).resolve(), args.data, work / "repository", False, print)
    results: dict = {"in_process": in_process(repository, requests, args.k)}
    print("in process:", json.dumps(results["in_process"], indent=1), flush=True)

    trace_file = work / "trace.json"
    trace_file.unlink(missing_ok=True)
    trace_args = ["--trace-config=triton,file=" + str(trace_file), "--trace-config=level=TIMESTAMPS",
                  "--trace-config=rate=1", "--trace-config=log_frequency=0"]
    with EmbeddedServer(repository, watch_seconds=0, log_file=work / "tritonserver.log", extra_args=trace_args) as server:
        url = server.server.grpc_url
        results["client"] = client_side(url, requests, args.k)
        results["client_one_click"] = {"RecommendClient.recommend, one-click sessions": client_side(url, one_click, args.k)[
            "RecommendClient.recommend (whole call)"]}
        results["client_direct_step"] = client_side(url, requests, args.k, model=STEP)
        tri = server.server.client()
        config = tri.get_model_config(STEP, as_json=True)["config"]
        results["delays"] = {}
        for turn, spec in enumerate(d for d in args.delays.split(",") if d):
            delay, _, count = spec.partition("x")
            delay, count = int(delay), int(count or 1)
            config["dynamic_batching"]["max_queue_delay_microseconds"] = delay
            config["instance_group"][0]["count"] = count
            server.server.load_model(STEP, config_json=json.dumps(config))
            before = tri.get_inference_statistics(STEP, as_json=True)["model_stats"]
            from sessionrec.clients import RecommendClient

            with RecommendClient(url) as client:
                e2e = timed(lambda r: client.recommend(r, k=args.k), requests)
            after = tri.get_inference_statistics(STEP, as_json=True)["model_stats"]
            queue = _stat_delta(before, after, "queue")
            results["delays"][f"{delay}" + (f", {count} instances" if count > 1 else "") + f" (pass {turn + 1})"] = {"e2e": stat(e2e), "queue_ms_mean": queue,
                                        "p99": float(np.percentile(e2e, 99)), "over_100ms": int((np.asarray(e2e) > 100).sum())}
            print(f"delay {delay} us x{count}: {list(results['delays'].values())[-1]}", flush=True)
    traces = read_traces(trace_file)
    results["trace_recommend"] = trace_stages(traces, "recommend")
    results["trace_direct_step"] = trace_stages(traces, STEP)
    results["settings"] = {
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT)] + (argv or sys.argv[1:])),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "minutes": (time.monotonic() - began) / 60,
        "cpus": os.cpu_count(), "cpu_model": _cpu_model(), "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "traces": len(traces), "requests": len(requests),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=float))
    out.write_text(markdown(results))
    print(f"wrote {out}")
    return 0


def _stat_delta(before, after, key: str) -> float:
    """Mean ms per request of one duration counter of Triton's statistics over the interval."""
    b, a = before[0]["inference_stats"][key], after[0]["inference_stats"][key]
    count = int(a.get("count", 0)) - int(b.get("count", 0))
    return (int(a.get("ns", 0)) - int(b.get("ns", 0))) / max(count, 1) / 1e6


def markdown(results: dict) -> str:
    s = results["settings"]
    lines = ["# Latency breakdown of one `recommend` request (low load, one request at a time)", "",
             "Generated by `benchmarks/latency_breakdown.py`.", "",
             f"- command: `{s['command']}`",
             f"- machine: {s['cpus']} CPUs, {s['cpu_model']}; shared (load average {s['load']} at the end)",
             f"- date: {s['date']}; took {s['minutes']:.1f} min; {s['requests']} requests per measurement "
             f"(real test prefixes of 2+ clicks, K=20), {s['traces']} trace records", ""]
    lines += table("Client side (whole round trips)", {**results["client"], **results["client_one_click"],
                                                         **results["client_direct_step"]},
                   "Each row is a separate pass over the same requests, one at a time.")
    lines += table("Server side, Triton trace of `recommend` (per request)", results["trace_recommend"],
                   "Consecutive stages of one request from Triton's TIMESTAMPS trace (ensemble trace + its step's "
                   "child trace); `compute infer` is the python backend's execute phase: the stub's `execute` "
                   "plus the shared-memory hand-over of the request and the response.")
    if results["trace_direct_step"]:
        lines += table("Server side, request sent straight to `session_recommender` (no ensemble)",
                       results["trace_direct_step"])
    lines += table("In process: the fused step's library code (no Triton)", results["in_process"])
    lines += ["## Dynamic batcher delay of the step", "",
              "The step reloaded with each max_queue_delay_microseconds, then the same requests one at a time "
              "through RecommendClient. 'over 100 ms': requests that waited for the batcher's 500 ms idle timeout.", "",
              "| max_queue_delay_microseconds (instances) | e2e p50 ms | e2e p95 ms | e2e p99 ms | over 100 ms | n |",
              "|---:|---:|---:|---:|---:|---:|"]
    for delay, row in results["delays"].items():
        lines.append(f"| {delay} | {row['e2e']['p50']:.3f} | {row['e2e']['p95']:.3f} | {row.get('p99', float('nan')):.3f} | "
                     f"{row.get('over_100ms', '')} | {row['e2e']['n']} |")
    return "\n".join(lines + [""])


if __name__ == "__main__":
    sys.exit(main())
