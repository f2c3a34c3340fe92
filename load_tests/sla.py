"""Latency recording and the SLA check of a load test (no Locust here: unit-testable on its own).

Locust keeps response times rounded (to the millisecond below 100 ms, coarser above) and only a fixed
set of percentiles; the recorder keeps every latency, so p50 <= 5 ms can be told from 6 ms and any
percentile can be the SLA's. It also buckets completions by second for the timeline plot.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SLA:
    percentile: float = 95.0  # which latency percentile is held to the target
    target_ms: float = 70.0
    max_failures: int = 0  # failed requests allowed (the issue: any failure fails the run)
    min_requests: int = 1  # a run that measured nothing proves nothing

    def check(self, summary: dict) -> "Verdict":
        problems = []
        if summary["requests"] < self.min_requests:
            problems.append(f"only {summary['requests']} requests measured (need {self.min_requests})")
        value = summary["latency_ms"].get(_key(self.percentile))
        if value is None:
            problems.append(f"no successful request: p{self.percentile:g} is undefined")
        elif value > self.target_ms:
            problems.append(f"p{self.percentile:g} {value:.1f} ms > {self.target_ms:g} ms")
        if summary["failures"] > self.max_failures:
            top = "; ".join(f"{n}x {message}" for message, n in summary["errors"][:3])
            problems.append(f"{summary['failures']} failed requests (allowed {self.max_failures}): {top}")
        return Verdict(ok=not problems, problems=problems, sla=asdict(self), observed_ms=value)


@dataclass
class Verdict:
    ok: bool
    problems: list[str]
    sla: dict
    observed_ms: float | None

    def line(self) -> str:
        target = f"p{self.sla['percentile']:g} <= {self.sla['target_ms']:g} ms, failures <= {self.sla['max_failures']}"
        if self.ok:
            return f"SLA passed ({target}): p{self.sla['percentile']:g} = {self.observed_ms:.2f} ms"
        return f"SLA FAILED ({target}): " + "; ".join(self.problems)


def _key(percentile: float) -> str:
    return f"p{percentile:g}"


@dataclass
class Recorder:
    """Every request's end time, latency and outcome; summaries exclude the warm-up."""

    warmup_s: float = 0.0
    percentiles: tuple[float, ...] = (50, 90, 95, 99, 99.9)
    start: float | None = None  # wall-clock time the test started (set by the locustfile)
    stop: float | None = None  # when stopping began: later completions (users being killed) are not judged
    ends: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    failed: list[bool] = field(default_factory=list)
    error_texts: dict[int, str] = field(default_factory=dict)  # request index -> error message

    def add(self, end: float, latency_ms: float, error: str | None = None) -> None:
        if error is not None:
            self.error_texts[len(self.ends)] = error[:200]
        self.ends.append(end)
        self.latencies_ms.append(latency_ms)
        self.failed.append(error is not None)

    def arrays(self):
        return np.asarray(self.ends), np.asarray(self.latencies_ms), np.asarray(self.failed, dtype=bool)

    def summary(self, extra_percentiles: tuple[float, ...] = ()) -> dict:
        ends, latencies, failed = self.arrays()
        start = self.start if self.start is not None else (ends.min() if ends.size else 0.0)
        stop = self.stop if self.stop is not None else (ends.max() if ends.size else 0.0)
        measured = (ends >= start + self.warmup_s) & (ends <= stop)
        ok = measured & ~failed
        span = max(0.0, stop - (start + self.warmup_s)) if measured.any() else 0.0
        latency = {}
        if ok.any():
            for p in sorted(set(self.percentiles) | set(extra_percentiles)):
                latency[_key(p)] = float(np.percentile(latencies[ok], p))
            latency["mean"] = float(latencies[ok].mean())
            latency["max"] = float(latencies[ok].max())
        return {
            "requests": int(measured.sum()),
            "failures": int((measured & failed).sum()),
            "duration_s": round(float(span), 3),
            "throughput_rps": float(ok.sum() / span) if span > 0 else 0.0,
            "latency_ms": latency,
            "warmup_s": self.warmup_s,
            "warmup_requests": int((ends < start + self.warmup_s).sum()),
            "errors": Counter(text for i, text in self.error_texts.items() if measured[i]).most_common(10),
        }

    def timeline(self, bucket_s: float = 1.0) -> list[dict]:
        """Per-second rows: t (s since start), successes/s, failures/s, p50/p95/p99 of that second."""
        ends, latencies, failed = self.arrays()
        if self.stop is not None:
            keep = ends <= self.stop
            ends, latencies, failed = ends[keep], latencies[keep], failed[keep]
        if not ends.size:
            return []
        start = self.start if self.start is not None else ends.min()
        last = (self.stop if self.stop is not None else ends.max()) - start
        slots = np.floor((ends - start) / bucket_s).astype(int)
        rows = []
        for slot in range(max(0, slots.min()), slots.max() + 1):
            here = slots == slot
            good = latencies[here & ~failed]
            width = min(bucket_s, last - slot * bucket_s)  # the last bucket may be partial
            if width < bucket_s / 2:  # too short to say anything per second
                break
            row = {"t": slot * bucket_s + width, "rps": good.size / width, "failures_per_s": (here & failed).sum() / width}
            for p in (50, 95, 99):
                row[f"p{p}"] = float(np.percentile(good, p)) if good.size else float("nan")
            rows.append(row)
        return rows


