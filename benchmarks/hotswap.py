"""Hot swap per retrain under load: zero failed requests, p99 during the switch within 2x steady.

    python benchmarks/hotswap.py                       # ~2.5 min: trains two small models on the bundled sample
    python benchmarks/hotswap.py --rate 200 --steady-seconds 20
    python benchmarks/hotswap.py --driver locust         # Locust (load_tests/locustfile.py) drives the traffic
    python benchmarks/hotswap.py --checkpoint runs/a/best.pt --next-checkpoint runs/b/best.pt \
        --data /work/shared/data/diginetica --rate 100

Serves version 1 (the first checkpoint) from the embedded tritonserver, drives open-loop traffic at
--rate, exports the second checkpoint as version 2 ("the retrain") under that traffic, switches to it
(EmbeddedServer.sync, as the watcher does), then `sessionrec rollback`s and switches back; --cycles
rounds of that. Every
request is checked against the canary answers of the versions involved. Prints a table per phase and
writes runs/reliability/hotswap.json and a plot of every request's latency (WORK/hotswap.png); exit
status 1 when the verdict fails.
See sessionrec/reliability/hotswap.py for the phases and docs/RELIABILITY.md for measured figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="served first (default: a small model trained on the bundled sample)")
    parser.add_argument("--next-checkpoint", help="the retrain, exported under load (default: another small model)")
    parser.add_argument("--data", help="sessions for the export gates (default: the bundled sample)")
    parser.add_argument("--work", default=str(ROOT / "runs" / "hotswap"), help="models, repository, server log")
    parser.add_argument("--rate", type=float, default=100.0, help="open-loop requests/s (default 100)")
    parser.add_argument("--steady-seconds", type=float, default=10.0, help="reference window before the export")
    parser.add_argument("--settle-seconds", type=float, default=5.0, help="window after each switch")
    parser.add_argument("--no-rollback", action="store_true", help="stop after the switch to the new version")
    parser.add_argument("--cycles", type=int, default=3, help="export + swap + rollback rounds (default 3)")
    parser.add_argument("--export-threads", type=int, default=1,
                        help="torch threads of the export: it shares the cores with the server (default 1)")
    parser.add_argument("--server-arg", action="append", default=[], help="extra tritonserver flag (repeatable)")
    parser.add_argument("--driver", choices=("generator", "locust"), default="generator",
                        help="traffic: the canary-checking generator (default) or the Locust load test")
    parser.add_argument("--reference", choices=("local", "first"), default="local",
                        help="steady p99 each switch is held to: the quiet windows just before it (default) "
                             "or the first steady window (see sessionrec/reliability/hotswap.py)")
    parser.add_argument("--plot", help="latency-over-time PNG (default: WORK/hotswap.png)")
    parser.add_argument("--no-triton-warmup", action="store_true",
                        help="export without the fused step's model_warmup requests (to measure what they do)")
    args = parser.parse_args(argv)

    from sessionrec.export.configs import ServingConfig
    from sessionrec.reliability.hotswap import HotSwapPlan, markdown, run_hotswap
    from sessionrec.reliability.report import write_report
    from sessionrec.reliability.sample import SAMPLE, sample_repository, small_model

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    first = Path(args.checkpoint) if args.checkpoint else small_model(work / "model-a", seed=42, epochs=3)
    second = Path(args.next_checkpoint) if args.next_checkpoint else small_model(work / "model-b", seed=7, epochs=4)
    data = args.data or str(SAMPLE)
    serving = ServingConfig(triton_warmup=not args.no_triton_warmup)
    repository = sample_repository(work, first, data, serving=serving)
    print(f"version 1 exported from {first} ({time.monotonic() - began:.0f} s)", flush=True)

    plan = HotSwapPlan(repository, next_checkpoint=second, data=data, rate=args.rate, steady_s=args.steady_seconds,
                       settle_s=args.settle_seconds, rollback=not args.no_rollback, cycles=args.cycles,
                       export_threads=args.export_threads, log_file=work / "tritonserver.log",
                       server_args=tuple(args.server_arg), driver=args.driver, locust_out=work / "locust", reference=args.reference,
                       plot=Path(args.plot) if args.plot else work / "hotswap.png")
    plan.export_options = {**plan.export_options, "serving": serving}
    report = run_hotswap(plan, log=lambda line: print(line, flush=True))
    path = write_report("hotswap", report)
    print()
    print(markdown(report))
    print()
    print(json.dumps({"switches": report["switches"], "verdict": report["verdict"]}, indent=2))
    print(f"written: {path}")
    return 0 if report["verdict"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
