"""Read an experiment out of its exposure and interaction events (sessionrec.events.schema).

    from sessionrec.experiments.readout import ReadoutConfig, read_events, analyze
    report = analyze(read_events(["events.jsonl"]), ReadoutConfig(experiment="ranker-v8"))

Order of the readout (docs/EXPERIMENTS.md, "Readout"):

1. units: every unit with an in-experiment exposure of this experiment, its arm taken from its first
   such exposure; units seen in two arms (a broken client, a changed salt) are counted and excluded;
2. the sample-ratio-mismatch gate: unit counts against the planned split; on a mismatch the report
   says so and nothing else is computed (a broken split makes every other number meaningless);
3. conversion (a unit with a purchase after its first exposure): two-proportion z-test and CI;
4. CTR (clicks that carry the request id of one of the unit's exposures / its exposures), per unit,
   by the delta method;
5. the mSPRT over daily looks (units exposed by the end of each day, their conversions by then).

The unit of analysis is the randomisation unit (the guest): an interaction without an exposure of the
experiment before it does not count.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from sessionrec.errors import SessionrecError
from sessionrec.experiments.sequential import msprt
from sessionrec.experiments.stats import (SRM_ALPHA, delta_method_test, srm_test, two_proportion_ztest)

DAY_S = 86_400


class ReadoutError(SessionrecError, ValueError):
    """The events cannot be read out (none for this experiment, an arm missing, a bad line)."""


@dataclass
class ReadoutConfig:
    experiment: str
    split: dict[str, float] = field(default_factory=lambda: {"control": 0.5, "candidate": 0.5})  # planned shares
    control: str = "control"
    treatment: str = "candidate"
    alpha: float = 0.05  # two-sided, for the z-tests, the delta method and the mSPRT
    srm_alpha: float = SRM_ALPHA  # below this the split is broken and the readout stops
    tau: float | None = None  # mSPRT mixing scale (absolute effect); None: 10 % of the control conversion
    conversion_type: str = "purchase"  # the interaction that counts as converting


@dataclass
class UnitTable:
    """Per-unit aggregates, one entry per in-experiment unit (arrays aligned)."""

    variant: np.ndarray  # str
    first_exposure: np.ndarray  # unix seconds
    converted_at: np.ndarray  # unix seconds of the first conversion after exposure; inf if none
    exposures: np.ndarray  # recommendation lists shown
    clicks: np.ndarray  # clicks carrying the request id of one of the unit's exposures
    crossovers: int  # units seen in more than one arm (excluded)
    outside: int  # units only ever served outside the ramp (not analysed)


def read_events(paths: Iterable[str | Path]) -> list[dict]:
    """JSON lines, one event per line (what `sessionrec ingest --events-out` and the sinks write)."""
    events = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ReadoutError(f"{path}: no such events file")
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ReadoutError(f"{path}:{number}: not a JSON event ({exc.msg})") from None
    return events


def unit_table(events: list[dict], config: ReadoutConfig) -> UnitTable:
    arms: dict[str, set] = defaultdict(set)
    first: dict[str, float] = {}
    exposures: dict[str, int] = defaultdict(int)
    requests: dict[str, str] = {}  # request id -> unit
    outside: set[str] = set()
    seen_ids: set[str] = set()
    interactions = []
    for event in events:
        event_id = event.get("event_id")
        if event_id in seen_ids:  # at-least-once delivery: a repeated event counts once
            continue
        seen_ids.add(event_id)
        if event.get("type") == "exposure":
            if event.get("experiment") != config.experiment:
                continue
            unit = event["unit_id"]
            if not event.get("in_experiment"):
                outside.add(unit)
                continue
            arms[unit].add(event["variant"])
            first[unit] = min(first.get(unit, math.inf), float(event["timestamp"]))
            exposures[unit] += 1
            requests[event["request_id"]] = unit
        else:
            interactions.append(event)
    crossovers = {unit for unit, seen in arms.items() if len(seen) > 1}
    units = [u for u in arms if u not in crossovers]
    index = {u: i for i, u in enumerate(units)}
    converted = np.full(len(units), np.inf)
    clicks = np.zeros(len(units), dtype=np.int64)
    for event in interactions:
        unit = event.get("unit_id")
        i = index.get(unit)
        if i is None or float(event["timestamp"]) < first[unit]:
            continue
        if event.get("type") == config.conversion_type:
            converted[i] = min(converted[i], float(event["timestamp"]))
        elif event.get("type") == "click" and requests.get(event.get("request_id")) == unit:
            clicks[i] += 1
    return UnitTable(np.array([next(iter(arms[u])) for u in units], dtype=object),
                     np.array([first[u] for u in units], dtype=float), converted,
                     np.array([exposures[u] for u in units], dtype=np.int64), clicks,
                     len(crossovers), len(outside - set(arms)))


def daily_looks(table: UnitTable, control: str, treatment: str):
    """Cumulative (conversions, units) per arm at the end of each day since the first exposure."""
    start = math.floor(table.first_exposure.min() / DAY_S) * DAY_S
    last = max(table.first_exposure.max(), np.max(np.where(np.isfinite(table.converted_at), table.converted_at, 0)))
    ends = start + DAY_S * np.arange(1, int((last - start) // DAY_S) + 2)
    out = {}
    for arm in (control, treatment):
        mask = table.variant == arm
        first, conv = table.first_exposure[mask], table.converted_at[mask]
        out[arm] = (np.array([(conv <= end).sum() for end in ends]), np.array([(first <= end).sum() for end in ends]))
    return ends, out


def analyze(events: list[dict], config: ReadoutConfig) -> dict:
    """The readout as a dict (what `sessionrec experiment analyze` writes as report.json)."""
    table = unit_table(events, config)
    if table.variant.size == 0:
        raise ReadoutError(f"no in-experiment exposures of experiment {config.experiment!r} in the events")
    counts = {arm: int((table.variant == arm).sum()) for arm in config.split}
    unknown = sorted(set(table.variant) - set(config.split))
    if unknown:
        raise ReadoutError(f"exposures name variant(s) {unknown} that the planned split {list(config.split)} lacks")
    report = {"experiment": config.experiment, "alpha": config.alpha, "units": counts,
              "crossover_units_excluded": table.crossovers, "outside_ramp_units": table.outside}
    srm = srm_test(counts, config.split, config.srm_alpha)
    report["srm"] = srm.as_dict()
    if srm.mismatch:
        report["verdict"] = (f"sample-ratio mismatch (p = {srm.p_value:.2g} < {config.srm_alpha}): the split or the "
                             "logging is broken; no effect is read from this experiment")
        return report
    c, t = table.variant == config.control, table.variant == config.treatment
    if not c.any() or not t.any():
        raise ReadoutError(f"arm {config.control!r} has {int(c.sum())} units and {config.treatment!r} {int(t.sum())}; "
                           "both need units")
    converted = np.isfinite(table.converted_at)
    conversion = two_proportion_ztest(int(converted[c].sum()), int(c.sum()), int(converted[t].sum()), int(t.sum()),
                                      config.alpha)
    report["conversion"] = conversion.as_dict()
    if table.exposures[c].size >= 2 and table.exposures[t].size >= 2:
        report["ctr"] = delta_method_test(table.clicks[c], table.exposures[c], table.clicks[t], table.exposures[t],
                                          config.alpha).as_dict()
    ends, looks = daily_looks(table, config.control, config.treatment)
    tau = config.tau if config.tau is not None else max(0.1 * conversion.control, 1e-4)
    (conv_c, n_c), (conv_t, n_t) = looks[config.control], looks[config.treatment]
    report["sequential"] = {**msprt(conv_c, n_c, conv_t, n_t, tau, config.alpha).as_dict(),
                            "day_ends": ends.tolist()}
    report["verdict"] = verdict(report)
    return report


def verdict(report: dict) -> str:
    conversion = report["conversion"]
    seq = report["sequential"]
    rel = conversion["relative"] * 100
    fixed = (f"conversion {conversion['control']:.4f} -> {conversion['treatment']:.4f} ({rel:+.2f} %, "
             f"p = {conversion['p_value']:.3g}): "
             + ("significant" if conversion["significant"] else "not significant") + f" at alpha {conversion['alpha']}")
    stopped = seq["stopped_at"]
    sequential = (f"; mSPRT rejects at day {stopped}" if stopped else
                  f"; mSPRT has not rejected after {len(seq['looks'])} daily looks "
                  f"(always-valid p = {seq['looks'][-1]['p_value']:.3g})")
    return fixed + sequential
