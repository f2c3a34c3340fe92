"""Large catalogues end to end: synthetic N-item model -> `sessionrec export` -> FAISS kinds -> tritonserver.

    python benchmarks/large_catalogue.py --checkpoint runs/ablation/base/best.pt \
        --data /work/shared/data/diginetica --items 1000000 --work /tmp/lc-1m --stages build,index
    python benchmarks/large_catalogue.py ... --items 1000000 --work /tmp/lc-1m --stages serve,swap
    python benchmarks/large_catalogue.py ... --items 10000000 --work /tmp/lc-10m --stages synth,index \
        --kinds ivfsq@hnsw --table-mmap --nlist 16384 # 10M: streamed table, HNSW coarse quantizer (no export)

Stages (each adds its results to WORK/results.json; --out writes all of them as Markdown):

- synth: `sessionrec synthesize-catalogue` (sessionrec.synthetic) of the trained checkpoint to --items.
- build: synth, then `sessionrec export` of it as a subprocess under /usr/bin/time: wall time and
  peak RSS of the whole export (ONNX + parity + precision variants + FAISS + verification).
- index: FAISS kinds (--kinds) over the synthetic table, each tuned to recall@20 >= 0.95 on 500 real
  session vectors (the export's tune set) and measured on *other* real test prefixes: recall@20 vs
  exact search, HR@20 of the index against HR@20 of exact search on the same prefixes (the loss in
  points), build seconds, bytes, batch-1 query p50.
- latency: batch-1 query p50/p95 (one faiss thread, as served) of the indexes the index stage saved
  (WORK/index-<kind>.faiss), at each target's tuned knob; short, for benchlock.
- serve: the exported repository in the embedded tritonserver: start-up seconds (process start to
  ready, canaries replayed), resident memory of the python stubs, one request at a time, open loop
  at --rates, a closed-loop ladder (--users) for throughput at p95 <= 70 ms.
- swap: sessionrec.reliability.hotswap on that repository: a second synthetic model (another seed)
  exported as the next version under open-loop traffic (--swap-rate), switched to; failed requests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def _timed(command: list[str], log: Path) -> dict:
    """Run under /usr/bin/time -v: wall seconds, peak RSS (GiB), exit code."""
    began = time.monotonic()
    with open(log, "w") as out:
        code = subprocess.call(["/usr/bin/time", "-v", *command], stdout=out, stderr=subprocess.STDOUT)
    text = log.read_text()
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if code != 0:
        raise RuntimeError(f"{' '.join(command[:3])} failed ({code}); see {log}:\n{text[-2000:]}")
    return {"wall_s": round(time.monotonic() - began, 1), "peak_rss_gib": round(int(peak.group(1)) / 2**20, 2) if peak else None}


def synth(args, work: Path, seed: int = 0) -> tuple[Path, dict]:
    out = work / f"synthetic-{args.items}-seed{seed}.pt"
    if out.is_file():
        return out, json.loads((out.with_suffix(".json")).read_text())
    _log(f"synthesize {args.items} items (seed {seed})")
    measured = _timed([sys.executable, "-m", "sessionrec.cli", "synthesize-catalogue", args.checkpoint, "--items",
                       str(args.items), "--out", str(out), "--seed", str(seed)], work / f"synth-{seed}.log")
    text = (work / f"synth-{seed}.log").read_text()
    report = json.loads(text[text.index("{"): text.rindex("}") + 1].split("\n\tCommand")[0])
    report.update(measured)
    out.with_suffix(".json").write_text(json.dumps(report))
    return out, report


def stage_build(args, work: Path) -> dict:
    checkpoint, synthetic = synth(args, work)
    repository = work / "repository"
    _log(f"sessionrec export -> {repository}")
    measured = _timed([sys.executable, "-m", "sessionrec.cli", "export", str(checkpoint), "--repository", str(repository),
                       "--data", args.data, "--quality-sessions", str(args.quality_sessions), "--quiet",
                       "--index", args.export_index, "--target-recall", str(args.export_target_recall),
                       *(["--fused-instances", str(args.export_fused_instances)] if args.export_fused_instances else [])],
                      work / "export.log")
    from sessionrec.export.repository import current_version
    from sessionrec.serving.artifacts import read_manifest

    version = current_version(repository)
    manifest = read_manifest(repository / "recommend" / str(version))
    sizes = {p.name: p.stat().st_size for folder in ("session_encoder", "retrieval")
             for p in (repository / folder / str(version)).iterdir() if p.is_file() and p.stat().st_size > 1 << 20}
    return {"synthetic": synthetic, "export": measured, "version": version, "index": manifest["index"],
            "parity": manifest["parity"], "pipeline_check": manifest["pipeline_check"],
            "encoder_external_data": manifest["serving"].get("encoder_external_data"),
            "fp32_quality": manifest["precision_variants"]["fp32"], "artifact_bytes": sizes}


def _real_vectors(args):
    """Session vectors of real test prefixes: the export's tune set (first 500 sessions) and a held-out set.

    From the real checkpoint: the encoder only gathers the clicked (real) items' rows, each normalised
    on its own, so a synthetic catalogue's session vectors are exactly these."""
    from sessionrec.data import load_dataset, prefixes
    from sessionrec.export.exporter import _test_sessions, spec_from_checkpoint

    spec, _ = spec_from_checkpoint(args.checkpoint)
    sessions = _test_sessions(args.data, load_dataset(args.data), spec.padded_raw_ids())
    tune = spec.encode([s[:-1] for s in sessions[:500]])
    held_x, held_y = prefixes(sessions[500:])
    pick = np.random.default_rng(1).choice(len(held_x), size=min(args.eval_prefixes, len(held_x)), replace=False)
    vectors = np.concatenate([spec.encode([held_x[i] for i in pick[j:j + 500]]) for j in range(0, len(pick), 500)])
    return tune, vectors, np.asarray(held_y)[pick]


