"""`sessionrec serve`: the embedded tritonserver on 127.0.0.1, healthy only when canaries pass."""

from __future__ import annotations

import logging
import signal
import threading


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "serve",
        help="run the real tritonserver on an exported repository (embedded default)",
        description=(
            "Start tritonserver (from the nvidia-pytriton wheel) on 127.0.0.1, load the live version, "
            "replay the manifest's canary requests and refuse to report healthy if an answer differs. "
            "New versions written by `sessionrec export` (and `sessionrec rollback`) are picked up while "
            "serving. A sharded export (export --shards S) gets a tritonserver per retrieval shard on 127.0.0.1 "
            "beside the front, each version's shards loaded before the front switches to it. "
            "Stops cleanly on Ctrl-C / SIGTERM. "
            "Example: sessionrec serve --repository runs/repository --grpc-port 8001"
        ),
    )
    parser.add_argument("--repository", required=True)
    parser.add_argument("--address", default="127.0.0.1",
                        help="listen address for all endpoints (default loopback only; 0.0.0.0 exposes it)")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--response-cache-mb", type=int, default=0,
                        help="size of Triton's local response cache (0 = off; the ensemble must be exported with --response-cache)")
    parser.add_argument("--tls-cert", help="server certificate (PEM) for gRPC TLS")
    parser.add_argument("--tls-key", help="server private key (PEM) for gRPC TLS")
    parser.add_argument("--watch-seconds", type=float, default=2.0, help="how often to look for a new live version (0 = never)")
    parser.add_argument("--log-file", help="tritonserver log (default: a temp file, printed at start)")
    parser.add_argument("--redis", help="serve recommend_session with the guest history in this Redis: a redis:// "
                                        "(or rediss://) URL, or 'local' for a throwaway redis-server on 127.0.0.1 "
                                        "(default: $SESSIONREC_REDIS_URL; unset = recommend only)")
    parser.add_argument("--candidate", type=int, metavar="M",
                        help="also serve version M as the ensemble recommend_candidate, beside the live version on "
                             "recommend (pinned first if it is not yet; docs/EXPERIMENTS.md)")
    parser.add_argument("--trace-endpoint", metavar="URL",
                        help="export OpenTelemetry traces over OTLP/HTTP to this collector (http://host:4318): "
                             "tritonserver's spans and the step's stage spans (docs/MONITORING.md, Tracing)")
    parser.add_argument("--trace-sample-rate", type=float, default=0.01,
                        help="share of requests traced with --trace-endpoint (default 0.01: 1 in 100)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from sessionrec.serving.embedded import EmbeddedServer
    from sessionrec.serving.tls import GrpcTLS

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise SystemExit("sessionrec serve: error: --tls-cert and --tls-key go together")
        tls = GrpcTLS(server_cert=args.tls_cert, server_key=args.tls_key)
    local_redis = None
    environment = {}
    if args.redis == "local":
        from sessionrec.serving.redis_local import LocalRedis

        local_redis = LocalRedis().start()
        environment["SESSIONREC_REDIS_URL"] = local_redis.socket_url
    elif args.redis:
        environment["SESSIONREC_REDIS_URL"] = args.redis
    if args.candidate is not None:
        from sessionrec.export.candidate import pin_candidate

        pinned = pin_candidate(args.repository, args.candidate)
        print(f"sessionrec serve: candidate version {pinned.candidate} beside live version {pinned.control}"
              + (" (steps pinned to both: not the two newest)" if pinned.specific_steps else ""), flush=True)
    tracing = None
    if args.trace_endpoint:
        from sessionrec.serving.tracing import TracingConfig

        try:
            tracing = TracingConfig(args.trace_endpoint, sample_rate=args.trace_sample_rate)
        except ValueError as exc:
            raise SystemExit(f"sessionrec serve: error: {exc}") from None
    server = EmbeddedServer(
        args.repository, tracing=tracing, watch_seconds=args.watch_seconds, candidate=args.candidate is not None, address=args.address, grpc_port=args.grpc_port,
        http_port=args.http_port, metrics_port=args.metrics_port,
        response_cache_bytes=args.response_cache_mb << 20, grpc_tls=tls, log_file=args.log_file,
        environment=environment,
    )
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        server.start()
    except BaseException:
        if local_redis is not None:
            local_redis.close()
        raise
    try:
        print(f"sessionrec serve: healthy, serving version {server.version}", flush=True)
        models = "'recommend'" + (", 'recommend_session'" if server.session_models else "")
        print(f"  gRPC    {server.grpc_url}   (models {models})", flush=True)
        if local_redis is not None:
            print(f"  redis   {local_redis.url}   (throwaway, in memory)", flush=True)
        if server.candidate_version is not None:
            print(f"          candidate version {server.candidate_version} on model 'recommend_candidate'", flush=True)
        for shard, address in enumerate(server.shards.addresses if server.shards is not None else ()):
            print(f"  shard {shard} {address}   (retrieval_shard_{shard}, log {server.shards.servers[shard].log_path})",
                  flush=True)
        print(f"  HTTP    {server.http_url}", flush=True)
        print(f"  metrics {server.metrics_url}", flush=True)
        print(f"  log     {server.server.log_path}", flush=True)
        done.wait()
        print("sessionrec serve: stopping", flush=True)
    finally:
        server.stop()
        if local_redis is not None:
            local_redis.close()
    return 0
