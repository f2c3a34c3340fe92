"""The hot swap's picture: every request's latency over time, with the run's phases shaded."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from sessionrec.reliability.load import Record

# Phase name prefix -> shading colour (steady, settled, restored and published stay white).
SHADES = {"export": "0.85", "swap": "tab:orange", "rollback": "tab:blue"}


def plot_hotswap(records: Sequence[Record], windows: dict[str, tuple[float, float]], origin: float,
                 steady_p99_ms: float, factor: float, references: dict[str, float], path: str | Path,
                 title: str = "") -> Path:
    """Scatter of (send time, latency) per request; failed requests as red crosses at the top.

    references: judged window -> the steady p99 it is held to; its bound (factor x that) is drawn
    over the window.
    """
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on CI
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(11, 4.5), constrained_layout=True)
    labelled = set()
    for name, (since, until) in windows.items():
        kind = name.split(" ")[0]
        if kind in SHADES:
            ax.axvspan(since - origin, until - origin, color=SHADES[kind], alpha=0.25 if kind != "export" else 0.6,
                       linewidth=0, label=None if kind in labelled else f"{kind} window")
            labelled.add(kind)
    answered = [r for r in records if r.code is None]
    ax.scatter([r.start - origin for r in answered], [r.latency_s * 1000 for r in answered], s=2, color="black",
               alpha=0.5, linewidths=0, label=f"request ({len(answered):,} answered)")
    failed = [r for r in records if r.code is not None]
    top = max([r.latency_s * 1000 for r in answered] + [factor * steady_p99_ms * 4])
    if failed:
        ax.scatter([r.start - origin for r in failed], [top] * len(failed), marker="x", color="red",
                   label=f"failed ({len(failed)})")
    ax.axhline(steady_p99_ms, color="tab:green", linewidth=1, label=f"p99 of the first steady window {steady_p99_ms:.1f} ms")
    for i, (name, reference) in enumerate(references.items()):
        since, until = windows[name]
        ax.hlines(factor * reference, since - origin, until - origin, color="red", linewidth=1.5,
                  label=None if i else f"bound of each switch: {factor:g}x the steady p99 it is held to")
    ax.set_yscale("log")
    from matplotlib.ticker import ScalarFormatter

    ax.yaxis.set_major_formatter(ScalarFormatter())  # 2, 5, 10, 20 ms rather than powers of ten
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.set_xlabel("seconds since the load started (request send time)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(title or "hot swap under load", fontsize=10)
    ax.legend(loc="upper right", fontsize=7, ncol=2)
    ax.grid(alpha=0.3, which="both")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
