"""Steady traffic from Locust (the project's load test), cut into time windows afterwards.

    with LocustLoad(server.grpc_url, sessions_file, rate=100, out_dir=work / "locust") as load:
        time.sleep(5)
        window = (load.started, load.now())
    load.stats(*window)                           # after the with-block: Locust's records are read then

The same windows-and-stats interface as sessionrec.reliability.load.Load, so the hot swap can run on
either (HotSwapPlan.driver). Locust runs as a subprocess (load_tests/runner.py) in its open-loop mode
(--arrival-rate: a fixed schedule whatever the latency), replaying real sessions click by click, and
writes every request's end time, latency and error (`<name>_requests.csv`); a request's window is the
one its start (end - latency) falls in, as with Load. What it cannot check: which items came back.
Locust's users check the shape of each answer (K ids, K scores: a wrong shape is counted as `wrong`);
the canary answers of each version are checked by Load only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from sessionrec.reliability.load import RecordedTraffic

WRONG = "WrongAnswer"  # the locustfile's exception for an answer of the wrong shape


@dataclass
class LocustLoad(RecordedTraffic):
    url: str  # gRPC "host:port"
    sessions_file: Path  # replay file (load_tests/sessions.py)
    out_dir: Path  # Locust's reports (requests, timeline, plot, console)
    rate: float = 100.0  # requests/s in total, open loop
    users: int = 4
    deadline_s: float = 5.0
    max_run_s: float = 3600.0  # Locust's own --run-time: a bound in case stop() never comes
    start_timeout_s: float = 60.0
    started: float = 0.0  # Unix time of the first request the server counted
    stopped: float = 0.0
    result: object = None  # load_tests.runner.LoadTestResult, once stopped
    _rows: list[tuple] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._running = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "LocustLoad":
        from sessionrec.load_tests.runner import LoadTest, start_load_test

        test = LoadTest(host=self.url, sessions_file=Path(self.sessions_file), out_dir=Path(self.out_dir),
                        users=self.users, run_time_s=self.max_run_s, arrival_rate=self.rate,
                        deadline_s=self.deadline_s, name="locust")
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.url)  # one channel for every poll below
        try:
            before = self._served(client)
            self._running = start_load_test(test)
            # Locust takes a second or two to import and spawn its users: the load starts when the
            # server has answered its first requests, not when the process started.
            deadline = time.monotonic() + self.start_timeout_s
            while self._served(client) <= before:
                if self._running.exited():
                    self._running.wait()  # raises LoadTestError with Locust's output when it wrote no report
                    raise RuntimeError(f"locust exited before sending a request: {self._running.log_path}")
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"locust sent nothing within {self.start_timeout_s:g} s: {self._running.log_path}")
                time.sleep(0.05)
        finally:
            client.close()
        self.started = time.time()
        return self

    def stop(self) -> None:
        if self._running is None or self.result is not None:
            return
        self.stopped = time.time()
        self._running.stop()
        self.result = self._running.wait()
        self._rows = self._read(self.result.files["requests"])

    @staticmethod
    def now() -> float:
        return time.time()  # Locust records Unix times

    @staticmethod
    def _served(client) -> int:
        """Requests the ensemble has executed so far (Triton's statistics API)."""
        stats = client.get_inference_statistics("recommend", as_json=True)
        return sum(int(m.get("inference_stats", {}).get("success", {}).get("count", 0))
                   for m in stats.get("model_stats", []))

    @staticmethod
    def _read(path: Path) -> list[tuple]:
        from sessionrec.load_tests.sla import read_requests

        rows = []
        for end, latency_ms, error in read_requests(path):
            code, message, wrong = None, None, False
            if error is not None and error.startswith(WRONG):
                wrong = True
            elif error is not None:
                code, _, message = error.partition(": ")
            rows.append((end - latency_ms / 1000, latency_ms / 1000, code, message, wrong))
        return rows
