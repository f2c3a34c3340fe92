"""The same replayed sessions against the naive HTTP/JSON server (sessionrec/naive_server.py).

Only for the side-by-side benchmark (benchmarks/serving_bench.py): same walk, options, recorder and SLA
check as load_tests/locustfile.py, over Locust's FastHttpUser.

    locust -f load_tests/http_locustfile.py --headless --host http://127.0.0.1:8080 -u 8 --run-time 20s \
        --sessions-file sessions.txt
"""

from __future__ import annotations

from locust import task
from locust.contrib.fasthttp import FastHttpUser

from sessionrec.load_tests.common import SessionWalker


class NaiveHttpUser(SessionWalker, FastHttpUser):
    request_type = "POST"
    network_timeout = connection_timeout = 10.0  # a hung server shows up as failures, not a stuck run

    @task
    def click(self) -> None:
        self.step()

    def send(self, items: list[int]) -> None:
        k = self.options.k
        payload = {"items": items, "k": k, "exclude_seen": self.options.exclude_seen}
        with self.client.post("/recommend", json=payload, name="recommend", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
                return
            try:
                body = response.json()
                ids, scores = body["item_ids"], body["scores"]
            except (ValueError, KeyError, TypeError) as exc:
                response.failure(f"bad JSON answer: {exc}")
                return
            if len(ids) != k or len(scores) != k:
                response.failure(f"{len(ids)} ids / {len(scores)} scores for K={k}")
