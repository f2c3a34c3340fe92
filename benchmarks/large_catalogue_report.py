"""Cost model plots and tables from benchmarks/large_catalogue.py results at several catalogue sizes.

    python benchmarks/large_catalogue_report.py /tmp/lc-210k /tmp/lc-1m /tmp/lc-10m --img docs/img

Reads WORK/results.json of each run (any stages) and writes two PNGs against catalogue size:
large-catalogue-memory.png (index bytes per FAISS kind, serving stub RSS, export peak RSS, with the
cost model's lines) and large-catalogue-latency.png (batch-1 query p50 per kind at recall@20 0.95,
served p50/p95). Prints the points as a Markdown table. The model (docs/LARGE_CATALOGUES.md):
bytes per item of each part, from the formulas, not fitted.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def model_bytes(n: np.ndarray, d: int, kind: str) -> np.ndarray:
    """Serving memory of one version: the stub's base, the encoder table (4d bytes an item,
    onnxruntime's copy), FAISS codes + 8-byte ids, and 4 int64 arrays (raw ids twice, popularity,
    the preprocess id map)."""
    # ivfpqfs: d/2 sub-quantizers of 4 bits, plus the float copy its exact re-rank reads
    codes = {"ivf": 4 * d, "flat": 4 * d, "ivfsq": d, "ivfpq": d // 4, "ivfpqfs": d // 4 + 4 * d}[kind]
    return 0.15e9 + n * (4 * d + codes + 8 + 4 * 8)  # + the stub's base (python, onnxruntime, FAISS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("works", nargs="+", help="WORK folders of benchmarks/large_catalogue.py runs")
    parser.add_argument("--img", default="docs/img")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = []
    for work in args.works:
        results = json.loads((Path(work) / "results.json").read_text())
        n = next(results[s]["synthetic"]["n_items"] for s in ("build", "index", "synth") if s in results)
        runs.append((n, results))
    runs.sort(key=lambda r: r[0])
    d = 100
    kinds = ["ivf", "ivfsq", "ivfpq", "ivfpq+opq", "ivfpqfs"]
    lines = ["| N | kind | index MiB | build s | query p50 ms @0.95 | held-out recall@20 | HR@20 loss (points) @0.95 | @0.99 |",
             "|---|---|---|---|---|---|---|---|"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    grid = np.logspace(5, 7, 20)
    for kind, colour in zip(kinds, ["C0", "C1", "C2", "C3", "C5"]):
        points = [(n, r["index"]["kinds"][kind]) for n, r in runs if kind in r.get("index", {}).get("kinds", {})]
        for n, row in points:
            at = row["at_target"]
            lines.append(f"| {n:,} | {kind} | {row['index_bytes'] / 2**20:.0f} | {row['build_seconds']:.0f} | "
                         f"{at['0.95']['query_ms_p50']} | {at['0.95']['held_out_recall_at_20']} | "
                         f"{at['0.95']['HR@20_loss_points']} | {at.get('0.99', {}).get('HR@20_loss_points', '')} |")
        if points:
            ax.plot([p[0] for p in points], [p[1]["index_bytes"] / 2**30 for p in points], "o", color=colour,
                    label=f"FAISS {kind} (measured)")
    for kind, colour in (("ivf", "C0"), ("ivfsq", "C1")):
        ax.plot(grid, model_bytes(grid, d, kind) / 2**30, "--", color=colour, alpha=0.6,
                label=f"model: one version, {kind} (encoder table + codes + ids)")
    ax.plot(grid, (0.3e9 + 11 * 4 * grid * d) / 2**30, "--", color="C4", alpha=0.6,
            label="model: export peak, 0.3 GB + 11 x the table (ratio measured at 1M)")
    stub = [(n, r["serve"]["memory_at_start"]["total_gib"]) for n, r in runs if "serve" in r]
    export = [(n, r["build"]["export"]["peak_rss_gib"]) for n, r in runs if "build" in r]
    if stub:
        ax.plot(*zip(*stub), "s", color="k", label="serving stubs RSS (measured)")
    if export:
        ax.plot(*zip(*export), "^", color="C4", label="export peak RSS (measured)")
    ax.set_xscale("log"), ax.set_yscale("log"), ax.set_xlabel("catalogue size N (items), d = 100"), ax.set_ylabel("GiB")
    ax.grid(True, which="both", alpha=0.3), ax.legend(fontsize=7), ax.set_title("Memory against catalogue size")
    fig.tight_layout()
    fig.savefig(Path(args.img) / "large-catalogue-memory.png", dpi=110)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind, colour in zip(["exact", *kinds], ["k", "C0", "C1", "C2", "C3"]):
        pts = []
        for n, r in runs:
            row = r.get("index", {}).get("kinds", {}).get(kind)
            if row:
                pts.append((n, row["query_ms_p50"] if kind == "exact" else row["at_target"]["0.95"]["query_ms_p50"]))
        if pts:
            ax.plot(*zip(*pts), "o-", color=colour, label=f"FAISS {kind}, batch 1" + ("" if kind == "exact" else " @ recall 0.95"))
    rate = 2e9  # FLOP/s of one core, the 1M measurements' upper end (docs/LARGE_CATALOGUES.md)
    for nprobe, style in ((7, ":"), (221, "-.")):
        nlist = 4 * np.sqrt(grid)
        ax.plot(grid, 1e3 * d * (nlist + nprobe * grid / nlist) / rate, style, color="C0", alpha=0.6,
                label=f"model: IVF-Flat, nprobe {nprobe} (recall {'0.95' if nprobe == 7 else '0.99'} at 1M)")
    ax.plot(grid, 1e3 * d * grid / rate, "--", color="k", alpha=0.5, label="model: exact scan d*N")
    for key, marker in (("p50", "s"), ("p95", "D")):
        pts = [(n, r["serve"]["rates"]["20"]["latency_ms"][key]) for n, r in runs if "serve" in r and "20" in r["serve"]["rates"]]
        if pts:
            ax.plot(*zip(*pts), marker, color="C5", label=f"served end to end at 20 req/s, {key}")
    ax.set_xscale("log"), ax.set_yscale("log"), ax.set_xlabel("catalogue size N (items), d = 100"), ax.set_ylabel("ms")
    ax.grid(True, which="both", alpha=0.3), ax.legend(fontsize=7), ax.set_title("Latency against catalogue size")
    fig.tight_layout()
    fig.savefig(Path(args.img) / "large-catalogue-latency.png", dpi=110)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
