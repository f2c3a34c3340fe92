"""The fused step in process: a `recommend` request against the same click as a `recommend_session` event.

    python benchmarks/stateful_step.py --repository runs/bench/repository --data ../shared/data/diginetica

What the stateful path costs inside the step, without Triton, gRPC or a client: the same exported
version loaded as the step loads it (sessionrec.serving.pipeline.LocalPipeline), one throwaway
redis-server (127.0.0.1), the Diginetica test sessions replayed click by click. Each click is
answered twice, alternating which goes first: stateless (`recommend`: the session so far in ITEMS)
and stateful (`recommend_session`: the click only, a session id and its position; the history comes
from Redis), and stateful again with speculation (sessionrec.serving.history_cache: the answer is
computed while the round trip travels; its own sessions, so each path sees the Redis state it made).
All go through sessionrec.serving.stateful.recommend_with_history, as in the stub.
--gap-ms sleeps between clicks: with a gap both processes go idle, as at 100 req/s, and the Redis
round trip pays two wake-ups; with none they stay hot. The end-to-end difference through the real
tritonserver is session_bench.py's; this one says how much of it is the step's own work.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

# As in the serving stub (sessionrec.serving.launcher): one OpenBLAS thread. With a thread per core
# spinning after every numpy call, the local redis-server would wait for a core on every round trip,
# a cost the stub does not have.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", required=True, help="an exported repository (sessionrec export)")
    parser.add_argument("--data", required=True, help="sessions whose test split is replayed")
    parser.add_argument("--version", type=int, default=None, help="version to load (default: the newest)")
    parser.add_argument("--clicks", type=int, default=2000, help="clicks replayed per gap")
    parser.add_argument("--gap-ms", default="0,4", help="idle time between clicks, comma-separated")
    args = parser.parse_args(argv)

    from sessionrec.data import load_dataset
    from sessionrec.serving.history import ClickEvent, HistoryConfig, SessionHistory
    from sessionrec.serving.pipeline import LocalPipeline
    from sessionrec.serving.redis_local import LocalRedis
    from sessionrec.serving.stateful import StepRequest, recommend_with_history

    version = args.version or max(int(p.name) for p in Path(args.repository, "recommend").iterdir() if p.name.isdigit())
    pipeline = LocalPipeline(args.repository, version)
    pipeline.warm_up(8)
    dataset = load_dataset(args.data)
    clicks = [(s_index, dataset.raw_ids[np.asarray(s[:n])]) for s_index, s in enumerate(dataset.test)
              for n in range(1, len(s) + 1)]
    k, exclude = np.array([[20]], dtype=np.int32), np.array([[False]])
    print(f"{os.cpu_count()} cores, {platform.platform()}; version {version}; shared machine")
    print("| gap ms | path | clicks | p50 us | p95 us |\n|---:|---|---:|---:|---:|")
    with LocalRedis() as server:
        history = SessionHistory(HistoryConfig(url=server.url, timeout_ms=20, speculate=False))  # the round trip first, as before
        speculating = SessionHistory(HistoryConfig(url=server.url, timeout_ms=20))
        speculating.warm_in_background().join(timeout=10)  # as the step's load: script loaded, listener subscribed
        SPECULATIVE = "recommend_session, speculative"
        for gap_index, gap in enumerate(float(g) / 1000 for g in args.gap_ms.split(",")):
            times = {"recommend (session in ITEMS)": [], "recommend_session (click + Redis history)": [],
                     "of which the Redis round trip": [], SPECULATIVE: []}
            for i, (s_index, session) in enumerate(clicks[:args.clicks]):
                stateless = StepRequest(session[None, :], k, exclude)
                event = ClickEvent(b"bench-%d-%d" % (gap_index, s_index), session[-1:], len(session))
                stateful = StepRequest(None, k, exclude, event)
                guessed = StepRequest(None, k, exclude, ClickEvent(b"spec-" + event.session_id, session[-1:], len(session)))
                order = [(0, stateless), (1, stateful), (2, guessed)]
                order = order[i % 3:] + order[:i % 3]  # each path first, second and last in turn
                for which, request in order:
                    if gap:
                        time.sleep(gap)
                    start = time.perf_counter()
                    if which == 1:
                        recorded = history.record_many([event])
                        middle = time.perf_counter()
                        # the rest of recommend_with_history for this event, as the step runs it
                        answer = recommend_with_history(pipeline, _Replay(recorded), [request])[0]
                        end = time.perf_counter()
                        times["of which the Redis round trip"].append((middle - start) * 1e6)
                    else:
                        answer = recommend_with_history(pipeline, speculating if which == 2 else history, [request])[0]
                        end = time.perf_counter()
                    assert not isinstance(answer, Exception), answer
                    name = ("recommend (session in ITEMS)", "recommend_session (click + Redis history)", SPECULATIVE)[which]
                    times[name].append((end - start) * 1e6)
            for name, values in times.items():
                v = np.asarray(values)
                print(f"| {gap * 1000:g} | {name} | {len(v)} | {np.percentile(v, 50):.0f} | {np.percentile(v, 95):.0f} |")
            for name in ("recommend_session (click + Redis history)", SPECULATIVE):
                diff = np.asarray(times[name]) - np.asarray(times["recommend (session in ITEMS)"])
                print(f"| {gap * 1000:g} | paired difference ({name} - stateless) | {len(diff)} | "
                      f"{np.percentile(diff, 50):.0f} | {np.percentile(diff, 95):.0f} |")
        print(f"speculative path's predictions: {speculating.predictions}")
        speculating.close()
    return 0


class _Replay:
    """A history whose record_many returns what was already recorded (times the step without its round trip)."""

    def __init__(self, recorded):
        self.recorded = recorded

    def record_many(self, events):
        return self.recorded

    def predict_many(self, events):
        return None  # no speculation: the step as it runs when no history can be predicted


if __name__ == "__main__":
    raise SystemExit(main())
