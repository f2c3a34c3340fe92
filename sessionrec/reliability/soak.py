"""Soak: steady open-loop traffic for minutes; errors, server memory and latency percentiles over time.

    capacity = measure_capacity(server.grpc_url, probes)            # closed loop, requests/s
    report = run_soak(SoakPlan(repository, minutes=10, rate=capacity / 2), log=print)

Memory is the resident set (VmRSS, /proc) of tritonserver plus every python-backend stub, sampled
every `sample_s`; growth compares the median of the last minute's samples with the median of the
first minute after warm-up. Latency is summarised per `window_s` window (p50/p95/p99).

Verdict: no failed and no wrong answer; memory growth under `max_growth` (5 %); every window's p99
within `p99_spread` (2x) of the median window p99 (stable percentiles).
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from sessionrec.reliability.load import Load, canary_probes
from sessionrec.reliability.procs import memory_kib


@dataclass
class SoakPlan:
    repository: Path
    minutes: float = 10.0
    rate: float = 100.0  # requests/s, open loop (about half the measured capacity)
    warmup_s: float = 60.0  # traffic before memory and latency are judged
    window_s: float = 60.0  # latency percentiles per window
    sample_s: float = 5.0  # memory samples
    max_growth: float = 0.05
    p99_spread: float = 2.0
    log_file: Path | None = None


def measure_capacity(url: str, probes, seconds: float = 10.0, concurrency: int = 8, warmup_s: float = 2.0) -> float:
    """Closed-loop throughput (requests/s) with `concurrency` callers and no think time."""
    with Load(url, probes, rate=None, concurrency=concurrency) as load:
        time.sleep(warmup_s + seconds)
    stats = load.stats(load.started + warmup_s, load.stopped)
    if stats.failed:
        raise RuntimeError(f"capacity run had {stats.failed} failed requests: {stats.failures}")
    return stats.rate


def run_soak(plan: SoakPlan, log: Callable[[str], None] = lambda s: None, capacity_seconds: float = 0.0) -> dict:
    """Start a server on `plan.repository`, optionally measure capacity first, then soak at plan.rate."""
    from sessionrec.export.repository import current_version
    from sessionrec.serving.embedded import EmbeddedServer

    repository = Path(plan.repository)
    probes = canary_probes(repository, [current_version(repository)])
    samples: list[tuple[float, dict]] = []
    capacity = None
    with EmbeddedServer(repository, watch_seconds=0, log_file=plan.log_file) as server:
        pid = server.server.pid
        if capacity_seconds > 0:
            capacity = measure_capacity(server.grpc_url, probes, seconds=capacity_seconds)
            plan.rate = round(capacity / 2, 1)
            log(f"capacity {capacity:.0f} requests/s (closed loop, 8 callers): soaking at {plan.rate:g}/s")
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                samples.append((time.monotonic(), memory_kib(pid)))
                stop.wait(plan.sample_s)

        sampler = threading.Thread(target=sample, name="sessionrec-soak-memory", daemon=True)
        duration = plan.minutes * 60
        with Load(server.grpc_url, probes, rate=plan.rate) as load:
            sampler.start()
            next_report = load.started + plan.window_s
            while time.monotonic() < load.started + duration:
                time.sleep(min(1.0, max(0.0, load.started + duration - time.monotonic())))
                if time.monotonic() >= next_report:
                    window = load.stats(next_report - plan.window_s, next_report)
                    log(f"{(next_report - load.started) / 60:5.1f} min: {window.line()}; "
                        f"RSS {samples[-1][1]['total'] / 1024:.0f} MiB")
                    next_report += plan.window_s
        stop.set()
        sampler.join(timeout=plan.sample_s + 5)
        samples.append((time.monotonic(), memory_kib(pid)))

    start, end = load.started, load.stopped
    windows = []
    t = start
    while t + plan.window_s <= end + 1e-6:
        stats = load.stats(t, t + plan.window_s)
        windows.append({"from_s": round(t - start, 1), **stats.as_dict()})
        t += plan.window_s
    judged = [w for w in windows if w["from_s"] >= plan.warmup_s] or windows[-1:]
    median_p99 = statistics.median(w["p99_ms"] for w in judged)

    after = [(ts, m["total"]) for ts, m in samples if ts >= start + plan.warmup_s]
    span = min(60.0, max(plan.sample_s * 3, (end - start - plan.warmup_s) / 3))
    first = [kib for ts, kib in after if ts < after[0][0] + span] if after else []
    last = [kib for ts, kib in after if ts > after[-1][0] - span] if after else []
    growth = (statistics.median(last) - statistics.median(first)) / statistics.median(first) if first and last else None

    total = load.stats(start, end)
    checks = {
        "no_failed_request": total.failed == 0,
        "no_wrong_answer": total.wrong == 0,
        f"memory_growth_under_{plan.max_growth:.0%}": growth is not None and growth < plan.max_growth,
        f"window_p99_within_{plan.p99_spread:g}x_median": all(w["p99_ms"] <= plan.p99_spread * median_p99 for w in judged),
    }
    return {
        "plan": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(plan).items()},
        "capacity_rps": capacity,
        "total": total.as_dict(),
        "windows": windows,
        "memory": {
            "growth": None if growth is None else round(growth, 4),
            "first_after_warmup_mib": round(statistics.median(first) / 1024, 1) if first else None,
            "last_mib": round(statistics.median(last) / 1024, 1) if last else None,
            "samples": [{"t_s": round(ts - start, 1), **m} for ts, m in samples],
        },
        "median_window_p99_ms": round(median_p99, 2),
        # Where the worst latencies came from: the generator's own full GCs (it shares the cores).
        "slowest_requests": load.slowest(10, start, end),
        "generator_full_gc": {"count": len(load.gc_pauses),
                              "max_ms": round(max((s for _, s in load.gc_pauses), default=0.0) * 1000, 2),
                              "total_ms": round(sum(s for _, s in load.gc_pauses) * 1000, 1)},
        "verdict": {"passed": all(checks.values()), **checks},
    }


def markdown(report: dict) -> str:
    lines = ["| from (s) | requests | failed | wrong | p50 ms | p95 ms | p99 ms | max ms |", "|---|---|---|---|---|---|---|---|"]
    for w in report["windows"]:
        lines.append(f"| {w['from_s']:.0f} | {w['requests']} | {w['failed']} | {w['wrong']} | {w['p50_ms']:.1f} | "
                     f"{w['p95_ms']:.1f} | {w['p99_ms']:.1f} | {w['max_ms']:.1f} |")
    m = report["memory"]
    lines.append("")
    lines.append(f"RSS tritonserver + stubs: {m['first_after_warmup_mib']} MiB after warm-up -> {m['last_mib']} MiB at the end "
                 f"(growth {100 * (m['growth'] or 0):.2f} %)")
    if report.get("slowest_requests"):
        gc_ = report["generator_full_gc"]
        lines.append("")
        lines.append(f"Load generator: {gc_['count']} full garbage collections, longest {gc_['max_ms']} ms. "
                     "Slowest requests (latency ms / generator GC ms inside it): "
                     + ", ".join(f"{r['latency_ms']:.0f}/{r['generator_gc_ms']:.0f}" for r in report["slowest_requests"]))
    return "\n".join(lines)
