"""Cache hit rates on replayed Diginetica traffic: an exact-history response cache per replica vs the
one-click answer table (sessionrec.serving.one_click), side by side in one run.

    python benchmarks/cache_hit_rates.py --data /work/shared/data/diginetica --out docs/benchmarks/cache_hits.md

Traffic: every test session replayed click by click, as the load tests do (a session [a, b, c] makes
the requests [a], [a, b], [a, b, c]), sessions in the file's (time) order. Each request goes to a
replica drawn at random (gRPC round robin over pods spreads one guest's clicks over all of them).

- exact-history cache: Triton's response cache on `recommend`, one per replica, keyed on the whole
  request (history, K, EXCLUDE_SEEN); unbounded here, so the figures are its upper bound. On
  `recommend_session` it is refused (the config generator): a hit would skip storing the click.
- one-click table: every one-click request whose item is in the catalogue, on any replica and on
  either ensemble; computed at export, so nothing has to be seen first.
Also the same with the catalogue's training sessions as traffic (--also-train), a larger replay.
"""

from __future__ import annotations

import argparse
import random
import shlex
import sys
from pathlib import Path


def read_sessions(path: Path) -> list[list[int]]:
    with open(path) as handle:
        return [[int(t) for t in line.split()] for line in handle if line.strip()]


def replay(sessions: list[list[int]], replicas: int, catalogue: set[int], seed: int = 0) -> dict:
    rng = random.Random(seed)
    caches = [set() for _ in range(replicas)]
    requests = exact = table = either = 0
    for session in sessions:
        for n in range(1, len(session) + 1):
            key = tuple(session[:n])
            requests += 1
            replica = caches[rng.randrange(replicas)]
            hit_exact = key in replica
            replica.add(key)
            hit_table = n == 1 and session[0] in catalogue
            exact += hit_exact
            table += hit_table
            either += hit_exact or hit_table
    return {"requests": requests, "exact": exact / requests, "table": table / requests, "either": either / requests}


def markdown(rows: dict, command: str, counts: dict) -> str:
    lines = ["# Cache hit rates on replayed Diginetica traffic", "", f"Command: `{command}`", "",
             "Pure replay arithmetic (no server): the figures do not depend on the machine.", ""]
    for name, by_replicas in rows.items():
        c = counts[name]
        lines += [f"## {name}: {c['sessions']:,} sessions, {c['requests']:,} requests "
                  f"({c['one_click_share'] * 100:.1f} % of them one-click)", "",
                  "| replicas | exact-history cache per replica (upper bound) | one-click table | either |",
                  "|---:|---:|---:|---:|"]
        for replicas, r in by_replicas.items():
            lines.append(f"| {replicas} | {r['exact'] * 100:.1f} % | {r['table'] * 100:.1f} % | {r['either'] * 100:.1f} % |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="SR-GNN folder (test_sessions.txt, train_sessions.txt)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--replicas", default="1,2,4,8")
    parser.add_argument("--also-train", action="store_true", help="replay the training sessions too")
    args = parser.parse_args(argv)
    data = Path(args.data)
    sets = {"test sessions (last 7 days)": read_sessions(data / "test_sessions.txt")}
    if args.also_train:
        sets["training sessions"] = read_sessions(data / "train_sessions.txt")
    catalogue = {i for s in read_sessions(data / "train_sessions.txt") for i in s}  # what a model trained on them knows
    rows, counts = {}, {}
    for name, sessions in sets.items():
        rows[name] = {r: replay(sessions, r, catalogue) for r in (int(x) for x in args.replicas.split(","))}
        total = sum(len(s) for s in sessions)
        counts[name] = {"sessions": len(sessions), "requests": total, "one_click_share": len(sessions) / total}
        print(name, counts[name], rows[name], flush=True)
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(markdown(rows, command, counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
