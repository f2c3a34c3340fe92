"""Hot swap per retrain under load: export a new version while traffic runs, switch to it, roll back.

    report = run_hotswap(HotSwapPlan(repository, next_checkpoint=ckpt, data=sample), log=print)
    report["verdict"]["passed"]

One embedded server over `repository`; open-loop traffic drives it throughout, from one of two drivers
(`driver`): "generator" (sessionrec.reliability.load: replays the canary requests of every version
involved and checks each answer against them) or "locust" (the project's Locust load test, open loop,
replaying real sessions click by click; it checks each answer's shape, not its items). Phases, each
a time window whose requests are summarised on their own:

    steady     before anything changes: the reference p99
    export     `sessionrec export` of `next_checkpoint` on the same machine (CPU-heavy, no switch yet)
    published  the new version on disk, not served yet: `sessionrec serve`'s watcher notices it
               within its period (2 s by default); here the export's backlog drains meanwhile
    swap       EmbeddedServer.sync() to the new version, plus `tail_s` for the old instances to go
    settled    the new version alone
    rollback   export.repository.rollback, then sync() back to the previous version, plus `tail_s`
    restored   the previous version alone

With `cycles` > 1 the export..restored phases repeat (numbered). Verdict: no failed and no wrong
answer in any phase; p99 of every `swap` and `rollback` window within `p99_factor` x the steady p99.
Which steady p99 (`reference`): "local" (default), the p99 of the quiet windows just before that
switch (back to the previous switch, exports left out: a swap is held to the `published` window and
the `restored`/`steady` one before its export, a rollback to its `settled` window), because this
machine's own speed drifts by up to 1.7x over minutes (docs/RELIABILITY.md); or "first", the
`steady` window at the start for every switch. The report gives both ratios either way. The export
phase is reported, not judged: on a GPU cluster the export runs on the training node, here it
shares 2 cores with the server.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from sessionrec.reliability.load import Load, canary_probes, summarize
from sessionrec.reliability.locust_load import LocustLoad
from sessionrec.reliability.procs import cpu_ms, stub_pids


@dataclass
class HotSwapPlan:
    repository: Path  # a live repository; changed in place (copy it first to keep the original)
    next_checkpoint: Path  # "the retrain": exported as the new version under load
    data: str  # sessions for the export's gates (the checkpoint's data)
    rate: float = 100.0  # requests/s, open loop
    steady_s: float = 10.0
    settle_s: float = 5.0  # settled / restored windows
    tail_s: float = 2.0  # a switch window lasts until sync() returns plus this (old instances unload)
    # Between export and switch. Without it the swap window opened on requests still queued behind
    # the export (p99 40-160 ms there) and judged the export's backlog, not the switch.
    publish_gap_s: float = 2.0
    rollback: bool = True
    cycles: int = 1  # export + swap (+ rollback) rounds; each export is a new version
    p99_factor: float = 2.0
    reference: str = "local"  # the steady p99 a switch is held to: "local" or "first" (module docstring)
    export_threads: int = 1  # torch threads of the export (it shares the cores with the server)
    export_options: dict = field(default_factory=lambda: {"quality_sessions": 500, "parity_sessions": 200})
    log_file: Path | None = None  # tritonserver log
    driver: str = "generator"  # the traffic: "generator" (canary answers checked) or "locust"
    locust_out: Path | None = None  # Locust's reports (default: <repository>/../locust)
    plot: Path | None = None  # PNG of every request's latency over time, phases shaded (None: no plot)
    server_args: tuple[str, ...] = ()  # extra tritonserver flags


def run_hotswap(plan: HotSwapPlan, log: Callable[[str], None] = lambda s: None) -> dict:
    import torch

    from sessionrec.export.exporter import ExportOptions, export_version
    from sessionrec.export.repository import current_version, rollback
    from sessionrec.serving.embedded import EmbeddedServer

    if plan.reference not in ("local", "first"):
        raise ValueError(f"reference {plan.reference!r}: 'local' or 'first'")
    repository = Path(plan.repository)
    first = current_version(repository)
    windows: dict[str, tuple[float, float]] = {}
    sync_seconds: dict[str, float] = {}
    # Python stubs each switch started, and the CPU they had used when sync() returned (start-up,
    # loading, warm-ups): the work a switch adds beside live traffic, far steadier than a p99.
    started: dict[str, dict] = {}
    switched: list[bool] = []
    with EmbeddedServer(repository, watch_seconds=0, log_file=plan.log_file,
                        extra_args=list(plan.server_args)) as server:
        # Probes answerable by the first version now; each new version's canaries join once it exists
        # (Load reads `probes` on every request, so the list may change while traffic runs).
        probes = canary_probes(repository, [first])
        with _traffic(plan, server.grpc_url, probes) as load:
            log(f"serving version {first}; {plan.rate:g} requests/s from the {plan.driver}")
            time.sleep(plan.steady_s + 1.0)
            windows["steady"] = (load.started + 1.0, load.now())

            def switch(phase: str, settled: str) -> None:
                before = stub_pids(server.server.pid)
                began = load.now()
                switched.append(server.sync())
                sync_seconds[phase] = round(load.now() - began, 3)
                new = stub_pids(server.server.pid) - before
                started[phase] = {"stubs": len(new), "cpu_ms": round(sum(cpu_ms(pid) for pid in new))}
                time.sleep(plan.tail_s)
                windows[phase] = (began, load.now())
                log(f"{phase}: {server.events[-1]} ({sync_seconds[phase]:.2f} s)")
                time.sleep(plan.settle_s)
                windows[settled] = (windows[phase][1], load.now())

            for cycle in range(1, plan.cycles + 1):
                suffix = f" {cycle}" if plan.cycles > 1 else ""
                threads = torch.get_num_threads()
                torch.set_num_threads(plan.export_threads)
                try:
                    began = load.now()
                    new = export_version(plan.next_checkpoint, repository,
                                         ExportOptions(data=plan.data, **plan.export_options), progress=False).version
                finally:
                    torch.set_num_threads(threads)
                windows["export" + suffix] = (began, load.now())
                probes[:] = canary_probes(repository, [first, new])  # either version's answer is right now
                log(f"exported version {new} in {load.now() - began:.1f} s")
                published = load.now()
                time.sleep(plan.publish_gap_s)
                windows["published" + suffix] = (published, load.now())
                switch("swap" + suffix, "settled" + suffix)
                if plan.rollback:
                    rollback(repository)
                    switch("rollback" + suffix, "restored" + suffix)
        server_events = list(server.events)
        final_version = server.version

    phases = {name: load.stats(*window) for name, window in windows.items()}
    total = load.stats(load.started, load.stopped)
    steady_p99 = phases["steady"].p99_ms
    judged = [p for p in phases if p.startswith(("swap", "rollback"))]
    local = {p: _local_reference(load, windows, p) for p in judged}
    reference = {p: (local[p] if plan.reference == "local" else steady_p99) for p in judged}
    ratio = {p: phases[p].p99_ms / reference[p] for p in judged}
    # How many requests of each judged window were slower than its bound: p99 of a 2 s window is its
    # ~3rd-5th slowest request, so this count says how far from passing a switch was.
    slow = {p: sum(r.code is None and r.latency_s * 1000 > plan.p99_factor * reference[p] for r in load.window(*windows[p]))
            for p in judged}
    worst = max(judged, key=lambda p: ratio[p])
    checks = {
        "no_failed_request": total.failed == 0,
        "no_wrong_answer": total.wrong == 0,
        "every_switch_done": all(switched),
        f"switch_p99_within_{plan.p99_factor:g}x_steady": ratio[worst] <= plan.p99_factor,
    }
    if plan.rollback:
        checks["rolled_back"] = final_version == first
    in_switches = [phases[p] for p in judged]
    extra = {}
    if plan.plot is not None:
        from sessionrec.reliability.plot import plot_hotswap

        title = (f"hot swap: {plan.cycles} x (export, switch, rollback) at {plan.rate:g} requests/s from the "
                 f"{plan.driver}; {total.requests:,} requests, {total.failed} failed")
        extra["plot"] = str(plot_hotswap(load.records, windows, load.started, steady_p99, plan.p99_factor,
                                         {p: reference[p] for p in judged}, plan.plot, title=title))
    if isinstance(load, LocustLoad):
        extra["locust"] = {"generator_cpu_s": round(load.result.generator_cpu_s, 2),
                           "files": {k: str(v) for k, v in load.result.files.items()}}
    return {
        "plan": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(plan).items()},
        "phases": {name: {**stats.as_dict(), **({
            "reference_p99_ms": round(reference[name], 3), "ratio": round(ratio[name], 3), "over_bound": slow[name],
            "local_reference_p99_ms": round(local[name], 3), "ratio_vs_first_steady": round(stats.p99_ms / steady_p99, 3),
        } if name in judged else {})} for name, stats in phases.items()},
        "reference": plan.reference,
        "total": total.as_dict(),
        "switches": {"count": len(judged), "requests": sum(p.requests for p in in_switches),
                     "failed": sum(p.failed for p in in_switches), "worst_ratio_phase": worst,
                     "worst_ratio": round(ratio[worst], 2), "worst_p99_ms": round(phases[worst].p99_ms, 1),
                     "worst_ratio_vs_first_steady": round(max(phases[p].p99_ms for p in judged) / steady_p99, 2),
                     "worst_ratio_vs_local": round(max(phases[p].p99_ms / local[p] for p in judged), 2),
                     "steady_p99_ms": round(steady_p99, 1)},
        "sync_seconds": sync_seconds,
        "stubs_started": started,
        "server_events": server_events,
        "verdict": {"passed": all(checks.values()), **checks},
        **extra,
    }


def _local_reference(load, windows: dict[str, tuple[float, float]], phase: str) -> float:
    """p99 of the quiet windows just before `phase`: back to the previous judged window, exports left out."""
    names = list(windows)
    quiet = []
    for name in reversed(names[: names.index(phase)]):
        if name.startswith(("swap", "rollback")):
            break
        if not name.startswith("export"):
            quiet += load.window(*windows[name])
    return summarize(quiet, 1.0).p99_ms


def _traffic(plan: HotSwapPlan, url: str, probes: list) -> Load | LocustLoad:
    if plan.driver == "generator":
        return Load(url, probes, rate=plan.rate)
    if plan.driver == "locust":
        from sessionrec.load_tests.runner import sessions_for

        out = Path(plan.locust_out or Path(plan.repository).parent / "locust")
        return LocustLoad(url, sessions_for(plan.data, out), out_dir=out, rate=plan.rate)
    raise ValueError(f"unknown traffic driver {plan.driver!r}: 'generator' or 'locust'")


def markdown(report: dict) -> str:
    """The phases as a table, for docs/RELIABILITY.md."""
    started = report.get("stubs_started", {})
    lines = ["| phase | seconds | requests | failed | wrong | p50 ms | p95 ms | p99 ms | max ms | steady p99 held to | "
             "ratio | over 2x | stubs started (CPU ms) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, p in report["phases"].items():
        stubs = f"{started[name]['stubs']} ({started[name]['cpu_ms']})" if name in started else ""
        judged = (f"{p['reference_p99_ms']:.1f} | {p['ratio']:.2f}x | {p['over_bound']}" if "ratio" in p else " | | ")
        lines.append(f"| {name} | {p['seconds']:.1f} | {p['requests']} | {p['failed']} | {p['wrong']} | "
                     f"{p['p50_ms']:.1f} | {p['p95_ms']:.1f} | {p['p99_ms']:.1f} | {p['max_ms']:.1f} | {judged} | {stubs} |")
    t = report["total"]
    lines.append(f"| **all** | {t['seconds']:.1f} | {t['requests']} | {t['failed']} | {t['wrong']} | "
                 f"{t['p50_ms']:.1f} | {t['p95_ms']:.1f} | {t['p99_ms']:.1f} | {t['max_ms']:.1f} | | | | |")
    return "\n".join(lines)
