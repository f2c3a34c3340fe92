"""`sessionrec click SESSION ITEM ...`: one click event to `recommend_session`; the server keeps the session."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "click",
        help="send one click of a guest session to a running server (recommend_session, gRPC)",
        description=(
            "Record the item(s) a guest just viewed in the server's session history (Redis) and print the "
            "top K for the whole session so far, with the history length used and what the server did: "
            "stored, duplicate (a retried click, --seq seen before), degraded (Redis slow or down: "
            "answered from this request's clicks) or not_stored. Retries UNAVAILABLE/RESOURCE_EXHAUSTED "
            "with the same sequence number, so a click is stored once. "
            "Example: sessionrec click guest-42 84051 --url 127.0.0.1:8001 --seq 1 --k 10"
        ),
    )
    parser.add_argument("session", help="the guest's session id (hashed before it reaches Redis)")
    parser.add_argument("items", nargs="+", type=int, metavar="ITEM", help="raw item id(s) of this click event")
    parser.add_argument("--seq", type=int, help="the event's sequence number in the session (default: time in ms)")
    parser.add_argument("--full-session", nargs="+", type=int, metavar="ITEM",
                        help="the whole session, answered from instead of the stored history")
    parser.add_argument("--url", default="127.0.0.1:8001", help="gRPC target (default 127.0.0.1:8001)")
    parser.add_argument("--k", type=int, default=20, help="number of recommendations (default 20)")
    parser.add_argument("--exclude-seen", action="store_true", help="drop items already in the session")
    parser.add_argument("--timeout", type=float, default=2.0, help="deadline in seconds, retries included (default 2)")
    parser.add_argument("--retries", type=int, default=4, help="retries on UNAVAILABLE/RESOURCE_EXHAUSTED (default 4)")
    parser.add_argument("--json", action="store_true", help="print the answer as JSON instead of a table")
    parser.set_defaults(run=run)


def run(args) -> int:
    from sessionrec.clients import RecommendClient, RetryPolicy
    from sessionrec.commands.recommend_cmd import format_table

    with RecommendClient(args.url, timeout=args.timeout, retry=RetryPolicy(max_attempts=1 + max(0, args.retries))) as client:
        rec = client.click(args.session, args.items, k=args.k, exclude_seen=args.exclude_seen, seq=args.seq,
                           full_session=args.full_session)
    if args.json:
        print(json.dumps(rec.as_dict()))
        return 0
    print(format_table(rec))
    print(f"history: {rec.history_length} clicks, {rec.state} (seq {rec.seq})")
    return 0
