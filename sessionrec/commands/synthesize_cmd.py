"""`sessionrec synthesize-catalogue`: a trained checkpoint with its catalogue extended to N items (sessionrec.synthetic)."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "synthesize-catalogue",
        help="extend a trained checkpoint's catalogue to N synthetic items (for large-catalogue tests and benchmarks)",
        description=(
            "Keeps the encoder and the real items; adds items drawn near existing ones (popularity-weighted parents "
            "plus Gaussian noise, real norm distribution) with Zipf click counts fitted to the real ones. The output "
            "is an ordinary checkpoint for `sessionrec export`. "
            "Example: sessionrec synthesize-catalogue runs/digi/best.pt --items 1000000 --out /tmp/synth-1m.pt"
        ),
    )
    parser.add_argument("checkpoint", help="a trained (or imported) checkpoint")
    parser.add_argument("--items", type=int, required=True, help="catalogue size after extension (real items included)")
    parser.add_argument("--out", required=True, help="the new checkpoint")
    parser.add_argument("--noise", type=float, default=0.5, help="new-row spread around its parent, x the table's per-dim std")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run)


def run(args) -> int:
    from sessionrec.synthetic import SyntheticConfig, extend_checkpoint

    report = extend_checkpoint(args.checkpoint, args.out, SyntheticConfig(n_items=args.items, noise=args.noise, seed=args.seed))
    print(json.dumps(report.to_dict(), indent=2))
    return 0
