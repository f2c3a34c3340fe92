"""`sessionrec tune`: Optuna search over the model and training fields that declare a range.

The study lives in OUT/study.db (SQLite): run the same command again to resume or extend it, or
point several machines at copies. Only the training split is read; trials are scored on its
time-based validation tail. Writes best_config.json, trials.csv / trials.md and PNG plots.

Example: sessionrec tune ../shared/data/diginetica --out runs/tune --minutes 120 --max-train-examples 200000
"""

from __future__ import annotations

import argparse
import json

from sessionrec.commands.train_cmd import _add_dataclass_flags, _config_from
from sessionrec.model import ModelConfig
from sessionrec.train import TrainConfig
from sessionrec.tune import TuneConfig, search_space, tune


def add_parser(sub) -> None:
    parser = sub.add_parser("tune", help="hyper-parameter search (Optuna TPE + pruning, resumable SQLite study)",
                            description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="SR-GNN folder or raw click log (only its training split is used)")
    parser.add_argument("--out", required=True, help="study folder (study.db, best_config.json, trials.*, plots)")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--list", action="store_true", help="print the searchable fields and their ranges, then exit")
    group = parser.add_argument_group("search (TuneConfig)")
    _add_dataclass_flags(group, TuneConfig)
    base = parser.add_argument_group("fixed model and training values for every trial (ModelConfig, TrainConfig)")
    _add_dataclass_flags(base, ModelConfig, skip=("n_items",))
    _add_dataclass_flags(base, TrainConfig, skip=("epochs", "max_train_examples", "seed"))
    parser.set_defaults(run=run)


def run(args) -> int:
    config = _config_from(TuneConfig, args)
    if args.list:
        for name, (owner, space) in search_space(config.params).items():
            print(f"{owner:5s} {name:16s} {space}")
        return 0
    summary = tune(args.data, args.out, config,
                   base_model=_config_from(ModelConfig, args, skip=("n_items",)),
                   base_train=_config_from(TrainConfig, args, skip=("epochs", "max_train_examples", "seed")),
                   progress=not args.quiet)
    print(json.dumps(summary, indent=2, default=str))
    return 0
