"""The load test's picture: p50/p95/p99 and throughput over time, with the SLA target and warm-up marked."""

from __future__ import annotations

import math
from pathlib import Path


def plot_timeline(rows: list[dict], path: str | Path, sla=None, warmup_s: float = 0.0, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on CI or in a pod
    import matplotlib.pyplot as plt

    path = Path(path)
    t = [row["t"] for row in rows]
    fig, (lat, thr) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, constrained_layout=True)
    for key, style in (("p50", "-"), ("p95", "-"), ("p99", "--")):
        lat.plot(t, [row[key] for row in rows], style, label=key, linewidth=1.4)
    if sla is not None:
        lat.axhline(sla.target_ms, color="red", linewidth=1, label=f"SLA p{sla.percentile:g} <= {sla.target_ms:g} ms")
    lat.set_ylabel("latency (ms)")
    finite = [row[k] for row in rows for k in ("p50", "p99") if not math.isnan(row[k])]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 30:
        lat.set_yscale("log")
    lat.legend(loc="upper left", fontsize=8)
    lat.grid(alpha=0.3)
    thr.plot(t, [row["rps"] for row in rows], color="tab:green", label="successful requests/s")
    if any(row["failures_per_s"] for row in rows):
        thr.plot(t, [row["failures_per_s"] for row in rows], color="tab:red", label="failures/s")
    thr.set_ylabel("throughput (req/s)")
    thr.set_xlabel("time since start (s)")
    thr.legend(loc="upper left", fontsize=8)
    thr.grid(alpha=0.3)
    if warmup_s > 0:
        for axis in (lat, thr):
            axis.axvspan(0, warmup_s, color="grey", alpha=0.15, label="_warm-up")
    fig.suptitle(title or "load test")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
