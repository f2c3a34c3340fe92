"""Live quality from the event log: what was shown against what the guest clicked next.

A session recommender gets its label within minutes: the guest's next click in the same session.
For every exposure (`exposure/1`: items_shown, session_id, model_version, variant) the label is the
first `click` of that session after the exposure's timestamp; an exposure with no later click
(the session ended) has no label and is left out of HR/MRR, as the offline protocol leaves out a
session's last click. Per (model_version, variant):

- HR@20 / MRR@20 (percent, the offline metrics' units: sessionrec.metrics) of the labelled exposures,
  with the standard error of HR (binomial) for the comparison with the manifest's offline numbers
  (`precision_variants[<served precision>]`, measured by export on test-set prefixes);
- click-through: exposures followed by a click carrying their request_id; conversion: by a
  purchase carrying it;
- coverage: distinct items shown / catalogue size (the manifest's serving.n_items), and popularity
  concentration: the Gini coefficient of how often each shown item was shown.

A batch job, never in the request path: `sessionrec monitor live-quality` reads events.jsonl
(what `sessionrec ingest` writes) and writes the result as JSON and as a Prometheus text exposition
file (`sessionrec_live_*` gauges). A file, not a Pushgateway: the job is periodic and its numbers
describe a window of the log, so the node-exporter textfile collector (or `--serve`, a one-file
HTTP exposition) lets Prometheus scrape the latest run, and its `sessionrec_live_computed_at`
says how old it is; a Pushgateway would be one more service to run for the same effect.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

K = 20


@dataclass
class Quality:
    model_version: str
    variant: str
    exposures: int = 0
    labelled: int = 0
    hits: int = 0
    reciprocal_ranks: float = 0.0
    clicked: int = 0  # exposures followed by a click carrying their request id
    converted: int = 0  # ... by a purchase carrying it
    shown: dict = field(default_factory=lambda: defaultdict(int))

    def metrics(self, n_items: int | None) -> dict:
        hr = self.hits / self.labelled if self.labelled else float("nan")
        counts = np.asarray(sorted(self.shown.values()), dtype=np.float64)
        return {
            "model_version": self.model_version, "variant": self.variant, "exposures": self.exposures,
            "labelled": self.labelled,
            "HR@20": 100 * hr, "HR@20_stderr": 100 * math.sqrt(hr * (1 - hr) / self.labelled) if self.labelled else float("nan"),
            "MRR@20": 100 * self.reciprocal_ranks / self.labelled if self.labelled else float("nan"),
            "ctr": self.clicked / self.exposures if self.exposures else float("nan"),
            "conversion": self.converted / self.exposures if self.exposures else float("nan"),
            "coverage": len(self.shown) / n_items if n_items else float("nan"),
            "gini": gini(counts),
        }


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0: every shown item equally often; -> 1: a few items only)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    if x.size == 0 or x.sum() == 0:
        return float("nan")
    n = x.size
    return float((2 * np.sum(np.arange(1, n + 1) * x) / (n * x.sum())) - (n + 1) / n)


def live_quality(events: list[dict], n_items: int | None = None) -> list[dict]:
    """One metrics row per (model_version, variant), from exposure and interaction events (deduplicated)."""
    seen: set[str] = set()
    exposures, clicks_by_session = [], defaultdict(list)
    by_request: dict[str, set] = defaultdict(set)
    for event in events:
        if event.get("event_id") in seen:
            continue
        seen.add(event.get("event_id"))
        kind = event.get("type")
        if kind == "exposure":
            exposures.append(event)
        elif kind in ("click", "add_to_cart", "purchase"):
            if kind == "click":
                clicks_by_session[event["session_id"]].append((float(event["timestamp"]), int(event["item_id"])))
            if event.get("request_id"):
                by_request[event["request_id"]].add(kind)
    for clicks in clicks_by_session.values():
        clicks.sort()
    rows: dict[tuple, Quality] = {}
    for exposure in exposures:
        key = (str(exposure.get("model_version", "")), str(exposure.get("variant", "")))
        q = rows.setdefault(key, Quality(*key))
        q.exposures += 1
        shown = [int(i) for i in exposure["items_shown"][:K]]
        for item in shown:
            q.shown[item] += 1
        kinds = by_request.get(exposure["request_id"], set())
        q.clicked += "click" in kinds
        q.converted += "purchase" in kinds
        session = exposure.get("session_id")
        if session is None:
            continue
        clicks = clicks_by_session.get(session, [])
        at = float(exposure["timestamp"])
        i = np.searchsorted([t for t, _ in clicks], at, side="right")
        if i >= len(clicks):
            continue  # no later click: the session ended, no label
        q.labelled += 1
        label = clicks[i][1]
        if label in shown:
            q.hits += 1
            q.reciprocal_ranks += 1.0 / (shown.index(label) + 1)
    return [q.metrics(n_items) for q in sorted(rows.values(), key=lambda q: (q.model_version, q.variant))]


def offline_numbers(manifest: dict) -> dict:
    """The served precision's export-time HR@20 / MRR@20 (percent) on test-set prefixes."""
    precision = manifest.get("serving", {}).get("precision", "fp32")
    variant = manifest.get("precision_variants", {}).get(precision, {})
    return {"precision": precision, "HR@20": variant.get("HR@20"), "MRR@20": variant.get("MRR@20")}


GAUGES = {
    "HR@20": ("sessionrec_live_hr_at_20", "Next-click HR@20 (percent) of what was shown"),
    "MRR@20": ("sessionrec_live_mrr_at_20", "Next-click MRR@20 (percent) of what was shown"),
    "HR@20_stderr": ("sessionrec_live_hr_at_20_stderr", "Standard error of the live HR@20 (percent)"),
    "labelled": ("sessionrec_live_labelled_exposures", "Exposures with a next click in the window"),
    "ctr": ("sessionrec_live_ctr", "Exposures followed by a click on their request id"),
    "conversion": ("sessionrec_live_conversion", "Exposures followed by a purchase on their request id"),
    "coverage": ("sessionrec_live_coverage", "Distinct items shown / catalogue size"),
    "gini": ("sessionrec_live_gini", "Gini coefficient of how often each shown item was shown"),
}


def prometheus_text(rows: list[dict], offline: dict[str, dict], computed_at: float) -> str:
    """Prometheus text exposition of the job's result (gauges; offline numbers beside the live ones)."""
    lines = []
    for key, (name, help_text) in GAUGES.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for row in rows:
            value = row[key]
            if value == value:  # not NaN
                lines.append(f'{name}{{model_version="{row["model_version"]}",variant="{row["variant"]}"}} {value:.6g}')
    for key, name in (("HR@20", "sessionrec_offline_hr_at_20"), ("MRR@20", "sessionrec_offline_mrr_at_20")):
        lines += [f"# HELP {name} Export-time {key} (percent) of the version on test-set prefixes", f"# TYPE {name} gauge"]
        for version, numbers in sorted(offline.items()):
            if numbers.get(key) is not None:
                lines.append(f'{name}{{model_version="{version}"}} {numbers[key]:.6g}')
    lines += ["# HELP sessionrec_live_computed_at Unix time the live-quality job ran",
              "# TYPE sessionrec_live_computed_at gauge", f"sessionrec_live_computed_at {computed_at:.0f}"]
    return "\n".join(lines) + "\n"