def _synthetic_table(args, work: Path) -> np.ndarray:
    """The synthetic catalogue's scoring table (normalised, as the model serves it), generated with the
    seed the synthetic checkpoint uses: same rows, without a 10M-item checkpoint.

    With --table-mmap the rows are streamed into WORK/table-<N>.npy (sessionrec.synthetic.write_table)
    and used memory-mapped: the 10M table is 4 GB on disk, not in this process's heap."""
    from sessionrec.checkpoint import load_checkpoint
    from sessionrec.synthetic import extend_table, write_table

    if args.table_mmap:
        path = work / f"table-{args.items}.npy"
        if path.is_file():
            return np.load(path, mmap_mode="r", allow_pickle=False)
        began = time.monotonic()
        table, _ = write_table(args.checkpoint, path, args.items)
        _log(f"streamed table -> {path} in {time.monotonic() - began:.1f} s")
        return table
    ckpt = load_checkpoint(args.checkpoint)
    weight = ckpt.state_dict["embedding.weight"].numpy()
    table, _, _ = extend_table(weight[1:], ckpt.item_counts[1:], args.items, seed=0)
    for start in range(0, len(table), 1 << 18):  # F.normalize in place, chunk by chunk
        rows = table[start : start + (1 << 18)]
        rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return table


def _peak_rss_gib() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def _hr20(found_positions: np.ndarray, targets: np.ndarray) -> float:
    """HR@20 in points: the target model id (1..N) among the top 20 positions (+1)."""
    return float(100 * ((found_positions + 1) == targets[:, None]).any(axis=1).mean())


