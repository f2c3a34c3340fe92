"""Canary rollout: ramp the candidate while Triton's own per-model metrics stay within bounds.

    result = rollout("http://prometheus:9090", "experiment.json", RolloutConfig(interval_s=60),
                     repository="runs/repository")
    result.outcome            # "promoted" | "rolled_back" | "stalled"

Each step writes the experiment's ramp (clients/assignment.py ExperimentFile: every client re-reads it),
waits one interval, then reads from Prometheus, per ensemble (`model="recommend"` is control,
`model="recommend_candidate"` the candidate; both in the same pods, so both see the same hardware):

    requests  increase(nv_inference_request_success{M}[I]) + increase(nv_inference_request_failure{M}[I])
    errors    increase(nv_inference_request_failure{M}[I]) / requests
    latency   increase(nv_inference_request_duration_us{M}[I]) / requests   (mean, microseconds)

where M picks a variant's series: `model="recommend"` / `model="recommend_candidate"` in-pod (the
default), or `track="stable"` / `track="candidate"` in the chart's two-Deployment mode.

The interval is judged *bad* when the candidate's error rate is above `max_error_rate` and above
control's by `max_error_excess`, or its mean latency is above control's x `max_latency_ratio` +
`latency_slack_ms` (or above `max_latency_ms`). A bad interval sets the ramp to 0 at once (every
guest back on control at the clients' next request) and, with a repository, drops the candidate.
Stated bound: a candidate that breaks is rolled back at the end of the first interval in which it
served at least `min_requests` requests: one interval after the step that exposed it, plus any
intervals with too little traffic to judge (at most `max_quiet_intervals`, then the rollout stops as
"stalled" with the ramp at 0). Each step needs `good_intervals` good intervals; after the last step
the candidate is promoted (repository: `promote_candidate`, the server switches to it) and the
experiment ends with ramp 0, every guest on the promoted version.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from sessionrec.clients.assignment import load_experiment, save_experiment
from sessionrec.errors import SessionrecError

CONTROL_MODEL, CANDIDATE_MODEL = "recommend", "recommend_candidate"
# Label matchers that pick each variant's series. In-pod mode (the default) the ensemble names them;
# in the chart's two-Deployment mode the `track` label does (both serve model="recommend").
CONTROL_MATCH, CANDIDATE_MATCH = f'model="{CONTROL_MODEL}"', f'model="{CANDIDATE_MODEL}"'


class RolloutError(SessionrecError):
    """Prometheus cannot be queried, or the configuration is inconsistent."""


@dataclass
class Bounds:
    max_error_rate: float = 0.01  # candidate failures / requests in one interval
    max_error_excess: float = 0.005  # ... and this much above control's (a shared outage is not the candidate's)
    max_latency_ratio: float = 1.5  # candidate mean latency / control's
    latency_slack_ms: float = 2.0  # absolute slack on top of the ratio: sub-millisecond means are noisy
    max_latency_ms: float | None = None  # optional absolute ceiling on the candidate's mean
    min_requests: int = 20  # fewer candidate requests in an interval: no verdict


@dataclass
class RolloutConfig:
    steps_bp: tuple[int, ...] = (500, 1000, 2500, 5000, 10_000)  # experiment ramp per step (50/50: half is candidate)
    interval_s: float = 60.0  # one evaluation interval (also the Prometheus window)
    good_intervals: int = 1  # good intervals needed before the next step
    max_quiet_intervals: int = 5  # intervals with too little traffic before giving up
    bounds: Bounds = field(default_factory=Bounds)
    control_match: str = CONTROL_MATCH  # PromQL label matchers of control's series
    candidate_match: str = CANDIDATE_MATCH  # ... and of the candidate's (e.g. 'track="candidate",model="recommend"')


@dataclass(frozen=True)
class VariantWindow:
    requests: float
    errors: float
    mean_latency_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Interval:
    index: int  # 1-based over the whole rollout
    ramp_bp: int
    control: VariantWindow
    candidate: VariantWindow
    verdict: str  # good | bad | quiet
    reason: str


@dataclass
class RolloutResult:
    outcome: str  # promoted | rolled_back | stalled
    intervals: list[Interval]
    final_ramp_bp: int

    def as_dict(self) -> dict:
        return {"outcome": self.outcome, "final_ramp_bp": self.final_ramp_bp,
                "intervals": [asdict(i) for i in self.intervals]}


def judge(control: VariantWindow, candidate: VariantWindow, bounds: Bounds) -> tuple[str, str]:
    if candidate.requests < bounds.min_requests:
        return "quiet", f"{candidate.requests:.0f} candidate requests < {bounds.min_requests}"
    rate, base = candidate.error_rate, control.error_rate
    if rate > bounds.max_error_rate and rate > base + bounds.max_error_excess:
        return "bad", f"candidate error rate {rate:.4f} (control {base:.4f}) above {bounds.max_error_rate}"
    latency = candidate.mean_latency_ms
    if latency is not None:
        if bounds.max_latency_ms is not None and latency > bounds.max_latency_ms:
            return "bad", f"candidate mean latency {latency:.2f} ms above {bounds.max_latency_ms} ms"
        if control.mean_latency_ms is not None:
            ceiling = control.mean_latency_ms * bounds.max_latency_ratio + bounds.latency_slack_ms
            if latency > ceiling:
                return "bad", (f"candidate mean latency {latency:.2f} ms above {ceiling:.2f} ms "
                               f"(control {control.mean_latency_ms:.2f} ms)")
    return "good", f"error rate {rate:.4f}, mean latency {latency if latency is None else round(latency, 2)} ms"


class Prometheus:
    def __init__(self, url: str, timeout_s: float = 5.0):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def scalar(self, expr: str) -> float | None:
        query = urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query?{query}", timeout=self.timeout_s) as response:
                body = json.load(response)
        except (OSError, ValueError) as exc:
            raise RolloutError(f"prometheus {self.url}: query {expr!r} failed: {exc}") from None
        result = body.get("data", {}).get("result", [])
        return float(result[0]["value"][1]) if result else None

    def window(self, match: str, seconds: float) -> VariantWindow:
        """One variant's requests, errors and mean latency over the last `seconds`; `match`: label matchers."""
        w = f"{max(int(round(seconds)), 1)}s"
        label = "{" + match + "}"
        ok = self.scalar(f"sum(increase(nv_inference_request_success{label}[{w}]))") or 0.0
        failed = self.scalar(f"sum(increase(nv_inference_request_failure{label}[{w}]))") or 0.0
        duration = self.scalar(f"sum(increase(nv_inference_request_duration_us{label}[{w}]))")
        total = ok + failed
        mean = duration / total / 1000.0 if duration is not None and total > 0 else None
        return VariantWindow(total, failed, mean)