REQUESTS_HEADER = "end_unix_s,latency_ms,error"


def write_requests(recorder: Recorder, path: str | Path) -> None:
    """Every request, one line each: when it ended (Unix time), its latency, its error ("" if none).

    What lets a run be cut into time windows afterwards (the hot swap judges its switch windows on
    these when Locust drives the traffic, sessionrec.reliability.locust_load).
    """
    ends, latencies, failed = recorder.arrays()
    with open(path, "w") as out:
        out.write(REQUESTS_HEADER + "\n")
        for i in range(ends.size):
            error = recorder.error_texts.get(i, "failed") if failed[i] else ""
            out.write(f"{ends[i]:.6f},{latencies[i]:.3f},{_csv_text(error)}\n")


def read_requests(path: str | Path) -> list[tuple[float, float, str | None]]:
    """(end_unix_s, latency_ms, error or None) of every request in a write_requests file."""
    rows = []
    with open(path) as lines:
        if next(lines).strip() != REQUESTS_HEADER:
            raise ValueError(f"{path}: not a requests file (first line must be {REQUESTS_HEADER!r})")
        for line in lines:
            end, latency, error = line.rstrip("\n").split(",", 2)
            rows.append((float(end), float(latency), error or None))
    return rows


def _csv_text(text: str) -> str:
    return " ".join(text.replace(",", ";").split())  # one field, one line


def write_reports(recorder: Recorder, sla: SLA | None, prefix: str | Path, title: str = "") -> dict:
    """<prefix>_summary.json, _timeline.csv, _requests.csv, _latency.png; returns the summary."""
    prefix = str(prefix)
    summary = recorder.summary(extra_percentiles=(sla.percentile,) if sla else ())
    if sla is not None:
        summary["sla"] = asdict(sla.check(summary))
    rows = recorder.timeline()
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    write_requests(recorder, f"{prefix}_requests.csv")
    with open(f"{prefix}_timeline.csv", "w") as out:
        out.write("t_s,rps,failures_per_s,p50_ms,p95_ms,p99_ms\n")
        for row in rows:
            out.write(f"{row['t']:g},{row['rps']:g},{row['failures_per_s']:g},{row['p50']:.3f},{row['p95']:.3f},{row['p99']:.3f}\n")
    from sessionrec.load_tests.plot import plot_timeline

    plot_timeline(rows, f"{prefix}_latency.png", sla=sla, warmup_s=recorder.warmup_s, title=title)
    Path(f"{prefix}_summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary
