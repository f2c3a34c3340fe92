"""What a python stub of the fused CPU step costs to start: CPU and wall time per step, side by side.

    python benchmarks/stub_start.py --repository runs/hotswap/repository          # ~30 s
    python benchmarks/stub_start.py --repository R --repeats 15 --out docs/benchmarks/stub_start.md

A new version's stub starts beside the serving one at every switch, on the same cores, so its CPU
time (not its wall time) is what serving loses. Each run is a fresh interpreter doing what the stub
does after its own start-up: import numpy (triton_python_backend_utils does), onnxruntime and FAISS,
load the version (LocalPipeline: checksums, ONNX session, index), warm it up. Variants, interleaved
run by run: numpy's OpenBLAS with its default threads (one per core) and with one thread (what
the launcher and the chart set). Medians over --repeats runs per variant.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

STEPS = ("numpy", "onnxruntime", "faiss", "load", "warm_up")

# Run in a fresh interpreter: prints one JSON line of cumulative (cpu_ms, wall_ms) after each step.
CHILD = r"""
import json, sys, time
t0, w0 = time.process_time(), time.perf_counter()
marks = {}
def mark(step):
    marks[step] = (1000 * (time.process_time() - t0), 1000 * (time.perf_counter() - w0))
import numpy; mark("numpy")
import onnxruntime; mark("onnxruntime")
import faiss; mark("faiss")
from sessionrec.serving.pipeline import LocalPipeline
pipeline = LocalPipeline(sys.argv[1], int(sys.argv[2]), threads=1); mark("load")
pipeline.warm_up(int(sys.argv[3])); mark("warm_up")
print(json.dumps(marks))
"""

VARIANTS = {
    "OpenBLAS default threads": {"OPENBLAS_NUM_THREADS": None},
    "OpenBLAS 1 thread (launcher, chart)": {"OPENBLAS_NUM_THREADS": "1"},
}


def run_once(repository: Path, version: int, batch: int, env_changes: dict) -> dict:
    env = dict(os.environ)
    for key, value in env_changes.items():
        env.pop(key, None) if value is None else env.__setitem__(key, value)
    out = subprocess.run([sys.executable, "-c", CHILD, str(repository), str(version), str(batch)],
                         capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", required=True, help="an exported model repository")
    parser.add_argument("--version", type=int, help="default: the live version")
    parser.add_argument("--batch", type=int, default=64, help="warm-up batch (the fused step's max_batch_size)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", help="also write the markdown report here")
    args = parser.parse_args(argv)

    from tqdm import tqdm

    from sessionrec.export.repository import current_version

    repository = Path(args.repository)
    version = args.version or current_version(repository)
    if version is None:
        parser.error(f"{repository}: no live version")
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for _ in tqdm(range(args.repeats), desc="stub starts", unit="round"):
        for name, env in VARIANTS.items():  # interleaved: drift on a shared machine hits both
            runs[name].append(run_once(repository, version, args.batch, env))

    lines = [f"# Python stub start-up (`python benchmarks/stub_start.py --repository {repository} "
             f"--repeats {args.repeats}`)", "",
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, {os.cpu_count()} cores; "
             f"version {version}; medians of {args.repeats} fresh interpreters per variant, interleaved. "
             "Cumulative CPU / wall milliseconds after each step.", "",
             "| variant | " + " | ".join(STEPS) + " | CPU / wall |", "|---|" + "---|" * (len(STEPS) + 1)]
    for name, results in runs.items():
        cells = []
        for step in STEPS:
            cpu = statistics.median(r[step][0] for r in results)
            wall = statistics.median(r[step][1] for r in results)
            cells.append(f"{cpu:.0f} / {wall:.0f}")
        total_cpu = statistics.median(r[STEPS[-1]][0] for r in results)
        total_wall = statistics.median(r[STEPS[-1]][1] for r in results)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {total_cpu / total_wall:.2f} |")
    report = "\n".join(lines)
    print(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
