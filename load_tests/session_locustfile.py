"""Locust load test of `recommend_session`: real sessions replayed click by click, one click per request.

    sessionrec loadtest --repository runs/repository --mode click --redis local --users 16 --run-time 30
    locust -f load_tests/session_locustfile.py SessionClickUser --headless --host HOST:8001 ... (as locustfile.py)

Each replayed session gets a fresh session id; its clicks are sent one at a time with their position
as the sequence number (`RecommendClient.click`), so the server's Redis history rebuilds the session
the plain load test sends whole. Answers flagged `degraded` (Redis slow or down) still count as
answered; the count of each state is printed when Locust quits.
"""

from __future__ import annotations

import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()  # before any channel: see locustfile.py

import collections  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

from locust import events, task  # noqa: E402

from sessionrec.load_tests.common import SessionWalker  # noqa: E402, F401 - registers options and hooks
from sessionrec.load_tests.locustfile import RecommendUser, WrongAnswer  # noqa: E402

STATES: collections.Counter = collections.Counter()


@events.quitting.add_listener
def _print_states(**_) -> None:
    print("sessionrec: history states " + ", ".join(f"{state}={count}" for state, count in sorted(STATES.items())),
          flush=True)


class SessionClickUser(RecommendUser):
    """One shopper whose page sends only the click it just saw."""

    @task
    def click(self) -> None:
        self.step()

    def send(self, items: list[int]) -> None:
        # A new session at its first click: in open-loop mode the walk runs ahead of the sends, but
        # sends start in the order their clicks were drawn, so this is read before the next session's.
        if len(items) == 1 or not hasattr(self, "session_id"):
            self.session_id = uuid.uuid4().hex
        k = self.options.k
        began = time.perf_counter()
        error = None
        try:
            rec = self.client().click(self.session_id, items[-1], k=k, exclude_seen=self.options.exclude_seen,
                                      seq=len(items))
            if len(rec.item_ids) != k or len(rec.scores) != k:
                raise WrongAnswer(f"{len(rec.item_ids)} ids / {len(rec.scores)} scores for K={k}")
            STATES[rec.state] += 1
        except Exception as exc:  # noqa: BLE001 - every failure is reported, none stops the user
            error = exc
        self.environment.events.request.fire(
            request_type=self.request_type, name="recommend_session", response_time=(time.perf_counter() - began) * 1000,
            response_length=1, exception=error, context={})
