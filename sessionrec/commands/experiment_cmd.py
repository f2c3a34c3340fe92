"""`sessionrec experiment`: plan (sample size), read out (analyze) and check the statistics (simulate)."""

from __future__ import annotations

import json

from sessionrec.errors import SessionrecError


def _split(text: str) -> dict[str, float]:
    try:
        pairs = [part.split("=") for part in text.split(",") if part.strip()]
        split = {name.strip(): float(value) for name, value in pairs}
    except ValueError:
        raise SessionrecError(f"--split {text!r}: expected variant=share pairs, e.g. control=50,candidate=50") from None
    if len(split) < 2 or any(v <= 0 for v in split.values()):
        raise SessionrecError(f"--split {text!r}: needs two or more variants with positive shares")
    return split


def add_parser(sub) -> None:
    parser = sub.add_parser("experiment", help="A/B readout: sample size, SRM gate, z-test, delta method, mSPRT",
                            description="Plan and read out experiments between model versions (docs/EXPERIMENTS.md). "
                                        "Example: sessionrec experiment analyze events.jsonl --experiment ranker-v8 --out readout")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    size = actions.add_parser("sample-size", help="units per arm for a conversion test",
                              description="Units per arm to detect a relative lift in conversion (two-sided). "
                                          "Example: sessionrec experiment sample-size --baseline 0.05 --mde 0.10")
    size.add_argument("--baseline", type=float, required=True, help="control conversion rate, e.g. 0.05")
    size.add_argument("--mde", type=float, required=True, help="smallest relative lift worth detecting, e.g. 0.10")
    size.add_argument("--alpha", type=float, default=0.05, help="two-sided false-positive rate")
    size.add_argument("--power", type=float, default=0.8, help="chance of detecting the MDE when it is real")
    size.add_argument("--daily-units", type=int, help="units entering per day, all arms: also print the days needed")
    size.set_defaults(run=run_sample_size)

    analyze = actions.add_parser(
        "analyze", help="read an experiment out of exposure and interaction events",
        description="SRM gate first; then conversion (two-proportion z-test), CTR per guest (delta method) and "
                    "the mSPRT over daily looks. Writes report.json, report.md and readout.png. Exit 3 on a "
                    "sample-ratio mismatch. Example: sessionrec experiment analyze events.jsonl "
                    "--experiment ranker-v8 --out runs/ranker-v8-readout")
    analyze.add_argument("events", nargs="+", help="JSON-lines event files (sessionrec ingest --events-out)")
    analyze.add_argument("--experiment", required=True, help="experiment name in the exposure events")
    analyze.add_argument("--split", default="control=50,candidate=50", help="planned shares inside the experiment")
    analyze.add_argument("--control", default="control")
    analyze.add_argument("--treatment", default="candidate")
    analyze.add_argument("--alpha", type=float, default=0.05)
    analyze.add_argument("--tau", type=float, help="mSPRT mixing scale, absolute; default 10 %% of control conversion")
    analyze.add_argument("--out", required=True, help="folder for report.json, report.md, readout.png")
    analyze.set_defaults(run=run_analyze)

    candidate = actions.add_parser(
        "candidate", help="pin, promote or drop the candidate version (ensemble recommend_candidate)",
        description="Serve version M as recommend_candidate beside the live version (--pin M), make it the live "
                    "version (--promote) or end the experiment without it (--drop). A running `sessionrec serve` "
                    "follows. Example: sessionrec experiment candidate --repository runs/repository --promote")
    candidate.add_argument("--repository", required=True)
    what = candidate.add_mutually_exclusive_group(required=True)
    what.add_argument("--pin", type=int, metavar="M", help="serve version M as the candidate")
    what.add_argument("--promote", action="store_true", help="the candidate becomes the live version")
    what.add_argument("--drop", action="store_true", help="end the experiment; the candidate's folders are retired")
    candidate.set_defaults(run=run_candidate)

    simulate = actions.add_parser("simulate", help="false-positive rates and power of the readout, simulated",
                                  description="A/A and A/B simulations (vectorised; seconds). "
                                              "Example: sessionrec experiment simulate --runs 4000")
    simulate.add_argument("--runs", type=int, default=4000)
    simulate.add_argument("--json", help="also write the figures here")
    simulate.set_defaults(run=run_simulate)


def run_sample_size(args) -> int:
    from sessionrec.experiments.stats import sample_size_two_proportions

    try:
        n = sample_size_two_proportions(args.baseline, args.mde, args.alpha, args.power)
    except ValueError as exc:
        raise SessionrecError(str(exc)) from None
    print(f"{n} units per arm ({2 * n} for control + candidate) to detect {args.baseline:g} -> "
          f"{args.baseline * (1 + args.mde):.4g} at alpha {args.alpha:g}, power {args.power:g}")
    if args.daily_units:
        print(f"{-(-2 * n // args.daily_units)} days at {args.daily_units} units per day")
    return 0


def run_analyze(args) -> int:
    from sessionrec.experiments.readout import ReadoutConfig, analyze, read_events
    from sessionrec.experiments.report import write_report

    config = ReadoutConfig(args.experiment, _split(args.split), args.control, args.treatment, args.alpha, tau=args.tau)
    report = analyze(read_events(args.events), config)
    paths = write_report(report, args.out)
    print(report["verdict"])
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 3 if report["srm"]["mismatch"] else 0


def run_candidate(args) -> int:
    from sessionrec.export.candidate import drop_candidate, pin_candidate, promote_candidate

    if args.pin is not None:
        plan = pin_candidate(args.repository, args.pin)
        print(json.dumps({"control": plan.control, "candidate": plan.candidate, "specific_steps": plan.specific_steps}))
    elif args.promote:
        print(json.dumps({"promoted": promote_candidate(args.repository)}))
    else:
        print(json.dumps({"dropped": drop_candidate(args.repository)}))
    return 0


def run_simulate(args) -> int:
    from sessionrec.experiments.simulate import aa_error_rates, ab_power, ctr_aa_error_rates

    aa = aa_error_rates(runs=args.runs)
    power = ab_power(runs=args.runs)
    ctr = ctr_aa_error_rates(runs=max(args.runs // 4, 100))
    print("| simulation | what | rate | ± 1 SE | runs |\n|---|---|---|---|---|")
    for name, rate in aa.items():
        print(f"| A/A, 14 daily looks, 500 units/arm/day, conversion 5 % | false positives, {name} | "
              f"{rate.rate:.4f} | {rate.se:.4f} | {rate.runs} |")
    for name in ("fixed_horizon", "msprt_same_units"):
        rate = power[name]
        print(f"| A/B, 5 % -> 5.5 %, {power['units_per_arm']} units/arm (planned power 0.8) | detected, {name} | "
              f"{rate.rate:.4f} | {rate.se:.4f} | {rate.runs} |")
    for name, rate in ctr.items():
        print(f"| A/A per-guest CTR, guests differ (Beta c=2) | false positives, {name} | "
              f"{rate.rate:.4f} | {rate.se:.4f} | {rate.runs} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"aa": {k: v.as_dict() for k, v in aa.items()},
                       "ab": {k: (v.as_dict() if hasattr(v, "as_dict") else v) for k, v in power.items()},
                       "ctr": {k: v.as_dict() for k, v in ctr.items()}}, handle, indent=2)
    return 0
