"""Serving benchmark, systems side by side in one run: the sessionrec Triton ensemble, a naive PyTorch
HTTP server, and the serving stack's ceiling (the ensemble answering from its response cache).

    python benchmarks/serving_bench.py --checkpoint runs/digi-gated/best.pt \
        --data /work/shared/data/diginetica --out docs/benchmarks/serving.md        # ~25 min on 2 cores
    python benchmarks/serving_bench.py --checkpoint CKPT --data DATA --out /tmp/s.md \
        --users 1,8 --step-seconds 6 --rates 20 --systems sessionrec,naive          # ~3 min check

Same trained model, same replayed sessions (the data's test split, click by click: load_tests/), same
load generator (Locust, one process, on the same 2 cores as the server). For each system:

- capacity ladder: closed-loop Locust runs with 1, 2, 4, ... users and no think time; each step reports
  throughput and p50/p95/p99 after a warm-up. "Throughput at p95 <= 70 ms" is the best step that met
  the target with no failed request (measured, not interpolated). A system's ladder stops past its knee.
  All servers run throughout and the steps interleave (users=1 for each system, then users=2, ...), so
  other jobs on the machine weigh on every system alike.
- sequential probe: one plain client, one request at a time: each system's latency floor.
- fixed offered rates: open-loop runs (constant arrival rate, no coordinated omission) at --rates.
- CPU: the load generator's, the server's (its process tree) and everything else's, per step, from
  /proc via psutil: the 2 cores are shared, and the generator's share is part of the result.

Systems (--systems):
  sessionrec      `sessionrec export` of the checkpoint, served by the embedded tritonserver (the CPU
                  layout: the ensemble's one step, session_recommender, runs the whole pipeline)
  sessionrec-delay100 the same version with the fused step's max_queue_delay_microseconds at 100 (the
                  default before issue 15; today's default is 0): what the batcher's wait costs
  sessionrec-x2   the same version with two fused step instances: what a second stub costs at capacity
                  and buys in the tail (tritonserver 2.51's batcher can leave a request waiting out its
                  500 ms idle timeout when the only instance is being released; docs/BENCHMARKS.md)
  sessionrec-shards2 the same checkpoint exported with `--shards 2`: the front (fused step) fans every batch
                  out to two retrieval-shard tritonservers over gRPC and merges by score
                  (sessionrec.serving.shards): what the sharded front costs against one index
  sessionrec-3step the same version with the three-step layout on CPU (preprocess -> session_encoder
                  -> retrieval, three python stubs): what fusing the steps buys
  naive           sessionrec/naive_server.py: model forward() per request (normalise the item table,
                  encode, full matmul), top-k, http.server JSON; torch threads --naive-threads
  naive-cached    the same with the item table normalised once at start (a careful team's version)
  cache-ceiling   the ensemble exported with --response-cache, served with a cache, replaying only
                  --cache-sessions distinct sessions after a warm pass: every answer is a cache hit
The naive servers are checked to answer what the ensemble answers before any load is applied.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import psutil

from sessionrec.load_tests.runner import LoadTest, run_load_test, sessions_for
from sessionrec.load_tests.sessions import read_replay_file
from sessionrec.load_tests.sla import SLA

ROOT = Path(__file__).resolve().parents[1]
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
SYSTEMS = ("sessionrec", "sessionrec-delay100", "sessionrec-x2", "sessionrec-shards2", "sessionrec-3step", "naive", "naive-cached", "cache-ceiling")
LABELS = {
    "sessionrec": "sessionrec Triton ensemble",
    "sessionrec-delay100": "ensemble, step batcher waits 100 us",
    "sessionrec-x2": "ensemble, two fused step instances",
    "sessionrec-shards2": "ensemble, retrieval in 2 shard servers",
    "sessionrec-3step": "ensemble as three python steps",
    "naive": "naive PyTorch + http.server",
    "naive-cached": "naive, item table cached",
    "cache-ceiling": "ensemble, response-cache hits (ceiling)",
}


@dataclass
class System:
    name: str
    host: str
    protocol: str
    pids: list[int]  # server processes (children included when measured)
    stats: object = None  # callable -> ensemble statistics (cache hits), or None


# ----------------------------------------------------------------------------- systems


@contextmanager
def triton_system(name: str, repository: Path, log: Path, cache_bytes: int = 0):
    from sessionrec.serving.embedded import EmbeddedServer

    with EmbeddedServer(repository, watch_seconds=0, response_cache_bytes=cache_bytes, log_file=log) as server:
        # A sharded export: the shard servers' CPU is the system's too.
        pids = [server.server.pid] + ([s.pid for s in server.shards.servers] if server.shards is not None else [])
        yield System(name, server.grpc_url, "grpc", pids, stats=lambda: ensemble_stats(server))


def ensemble_stats(server) -> dict:
    """Triton's counters: ensemble cache hits/misses, and per model requests, executions (batches) and times."""
    out = {"models": {}}
    for model in server.server.client().get_inference_statistics(as_json=False).model_stats:
        stats = model.inference_stats
        if model.name == "recommend":
            out["cache_hits"], out["cache_misses"] = stats.cache_hit.count, stats.cache_miss.count
        out["models"][model.name] = (model.inference_count, model.execution_count, stats.queue.ns,
                                     stats.compute_infer.ns, stats.success.ns)
    return out


