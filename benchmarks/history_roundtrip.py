"""The history step's Redis round trip, in process: redis-py's client and pool vs sessionrec's lean pool.

    python benchmarks/history_roundtrip.py                      # ~1 min on 2 cores
    python benchmarks/history_roundtrip.py --events 3000 --gap-ms 0,5

One throwaway redis-server (Debian's, 127.0.0.1), one event per round trip (a batch of one: what
100 req/s gives), the same script, keys and arguments for every system; systems take turns in
rounds of --round events so both meet the same machine. Systems:

- `redis-py client`: `SessionHistory.record` whose round trip goes through `redis.Redis` over a
  `BlockingConnectionPool` (`evalsha`), with the step's timeouts and no retries: how the history
  step talked to Redis before sessionrec.serving.redis_conn (kept here as the baseline);
- `lean pool`: `SessionHistory.record` as the step runs it, through sessionrec.serving.redis_conn.
  Both include the step's own work (event checks, HMAC key, parsing the reply into item ids);
- `PING`: redis-py's client, the floor of one loopback round trip with no script.

--gap-ms sleeps between events: with a gap both processes go idle, as at 100 req/s, and every round
trip pays two wake-ups; with none they stay hot.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000, help="events per system and gap")
    parser.add_argument("--round", type=int, default=100, help="events per turn")
    parser.add_argument("--gap-ms", default="0,4", help="idle time between events, comma-separated")
    args = parser.parse_args(argv)

    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from sessionrec.serving.history import SCRIPT, ClickEvent, HistoryConfig, SessionHistory
    from sessionrec.serving.redis_local import LocalRedis

    with LocalRedis() as server:
        timeout = 0.02
        pool = redis.BlockingConnectionPool.from_url(
            server.url, max_connections=4, timeout=timeout, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0), retry_on_timeout=False, health_check_interval=0, socket_keepalive=True)
        client = redis.Redis(connection_pool=pool)
        # The round trip alone: no updates channel (speculation publishes a message per stored click).
        config = HistoryConfig(url=server.url, timeout_ms=timeout * 1000, speculate=False)
        history = SessionHistory(config)
        sha = client.script_load(SCRIPT)

        class Sent:
            def __init__(self, call):
                self.replies = call  # the round trip happens when the step reads the replies

        class RedisPyHistory(SessionHistory):
            """The baseline: the same step, its round trip through redis-py's client and pool."""

            def _send(self, events):
                key = self.key(events[0].session_id)
                e = events[0]
                return Sent(lambda: [client.evalsha(sha, 2, f"{key}:c", f"{key}:f", str(e.seq),
                                                    str(int(self.config.ttl_s * 1000)), str(self.config.max_len), "",
                                                    *(str(int(i)) for i in e.new_items))])

        baseline = RedisPyHistory(config)

        def event(i: int) -> ClickEvent:
            return ClickEvent(b"guest-%d" % (i // 10), np.array([1000 + i % 7]), i % 10 + 1)

        systems = {"redis-py client": lambda i: baseline.record(event(i)), "lean pool": lambda i: history.record(event(i)),
                   "PING": lambda i: client.ping()}
        print(f"{os.cpu_count()} cores, {platform.platform()}; redis-py {redis.__version__}; shared machine")
        print("| gap ms | system | events | p50 us | p95 us |\n|---:|---|---:|---:|---:|")
        for gap in (float(g) / 1000 for g in args.gap_ms.split(",")):
            times: dict[str, list[float]] = {name: [] for name in systems}
            for name, run in systems.items():  # warm each path (connections, script cache)
                run(0)
            offset = 0
            while min(len(t) for t in times.values()) < args.events:
                for name, run in systems.items():
                    for _ in range(args.round):
                        offset += 1
                        began = time.perf_counter()
                        run(offset)
                        times[name].append(time.perf_counter() - began)
                        if gap:
                            time.sleep(gap)
            for name, t in times.items():
                print(f"| {gap * 1000:g} | {name} | {len(t)} | {np.median(t) * 1e6:.0f} | {np.percentile(t, 95) * 1e6:.0f} |")
        script = client.info("commandstats").get("cmdstat_evalsha", {})
        print(f"\nthe script inside Redis (INFO commandstats): {script.get('usec_per_call', float('nan')):.1f} us "
              f"per EVALSHA over {script.get('calls', 0)} calls")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
