"""Stateless `recommend` vs stateful `recommend_session` side by side, in one run, on one server.

    python benchmarks/session_bench.py --checkpoint CKPT --data /work/shared/data/diginetica \
        --out docs/benchmarks/session.md                                          # ~12 min on 2 cores
    python benchmarks/session_bench.py --checkpoint CKPT --data DATA --out /tmp/s.md \
        --users 1,8 --step-seconds 6 --rate-seconds 8                             # ~3 min check
    python benchmarks/session_bench.py --checkpoint CKPT --data DATA --out /tmp/s.md \
        --phases interleaved,probe --slice-pairs 15                               # ~2.5 min: the 100 req/s overhead

One export of the checkpoint, one embedded tritonserver serving both ensembles, one throwaway
redis-server (Debian's, 127.0.0.1; at SCHED_FIFO 1 unless --redis-scheduling default: see
prioritise_redis). The same replayed sessions (the data's test split, click by
click, same seeds): `recommend` gets the session so far in every request, `recommend_session` only
the click just made, with a session id and the click's position as its sequence number (the
server rebuilds the session from Redis). Steps interleave (users=1 for both, then users=2, ...), so
other jobs on the shared machine weigh on both alike.

- interleaved (first): open loop at each of --rates from one asyncio generator, the systems
  alternating in short slices (A B B A ...); the overhead is the p95 difference of neighbouring
  slices, median over the pairs, robust to a stall from another job (interleaved_rate);
- capacity ladder: closed-loop Locust runs; throughput at p95 <= --sla-ms is the best step that met it
  with no failed request;
- fixed offered rates (open loop, no coordinated omission): p50/p95 at --rates, and the stateful
  path's p95 overhead there (difference of the two p95s, same run);
- sequential probe: one client, one request at a time, alternating systems: the latency floor and its
  difference, less noisy than the load runs;
- breakdown: one request at a time, blocks of each system in turn (A B A B ...), and Triton's own
  statistics over each block: per request, the ensemble's server-side time and the fused step's
  queue, input, execute and output times, beside the client's round trip; the two systems'
  difference stage by stage says where the stateful request's extra time goes (stage_breakdown);
- faults at --fault-rate req/s (open loop): Redis killed for --down-seconds during the run, then
  restarted (failed requests, answers per state, seconds from restart to the first `stored`), and
  Redis hung (SIGSTOP): the latency of requests while it hangs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from sessionrec.load_tests.runner import LoadTest, run_load_test, sessions_for, start_load_test
from sessionrec.load_tests.sessions import read_replay_file
from sessionrec.load_tests.sla import SLA

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = {"recommend": "grpc", "recommend_session": "session"}  # name -> LoadTest protocol


def prioritise_redis(redis, scheduling: str) -> str:
    """Give the local redis-server the CPU as soon as it wakes: what it has next to a Redis on its own host.

    On the 2 shared cores a woken redis-server otherwise waits behind whatever runs (other engineers'
    jobs, Locust, the stub), and the wait lands on recommend_session alone. SCHED_FIFO (root only) runs
    it at once; its work is tens of microseconds per event, so it takes nothing measurable from the
    rest. Pinning it to one core instead would only narrow where it may run. Returns what was applied.
    """
    if scheduling == "default" or redis.process is None:
        return "default (SCHED_OTHER)"
    try:
        os.sched_setscheduler(redis.process.pid, os.SCHED_FIFO, os.sched_param(1))
        return "SCHED_FIFO priority 1"
    except (PermissionError, AttributeError, OSError) as exc:
        return f"default (SCHED_FIFO refused: {exc})"


def history_states(result) -> dict:
    """The answers per history state, as session_locustfile.py prints them when Locust quits."""
    console = result.files["console"].read_text(errors="replace")
    if "history states " not in console:
        return {}
    line = console.split("history states ")[1].splitlines()[0]
    return {k: int(v) for k, v in (part.split("=") for part in line.split(", ") if "=" in part)}


def load_run(test: LoadTest) -> dict:
    result = run_load_test(test)
    summary = result.summary
    states = history_states(result)
    return {"requests": summary["requests"], "failures": summary["failures"], "rps": summary["throughput_rps"],
            "p50": summary["latency_ms"].get("p50"), "p95": summary["latency_ms"].get("p95"),
            "p99": summary["latency_ms"].get("p99"), "generator_cores": round(result.generator_cores, 2),
            "states": states}


def sequential_probe(url: str, sessions: list[list[int]], count: int, k: int) -> dict:
    """One request at a time, the two systems alternating on the same clicks."""
    import uuid

    from sessionrec.clients import RecommendClient

    times = {name: [] for name in SYSTEMS}
    done = 0
    with RecommendClient(url) as client:
        for session in sessions:
            sid = uuid.uuid4().hex
            for position in range(1, len(session) + 1):
                began = time.perf_counter()
                client.recommend(session[:position], k=k)
                times["recommend"].append((time.perf_counter() - began) * 1000)
                began = time.perf_counter()
                rec = client.click(sid, session[position - 1], k=k, seq=position)
                times["recommend_session"].append((time.perf_counter() - began) * 1000)
                assert rec.state == "stored", rec.state
                done += 1
                if done >= count:
                    break
            if done >= count:
                break
    out = {name: {"p50": float(np.percentile(t, 50)), "p95": float(np.percentile(t, 95)), "n": len(t)}
           for name, t in times.items()}
    diff = np.array(times["recommend_session"]) - np.array(times["recommend"])
    out["paired_difference_ms"] = {"median": float(np.median(diff)), "p95_of_difference": float(np.percentile(diff, 95))}
    return out


def interleaved_rate(url: str, sessions: list[list[int]], rate: float, slice_s: float, pairs: int, k: int,
                     warmup_s: float = 2.0, seed: int = 0) -> dict:
    """Open loop at `rate` req/s, the two systems alternating in slices of `slice_s` (A B B A A B ...).

    A stall of the shared machine (another engineer's job, the kernel) lands on one or two slices; the
    slice next to it, of the other system, sees nearly the same machine. So the overhead is read per
    pair of neighbouring slices (difference of their p95s, then the median over pairs) as well as from
    the pooled latencies. Arrivals are Poisson (seeded, the same gaps for both systems); a request's
    latency runs from its scheduled time, so a late generator counts against the request (no
    coordinated omission). Both systems replay the same sessions click by click, each from its own
    cursor: `recommend` sends the session so far, `recommend_session` the click with its session id.
    """
    import asyncio
    import uuid

    from sessionrec.clients import AsyncRecommendClient

    names = list(SYSTEMS)
    order = [names[(i // 2 + i) % 2] for i in range(2 * pairs)]  # ABBA ABBA ...: drift cancels within pairs
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=int(rate * slice_s * 4) + 16)

    class Cursor:
        """The next click of the replay, one session after another, as each system sees it."""

        def __init__(self):
            self.session, self.position, self.sid = -1, 0, ""

        def next(self) -> tuple[list[int], int, str]:
            if self.session < 0 or self.position >= len(sessions[self.session]):
                self.session, self.position, self.sid = (self.session + 1) % len(sessions), 0, uuid.uuid4().hex
            self.position += 1
            return sessions[self.session][:self.position], self.position, self.sid

    async def run() -> dict:
        cursors = {name: Cursor() for name in names}
        states: dict[str, int] = {}
        slices: list[dict] = []
        async with AsyncRecommendClient(url, timeout=5.0) as client:
            async def one(name: str, due: float, out: list, failed: list) -> None:
                items, position, sid = cursors[name].next()
                try:
                    if name == "recommend":
                        await client.recommend(items, k=k)
                    else:
                        rec = await client.click(sid, items[-1], k=k, seq=position)
                        states[rec.state] = states.get(rec.state, 0) + 1
                except Exception as exc:  # noqa: BLE001 - a failed request is counted, not fatal
                    failed.append(type(exc).__name__)
                    return
                out.append((time.perf_counter() - due) * 1000)

            async def slice_of(name: str, seconds: float) -> dict:
                loop_start, tasks, latencies, failed = time.perf_counter(), [], [], []
                due, i = loop_start, 0
                while True:
                    due += gaps[i % gaps.size]
                    i += 1
                    if due - loop_start >= seconds:
                        break
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.ensure_future(one(name, due, latencies, failed)))
                await asyncio.gather(*tasks)
                return {"system": name, "latencies": latencies, "failed": failed}

            for name in names:  # warm both paths (connections, the stub's caches) outside the measured slices
                await slice_of(name, warmup_s)
            states.clear()
            for name in order:
                slices.append(await slice_of(name, slice_s))
        return slices, states

    slices, states = asyncio.run(run())
    pooled = {name: np.concatenate([s["latencies"] for s in slices if s["system"] == name]) for name in names}
    per_slice = [{"system": s["system"], "n": len(s["latencies"]), "failed": len(s["failed"]),
                  "p50": float(np.percentile(s["latencies"], 50)), "p95": float(np.percentile(s["latencies"], 95))}
                 for s in slices]
    diffs = {"p95": [], "p50": []}
    for a, b in zip(per_slice[0::2], per_slice[1::2]):  # each pair holds one slice of each system
        stateful, stateless = (a, b) if a["system"] == "recommend_session" else (b, a)
        for q in diffs:
            diffs[q].append(stateful[q] - stateless[q])
    return {
        "rate": rate, "slice_s": slice_s, "pairs": pairs, "states": states,
        "systems": {name: {"requests": int(pooled[name].size),
                           "failed": sum(s["failed"] for s in per_slice if s["system"] == name),
                           "p50": float(np.percentile(pooled[name], 50)), "p95": float(np.percentile(pooled[name], 95)),
                           "p99": float(np.percentile(pooled[name], 99))} for name in names},
        "paired_p95_difference_ms": {"median": float(np.median(diffs["p95"])),
                                     "quartiles": [float(np.percentile(diffs["p95"], 25)), float(np.percentile(diffs["p95"], 75))]},
        "paired_p50_difference_ms": {"median": float(np.median(diffs["p50"]))},
        "slices": per_slice,
    }


STEP = "session_recommender"
STAGES = ("queue", "compute_input", "compute_infer", "compute_output")


def _stats(client, model: str) -> dict:
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"]
    return {k: (int(v.get("count", 0)), int(v.get("ns", 0))) for k, v in stats[0]["inference_stats"].items()}


def stage_breakdown(url: str, triton, sessions: list[list[int]], blocks: int, per_block: int, k: int) -> dict:
    """Mean ms per request of each stage, per system, from Triton's statistics over blocks of one
    system at a time (the step serves both ensembles, so its counters are read around each block).
    Client e2e is the median of the block's round trips; every block starts at a new session."""
    import uuid

    from sessionrec.clients import RecommendClient

    sums = {name: {"e2e": [], "ensemble": [0, 0], **{st: [0, 0] for st in STAGES}} for name in SYSTEMS}
    run = uuid.uuid4().hex
    # each system replays the same clicks in the same order; a session cut by a block boundary goes on
    # in that system's next block (its history still in Redis)
    clicks = {name: iter([(i, s, p) for i, s in enumerate(sessions) for p in range(1, len(s) + 1)]) for name in SYSTEMS}
    with RecommendClient(url) as client:
        for block in range(2 * blocks):
            name = list(SYSTEMS)[block % 2]
            before = {"ensemble": _stats(triton, name), "step": _stats(triton, STEP)}
            for _ in range(per_block):
                index, session, position = next(clicks[name])
                began = time.perf_counter()
                if name == "recommend":
                    client.recommend(session[:position], k=k)
                else:
                    client.click(f"{run}-{index}", session[position - 1], k=k, seq=position)
                sums[name]["e2e"].append((time.perf_counter() - began) * 1000)
            after = {"ensemble": _stats(triton, name), "step": _stats(triton, STEP)}
            count, ns = (a - b for a, b in zip(after["ensemble"]["success"], before["ensemble"]["success"]))
            sums[name]["ensemble"][0] += count
            sums[name]["ensemble"][1] += ns
            for stage in STAGES:
                count, ns = (a - b for a, b in zip(after["step"][stage], before["step"][stage]))
                sums[name][stage][0] += count
                sums[name][stage][1] += ns
    out = {}
    for name, row in sums.items():
        out[name] = {"client_e2e_p50": float(np.median(row["e2e"])), "client_e2e_mean": float(np.mean(row["e2e"])),
                     "requests": len(row["e2e"]), "per_block": per_block, "blocks": blocks,
                     **{f"{stage}_mean": row[stage][1] / max(row[stage][0], 1) / 1e6 for stage in ("ensemble", *STAGES)}}
        out[name]["outside_ensemble_mean"] = out[name]["client_e2e_mean"] - out[name]["ensemble_mean"]
        step = sum(out[name][f"{stage}_mean"] for stage in STAGES)
        out[name]["ensemble_outside_step_mean"] = out[name]["ensemble_mean"] - step
    return out


def fault_runs(url: str, redis, base: LoadTest, rate: float, seconds: float, down_s: float, log,
               prioritise=lambda redis: None) -> dict:
    """Redis killed during an open-loop run of recommend_session, then restarted; then Redis hung."""
    from sessionrec.clients import RecommendClient

    test = replace(base, host=url, protocol="session", arrival_rate=rate, run_time_s=seconds, warmup_s=0,
                   name="fault_kill", sla=SLA(95, 10_000, 0))
    running = start_load_test(test)
    time.sleep(seconds * 0.3)
    redis.kill()
    log(f"  redis killed at {seconds * 0.3:.0f} s")
    time.sleep(down_s)
    redis.start()
    prioritise(redis)
    restarted = time.monotonic()
    log("  redis restarted")
    recovery = None
    with RecommendClient(url) as client:  # a watcher session: when does `stored` come back?
        seq = 0
        while time.monotonic() - restarted < 30:
            seq += 1
            if client.click("recovery-watch", 1, k=5, seq=seq).state == "stored":
                recovery = time.monotonic() - restarted
                break
            time.sleep(0.05)
    result = running.wait()
    states = history_states(result)
    killed = {"requests": result.summary["requests"], "failures": result.summary["failures"], "states": states,
              "down_s": down_s, "recovery_s": recovery, "p95": result.summary["latency_ms"].get("p95"),
              "max": result.summary["latency_ms"].get("max")}

    # Hung Redis: every request while it is stopped, one at a time.
    waits, hung_states = [], {}
    with RecommendClient(url) as client:
        client.click("hang-probe", 1, k=20, seq=1)
        redis.signal(signal.SIGSTOP)
        try:
            for seq in range(2, 202):
                began = time.perf_counter()
                state = client.click("hang-probe", 1, k=20, seq=seq).state
                waits.append((time.perf_counter() - began) * 1000)
                hung_states[state] = hung_states.get(state, 0) + 1
        finally:
            redis.signal(signal.SIGCONT)
    hung = {"requests": len(waits), "states": hung_states, "p50": float(np.percentile(waits, 50)),
            "p95": float(np.percentile(waits, 95)), "max": float(max(waits))}
    return {"killed": killed, "hung": hung}


def prediction_counts(metrics_url: str) -> dict[str, float]:
    """sessionrec_history_predictions_total by outcome, summed over the stubs (after a flush: a stub
    flushes at most once a second, on a request, so two quiet seconds of probing come first)."""
    import urllib.request

    out: dict[str, float] = {}
    for line in urllib.request.urlopen(metrics_url, timeout=5).read().decode().splitlines():
        if line.startswith("sessionrec_history_predictions_total{"):
            outcome = line.split('outcome="')[1].split('"')[0]
            out[outcome] = out.get(outcome, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def markdown(results: dict) -> str:
    meta = results["meta"]
    lines = [
        "# Stateless `recommend` vs stateful `recommend_session` (guest history in Redis)", "",
        f"Command: `{meta['command']}`", "",
        f"Machine: {meta['machine']}; shared with other engineers' jobs during the run (noisy: repeat runs "
        f"differ by ~15%). Date {meta['date']}. Catalogue {meta['n_items']} items, d={meta['dim']}, "
        f"max_len={meta['max_len']}; sessions replayed: {meta['sessions']} (test split of `{meta['data']}`). "
        f"One tritonserver serves both ensembles; Redis is a local redis-server {meta['redis_version']} "
        f"({meta.get('redis_transport', 'tcp')}, scheduling: {meta['redis_scheduling']}). Load generators on the same cores.", "",
    ]
    if "speculate" in meta:
        counts = results.get("predictions") or {}
        ttl = f", session TTL {meta['history_ttl_s']:g} s" if meta.get("history_ttl_s") else ""
        lines += [f"Speculative history: **{meta['speculate']}**{ttl} (sessionrec.serving.history_cache). Events whose "
                  f"history was predicted before Redis answered: {counts.get('hit', 0):g}, not predictable (first "
                  f"clicks, sessions not heard of): {counts.get('miss', 0):g}, predicted wrong and computed again: "
                  f"{counts.get('wrong', 0):g} (the step's `sessionrec_history_predictions_total`, all phases "
                  "before faults, canaries included).", ""]
    if results.get("interleaved"):
        lines += ["## Fixed offered rate, interleaved slices (open loop, one generator)", "",
                  "Poisson arrivals from one asyncio generator (sessionrec.clients.AsyncRecommendClient); the two "
                  "systems alternate in short slices (A B B A ...), so a stall of the shared machine hits both; "
                  "the overhead is the difference of the p95s of neighbouring slices, median over the pairs.", "",
                  "| rate | slices | system | requests | failed | p50 ms | p95 ms | p99 ms |",
                  "|---:|---:|---|---:|---:|---:|---:|---:|"]
        for rate, row in results["interleaved"].items():
            for name in SYSTEMS:
                r = row["systems"][name]
                lines.append(f"| {rate} | {row['pairs']} x {row['slice_s']:g} s | {name} | {r['requests']} | {r['failed']} | "
                             f"{r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} |")
            a, b = row["systems"]["recommend"], row["systems"]["recommend_session"]
            q1, q3 = row["paired_p95_difference_ms"]["quartiles"]
            lines += ["", f"At {rate} req/s: paired p95 difference (session minus stateless, neighbouring slices) "
                      f"**median {row['paired_p95_difference_ms']['median']:+.2f} ms** (quartiles {q1:+.2f} .. {q3:+.2f}); "
                      f"paired p50 difference median {row['paired_p50_difference_ms']['median']:+.2f} ms; pooled p95 "
                      f"difference {b['p95'] - a['p95']:+.2f} ms; recommend_session states {row['states']}.", ""]
    if results.get("ladder"):
        lines += ["## Capacity ladder (closed loop, Locust)", "",
                  "| users | recommend rps | p50 | p95 | recommend_session rps | p50 | p95 |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for users, row in results["ladder"].items():
            a, b = row["recommend"], row["recommend_session"]
            lines.append(f"| {users} | {a['rps']:.0f} | {a['p50']:.2f} | {a['p95']:.2f} | {b['rps']:.0f} | {b['p50']:.2f} | {b['p95']:.2f} |")
        lines += ["", f"Throughput at p95 <= {meta['sla_ms']:g} ms (best step meeting it, no failures): " + ", ".join(
            f"{name} **{row['rps']:.0f} req/s** (users {row['users']})" if row else f"{name}: none"
            for name, row in results["best"].items()), ""]
    if results.get("rates"):
        lines += ["## Fixed offered rate (open loop, Locust, one run per system)", "",
                  "| rate | system | requests | failed | p50 ms | p95 ms | p99 ms |", "|---:|---|---:|---:|---:|---:|---:|"]
        for rate, row in results["rates"].items():
            for name in SYSTEMS:
                r = row[name]
                lines.append(f"| {rate} | {name} | {r['requests']} | {r['failures']} | {r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} |")
            lines.append(f"| {rate} | **overhead** | | | {row['recommend_session']['p50'] - row['recommend']['p50']:+.2f} | "
                         f"**{row['recommend_session']['p95'] - row['recommend']['p95']:+.2f}** | |")
        lines.append("")
    if results.get("probe"):
        probe = results["probe"]
        lines += ["## Sequential probe (one request at a time, alternating on the same clicks)", "",
                  "| system | n | p50 ms | p95 ms |", "|---|---:|---:|---:|"]
        for name in SYSTEMS:
            lines.append(f"| {name} | {probe[name]['n']} | {probe[name]['p50']:.2f} | {probe[name]['p95']:.2f} |")
        diff = probe["paired_difference_ms"]
        lines += ["", f"Paired difference (session minus stateless, same click): median {diff['median']:+.2f} ms, "
                  f"95th percentile {diff['p95_of_difference']:+.2f} ms.", ""]
    if results.get("breakdown"):
        b = results["breakdown"]
        rows = [("client round trip (mean)", "client_e2e_mean"), ("… outside the ensemble: client library, gRPC, "
                 "server front end", "outside_ensemble_mean"), ("ensemble, server side (Triton `success`)", "ensemble_mean"),
                ("… ensemble scheduler, outside the step", "ensemble_outside_step_mean"), ("step queue", "queue_mean"),
                ("step inputs (`compute_input`)", "compute_input_mean"), ("step execute (`compute_infer`)", "compute_infer_mean"),
                ("step outputs (`compute_output`)", "compute_output_mean"), ("client round trip (median)", "client_e2e_p50")]
        lines += ["## Where the stateful request's time goes (one request at a time, Triton's statistics)", "",
                  f"{b['recommend'].get('blocks', '')} blocks of {b['recommend'].get('per_block', '')} requests per system, "
                  f"alternating ({b['recommend']['requests']} each); mean ms per request.", "",
                  "| stage | recommend | recommend_session | difference |", "|---|---:|---:|---:|"]
        for label, key in rows:
            lines.append(f"| {label} | {b['recommend'][key]:.3f} | {b['recommend_session'][key]:.3f} | "
                         f"{b['recommend_session'][key] - b['recommend'][key]:+.3f} |")
        lines.append("")
    if results.get("faults"):
        kill, hung = results["faults"]["killed"], results["faults"]["hung"]
        lines += ["## Faults", "",
                  f"- Redis killed for {kill['down_s']:g} s during an open-loop run at {meta['fault_rate']:g} req/s: "
                  f"{kill['requests']} requests, **{kill['failures']} failed**, states {kill['states']}; "
                  f"p95 {kill['p95']:.2f} ms, max {kill['max']:.1f} ms; first `stored` answer "
                  f"{kill['recovery_s']:.2f} s after Redis came back." if kill["recovery_s"] is not None else
                  f"- Redis killed: no `stored` answer within 30 s of its return (states {kill['states']}).",
                  f"- Redis hung (SIGSTOP), {hung['requests']} sequential requests: states {hung['states']}; "
                  f"p50 {hung['p50']:.2f} ms, p95 {hung['p95']:.2f} ms, **max {hung['max']:.1f} ms** (reply timeout "
                  f"{meta['redis_timeout_ms']:g} ms; after a failure Redis is skipped for 1 s).", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, help="sessions: SR-GNN folder or click log (its test split is replayed)")
    parser.add_argument("--out", required=True, help="Markdown report (JSON next to it in WORK/results.json)")
    parser.add_argument("--work", default="runs/session-bench")
    parser.add_argument("--users", default="1,2,4,8,16,32,64")
    parser.add_argument("--step-seconds", type=float, default=12.0)
    parser.add_argument("--warmup-seconds", type=float, default=3.0)
    parser.add_argument("--rates", default="100")
    parser.add_argument("--rate-seconds", type=float, default=20.0)
    parser.add_argument("--rate-users", type=int, default=8)
    parser.add_argument("--probe-requests", type=int, default=600)
    parser.add_argument("--fault-rate", type=float, default=100.0)
    parser.add_argument("--fault-seconds", type=float, default=12.0)
    parser.add_argument("--down-seconds", type=float, default=3.0)
    parser.add_argument("--no-faults", action="store_true", help="same as leaving `faults` out of --phases")
    parser.add_argument("--phases", default="interleaved,probe,ladder,rates,faults",
                        help="which phases to run, comma-separated (always in this order)")
    parser.add_argument("--breakdown-blocks", type=int, default=6, help="breakdown phase: blocks of each system")
    parser.add_argument("--breakdown-requests", type=int, default=100, help="breakdown phase: requests per block")
    parser.add_argument("--slice-seconds", type=float, default=3.0,
                        help="interleaved phase: length of one slice; short, so a stall rarely covers a whole pair")
    parser.add_argument("--slice-pairs", type=int, default=20, help="interleaved phase: pairs of slices per rate")
    parser.add_argument("--redis-scheduling", choices=["fifo", "default"], default="fifo",
                        help="fifo: the local redis-server runs at SCHED_FIFO 1 (root), as if on its own host")
    parser.add_argument("--redis-transport", choices=["unix", "tcp"], default="unix",
                        help="how the server reaches the local redis-server: its unix socket (what `sessionrec "
                             "serve --redis local` uses) or TCP loopback (what a Redis on another host costs, less the network)")
    parser.add_argument("--redis-timeout-ms", type=float, default=20.0)
    parser.add_argument("--history-ttl-s", type=float, default=None,
                        help="the sessions' TTL (default the server's, 1800 s). A stub predicts first clicks once it "
                             "has listened for a whole TTL: a short one shows that steady state within a run")
    parser.add_argument("--speculate", choices=["on", "off"], default="off",
                        help="on: the step computes a known session's answer while its round trip travels "
                             "(sessionrec.serving.history_cache); off (the server's default): the round trip first")
    parser.add_argument("--sla-ms", type=float, default=70.0)
    parser.add_argument("--k", type=int, default=20)
    args = parser.parse_args(argv)

    from sessionrec.export.exporter import ExportOptions, export_version
    from sessionrec.serving.embedded import EmbeddedServer
    from sessionrec.serving.redis_local import LocalRedis

    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    repository = work / "repository"
    if not (repository / "recommend").is_dir():
        log("exporting")
        export_version(args.checkpoint, repository, ExportOptions(data=args.data), progress=False)
    replay = sessions_for(args.data, work)
    sessions = read_replay_file(replay)
    manifest = json.loads(next((repository / "recommend").glob("*/manifest.json")).read_text())
    results: dict = {"ladder": {}, "rates": {}, "best": {}, "interleaved": {}}
    phases = set(args.phases.split(",")) - ({"faults"} if args.no_faults else set())
    unknown = phases - {"interleaved", "breakdown", "probe", "ladder", "rates", "faults"}
    if unknown:
        parser.error(f"--phases: unknown {sorted(unknown)}")
    with LocalRedis() as redis:
        redis_scheduling = prioritise_redis(redis, args.redis_scheduling)
        redis_url = redis.socket_url if args.redis_transport == "unix" else redis.url
        env = {"SESSIONREC_REDIS_URL": redis_url, "SESSIONREC_REDIS_TIMEOUT_MS": f"{args.redis_timeout_ms:g}",
               "SESSIONREC_HISTORY_SPECULATE": "1" if args.speculate == "on" else "0"}
        if args.history_ttl_s:
            env["SESSIONREC_HISTORY_TTL_S"] = f"{args.history_ttl_s:g}"
        with EmbeddedServer(repository, watch_seconds=0, log_file=work / "tritonserver.log", environment=env) as server:
            base = LoadTest(host=server.grpc_url, sessions_file=replay, out_dir=work / "locust", k=args.k,
                            warmup_s=args.warmup_seconds, sla=SLA(95, args.sla_ms, 0))
            for rate in (float(r) for r in args.rates.split(",")) if "interleaved" in phases else ():
                row = interleaved_rate(server.grpc_url, sessions, rate, args.slice_seconds, args.slice_pairs, args.k)
                results["interleaved"][f"{rate:g}"] = row
                log(f"interleaved {rate:g} req/s: paired p95 difference median "
                    f"{row['paired_p95_difference_ms']['median']:+.2f} ms")
            if "breakdown" in phases:
                log("stage breakdown")
                results["breakdown"] = stage_breakdown(server.grpc_url, server.server.client(), sessions,
                                                       args.breakdown_blocks, args.breakdown_requests, args.k)
                log(f"breakdown: {json.dumps(results['breakdown'])}")
            if "probe" in phases:
                log("sequential probe")
                results["probe"] = sequential_probe(server.grpc_url, sessions, args.probe_requests, args.k)
            for users in (int(u) for u in args.users.split(",")) if "ladder" in phases else ():
                row = {}
                for name, protocol in SYSTEMS.items():
                    row[name] = load_run(replace(base, protocol=protocol, users=users, name=f"{name}_u{users}",
                                                 run_time_s=args.step_seconds + args.warmup_seconds))
                    log(f"users {users} {name}: {row[name]['rps']:.0f} rps p95 {row[name]['p95']:.2f} ms")
                results["ladder"][users] = row
            for name in SYSTEMS:
                ok = [dict(r[name], users=u) for u, r in results["ladder"].items()
                      if r[name]["failures"] == 0 and r[name]["p95"] is not None and r[name]["p95"] <= args.sla_ms]
                results["best"][name] = max(ok, key=lambda r: r["rps"]) if ok else None
            for rate in (float(r) for r in args.rates.split(",")) if "rates" in phases else ():
                row = {}
                for name, protocol in SYSTEMS.items():
                    row[name] = load_run(replace(base, protocol=protocol, users=args.rate_users, arrival_rate=rate,
                                                 name=f"{name}_r{rate:g}", run_time_s=args.rate_seconds + args.warmup_seconds))
                    log(f"rate {rate:g} {name}: p50 {row[name]['p50']:.2f} p95 {row[name]['p95']:.2f} ms")
                results["rates"][f"{rate:g}"] = row
            from sessionrec.clients import RecommendClient

            with RecommendClient(server.grpc_url) as client:  # each stub flushes its counters (1 s apart, on a request)
                for _ in range(4):
                    time.sleep(1.1)
                    client.recommend(sessions[0], k=args.k)
            results["predictions"] = prediction_counts(server.metrics_url)
            log(f"history predictions: {results['predictions']}")
            if "faults" in phases:
                log("faults")
                results["faults"] = fault_runs(server.grpc_url, redis, base, args.fault_rate, args.fault_seconds,
                                               args.down_seconds, log, lambda r: prioritise_redis(r, args.redis_scheduling))
        import redis as redis_py

        redis_version = redis_py.Redis.from_url(redis.url).info("server")["redis_version"]
    results["meta"] = {
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
        "machine": f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), {platform.platform()}",
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "data": args.data,
        "sessions": len(sessions), "n_items": manifest["serving"]["n_items"], "dim": manifest["serving"]["dim"],
        "max_len": manifest["serving"]["max_len"], "sla_ms": args.sla_ms, "fault_rate": args.fault_rate,
        "redis_timeout_ms": args.redis_timeout_ms, "redis_version": redis_version, "redis_scheduling": redis_scheduling,
        "redis_transport": args.redis_transport, "speculate": args.speculate, "history_ttl_s": args.history_ttl_s,
    }
    (work / "results.json").write_text(json.dumps(results, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(markdown(results))
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