def rollout(prometheus_url: str, experiment_path: str | Path, config: RolloutConfig,
            repository: str | Path | None = None, sleep: Callable[[float], None] = time.sleep,
            log: Callable[[str], None] = lambda line: None) -> RolloutResult:
    if not config.steps_bp or list(config.steps_bp) != sorted(config.steps_bp):
        raise RolloutError(f"rollout steps {config.steps_bp} must be increasing basis points")
    prometheus = Prometheus(prometheus_url)
    experiment = load_experiment(experiment_path)
    intervals: list[Interval] = []
    quiet = 0

    def end(outcome: str) -> RolloutResult:
        save_experiment(experiment.with_ramp(0), experiment_path, status=outcome)
        if repository is not None and outcome != "stalled":  # stalled: nothing known against it; stays pinned
            from sessionrec.export.candidate import drop_candidate, promote_candidate

            (promote_candidate if outcome == "promoted" else drop_candidate)(repository)
        log(f"rollout {outcome}: ramp 0")
        return RolloutResult(outcome, intervals, 0)

    for ramp in config.steps_bp:
        save_experiment(experiment.with_ramp(ramp), experiment_path)
        log(f"ramp {ramp} bp (candidate share {experiment.with_ramp(ramp).variant_share('candidate'):.2%})")
        good = 0
        while good < config.good_intervals:
            sleep(config.interval_s)
            control = prometheus.window(config.control_match, config.interval_s)
            candidate = prometheus.window(config.candidate_match, config.interval_s)
            verdict, reason = judge(control, candidate, config.bounds)
            intervals.append(Interval(len(intervals) + 1, ramp, control, candidate, verdict, reason))
            log(f"interval {len(intervals)} at {ramp} bp: {verdict}: {reason}")
            if verdict == "bad":
                return end("rolled_back")
            if verdict == "quiet":
                quiet += 1
                if quiet > config.max_quiet_intervals:
                    return end("stalled")
                continue
            good += 1
    return end("promoted")
