"""`sessionrec loadtest`: a headless Locust run with reports and an SLA check (exit 1 when missed)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "loadtest",
        help="Locust load test of the recommend ensemble with an SLA check",
        description=(
            "Replay real sessions click by click against the `recommend` ensemble over gRPC (Locust, "
            "headless, bounded by --run-time). With --repository it starts the embedded server, loads it, "
            "tests and stops it; with --host it tests a running server or a cluster. Writes Locust's CSV "
            "and HTML reports, a per-second plot of p50/p95/p99 and throughput (PNG) and a summary JSON, "
            "and exits 1 when the SLA percentile exceeds its target or any request failed. "
            "Example: sessionrec loadtest --repository runs/repository --users 16 --run-time 30 --sla-ms 70"
        ),
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--repository", help="start the embedded server on this exported repository")
    target.add_argument("--host", help="test a running server: HOST:PORT or dns:///NAME:PORT")
    parser.add_argument("--sessions", help="sessions to replay: SR-GNN folder, click log CSV or replay .txt "
                                           "(default with --repository: the data its live version was exported with)")
    parser.add_argument("--out", help="report folder (default: a new temporary folder)")
    parser.add_argument("--users", type=int, default=16, help="concurrent users (default 16)")
    parser.add_argument("--spawn-rate", type=float, help="users started per second (default: all within a second)")
    parser.add_argument("--run-time", type=float, default=30.0, help="seconds (default 30)")
    parser.add_argument("--warmup", type=float, default=0.0, help="first seconds plotted but not judged (default 0)")
    parser.add_argument("--think-time", default="0", help="seconds between a user's clicks, '2' or '1:3' (default 0)")
    parser.add_argument("--arrival-rate", type=float, default=0.0,
                        help="open loop: this many requests/s in total on a fixed schedule (default 0: closed loop)")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--exclude-seen", action="store_true")
    parser.add_argument("--distinct-sessions", type=int, default=0, help="replay only the first N sessions (0 = all)")
    parser.add_argument("--deadline", type=float, default=2.0, help="per-request deadline in seconds (default 2)")
    parser.add_argument("--retries", type=int, default=0, help="client retries on UNAVAILABLE/RESOURCE_EXHAUSTED (default 0)")
    parser.add_argument("--sla-ms", type=float, default=70.0, help="latency target in ms (default 70)")
    parser.add_argument("--sla-percentile", type=float, default=95.0, help="percentile held to it (default 95)")
    parser.add_argument("--sla-max-failures", type=int, default=0, help="failed requests allowed (default 0)")
    parser.add_argument("--response-cache-mb", type=int, default=0,
                        help="with --repository: Triton response cache size (the export needs --response-cache)")
    parser.add_argument("--mode", choices=("full", "click"), default="full",
                        help="full: each request carries the session so far (`recommend`); click: one click per "
                             "request with a session id, the server keeps the session (`recommend_session`)")
    parser.add_argument("--redis", help="with --repository and --mode click: the server's Redis, a redis:// URL or "
                                        "'local' (a throwaway redis-server on 127.0.0.1; default local)")
    parser.add_argument("--tls-ca", help="CA certificate: gRPC over TLS (with --host)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run)


def run(args) -> int:
    from sessionrec.load_tests.runner import LoadTest, run_embedded, run_load_test, sessions_for, temporary_out_dir
    from sessionrec.load_tests.sla import SLA

    out = Path(args.out) if args.out else temporary_out_dir()
    sessions = sessions_for(args.sessions, out, repository=args.repository)
    test = LoadTest(
        host=args.host or "", sessions_file=sessions, out_dir=out, users=args.users, spawn_rate=args.spawn_rate,
        run_time_s=args.run_time, warmup_s=args.warmup, think_time=args.think_time, arrival_rate=args.arrival_rate,
        k=args.k, exclude_seen=args.exclude_seen, distinct_sessions=args.distinct_sessions, deadline_s=args.deadline,
        retries=args.retries, sla=SLA(args.sla_percentile, args.sla_ms, args.sla_max_failures), seed=args.seed,
        tls_ca=args.tls_ca, protocol="session" if args.mode == "click" else "grpc",
    )
    if args.repository:
        with redis_for(args) as environment:
            result = run_embedded(args.repository, test, response_cache_bytes=args.response_cache_mb << 20,
                                  environment=environment)
    else:
        result = run_load_test(test)
    summary, latency = result.summary, result.summary["latency_ms"]
    print(f"{summary['requests']} requests in {summary['duration_s']:.1f} s, {summary['failures']} failed, "
          f"{summary['throughput_rps']:.1f} req/s")
    print("latency ms: " + ", ".join(f"{key} {value:.2f}" for key, value in latency.items()))
    print(f"load generator: {result.generator_cores:.2f} cores on average")
    for name in ("html", "plot", "summary", "stats"):
        print(f"  {name:8} {result.files[name]}")
    print(result.verdict.line())
    return 0 if result.passed else 1


@contextmanager
def redis_for(args):
    """The server environment for --mode click: SESSIONREC_REDIS_URL of --redis, or of a local redis-server."""
    if args.mode != "click":
        yield {}
    elif args.redis and args.redis != "local":
        yield {"SESSIONREC_REDIS_URL": args.redis}
    else:
        from sessionrec.serving.redis_local import LocalRedis

        with LocalRedis() as redis:
            yield {"SESSIONREC_REDIS_URL": redis.socket_url}