def model_deltas(before: dict, after: dict) -> dict:
    """Per model over one step: average batch size, and queue / compute / total ms per request."""
    rows = {}
    for name, now in after["models"].items():
        then = before["models"].get(name, (0, 0, 0, 0, 0))
        requests, executions = now[0] - then[0], now[1] - then[1]
        if requests:
            rows[name] = {"batch": requests / max(executions, 1), "queue_ms": (now[2] - then[2]) / requests / 1e6,
                          "compute_ms": (now[3] - then[3]) / requests / 1e6, "total_ms": (now[4] - then[4]) / requests / 1e6}
    return rows


@contextmanager
def naive_system(name: str, checkpoint: Path, log: Path, threads: int, cache_item_table: bool):
    from sessionrec.serving.launcher import free_ports

    port = free_ports(1)[0]
    command = [sys.executable, "-m", "sessionrec.naive_server", str(checkpoint), "--port", str(port),
               "--threads", str(threads)] + (["--cache-item-table"] if cache_item_table else [])
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                DIRECT.open(f"{url}/health", timeout=2).read()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"naive server did not start (log {log})") from None
                time.sleep(0.2)
        yield System(name, url, "http", [process.pid])
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cpu_seconds(pids: list[int]) -> float:
    """User+system CPU of these processes and all their descendants (live ones)."""
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for process in [root] + root.children(recursive=True):
                try:
                    times = process.cpu_times()
                    total += times.user + times.system
                except psutil.NoSuchProcess:
                    pass
        except psutil.NoSuchProcess:
            pass
    return total


def machine_busy_seconds() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


# ----------------------------------------------------------------------------- measurements


def measure(system: System, test: LoadTest) -> dict:
    server_before, busy_before, began = cpu_seconds(system.pids), machine_busy_seconds(), time.monotonic()
    stats_before = system.stats() if system.stats else None
    result = run_load_test(test)
    wall = time.monotonic() - began
    server_cores = (cpu_seconds(system.pids) - server_before) / wall
    busy_cores = (machine_busy_seconds() - busy_before) / wall
    row = {
        "users": test.users, "arrival_rate": test.arrival_rate, "passed": result.passed,
        "requests": result.summary["requests"], "failures": result.summary["failures"],
        "throughput_rps": result.summary["throughput_rps"], "latency_ms": result.summary["latency_ms"],
        "errors": result.summary["errors"][:3],
        "generator_cores": result.generator_cores, "server_cores": server_cores,
        "other_cores": max(0.0, busy_cores - server_cores - result.generator_cores), "wall_s": wall,
        "report": str(result.files["html"]),
    }
    if stats_before is not None:
        after = system.stats()
        row["cache_hits"] = after["cache_hits"] - stats_before["cache_hits"]
        row["cache_misses"] = after["cache_misses"] - stats_before["cache_misses"]
        row["models"] = model_deltas(stats_before, after)
    return row


