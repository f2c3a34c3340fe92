"""`sessionrec train`: train a session model with validation-based epoch selection."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

from sessionrec.errors import SessionrecError
from sessionrec.families import TRAINABLE as FAMILIES, DEFAULT_FAMILY, config_fields, get_family
from sessionrec.train import TrainConfig, train


def _add_dataclass_flags(parser: argparse.ArgumentParser, cls, skip=(), label: str = "") -> None:
    """One kebab-case flag per config field; the default shown is the dataclass's (one source)."""
    for f in fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f"{label}default: {f.default}")
        else:
            kind = {"int": int, "float": float, "str": str}.get(f.type if isinstance(f.type, str) else f.type.__name__, str)
            parser.add_argument(flag, type=kind, default=None, help=f"{label}default: {f.default}")


def _config_from(cls, args, skip=(), base: dict | None = None):
    """cls from the flags given, over `base` (e.g. a tuned config), over the dataclass defaults."""
    names = {f.name for f in fields(cls)} - set(skip)
    values = {k: v for k, v in (base or {}).items() if k in names}
    values.update({name: getattr(args, name) for name in names if getattr(args, name, None) is not None})
    return cls(**values)


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "train",
        help="train a session model",
        description=(
            "Train on a SR-GNN-format folder (train_sessions.txt/test_sessions.txt) or a raw click log "
            "(Diginetica `session_id;user_id;item_id;timeframe;eventdate` or `session_id,item_id,timestamp`). "
            "Epochs are selected on a time-based validation split; the test set is never read. "
            "Example: sessionrec train ../shared/data/diginetica --out runs/digi"
        ),
    )
    parser.add_argument("data", help="SR-GNN folder or raw click-log CSV")
    parser.add_argument("--out", required=True, help="output folder (best.pt, last.pt, history.json, training.png)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--config", metavar="JSON", help="start from a tuned config (`sessionrec tune`'s best_config.json: "
                        "its model and train sections); flags given here override it")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--members", type=int, choices=(1, 2), default=1,
                        help="2: train two members of this recipe side by side (seeds SEED and SEED+1, half the "
                             "threads each, OUT/member-1 and OUT/member-2) and fold them into one checkpoint, "
                             "OUT/best.pt, its mixing factor chosen on validation (sessionrec.members)")
    parser.add_argument("--second-member", metavar="KEY=VALUE,...", default="",
                        help="with --members 2: member 2's recipe differs from member 1's in these model or "
                             "training fields, e.g. position=forward or node_update=mean (members that differ "
                             "more gain more when folded)")
    parser.add_argument("--model", choices=sorted(FAMILIES), default=DEFAULT_FAMILY,
                        help="model family: " + "; ".join(f"{f.name} = {f.summary}" for f in FAMILIES.values()))
    # One flag per field of any family's config; a field two families share (dim, max_len, ...) is one flag,
    # its default shown per family. A flag the chosen family lacks is an error (run()).
    seen: set[str] = {"n_items"}
    for family in FAMILIES.values():
        group = parser.add_argument_group(f"model --model {family.name} ({family.config_class.__name__})")
        _add_dataclass_flags(group, family.config_class, skip=tuple(seen), label=f"{family.name} ")
        seen |= config_fields(family)
    training = parser.add_argument_group("training (TrainConfig)")
    _add_dataclass_flags(training, TrainConfig)
    parser.set_defaults(run=run)


def _model_config(args, base: dict | None = None):
    family = get_family(args.model)
    own = config_fields(family)
    foreign = sorted(name for other in FAMILIES.values() for name in config_fields(other) - own
                     if getattr(args, name, None) is not None)
    if foreign:
        raise SessionrecError(f"--model {family.name} has no option " + ", ".join("--" + n.replace("_", "-") for n in foreign))
    return _config_from(family.config_class, args, skip=("n_items",), base=base)


def run(args) -> int:
    tuned = json.loads(open(args.config).read()) if args.config else {}
    model_config = _model_config(args, base=tuned.get("model"))
    config = _config_from(TrainConfig, args, base=tuned.get("train"))
    if args.second_member and args.members < 2:
        raise SessionrecError("--second-member needs --members 2")
    if args.members > 1:
        from sessionrec.members import parse_overrides, train_members

        second = parse_overrides(args.second_member, model_config, config)
        folded = train_members(args.data, args.out, model_config, config, members=args.members,
                               resume=args.resume, progress=not args.quiet, second=second)
        print(json.dumps({"best": str(folded.best_path), "members": [str(p) for p in folded.member_paths],
                          "alpha": folded.alpha, "valid": folded.valid_metrics, "seconds": round(folded.seconds, 1)},
                         indent=2))
        return 0
    result = train(args.data, args.out, model_config=model_config, config=config, resume=args.resume,
                   progress=not args.quiet)
    print(json.dumps({"best": str(result.best_path), "best_epoch": result.best_epoch,
                      "valid": result.valid_metrics, "seconds": round(result.seconds, 1)}, indent=2))
    return 0