def stage_index(args, work: Path) -> dict:
    import faiss

    from sessionrec.export.faiss_index import (IndexSpec, build_index, exact_positions, query_latency_ms, recall_at_k,
                                               served_query_ms_p50,
                                               retune)

    tune, vectors, targets = _real_vectors(args)
    _log(f"synthetic table of {args.items} items")
    began = time.monotonic()
    table = _synthetic_table(args, work)
    synthetic = {"n_items": args.items, "seed": 0, "generated_in_memory": not args.table_mmap,
                 "memory_mapped": bool(args.table_mmap), "seconds": round(time.monotonic() - began, 1),
                 "peak_rss_gib": _peak_rss_gib()}
    del_rss = psutil.Process().memory_info().rss
    _log(f"exact top-20 of {len(vectors)} held-out prefixes over {len(table)} items")
    t0 = time.perf_counter()
    cached = work / f"exact-{args.items}-{len(vectors)}.npz"  # minutes at 10M: kept for the next run of the stage
    if cached.is_file():
        saved = np.load(cached, allow_pickle=False)
        exact, tune_exact = saved["held_out"], saved["tune"]
    else:
        exact, tune_exact = exact_positions(table, vectors, 20), exact_positions(table, tune, 20)
        np.savez(cached, held_out=exact, tune=tune_exact)
    rows = {"exact": {"HR@20": _hr20(exact, targets), "seconds_all_prefixes": round(time.perf_counter() - t0, 1),
                      "cached": cached.name}}
    rows["exact"]["index_bytes"] = int(table.nbytes)
    if not args.table_mmap:  # a flat index is a second copy of the table: not at 10M
        flat = faiss.IndexFlatIP(table.shape[1])
        flat.add(table)
        rows["exact"]["query_ms_p50"] = round(float(np.median(query_latency_ms(flat, vectors[:50], max_calls=20))), 2)
        del flat
    faiss.omp_set_num_threads(2)
    for kind in args.kinds.split(","):
        # kind[+opq][+refine][@hnsw]: '+opq' an OPQ rotation (ivfpq), '+refine' exact re-rank of
        # --refine x k candidates, '@hnsw' an HNSW coarse quantizer (IVF kinds)
        name, _, coarse = kind.partition("@")
        base, *extras = name.split("+")
        spec = IndexSpec(kind=base, opq="opq" in extras, refine=args.refine if "refine" in extras else 0, nlist=args.nlist,
                         coarse=coarse or "flat", hnsw_m=args.hnsw_m, ef_construction=args.ef_construction,
                         train_points_per_list=args.train_per_list, kmeans_iterations=args.kmeans_iterations)
        _log(f"faiss {kind}: build + tune")
        index, report = build_index(table, spec, tune_queries=tune, target_recall=0.95, progress=True)
        rows[kind] = {**report.to_dict(), "rss_gib_after_build": round(psutil.Process().memory_info().rss / 2**30, 2),
                      "peak_rss_gib_so_far": _peak_rss_gib(), "at_target": {}}
        saved = work / f"index-{kind.replace('+', '_').replace('@', '_')}.faiss"
        faiss.write_index(index, str(saved))  # for the short latency stage (benchlock) to load
        rows[kind]["file"] = str(saved)
        for target in [float(t) for t in args.targets.split(",")]:
            value, tuned = retune(index, table, tune, target, exact=tune_exact)
            _, found = index.search(vectors, 20)
            row = {"knob": value, "tune_recall": round(tuned, 4),  # nprobe (IVF kinds) or efSearch (hnsw)
                   "held_out_recall_at_20": round(recall_at_k(index, table, vectors, 20, exact), 4),
                   "HR@20": _hr20(found, targets),
                   "query_ms_p50": served_query_ms_p50(index, vectors[:300])}  # one thread, as served
            row["HR@20_loss_points"] = round(rows["exact"]["HR@20"] - row["HR@20"], 3)
            rows[kind]["at_target"][f"{target:g}"] = row
            _log(f"  {kind} @ {target:g}: {json.dumps(row)}")
            _save_partial(work, "index", {"kinds": rows, "partial": True})
        _log(f"  {kind}: build {report.build_seconds} s, {report.index_bytes / 2**20:.0f} MiB, params {report.params}")
        del index
    return {"synthetic": synthetic, "prefixes": int(len(vectors)), "table_gib": round(table.nbytes / 2**30, 2),
            "process_rss_gib_before_indexes": round(del_rss / 2**30, 2), "kinds": rows}


