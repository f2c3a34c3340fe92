"""Locust wiring shared by the load-test files: options, the session-walking user, recording and the SLA.

Imported by a locustfile (Locust has monkey-patched the process with gevent by then). Options, all also
settable as SESSIONREC_* environment variables:

    --sessions-file PATH   replay file: one session a line, raw ids (load_tests/sessions.py)
    --k 20 --exclude-seen  the request
    --think-time 0         seconds between a user's clicks: "2" or "1:3" (uniform); closed loop
    --arrival-rate R       open loop instead: R requests/s in total, on a fixed schedule whatever the
                           latency (no coordinated omission); --max-in-flight caps what is outstanding
    --warmup-s 0           requests finished in the first seconds are plotted but not judged
    --sla-percentile 95 --sla-ms 70 --sla-max-failures 0
                           judged when Locust quits: the exit code is 1 when the SLA is missed

With --csv PREFIX the recorder also writes PREFIX_summary.json, PREFIX_timeline.csv and
PREFIX_latency.png (p50/p95/p99 and throughput over time) next to Locust's own CSV files. One
process: the recorder sees the requests of its own process only (no --processes / distributed mode).
"""

from __future__ import annotations

import itertools
import random
import time

import gevent
from gevent.pool import Pool
from locust import events

from sessionrec.load_tests.sessions import SessionWalk, read_replay_file
from sessionrec.load_tests.sla import SLA, Recorder, write_reports

RECORDER = Recorder()
_SESSIONS: dict[str, list] = {}
_USER_NUMBERS = itertools.count()


@events.init_command_line_parser.add_listener
def _add_options(parser) -> None:
    parser.add_argument("--sessions-file", env_var="SESSIONREC_SESSIONS", default="",
                        help="replay file: one session a line, raw item ids separated by spaces")
    parser.add_argument("--k", type=int, env_var="SESSIONREC_K", default=20, help="recommendations per request")
    parser.add_argument("--exclude-seen", action="store_true", env_var="SESSIONREC_EXCLUDE_SEEN", default=False)
    parser.add_argument("--think-time", env_var="SESSIONREC_THINK_TIME", default="0",
                        help="seconds between a user's clicks: '2' or 'MIN:MAX' (uniform)")
    parser.add_argument("--arrival-rate", type=float, env_var="SESSIONREC_ARRIVAL_RATE", default=0.0,
                        help="open loop: total requests/s on a fixed schedule (0 = closed loop)")
    parser.add_argument("--max-in-flight", type=int, env_var="SESSIONREC_MAX_IN_FLIGHT", default=256,
                        help="open loop: outstanding requests per process before arrivals are dropped (as failures)")
    parser.add_argument("--distinct-sessions", type=int, env_var="SESSIONREC_DISTINCT_SESSIONS", default=0,
                        help="replay only the first N sessions (0 = all): requests recur, for response-cache runs")
    parser.add_argument("--deadline-s", type=float, env_var="SESSIONREC_DEADLINE_S", default=2.0,
                        help="per-request deadline")
    parser.add_argument("--retries", type=int, env_var="SESSIONREC_RETRIES", default=0,
                        help="client retries on UNAVAILABLE/RESOURCE_EXHAUSTED (default 0: report what the server does)")
    parser.add_argument("--tls-ca", env_var="SESSIONREC_TLS_CA", default="", help="CA certificate: gRPC over TLS")
    parser.add_argument("--seed", type=int, env_var="SESSIONREC_SEED", default=0)
    parser.add_argument("--warmup-s", type=float, env_var="SESSIONREC_WARMUP_S", default=0.0)
    parser.add_argument("--sla-percentile", type=float, env_var="SESSIONREC_SLA_PERCENTILE", default=95.0)
    parser.add_argument("--sla-ms", type=float, env_var="SESSIONREC_SLA_MS", default=70.0)
    parser.add_argument("--sla-max-failures", type=int, env_var="SESSIONREC_SLA_MAX_FAILURES", default=0)


