"""`sessionrec ingest`: exposure/interaction events from Redis Streams or Kafka into the training click log."""

from __future__ import annotations

import json
import signal


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "ingest", help="events (Redis Streams or Kafka) -> click log for `sessionrec train`, once per event id",
        description="Read events, append them durably (fsync) to OUT/clicks.csv and OUT/events.jsonl, then commit "
                    "the offsets; a repeated event id is written once. Bad events go to OUT/rejected.jsonl. "
                    "Example: sessionrec ingest --redis redis://127.0.0.1:6379/0 --out runs/events && "
                    "sessionrec train runs/events/clicks.csv --out runs/next")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--redis", help="Redis URL (redis://host:port/db)")
    source.add_argument("--kafka", help="Kafka bootstrap servers (host:port[,host:port])")
    parser.add_argument("--stream", default="sessionrec:events", help="Redis stream key")
    parser.add_argument("--topic", default="sessionrec-events", help="Kafka topic")
    parser.add_argument("--group", default="sessionrec-ingest", help="consumer group whose offsets are committed")
    parser.add_argument("--consumer", default="ingest-0", help="Redis consumer name (its pending entries are re-read)")
    parser.add_argument("--out", required=True, help="folder for clicks.csv, events.jsonl, rejected.jsonl")
    parser.add_argument("--click-types", default="click",
                        help="interaction types that become training clicks, comma-separated")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--follow", action="store_true", help="keep reading until interrupted (else stop when idle)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from sessionrec.events.ingest import EventLogWriter, ingest

    if args.redis:
        from sessionrec.events.redis_streams import RedisStreamSource

        source = RedisStreamSource(args.redis, stream=args.stream, group=args.group, consumer=args.consumer)
    else:
        from sessionrec.events.kafka import KafkaSource

        source = KafkaSource(args.kafka, topic=args.topic, group=args.group)
    writer = EventLogWriter(args.out, click_types=tuple(t.strip() for t in args.click_types.split(",") if t.strip()))
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))  # finish the batch, commit, exit
    try:
        stats = ingest(source, writer, batch_size=args.batch_size, until_idle=not args.follow,
                       stop=lambda: bool(stopping))
    finally:
        source.close()
    print(json.dumps(stats.as_dict()))
    return 0