def sequential_probe(system: System, sessions: list[list[int]], k: int, count: int) -> dict:
    """Latency with no load generator: one plain (non-gevent) client, one request at a time."""
    requests = [s[:i] for s in sessions for i in range(1, len(s) + 1)][:count]
    latencies = []
    if system.protocol == "grpc":
        from sessionrec.clients import RecommendClient

        with RecommendClient(system.host) as client:
            for items in requests[:20] + requests:  # the first 20 warm the channel up
                began = time.perf_counter()
                client.recommend(items, k=k)
                latencies.append((time.perf_counter() - began) * 1000)
    else:
        import http.client

        host, port = system.host.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        for items in requests[:20] + requests:
            began = time.perf_counter()
            connection.request("POST", "/recommend", body=json.dumps({"items": items, "k": k}),
                               headers={"Content-Type": "application/json"})
            answer = connection.getresponse().read()
            latencies.append((time.perf_counter() - began) * 1000)
            assert json.loads(answer)["item_ids"]
        connection.close()
    latencies = np.asarray(latencies[20:])
    return {"requests": len(latencies), **{f"p{p}": float(np.percentile(latencies, p)) for p in (50, 95, 99)},
            "over_100ms": int((latencies > 100).sum()), "max": float(latencies.max())}


def best_under(rows: list[dict], sla: SLA) -> dict | None:
    good = [r for r in rows if r["failures"] == 0 and r["latency_ms"].get(f"p{sla.percentile:g}", 1e9) <= sla.target_ms]
    return max(good, key=lambda r: r["throughput_rps"]) if good else None


def fmt_row(row: dict) -> str:
    lat = row["latency_ms"]
    return (f"{row['throughput_rps']:7.1f} req/s  p50 {lat.get('p50', float('nan')):6.2f}  "
            f"p95 {lat.get('p95', float('nan')):6.2f}  p99 {lat.get('p99', float('nan')):6.2f} ms  "
            f"fail {row['failures']}  cpu gen/server/other {row['generator_cores']:.2f}/{row['server_cores']:.2f}/"
            f"{row['other_cores']:.2f}" + (f"  cache hits {row['cache_hits']}/{row['cache_hits'] + row['cache_misses']}"
                                            if "cache_hits" in row else ""))


def agreement(sessions: list[list[int]], repository: Path, naive_checkpoint: Path, k: int = 20) -> dict:
    """Top-k overlap of the naive model (eager PyTorch) with the served pipeline, on real sessions."""
    from sessionrec.export.repository import current_version
    from sessionrec.naive_server import NaiveRecommender
    from sessionrec.serving.pipeline import LocalPipeline

    pipeline = LocalPipeline(repository, current_version(repository))
    naive = NaiveRecommender(naive_checkpoint, threads=1)
    overlaps = []
    for session in sessions:
        served = pipeline.recommend(session, k).item_ids.tolist()
        overlaps.append(len(set(served) & set(naive.recommend(session, k)["item_ids"])) / k)
    return {"sessions": len(sessions), "top20_overlap_mean": float(np.mean(overlaps)), "top20_overlap_min": float(np.min(overlaps))}


def three_step_copy(repository: Path, target: Path, log, **changes) -> Path:
    """The same exported version, its configs rewritten with `changes` (default: the three python steps)."""
    import shutil

    from sessionrec.export.configs import ServingConfig
    from sessionrec.export.repository import current_version, write_configs
    from sessionrec.serving.artifacts import read_manifest

    if not target.exists():
        version = current_version(repository)
        changes = changes or {"fused_cpu": False}
        log(f"copying {repository} -> {target} with {changes}")
        shutil.copytree(repository, target)
        cfg = ServingConfig(**read_manifest(target / "recommend" / str(version))["serving_config"])
        for key, value in changes.items():
            setattr(cfg, key, value)
        write_configs(target, cfg, version=version)
    return target


def export(checkpoint: Path, data: str, repository: Path, response_cache: bool, log, shards: int = 0) -> Path:
    from sessionrec.export.configs import ServingConfig
    from sessionrec.export.exporter import ExportOptions, export_version
    from sessionrec.export.repository import current_version

    if current_version(repository) is None:
        log(f"exporting {checkpoint} -> {repository} (response cache {'on' if response_cache else 'off'}, shards {shards})")
        export_version(checkpoint, repository, ExportOptions(data=data, shards=shards,
                                                             serving=ServingConfig(response_cache=response_cache)),
                       progress=False)
    return repository


# ----------------------------------------------------------------------------- report


def _users(row: dict) -> str:
    return f"{row['users']} (run {row['run']})" if "run" in row else str(row["users"])