def stage_latency(args, work: Path) -> dict:
    """Batch-1 query latency of the indexes the index stage saved, at each tuned knob, one faiss thread
    (as served: sessionrec.serving.artifacts sets one). Short: run it under benchlock, alone."""
    import faiss

    from sessionrec.export.faiss_index import _set_search_knob, load_index, query_latency_ms

    results = json.loads((work / "results.json").read_text())
    kinds = results.get("index", results.get("index_partial", {})).get("kinds", {})
    _, vectors, _ = _real_vectors(args)
    faiss.omp_set_num_threads(1)
    out = {}
    for kind, row in kinds.items():
        if kind == "exact" or "file" not in row:
            continue
        index = load_index(row["file"])
        for target, at in row["at_target"].items():
            _set_search_knob(index, at["knob"])
            times = query_latency_ms(index, vectors, max_calls=args.latency_calls, budget_s=20.0)
            out[f"{kind}@{target}"] = {"knob": at["knob"], "calls": len(times),
                                       "p50_ms": round(float(np.percentile(times, 50)), 3),
                                       "p95_ms": round(float(np.percentile(times, 95)), 3),
                                       "held_out_recall_at_20": at["held_out_recall_at_20"],
                                       "HR@20_loss_points": at["HR@20_loss_points"]}
            _log(f"{kind}@{target}: {out[f'{kind}@{target}']}")
        del index
    return {"threads": 1, "rows": out}


def _save_partial(work: Path, stage: str, value: dict) -> None:
    """A long stage's results so far, in results.json under '<stage>_partial' (replaced when it ends)."""
    path = work / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results[f"{stage}_partial"] = value
    path.write_text(json.dumps(results, indent=2, default=str))


def _stub_rss_gib(pid: int) -> dict:
    out = {}
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "stub" in child.name() or "stub" in " ".join(child.cmdline()[:1]):
                out[child.pid] = child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return {"stubs": len(out), "total_gib": round(sum(out.values()) / 2**30, 2),
            "largest_gib": round(max(out.values(), default=0) / 2**30, 2),
            "server_gib": round(psutil.Process(pid).memory_info().rss / 2**30, 2)}


def stage_serve(args, work: Path) -> dict:
    from serving_bench import best_under, measure, sequential_probe, triton_system

    from sessionrec.load_tests.runner import LoadTest, sessions_for
    from sessionrec.load_tests.sessions import read_replay_file
    from sessionrec.load_tests.sla import SLA

    repository = work / "repository"
    sessions_file = sessions_for(args.data, work)
    sessions = read_replay_file(sessions_file)
    sla = SLA(target_ms=70.0, percentile=95.0)
    base = LoadTest(host="", sessions_file=sessions_file, out_dir=work / "locust", sla=sla)
    (work / "locust").mkdir(exist_ok=True)
    _log("tritonserver start")
    began = time.monotonic()
    with triton_system("sessionrec", repository, work / "tritonserver.log") as system:
        startup = time.monotonic() - began
        memory = _stub_rss_gib(system.pids[0])
        _log(f"ready in {startup:.1f} s; memory {memory}")
        probe = sequential_probe(system, sessions, 20, args.probe_requests)
        _log(f"one at a time: {probe}")
        rates = {}
        for rate in [float(r) for r in args.rates.split(",")]:
            test = replace(base, host=system.host, arrival_rate=rate, users=8, run_time_s=args.rate_seconds,
                           warmup_s=3.0, name=f"rate{rate:g}")
            rates[f"{rate:g}"] = measure(system, test)
            _log(f"{rate:g} req/s: {rates[f'{rate:g}']['latency_ms']} fail {rates[f'{rate:g}']['failures']}")
        ladder = []
        for users in [int(u) for u in args.users.split(",")]:
            test = replace(base, host=system.host, users=users, run_time_s=args.step_seconds, warmup_s=3.0,
                           name=f"users{users}")
            ladder.append(measure(system, test))
            _log(f"{users} users: {ladder[-1]['throughput_rps']:.1f} req/s p95 {ladder[-1]['latency_ms'].get('p95')}")
        memory_after = _stub_rss_gib(system.pids[0])
    best = best_under(ladder, sla)
    return {"startup_s": round(startup, 1), "memory_at_start": memory, "memory_after_load": memory_after,
            "sequential": probe, "rates": rates, "ladder": ladder,
            "throughput_at_p95_70ms": best["throughput_rps"] if best else None, "best_users": best["users"] if best else None}


