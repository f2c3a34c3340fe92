"""`sessionrec ensemble`: fold two trained checkpoints into one servable model (sessionrec.ensemble).

The mixing factor is chosen on the members' validation split; the test set is never read. The
result is a normal checkpoint (family `concat`): evaluate and export it like any other.

Example: sessionrec ensemble runs/a/best.pt runs/b/best.pt --data ../shared/data/diginetica --out runs/ab
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub) -> None:
    parser = sub.add_parser("ensemble", help="fold two checkpoints into one session vector (weight chosen on validation)",
                            description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs=2, help="two selection-run best.pt files trained on the same data")
    parser.add_argument("--data", required=True, help="the data they were trained on (its training split's validation tail is used)")
    parser.add_argument("--out", required=True, help="output folder: best.pt, ensemble.json")
    parser.add_argument("--grid", default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1",
                        help="mixing factors alpha to try (score = 2(1-alpha) s1.v1 + 2 alpha s2.v2)")
    parser.add_argument("--quiet", action="store_true")
    parser.set_defaults(run=run)


def run(args) -> int:
    from sessionrec.checkpoint import save_checkpoint
    from sessionrec.data import DataError
    from sessionrec.ensemble import build_ensemble

    try:
        grid = [float(x) for x in args.grid.split(",") if x.strip()]
    except ValueError:
        raise DataError(f"--grid must be comma-separated numbers, got {args.grid!r}") from None
    result = build_ensemble(args.checkpoints, args.data, grid=grid, progress=not args.quiet)
    out = Path(args.out)
    best = save_checkpoint(result.checkpoint, out / "best.pt")
    summary = {"best": str(best), "alpha": result.alpha, "valid": result.checkpoint.metrics["valid"],
               "grid": [{k: r[k] for k in ("alpha", "valid_HR@20", "valid_MRR@20")} for r in result.grid]}
    (out / "ensemble.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0
