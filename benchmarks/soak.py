"""Soak: steady traffic at about half the measured capacity for --minutes; no errors, flat memory,
stable latency percentiles.

    python benchmarks/soak.py --minutes 10 --rate auto     # the acceptance run (~11 min; machine quiet)
    python benchmarks/soak.py --minutes 1 --rate auto      # smoke run (~1.5 min)
    python benchmarks/soak.py --minutes 10 --rate 450 --repository runs/repository

--rate auto measures closed-loop capacity first (8 callers, 10 s) and soaks at half of it. Without
--repository a small model is trained on the bundled sample and exported (as the tests do). Memory is
the RSS of tritonserver + its python-backend stubs from /proc; latency percentiles per window
(--window-seconds, default 60; 15 for runs under 3 minutes). Prints a table per window and writes
runs/reliability/soak.json; exit status 1 when the verdict fails (sessionrec/reliability/soak.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sessionrec" / "data" / "diginetica-sample.csv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="soak duration (default 10)")
    parser.add_argument("--rate", default="auto", help="requests/s, or 'auto': half the measured capacity (default)")
    parser.add_argument("--repository", help="an exported repository (default: export a small model trained on the sample)")
    parser.add_argument("--work", default=str(ROOT / "runs" / "soak"), help="model, repository, server log")
    parser.add_argument("--warmup-seconds", type=float, help="not judged (default: 60, or a quarter of runs under 4 min)")
    parser.add_argument("--window-seconds", type=float, help="latency percentile windows (default 60; 15 under 3 min)")
    parser.add_argument("--sample-seconds", type=float, default=5.0, help="memory sampling period (default 5)")
    parser.add_argument("--capacity-seconds", type=float, default=10.0, help="closed-loop run behind --rate auto")
    args = parser.parse_args(argv)

    from sessionrec.reliability.report import write_report
    from sessionrec.reliability.sample import sample_repository, small_model
    from sessionrec.reliability.soak import SoakPlan, markdown, run_soak

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.repository:
        repository = Path(args.repository)
    else:
        repository = sample_repository(work, small_model(work / "model"))
        print(f"exported {repository} (a small model trained on the bundled sample)", flush=True)
    seconds = args.minutes * 60
    plan = SoakPlan(
        repository, minutes=args.minutes, rate=0.0 if args.rate == "auto" else float(args.rate),
        warmup_s=args.warmup_seconds if args.warmup_seconds is not None else min(60.0, seconds / 4),
        window_s=args.window_seconds or (60.0 if seconds >= 180 else 15.0),
        sample_s=args.sample_seconds, log_file=work / "tritonserver.log",
    )
    report = run_soak(plan, log=lambda line: print(line, flush=True),
                      capacity_seconds=args.capacity_seconds if args.rate == "auto" else 0.0)
    path = write_report("soak" if args.minutes >= 10 else f"soak_{args.minutes:g}min", report)
    print()
    print(markdown(report))
    print(json.dumps({"capacity_rps": report["capacity_rps"], "rate": report["plan"]["rate"],
                      "verdict": report["verdict"]}, indent=2))
    print(f"written: {path}")
    return 0 if report["verdict"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
