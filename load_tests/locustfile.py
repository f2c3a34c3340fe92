"""Locust load test of the `recommend` ensemble over gRPC, through sessionrec.clients.

Against the embedded server (starts, loads and stops it for you):

    sessionrec loadtest --repository runs/repository --users 16 --run-time 30

Against any host, e.g. a cluster's Service (same file, plain Locust):

    locust -f load_tests/locustfile.py --headless --host 10.0.0.7:8001 -u 32 -r 32 --run-time 60s \
        --sessions-file sessions.txt --csv out/locust --html out/report.html --sla-ms 70

Users replay real sessions click by click (load_tests/sessions.py); options, reports and the SLA check
are in load_tests/common.py. The exit code is 1 when the SLA is missed or any request failed.
"""

from __future__ import annotations

# Before any channel exists: without it gRPC's blocking calls do not yield to other greenlets, so
# Locust users silently run one request at a time (no error, misleadingly low throughput).
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

import time  # noqa: E402

from locust import User, task  # noqa: E402

from sessionrec.clients import NO_RETRY, RecommendClient, RetryPolicy  # noqa: E402
from sessionrec.load_tests.common import SessionWalker  # noqa: E402, F401 - registers options and hooks
from sessionrec.serving.tls import ClientTLS  # noqa: E402


class WrongAnswer(Exception):
    """The server answered, but not with K items and K scores."""


class RecommendUser(SessionWalker, User):
    """One shopper: a session click by click, a `recommend` call after each click."""

    request_type = "grpc"
    _clients: dict = {}  # one channel per process, shared by all users, as a real service would

    def client(self) -> RecommendClient:
        host = (self.host or "").removeprefix("grpc://")
        if not host:
            raise SystemExit("sessionrec load test: --host HOST:PORT (the gRPC endpoint) is required")
        if host not in self._clients:
            options = self.options
            retry = RetryPolicy(max_attempts=1 + options.retries) if options.retries > 0 else NO_RETRY
            tls = ClientTLS(options.tls_ca) if options.tls_ca else None
            self._clients[host] = RecommendClient(host, timeout=options.deadline_s, retry=retry, tls=tls)
        return self._clients[host]

    @task
    def click(self) -> None:
        self.step()

    def send(self, items: list[int]) -> None:
        k = self.options.k
        began = time.perf_counter()
        error = None
        try:
            rec = self.client().recommend(items, k=k, exclude_seen=self.options.exclude_seen)
            if len(rec.item_ids) != k or len(rec.scores) != k:
                raise WrongAnswer(f"{len(rec.item_ids)} ids / {len(rec.scores)} scores for K={k}")
        except Exception as exc:  # noqa: BLE001 - every failure is reported, none stops the user
            error = exc
        self.environment.events.request.fire(
            request_type=self.request_type, name="recommend", response_time=(time.perf_counter() - began) * 1000,
            response_length=len(items), exception=error, context={})