def stage_swap(args, work: Path) -> dict:
    from sessionrec.reliability.hotswap import HotSwapPlan, run_hotswap

    second, _ = synth(args, work, seed=1)
    plan = HotSwapPlan(work / "repository", next_checkpoint=second, data=args.data, rate=args.swap_rate,
                       steady_s=8.0, settle_s=5.0, rollback=False, cycles=1, log_file=work / "tritonserver-swap.log",
                       plot=work / "hotswap.png")
    plan.export_options = {**plan.export_options, "quality_sessions": args.quality_sessions}
    report = run_hotswap(plan, log=lambda line: _log(line))
    return {"verdict": report["verdict"], "switches": report["switches"],
            "phases": {name: {k: v for k, v in phase.items() if k in ("seconds", "requests", "failed", "wrong", "p50_ms",
                                                                        "p95_ms", "p99_ms", "max_ms")}
                       for name, phase in report["phases"].items()}}


STAGES = {"synth": lambda a, w: {"synthetic": synth(a, w)[1]}, "build": stage_build, "index": stage_index,
          "latency": stage_latency, "serve": stage_serve, "swap": stage_swap}


def _machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores ({model}), {psutil.virtual_memory().total / 2**30:.0f} GiB, shared with other engineers"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a trained checkpoint (the real encoder and items)")
    parser.add_argument("--data", required=True, help="its data (real test sessions for every gate and measurement)")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--work", required=True, help="synthetic checkpoints, repository, logs, results.json")
    parser.add_argument("--stages", default="build,index,serve,swap", help=f"comma-separated, of {','.join(STAGES)}")
    parser.add_argument("--kinds", default="ivf,ivfsq,ivfpq,ivfpq+opq", help="FAISS kinds for the index stage")
    parser.add_argument("--nlist", type=int, help="index stage: IVF lists (default: the export's 4*sqrt(N))")
    parser.add_argument("--targets", default="0.95,0.99", help="index stage: recall@20 targets each kind is tuned to")
    parser.add_argument("--table-mmap", action="store_true",
                        help="index stage: stream the table into WORK/table-N.npy and use it memory-mapped (10M)")
    parser.add_argument("--hnsw-m", type=int, default=32, help="index stage: HNSW links per node")
    parser.add_argument("--ef-construction", type=int, default=40, help="index stage: HNSW efConstruction")
    parser.add_argument("--train-per-list", type=int, default=64, help="index stage: IVF k-means points per list")
    parser.add_argument("--kmeans-iterations", type=int, default=10, help="index stage: IVF k-means iterations")
    parser.add_argument("--refine", type=int, default=8, help="index stage: '+refine' kinds re-rank refine x k candidates")
    parser.add_argument("--latency-calls", type=int, default=1000, help="latency stage: batch-1 calls per row")
    parser.add_argument("--export-index", default="auto", help="build stage: `sessionrec export --index`")
    parser.add_argument("--export-target-recall", type=float, default=0.95,
                        help="build stage: `sessionrec export --target-recall`")
    parser.add_argument("--export-fused-instances", type=int, default=0,
                        help="build stage: `sessionrec export --fused-instances` (0: the export's rule)")
    parser.add_argument("--quality-sessions", type=int, default=500, help="export: prefixes per precision variant")
    parser.add_argument("--eval-prefixes", type=int, default=3000, help="index stage: held-out real test prefixes")
    parser.add_argument("--rates", default="20,100")
    parser.add_argument("--rate-seconds", type=float, default=15.0)
    parser.add_argument("--users", default="1,4,8,16,32")
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--probe-requests", type=int, default=300)
    parser.add_argument("--swap-rate", type=float, default=20.0)
    parser.add_argument("--out", help="Markdown of WORK/results.json")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results.setdefault("runs", []).append({"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                                           "machine": _machine(), "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    for stage in [s for s in args.stages.split(",") if s]:
        began = time.monotonic()
        results[stage] = STAGES[stage](args, work)
        results[stage]["stage_seconds"] = round(time.monotonic() - began, 1)
        path.write_text(json.dumps(results, indent=2, default=str))
        _log(f"stage {stage} done in {results[stage]['stage_seconds']} s -> {path}")
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=2, default=str)[:6000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
