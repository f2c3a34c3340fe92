"""The history step's Redis round trip over TCP loopback, the unix socket, and the unix socket with a
short spin on the reply, side by side on one throwaway redis-server.

    python benchmarks/redis_transport.py                 # ~1 min: 1,500 events per transport and gap

Each event is SessionHistory.record_many of one click (HMAC, EVALSHA of history.lua, reply parse),
the three variants alternating in order (ABC, CBA, ...) so a stall of the shared machine hits all.
--gaps sleeps between events: with a gap both processes go idle and the round trip pays two
wake-ups (as at 100 req/s); with none they stay hot. `unix+spin` polls the socket for up to 0.4 ms
before blocking on the reply (a rejected idea, kept here with its measurement: docs/BENCHMARKS.md).
The first 100 events of each series are dropped (connection set-up, script load).
"""

from __future__ import annotations

import argparse
import os
import platform
import select
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as in the serving stub

import numpy as np  # noqa: E402


def spinning(history, spin_s: float):
    """`history` whose connections poll the socket for up to `spin_s` before the blocking read."""
    base = history._connections._class

    class Spin(base):
        def read_response(self, *args, **kwargs):
            end = time.perf_counter() + spin_s
            while time.perf_counter() < end and not select.select([self._sock], [], [], 0)[0]:
                pass
            return super().read_response(*args, **kwargs)

    history._connections._class = Spin
    return history


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1500, help="events per variant and gap")
    parser.add_argument("--gaps", default="4,0", help="ms idle between events, comma-separated")
    args = parser.parse_args(argv)

    from sessionrec.serving.history import STORED, ClickEvent, HistoryConfig, SessionHistory
    from sessionrec.serving.redis_local import LocalRedis

    print(f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, {platform.platform()}")
    print("| gap ms | transport | events | p50 us | p95 us |\n|---:|---|---:|---:|---:|")
    with LocalRedis() as server:
        variants = {"tcp": SessionHistory(HistoryConfig(url=server.url, speculate=False)),  # the round trip alone
                    "unix": SessionHistory(HistoryConfig(url=server.socket_url, speculate=False)),
                    "unix+spin": spinning(SessionHistory(HistoryConfig(url=server.socket_url, speculate=False)), 0.0004)}
        for gap in (float(g) / 1000 for g in args.gaps.split(",")):
            times = {name: [] for name in variants}
            for i in range(args.events):
                order = list(variants.items()) if i % 2 else list(variants.items())[::-1]
                for name, history in order:
                    if gap:
                        time.sleep(gap)
                    event = ClickEvent(b"s%d-%s-%g" % (i // 5, name.encode(), gap), np.array([i % 1000 + 1]), i % 5 + 1)
                    began = time.perf_counter()
                    answer = history.record_many([event])[0]
                    times[name].append((time.perf_counter() - began) * 1e6)
                    if answer.state != STORED:  # a timeout on the shared machine: not a round trip, skip it
                        times[name].pop()
                        time.sleep(history.config.retry_after_s + 0.1)
            for name, values in times.items():
                v = np.asarray(values[100:])
                print(f"| {gap * 1000:g} | {name} | {v.size} | {np.percentile(v, 50):.0f} | {np.percentile(v, 95):.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
