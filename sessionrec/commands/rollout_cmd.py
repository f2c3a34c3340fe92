"""`sessionrec rollout`: ramp the candidate on Triton's per-model metrics in Prometheus; roll back or promote."""

from __future__ import annotations

import json
from pathlib import Path


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "rollout", help="canary: ramp recommend_candidate while its errors and latency stay within bounds",
        description="Each step writes the ramp into the experiment file the clients follow, waits one interval and "
                    "compares recommend_candidate with recommend in Prometheus (Triton's nv_inference_* counters). "
                    "A bad interval sets the ramp to 0 and drops the candidate; after the last step it is promoted. "
                    "Exit 0 promoted, 3 rolled back, 4 stalled (too little traffic). Example: sessionrec rollout "
                    "--prometheus http://127.0.0.1:9090 --experiment experiment.json --repository runs/repository")
    parser.add_argument("--prometheus", required=True, help="Prometheus base URL")
    parser.add_argument("--experiment", required=True, help="experiment file the clients read (created if missing)")
    parser.add_argument("--name", help="experiment name, when the file is created")
    parser.add_argument("--salt", help="experiment salt, when the file is created (a new experiment: a new salt)")
    parser.add_argument("--repository", help="model repository: drop the candidate on rollback, promote on success")
    parser.add_argument("--steps", default="500,1000,2500,5000,10000", help="ramp per step, basis points of units")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds per evaluation interval")
    parser.add_argument("--good-intervals", type=int, default=1, help="good intervals per step")
    parser.add_argument("--max-error-rate", type=float, default=0.01)
    parser.add_argument("--max-latency-ratio", type=float, default=1.5)
    parser.add_argument("--latency-slack-ms", type=float, default=2.0)
    parser.add_argument("--max-latency-ms", type=float)
    parser.add_argument("--min-requests", type=int, default=20, help="candidate requests an interval needs for a verdict")
    parser.add_argument("--control-match", default='model="recommend"',
                        help="PromQL label matchers of control's series (two-Deployment mode: 'track=\"stable\"')")
    parser.add_argument("--candidate-match", default='model="recommend_candidate"',
                        help="... of the candidate's (two-Deployment mode: 'track=\"candidate\"')")
    parser.add_argument("--json", help="write every interval's figures here")
    parser.set_defaults(run=run)


def run(args) -> int:
    from sessionrec.clients.assignment import Experiment, save_experiment
    from sessionrec.errors import SessionrecError
    from sessionrec.experiments.rollout import Bounds, RolloutConfig, rollout

    path = Path(args.experiment)
    if not path.is_file():
        if not (args.name and args.salt):
            raise SessionrecError(f"{path}: no experiment file; pass --name and --salt to create it")
        save_experiment(Experiment(args.name, args.salt, ramp_bp=0), path)
    try:
        steps = tuple(int(s) for s in args.steps.split(","))
    except ValueError:
        raise SessionrecError(f"--steps {args.steps!r}: expected comma-separated basis points") from None
    bounds = Bounds(max_error_rate=args.max_error_rate, max_latency_ratio=args.max_latency_ratio,
                    latency_slack_ms=args.latency_slack_ms, max_latency_ms=args.max_latency_ms,
                    min_requests=args.min_requests)
    config = RolloutConfig(steps, args.interval, args.good_intervals, bounds=bounds,
                           control_match=args.control_match, candidate_match=args.candidate_match)
    result = rollout(args.prometheus, path, config, repository=args.repository, log=lambda line: print(line, flush=True))
    if args.json:
        Path(args.json).write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    return {"promoted": 0, "rolled_back": 3, "stalled": 4}[result.outcome]
