"""A sampled drift report from the event log (batch job; never in the request path).

For each model version in the log, a uniform sample of its exposures (at most `sample`, seeded)
gives the click that triggered each (the last of `session_items`); the clicks are bucketed by the
version's training popularity exactly as the serving monitor does (sessionrec.monitoring.reference),
and the report lists each bucket's live and reference share, its PSI term, the total PSI, the
unknown-click rate and the noise floor of PSI at that sample size (~(B-1)/n).

Plain numpy rather than Evidently: the statistic is one PSI over ten fixed buckets, the same one
the Prometheus rule computes, and it must agree with it bucket for bucket; Evidently would add a
heavy dependency (pandas, plotly, its own binning of raw ids, which are categorical here with tens
of thousands of values) for a number it would compute differently.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from sessionrec.monitoring.reference import N_BUCKETS, bucket_reference, item_buckets, psi
from sessionrec.serving.artifacts import read_manifest
from sessionrec.serving.preprocess import IdMap


def drift_report(events: list[dict], repository: str | Path, sample: int = 100_000, seed: int = 0) -> list[dict]:
    repository = Path(repository)
    clicks: dict[str, list[int]] = defaultdict(list)
    for event in events:
        if event.get("type") == "exposure" and event.get("session_items"):
            clicks[str(event.get("model_version", ""))].append(int(event["session_items"][-1]))
    rng = np.random.default_rng(seed)
    out = []
    for version, raw in sorted(clicks.items()):
        folder = repository / "retrieval" / version
        if not folder.is_dir():
            out.append({"model_version": version, "error": f"{folder}: version not in the repository"})
            continue
        raw = np.asarray(raw, dtype=np.int64)
        if raw.size > sample:
            raw = raw[rng.choice(raw.size, size=sample, replace=False)]
        popularity = np.load(folder / "popularity.npy", allow_pickle=False)
        id_map = IdMap(np.load(folder / "item_ids.npy", allow_pickle=False))
        reference = (read_manifest(folder).get("monitoring") or {}).get("popularity_buckets") or bucket_reference(popularity)
        model = id_map.to_model(raw)
        known = model[model > 0]
        live = np.bincount(item_buckets(popularity)[known], minlength=N_BUCKETS).astype(np.float64)
        ref = np.asarray(reference["click_share"], dtype=np.float64)
        share = live / max(live.sum(), 1)
        p, q = np.maximum(share, 1e-4), np.maximum(ref / ref.sum(), 1e-4)
        out.append({
            "model_version": version, "clicks_sampled": int(raw.size), "unknown_rate": float(1 - known.size / max(raw.size, 1)),
            "psi": psi(ref, live) if known.size else float("nan"),
            "psi_noise_floor": (N_BUCKETS - 1) / known.size if known.size else float("nan"),
            "buckets": [{"bucket": b, "live_share": float(share[b]), "reference_share": float(ref[b]),
                         "psi_term": float((p[b] - q[b]) * np.log(p[b] / q[b]))} for b in range(N_BUCKETS)],
        })
    return out
