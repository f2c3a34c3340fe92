"""`sessionrec` command line: a thin layer over the library; errors become one readable line.

    sessionrec train DATA --out DIR          train with validation-based selection
    sessionrec evaluate CHECKPOINT DATA      full-catalogue metrics, baselines side by side
    sessionrec export CHECKPOINT --repository DIR     new verified Triton model version
    sessionrec export-encoder --module M:C ...        the same for a user's own PyTorch encoder
    sessionrec serve --repository DIR        embedded tritonserver on 127.0.0.1
    sessionrec rollback --repository DIR     serve the previous version again
    sessionrec build-engine --repository DIR TensorRT plan on a GPU node
    sessionrec recommend ITEM ... --url HOST:PORT     ask a running server
    sessionrec click SESSION ITEM ...        one click; the server keeps the session (Redis)
    sessionrec loadtest --repository DIR     Locust run with an SLA check
    sessionrec demo                          all of the above on the bundled sample
    sessionrec experiment analyze EVENTS     A/B readout: SRM gate, z-test, delta method, mSPRT
    sessionrec ingest --redis URL --out DIR  events -> click log for the next retrain
    sessionrec rollout --prometheus URL ...  canary: ramp the candidate, roll back or promote
    sessionrec synthesize-catalogue CKPT --items N --out F   catalogue extended to N synthetic items
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Each sub-command lives in its own module (pipx-style) and registers itself via `add_parser(sub)`.
COMMANDS = [
    "sessionrec.commands.train_cmd",
    "sessionrec.commands.tune_cmd",
    "sessionrec.commands.ensemble_cmd",
    "sessionrec.commands.evaluate_cmd",
    "sessionrec.commands.export_cmd",
    "sessionrec.commands.byo_cmd",
    "sessionrec.commands.build_engine_cmd",
    "sessionrec.commands.serve_cmd",
    "sessionrec.commands.recommend_cmd",
    "sessionrec.commands.click_cmd",
    "sessionrec.commands.loadtest_cmd",
    "sessionrec.commands.demo_cmd",
    "sessionrec.commands.experiment_cmd",
    "sessionrec.commands.ingest_cmd",
    "sessionrec.commands.rollout_cmd",
    "sessionrec.commands.synthesize_cmd",
    "sessionrec.commands.monitor_cmd",
]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sessionrec", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # A command whose third-party dependency is absent in this image (the TensorRT
            # engine-builder image has no torch) is left out; a missing sessionrec module is a bug.
            if exc.name and exc.name.startswith("sessionrec") and exc.name != name:
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from sessionrec.errors import USER_ERRORS

    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or EXIT_OK)
    except USER_ERRORS as exc:
        print(f"sessionrec {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"sessionrec {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