def markdown(results: dict) -> str:
    s = results["settings"]
    sla = s["sla"]
    lines = [
        "# Serving: sessionrec Triton ensemble vs a naive PyTorch server vs the response-cache ceiling",
        "",
        "Settings, tables and notes generated by `benchmarks/serving_bench.py`; the reading at the end is "
        "written by hand after this run.",
        "",
        f"- command: `{s['command']}`",
        f"- machine: {s['cpus']} CPUs (nproc), {s['cpu_model']}; shared with other jobs (load average "
        f"{s['load_start']} at start, {s['load_end']} at end)",
        f"- date: {s['date']}; took {s['minutes']:.1f} min",
        f"- model: `{s['checkpoint']}`: {s['n_items']:,} items, d={s['dim']}, max_len={s['max_len']}, "
        f"{s['node_update']} cell; K={s['k']}, exclude_seen={s['exclude_seen']}",
        f"- traffic: {s['sessions']:,} test sessions of `{s['data']}` replayed click by click "
        f"(a request after every click, so {s['requests_per_pass']:,} distinct requests per pass); "
        f"each user walks its own seeded random order",
        f"- capacity ladder: closed loop, no think time, users {s['users']}, steps interleaved across systems; each step {s['step_seconds']:g} s "
        f"of which the first {s['warmup_seconds']:g} s are warm-up (not measured); SLA p{sla['percentile']:g} "
        f"<= {sla['target_ms']:g} ms with no failed request",
        f"- repeats: {s.get('repeats', 1)} (every figure in the first three tables is the median over the runs; each "
        f"run's own figures are under 'Each run')",
        f"- fixed rates: open loop at {s['rates']} req/s, {s['rate_seconds']:g} s each "
        f"({s['warmup_seconds']:g} s warm-up), {s['rate_users']} users sharing the schedule",
        f"- load generator: Locust {s['locust']}, one process, gRPC through `sessionrec.clients` (gevent) or "
        f"FastHttpUser (naive); latencies are what the generator measured, end to end",
        f"- answers: the naive model agrees with the served pipeline on {results['agreement']['sessions']} test "
        f"sessions (top-20 overlap mean {results['agreement']['top20_overlap_mean']:.3f}, min "
        f"{results['agreement']['top20_overlap_min']:.2f}; ONNX+FAISS vs eager PyTorch float noise swaps near-ties)",
        "",
        f"## Throughput at p{sla['percentile']:g} <= {sla['target_ms']:g} ms",
        "",
        "| system | req/s | users | p50 ms | p95 ms | p99 ms | cores: load generator | server | other jobs | vs naive |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    naive_best = (results["systems"].get("naive") or {}).get("best")
    for name, data in results["systems"].items():
        best = data.get("best")
        if best is None:
            lines.append(f"| {LABELS[name]} | none met the SLA | | | | | | | | |")
            continue
        lat = best["latency_ms"]
        ratio = f"{best['throughput_rps'] / naive_best['throughput_rps']:.2f}x" if naive_best else ""
        lines.append(f"| {LABELS[name]} | {best['throughput_rps']:.0f} | {best['users']} | {lat['p50']:.2f} | "
                     f"{lat['p95']:.2f} | {lat['p99']:.2f} | {best['generator_cores']:.2f} | {best['server_cores']:.2f} | "
                     f"{best['other_cores']:.2f} | {ratio} |")
    lines += ["", "## Fixed offered rate (open loop)", "",
              "| system | offered req/s | achieved req/s | p50 ms | p95 ms | p99 ms | failed | cores: generator | server |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, data in results["systems"].items():
        for row in data["rates"]:
            lat = row["latency_ms"]
            lines.append(f"| {LABELS[name]} | {row['arrival_rate']:g} | {row['throughput_rps']:.1f} | "
                         f"{lat.get('p50', float('nan')):.2f} | {lat.get('p95', float('nan')):.2f} | "
                         f"{lat.get('p99', float('nan')):.2f} | {row['failures']} | {row['generator_cores']:.2f} | "
                         f"{row['server_cores']:.2f} |")
    lines += ["", "## One request at a time, no load generator", "",
              "A plain (non-gevent) client in the benchmark process, sequential requests over the same sessions: "
              "the latency floor of each system.", "",
              "| system | requests | p50 ms | p95 ms | p99 ms | over 100 ms |", "|---|---:|---:|---:|---:|---:|"]
    for name, data in results["systems"].items():
        probe = data["probe"]
        lines.append(f"| {LABELS[name]} | {probe['requests']} | {probe['p50']:.2f} | {probe['p95']:.2f} | {probe['p99']:.2f} | "
                     f"{probe.get('over_100ms', '')} |")
    for system in ("sessionrec", "sessionrec-delay100", "sessionrec-x2", "sessionrec-shards2", "sessionrec-3step"):
        ensemble = results["systems"].get(system)
        if not (ensemble and ensemble["ladder"]):
            continue
        lines += ["", f"## Inside the ensemble: {LABELS[system]} (Triton statistics per ladder step)", "",
                  "Average batch a model executed, and per request: time queued, time in `execute` (wall time, "
                  "so it grows when the process waits for a core), total.", "",
                  "| users | model | batch | queue ms | compute ms | total ms |", "|---:|---|---:|---:|---:|---:|"]
        for row in ensemble["ladder"]:
            for model in ("session_recommender", "preprocess", "session_encoder", "retrieval", "recommend"):
                m = row.get("models", {}).get(model)
                if m:
                    lines.append(f"| {_users(row)} | {model} | {m['batch']:.2f} | {m['queue_ms']:.3f} | "
                                 f"{m['compute_ms']:.3f} | {m['total_ms']:.3f} |")
    lines += ["", "## Every ladder step", "",
              "| system | users | req/s | p50 ms | p95 ms | p99 ms | failed | cores: generator | server | other |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, data in results["systems"].items():
        for row in data["ladder"]:
            lat = row["latency_ms"]
            lines.append(f"| {LABELS[name]} | {_users(row)} | {row['throughput_rps']:.1f} | {lat.get('p50', float('nan')):.2f} | "
                         f"{lat.get('p95', float('nan')):.2f} | {lat.get('p99', float('nan')):.2f} | {row['failures']} | "
                         f"{row['generator_cores']:.2f} | {row['server_cores']:.2f} | {row['other_cores']:.2f} |")
    lines += goals(results)
    if len(results.get("runs") or []) > 1:
        lines += ["", "## Each run", "", "| run | system | req/s at the SLA | users | one at a time p50 / p95 ms | "
                  + " | ".join(f"{r['arrival_rate']:g} req/s p50 / p95 ms" for r in next(iter(results["runs"][0].values()))["rates"])
                  + " |", "|---:|---|---:|---:|---:|" + "---:|" * len(next(iter(results["runs"][0].values()))["rates"])]
        for r, run in enumerate(results["runs"], start=1):
            for name, data in run.items():
                best = data.get("best")
                rates = " | ".join(f"{x['latency_ms'].get('p50', float('nan')):.2f} / {x['latency_ms'].get('p95', float('nan')):.2f}"
                                   for x in data["rates"])
                lines.append(f"| {r} | {LABELS[name]} | {best['throughput_rps']:.0f} | {best['users']} | "
                             f"{data['probe']['p50']:.2f} / {data['probe']['p95']:.2f} | {rates} |" if best else
                             f"| {r} | {LABELS[name]} | none met the SLA | | {data['probe']['p50']:.2f} / "
                             f"{data['probe']['p95']:.2f} | {rates} |")
    cache = results["systems"].get("cache-ceiling")
    lines += ["", "Notes:", ""]
    if cache and cache["ladder"]:
        hits = sum(r.get("cache_hits", 0) for r in cache["ladder"])
        total = hits + sum(r.get("cache_misses", 0) for r in cache["ladder"])
        lines.append(f"- cache ceiling: {s['cache_sessions']} distinct sessions replayed after a warm pass; "
                     f"{hits:,} of {total:,} ensemble requests during the ladder were cache hits.")
    lines += [
        "- cores: CPU seconds per wall second during a step (psutil, /proc). load generator = the locust "
        "process; server = the server process and its children (tritonserver + python-backend stubs, or the "
        "naive server); other jobs = everything else busy on the machine meanwhile (training runs here).",
        f"- per-step Locust reports (HTML, CSV, PNG timeline): `{s['work']}`.",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- runs


def one_run(running: dict, bases: dict, sessions, args, users: list[int], rates: list[float], sla: SLA, log,
            tag: str = "") -> dict:
    """Probe, capacity ladder and fixed rates of every system once, interleaved: {name: results}."""
    out = {name: {"ladder": [], "rates": []} for name in running}
    log("sequential probes (no load generator):")
    for name, system in running.items():
        probe = sequential_probe(system, sessions[:args.cache_sessions] if name == "cache-ceiling" else sessions,
                                 args.k, args.probe_requests)
        out[name]["probe"] = probe
        log(f"  {name:14} p50 {probe['p50']:.2f}  p95 {probe['p95']:.2f}  p99 {probe['p99']:.2f} ms")
    log("capacity ladder (closed loop):")
    climbing = dict.fromkeys(running, 0)  # name -> consecutive steps over the target
    for count in users:
        for name in [n for n in running if n in climbing]:
            row = measure(running[name], replace(bases[name], users=count, name=f"{tag}ladder-u{count}"))
            out[name]["ladder"].append(row)
            log(f"  {name:14} users {count:3}: {fmt_row(row)}")
            p95 = row["latency_ms"].get(f"p{sla.percentile:g}", float("inf"))
            climbing[name] = climbing[name] + 1 if p95 > sla.target_ms else 0
            if climbing[name] >= 2 or p95 > 3 * sla.target_ms:  # past the knee: more users only queue
                del climbing[name]
        if not climbing:
            break
    log("fixed offered rates (open loop):")
    for rate in rates:
        for name, system in running.items():
            row = measure(system, replace(bases[name], users=args.rate_users, arrival_rate=rate,
                                          run_time_s=args.rate_seconds, name=f"{tag}rate-{rate:g}"))
            out[name]["rates"].append(row)
            log(f"  {name:14} {rate:5g} req/s offered: {fmt_row(row)}")
    return out


def _median_row(rows: list[dict]) -> dict:
    """Median of each figure over runs (latency percentiles each on its own; failures summed)."""
    keys = ("throughput_rps", "generator_cores", "server_cores", "other_cores")
    out = dict(rows[0])
    for key in keys:
        out[key] = float(np.median([r[key] for r in rows]))
    out["latency_ms"] = {p: float(np.median([r["latency_ms"].get(p, float("nan")) for r in rows]))
                         for p in rows[0]["latency_ms"]}
    out["failures"] = sum(r["failures"] for r in rows)
    return out


def merge_runs(runs: list[dict]) -> dict:
    """One result per system with the median over runs of each reported figure (runs kept beside it)."""
    merged = {}
    for name in runs[0]:
        per = [run[name] for run in runs]
        bests = [p["best"] for p in per]
        best = None
        if all(bests):
            order = sorted(bests, key=lambda b: b["throughput_rps"])
            best = {**_median_row(bests), "users": order[len(order) // 2]["users"]}
        probes = [p["probe"] for p in per]
        probe = {"requests": sum(p["requests"] for p in probes), "over_100ms": sum(p.get("over_100ms", 0) for p in probes),
                 **{q: float(np.median([p[q] for p in probes])) for q in ("p50", "p95", "p99")}}
        rates = [_median_row([p["rates"][i] for p in per]) for i in range(min(len(p["rates"]) for p in per))]
        ladder = [{**row, "run": r + 1} for r, p in enumerate(per) for row in p["ladder"]]
        merged[name] = {"best": best, "probe": probe, "rates": rates, "ladder": ladder}
    return merged


def goals(results: dict) -> list[str]:
    """Issue 15's latency goals, on the medians and run by run: sessionrec's p50 and p95 at or below the
    cached naive server's one request at a time and at every offered rate, >= 3x its throughput at the
    SLA and >= 8x the plain naive server's."""
    systems = results["systems"]
    if not all(n in systems for n in ("sessionrec", "naive-cached")):
        return []

    def checks(view: dict) -> list[tuple[str, bool, str]]:
        ours, cached, naive = view["sessionrec"], view["naive-cached"], view.get("naive")
        out = []
        for q in ("p50", "p95"):
            out.append((f"one request at a time, {q}", ours["probe"][q] <= cached["probe"][q],
                        f"{ours['probe'][q]:.2f} vs {cached['probe'][q]:.2f} ms"))
        for mine, theirs in zip(ours["rates"], cached["rates"]):
            for q in ("p50", "p95"):
                a, b = mine["latency_ms"].get(q, float("inf")), theirs["latency_ms"].get(q, float("nan"))
                out.append((f"{mine['arrival_rate']:g} req/s open loop, {q}", a <= b, f"{a:.2f} vs {b:.2f} ms"))
        for other, target in ((cached, 3.0), (naive, 8.0)):
            if other is None:
                continue
            label = f"throughput at the SLA >= {target:g}x {'the cached' if other is cached else 'the plain'} naive server"
            if not (ours["best"] and other["best"]):
                out.append((label, False, "not measured: " + ", ".join(
                    n for n, d in (("sessionrec", ours), ("the other", other)) if not d["best"]) + " met the SLA at no step"))
            else:
                ratio = ours["best"]["throughput_rps"] / other["best"]["throughput_rps"]
                out.append((label, ratio >= target, f"{ratio:.2f}x ({ours['best']['throughput_rps']:.0f} vs "
                                             f"{other['best']['throughput_rps']:.0f} req/s)"))
        return out

    runs = results.get("runs") or [systems]
    per_run = [checks({n: {**d, "best": d.get("best")} for n, d in run.items()}) for run in runs]
    lines = ["", "## Goals (issue 15): sessionrec against the naive servers", "",
             f"On the medians of {len(runs)} run(s); the last column says in how many runs the goal held on its own.", "",
             "| goal | met (medians) | sessionrec vs the other | runs met |", "|---|---|---|---:|"]
    for i, (label, ok, detail) in enumerate(checks(systems)):
        held = sum(1 for run in per_run if i < len(run) and run[i][1])
        lines.append(f"| {label} | {'yes' if ok else 'no'} | {detail} | {held}/{len(per_run)} |")
    return lines


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="trained checkpoint (best.pt) over the real catalogue")
    parser.add_argument("--data", required=True, help="sessions: SR-GNN folder or click log (its test split is replayed)")
    parser.add_argument("--out", required=True, help="Markdown report (all results as JSON go to WORK/results.json)")
    parser.add_argument("--work", help="exports and Locust reports (default: runs/serving-bench)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {','.join(SYSTEMS)}")
    parser.add_argument("--users", default="1,2,4,8,12,16,24,32,48,64,96,128", help="capacity ladder steps")
    parser.add_argument("--step-seconds", type=float, default=14.0, help="each ladder step (default 14)")
    parser.add_argument("--warmup-seconds", type=float, default=4.0, help="not measured, per run (default 4)")
    parser.add_argument("--rates", default="20,100", help="fixed offered rates, req/s (default 20,100)")
    parser.add_argument("--rate-seconds", type=float, default=16.0)
    parser.add_argument("--rate-users", type=int, default=8, help="users sharing an open-loop schedule (default 8)")
    parser.add_argument("--sla-ms", type=float, default=70.0)
    parser.add_argument("--sla-percentile", type=float, default=95.0)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--exclude-seen", action="store_true")
    parser.add_argument("--naive-threads", type=int, default=1, help="torch threads of the naive server (default 1)")
    parser.add_argument("--cache-sessions", type=int, default=300, help="distinct sessions for the cache ceiling")
    parser.add_argument("--cache-mb", type=int, default=256)
    parser.add_argument("--probe-requests", type=int, default=500, help="sequential probe, per system (default 500)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="measure everything this many times over the same servers; tables show medians (default 1)")
    args = parser.parse_args(argv)

    began, out = time.monotonic(), Path(args.out)
    work = Path(args.work or ROOT / "runs" / "serving-bench")
    work.mkdir(parents=True, exist_ok=True)
    systems = [name.strip() for name in args.systems.split(",") if name.strip()]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; choose from {SYSTEMS}")
    sla = SLA(args.sla_percentile, args.sla_ms)
    checkpoint = Path(args.checkpoint).resolve()
    log_lines: list[str] = []

    def log(message: str) -> None:
        print(message, flush=True)
        log_lines.append(message)

    from sessionrec.checkpoint import load_checkpoint

    config = load_checkpoint(checkpoint).model_config
    sessions_file = sessions_for(args.data, work)
    sessions = read_replay_file(sessions_file)
    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    repository = export(checkpoint, args.data, work / "repository", False, log)
    cache_repository = export(checkpoint, args.data, work / "repository-cache", True, log) if "cache-ceiling" in systems else None
    agree = agreement(sessions[:200], repository, checkpoint, args.k)
    log(f"naive vs served answers: {agree}")

    base = LoadTest(host="", sessions_file=sessions_file, out_dir=work, k=args.k, exclude_seen=args.exclude_seen,
                    run_time_s=args.step_seconds, warmup_s=args.warmup_seconds, sla=sla, deadline_s=5.0)
    users = [int(u) for u in args.users.split(",")]
    rates = [float(r) for r in args.rates.split(",") if r]
    results = {"agreement": agree}
    with ExitStack() as stack:
        # Every server runs for the whole benchmark and the measurements interleave (each ladder step
        # goes round the systems): the other jobs on the machine come and go, and interleaving puts the
        # systems under the same background load step by step. Idle servers use ~0 CPU.
        running, bases = {}, {}
        for name in systems:
            folder = work / name
            folder.mkdir(parents=True, exist_ok=True)
            if name == "sessionrec":
                context = triton_system(name, repository, folder / "tritonserver.log")
            elif name == "sessionrec-shards2":
                context = triton_system(name, export(checkpoint, args.data, work / "repository-shards2", False, log, shards=2),
                                        folder / "tritonserver.log")
            elif name == "sessionrec-3step":
                context = triton_system(name, three_step_copy(repository, work / "repository-3step", log),
                                        folder / "tritonserver.log")
            elif name == "sessionrec-delay100":
                context = triton_system(name, three_step_copy(repository, work / "repository-delay100", log,
                                                              fused_queue_delay_us=100), folder / "tritonserver.log")
            elif name == "sessionrec-x2":  # a second stub: a request never waits out the batcher's lost wake-up
                context = triton_system(name, three_step_copy(repository, work / "repository-x2", log,
                                                              fused_instances=2), folder / "tritonserver.log")
            elif name == "cache-ceiling":
                context = triton_system(name, cache_repository, folder / "tritonserver.log", cache_bytes=args.cache_mb << 20)
            else:
                context = naive_system(name, checkpoint, folder / "server.log", args.naive_threads, name == "naive-cached")
            system = running[name] = stack.enter_context(context)
            bases[name] = replace(base, host=system.host, protocol=system.protocol, out_dir=folder)
            if name == "cache-ceiling":
                bases[name] = replace(bases[name], distinct_sessions=args.cache_sessions)
                warm = measure(system, replace(bases[name], users=8, run_time_s=8, warmup_s=0, name="cache-warm"))
                log(f"{name} warm pass: {fmt_row(warm)}")
        runs = []
        for repeat in range(args.repeats):
            if args.repeats > 1:
                log(f"== run {repeat + 1} of {args.repeats}")
            runs.append(one_run(running, bases, sessions, args, users, rates, sla, log, tag=f"r{repeat + 1}-" if args.repeats > 1 else ""))
    for run in runs:
        for name, data in run.items():
            data["best"] = best_under(data["ladder"], sla)
    results["runs"] = runs
    results["systems"] = merge_runs(runs) if len(runs) > 1 else runs[0]
    for name, data in results["systems"].items():
        best = data["best"]
        log(f"{LABELS[name]}: {best['throughput_rps']:.0f} req/s at p{sla.percentile:g} <= {sla.target_ms:g} ms "
            f"({best['users']} users)" if best else f"{LABELS[name]}: no step met the SLA")

    from importlib.metadata import version as package_version

    results["settings"] = {
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT)] + (argv or sys.argv[1:])),
        "cpus": os.cpu_count(), "cpu_model": _cpu_model(), "load_start": load_start,
        "load_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "minutes": (time.monotonic() - began) / 60, "checkpoint": str(args.checkpoint), "data": args.data,
        "n_items": config.n_items, "dim": config.dim, "max_len": config.max_len, "node_update": config.node_update,
        "k": args.k, "exclude_seen": args.exclude_seen, "sessions": len(sessions),
        "requests_per_pass": sum(len(s) for s in sessions), "users": args.users, "step_seconds": args.step_seconds,
        "warmup_seconds": args.warmup_seconds, "rates": args.rates, "rate_seconds": args.rate_seconds,
        "rate_users": args.rate_users, "repeats": args.repeats, "sla": {"percentile": sla.percentile, "target_ms": sla.target_ms},
        "naive_threads": args.naive_threads, "cache_sessions": args.cache_sessions, "locust": package_version("locust"),
        "python": platform.python_version(), "work": str(work),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(results))
    (work / "results.json").write_text(json.dumps(results, indent=2, default=float))
    log(f"wrote {out} and {work / 'results.json'}")
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