@events.test_start.add_listener
def _on_test_start(environment, **_) -> None:
    RECORDER.warmup_s = environment.parsed_options.warmup_s
    RECORDER.start = time.time()


@events.test_stopping.add_listener
def _on_test_stopping(**_) -> None:
    RECORDER.stop = time.time()


@events.request.add_listener
def _on_request(response_time, exception, **_) -> None:
    RECORDER.add(time.time(), float(response_time), None if exception is None else f"{type(exception).__name__}: {exception}")


@events.quitting.add_listener
def _on_quitting(environment, **_) -> None:
    options = environment.parsed_options
    sla = SLA(percentile=options.sla_percentile, target_ms=options.sla_ms, max_failures=options.sla_max_failures)
    prefix = getattr(options, "csv_prefix", None)
    if prefix:
        summary = write_reports(RECORDER, sla, prefix, title=f"{environment.host} - {' '.join(u.__name__ for u in environment.user_classes)}")
    else:
        summary = RECORDER.summary(extra_percentiles=(sla.percentile,))
    verdict = sla.check(summary)
    latency = summary["latency_ms"]
    print(f"sessionrec: {summary['requests']} requests, {summary['failures']} failed, "
          f"{summary['throughput_rps']:.1f} req/s; p50 {latency.get('p50', float('nan')):.2f} ms, "
          f"p95 {latency.get('p95', float('nan')):.2f} ms, p99 {latency.get('p99', float('nan')):.2f} ms", flush=True)
    print(f"sessionrec: {verdict.line()}", flush=True)
    environment.process_exit_code = 0 if verdict.ok else 1


def replay_sessions(path: str) -> list:
    if not path:
        raise SystemExit("sessionrec load test: --sessions-file (or SESSIONREC_SESSIONS) is required")
    if path not in _SESSIONS:
        _SESSIONS[path] = read_replay_file(path)
    return _SESSIONS[path]


def think_time(spec: str) -> tuple[float, float]:
    low, _, high = str(spec).partition(":")
    low_s = float(low or 0)
    return low_s, float(high) if high else low_s


class SessionWalker:
    """Mixin for a Locust User: each user walks real sessions click by click (see module docstring).

    Concrete users define `send(items)` (one request, reported as one Locust request event) and a
    @task that calls `step()`.
    """

    def on_start(self) -> None:
        options = self.environment.parsed_options
        number = next(_USER_NUMBERS)
        self.options = options
        self.walk = SessionWalk(replay_sessions(options.sessions_file), seed=options.seed * 100_003 + number,
                                distinct=options.distinct_sessions or None)
        self._think = think_time(options.think_time)
        self._rng = random.Random(options.seed * 7919 + number)

    def wait_time(self) -> float:
        if self.options.arrival_rate:
            return 0.0
        low, high = self._think
        return self._rng.uniform(low, high) if high > low else low

    def step(self) -> None:
        if self.options.arrival_rate:
            self._open_loop()  # runs until Locust stops the user
        else:
            self.send(self.walk.next_request())

    def _open_loop(self) -> None:
        runner = self.environment.runner
        users = max(1, getattr(runner, "target_user_count", None) or self.options.num_users or 1)
        interval = users / self.options.arrival_rate
        cap = max(1, self.options.max_in_flight // users)
        pool = Pool()
        next_at = time.monotonic() + self._rng.uniform(0, interval)
        try:
            while True:
                delay = next_at - time.monotonic()
                if delay > 0:
                    gevent.sleep(delay)
                if len(pool) >= cap:
                    self.environment.events.request.fire(
                        request_type=self.request_type, name="recommend", response_time=0.0, response_length=0,
                        exception=RuntimeError(f"dropped: {cap} requests already in flight (offered load above capacity)"),
                        context={})
                else:
                    pool.spawn(self.send, self.walk.next_request())
                next_at += interval
        finally:
            pool.kill(block=False)
