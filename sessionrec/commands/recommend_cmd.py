"""`sessionrec recommend ITEM ...`: ask a running server (the `recommend` ensemble over gRPC), print a table."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "recommend",
        help="ask a running server for recommendations (gRPC)",
        description=(
            "Send one session (raw item ids, oldest first) to the `recommend` ensemble and print the top K "
            "with their scores, how many input ids were unknown, and whether popular items answered "
            "(no known id). Retries UNAVAILABLE/RESOURCE_EXHAUSTED within the deadline. "
            "Example: sessionrec recommend 84051 14513 84051 --url 127.0.0.1:8001 --k 10"
        ),
    )
    parser.add_argument("items", nargs="+", type=int, metavar="ITEM", help="raw item ids of the session, oldest first")
    parser.add_argument("--url", default="127.0.0.1:8001",
                        help="gRPC target: HOST:PORT, or dns:///NAME:PORT for a headless Service (default 127.0.0.1:8001)")
    parser.add_argument("--k", type=int, default=20, help="number of recommendations (default 20)")
    parser.add_argument("--exclude-seen", action="store_true", help="drop items already in the session")
    parser.add_argument("--timeout", type=float, default=2.0, help="deadline in seconds, retries included (default 2)")
    parser.add_argument("--retries", type=int, default=4, help="retries on UNAVAILABLE/RESOURCE_EXHAUSTED (default 4)")
    parser.add_argument("--tls-ca", help="CA certificate (PEM): connect with TLS and verify the server with it")
    parser.add_argument("--tls-cert", help="client certificate (PEM), for mutual TLS")
    parser.add_argument("--tls-key", help="client private key (PEM), for mutual TLS")
    parser.add_argument("--model", default="recommend", help="ensemble name (default recommend)")
    parser.add_argument("--json", action="store_true", help="print the answer as JSON instead of a table")
    parser.set_defaults(run=run)


def run(args) -> int:
    from sessionrec.clients import RecommendClient, RetryPolicy
    from sessionrec.serving.tls import ClientTLS

    if bool(args.tls_cert) != bool(args.tls_key):
        raise SystemExit("sessionrec recommend: error: --tls-cert and --tls-key go together")
    if args.tls_cert and not args.tls_ca:
        raise SystemExit("sessionrec recommend: error: --tls-cert needs --tls-ca")
    tls = ClientTLS(args.tls_ca, args.tls_cert, args.tls_key) if args.tls_ca else None
    with RecommendClient(args.url, timeout=args.timeout, retry=RetryPolicy(max_attempts=1 + max(0, args.retries)),
                         tls=tls, model=args.model) as client:
        rec = client.recommend(args.items, k=args.k, exclude_seen=args.exclude_seen)
    if args.json:
        print(json.dumps(rec.as_dict()))
        return 0
    print(format_table(rec))
    return 0


def format_table(rec) -> str:
    lines = [f"{'rank':>4}  {'item':>12}  {'score':>9}"]
    lines += [f"{rank:>4}  {item:>12}  {score:>9.4f}" for rank, (item, score) in enumerate(rec.pairs(), start=1)]
    notes = [f"unknown input ids: {rec.unknown_count}"]
    if rec.fallback:
        notes.append("fallback: no input id is in the catalogue, popular items answered (scores = popularity share)")
    return "\n".join(lines + notes)
