"""Steady traffic against the `recommend` ensemble, with every request's outcome recorded.

    probes = canary_probes(repository, versions=[1, 2])      # requests with their acceptable answers
    with Load(server.grpc_url, probes, rate=100) as load:   # open loop, in a background thread
        time.sleep(5)
        steady = load.stats(since=load.started, until=load.now())

Requests go through sessionrec.clients.AsyncRecommendClient with retries off (NO_RETRY) unless a
RetryPolicy is given: by default a failure the server causes is counted, never hidden by a retry.
Open loop (`rate` requests/s on a fixed schedule, whatever the latency) is the steady traffic of the
hot-swap and soak runs: a slow server does not slow the arrivals down, so a stall shows in the
latencies (no coordinated omission; latency is measured from the send, and arrivals beyond
`max_in_flight` outstanding are counted as failures, never queued). Closed loop (`concurrency`
callers back to back, `rate=None`) measures capacity.

Each answer is compared with the answers the served versions must give (their manifests' canaries,
computed at export time by the offline pipeline): an answer that is neither counts as `wrong`.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from sessionrec.serving.artifacts import read_manifest


@dataclass(frozen=True)
class Probe:
    """One request and the item lists it may be answered with (one per version that may serve it)."""

    items: tuple[int, ...]
    k: int = 20
    exclude_seen: bool = False
    answers: frozenset[tuple[int, ...]] = frozenset()  # empty: any well-formed answer is accepted


def canary_probes(repository: str | Path, versions: Sequence[int]) -> list[Probe]:
    """The export-time canary requests of `versions`, each accepting the answer of any of them.

    Versions exported from different checkpoints answer differently; during a switch either answer
    is right, a third one is not.
    """
    answers: dict[tuple, set] = {}
    for version in versions:
        for canary in read_manifest(Path(repository) / "recommend" / str(version))["canaries"]:
            key = (tuple(canary["items"]), canary["k"], canary["exclude_seen"])
            answers.setdefault(key, set()).add(tuple(canary["expected_ids"]))
    return [Probe(items, k, exclude, frozenset(ids)) for (items, k, exclude), ids in answers.items()]


@dataclass
class Record:
    start: float  # time.monotonic() when the request was sent
    latency_s: float
    code: str | None = None  # gRPC status name of a failure (None: answered)
    message: str | None = None
    wrong: bool = False  # answered, but not with an acceptable answer


@dataclass
class Stats:
    """Outcomes of the requests sent in one time window."""

    seconds: float
    requests: int
    failed: int
    wrong: int
    failures: dict[str, int]  # "CODE: message" (first 160 characters) -> count
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        out = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}
        out["rate"] = round(self.rate, 1)
        return out

    def line(self) -> str:
        return (f"{self.requests} requests ({self.rate:.0f}/s), {self.failed} failed, {self.wrong} wrong; "
                f"p50 {self.p50_ms:.1f} ms, p95 {self.p95_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, max {self.max_ms:.1f} ms")


def summarize(records: Sequence[Record], seconds: float) -> Stats:
    latencies = np.array([r.latency_s for r in records if r.code is None], dtype=np.float64) * 1000
    failures = Counter(f"{r.code}: {(r.message or '')[:160]}" for r in records if r.code is not None)

    def pct(q: float) -> float:
        return float(np.percentile(latencies, q)) if latencies.size else float("nan")

    return Stats(seconds=seconds, requests=len(records), failed=sum(failures.values()),
                 wrong=sum(r.wrong for r in records), failures=dict(failures), p50_ms=pct(50), p95_ms=pct(95),
                 p99_ms=pct(99), max_ms=float(latencies.max()) if latencies.size else float("nan"))


class RecordedTraffic:
    """Recorded outcomes cut into time windows; shared by Load and LocustLoad (locust_load.py).

    Subclasses keep `_rows` (tuples of Record's fields), `started` / `stopped` and `now()` on one
    clock, and define start() / stop().
    """

    _rows: list[tuple]
    started: float
    stopped: float

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def records(self) -> list[Record]:
        return [Record(*row) for row in list(self._rows)]

    def window(self, since: float | None = None, until: float | None = None) -> list[Record]:
        """Records of requests sent in [since, until) (a copy: the list may grow while load runs)."""
        since = self.started if since is None else since
        until = float("inf") if until is None else until
        return [Record(*row) for row in list(self._rows) if since <= row[0] < until]

    def stats(self, since: float | None = None, until: float | None = None) -> Stats:
        since = self.started if since is None else since
        end = min(until if until is not None else self.now(), self.stopped or self.now())
        return summarize(self.window(since, until), max(end - since, 1e-9))


@dataclass
class Load(RecordedTraffic):
    """Traffic in a background thread (its own asyncio loop); use as a context manager or start()/stop().

    Args:
        url: gRPC "host:port" of the server.
        probes: the requests, sent in turn.
        rate: open loop, requests/s in total; None: closed loop with `concurrency` callers.
        concurrency: closed-loop callers.
        max_in_flight: open loop: arrivals beyond this many outstanding requests are not sent and are
            recorded as failures (code "CLIENT_OVERLOADED"): the generator never queues silently.
        timeout_s: per-request deadline.
        tls: sessionrec.serving.tls.ClientTLS for a TLS server.
        retry: sessionrec.clients.RetryPolicy; default none (NO_RETRY): every failure is counted.
    """

    url: str
    probes: Sequence[Probe]
    rate: float | None = 50.0
    concurrency: int = 4
    max_in_flight: int = 2048
    timeout_s: float = 5.0
    tls: object = None
    retry: object = None
    # Outcomes as exact tuples (start, latency_s, code, message, wrong) of atomic values: the garbage
    # collector stops tracking such tuples, so its full collections do not walk the ~300,000 a soak
    # records. As Record objects they did: full collections of 70-145 ms, which were the soak's
    # slowest requests (docs/RELIABILITY.md, Soak).
    _rows: list[tuple] = field(default_factory=list, repr=False)
    # (start, seconds) of every full (generation 2) garbage collection of this process while the load
    # runs: the generator's own pauses, which delay the answers it records (Load.overlapping_gc).
    gc_pauses: list[tuple[float, float]] = field(default_factory=list)
    started: float = 0.0
    stopped: float = 0.0

    def __post_init__(self) -> None:
        if not self.probes:
            raise ValueError("Load needs at least one probe request")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._gc_started: float | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "Load":
        # Everything alive now (modules, the server handle, the client library) moves out of the
        # garbage collector's sight until stop(): a full collection of this process walked ~40,000
        # such objects, a 15-50 ms pause of the generator that showed as the soak's slowest requests.
        gc.freeze()
        gc.callbacks.append(self._on_gc)
        self._thread = threading.Thread(target=self._run, name="sessionrec-load", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 30)
        self.stopped = time.monotonic()
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        gc.unfreeze()
        if self._error is not None:
            raise RuntimeError(f"load generator failed: {self._error!r}") from self._error

    @staticmethod
    def now() -> float:
        return time.monotonic()

    def _on_gc(self, phase: str, info: dict) -> None:
        if info["generation"] != 2:
            return  # young collections take well under a millisecond
        if phase == "start":
            self._gc_started = time.monotonic()
        elif self._gc_started is not None:
            self.gc_pauses.append((self._gc_started, time.monotonic() - self._gc_started))
            self._gc_started = None

    # -- results (window, stats, records: RecordedTraffic) -----------------------------------
    def _record(self, start: float, latency_s: float, code: str | None = None, message: str | None = None,
                wrong: bool = False) -> None:
        self._rows.append((start, latency_s, code, message, wrong))

    def slowest(self, n: int = 10, since: float | None = None, until: float | None = None) -> list[dict]:
        """The n slowest answered requests, each with the generator's full-GC time inside its flight.

        A request whose latency is mostly a GC pause of the generator was slow here, not on the server.
        """
        answered = sorted((r for r in self.window(since, until) if r.code is None), key=lambda r: -r.latency_s)[:n]
        return [{"at_s": round(r.start - self.started, 3), "latency_ms": round(r.latency_s * 1000, 2),
                 "generator_gc_ms": round(self.overlapping_gc(r.start, r.start + r.latency_s) * 1000, 2)}
                for r in answered]

    def overlapping_gc(self, since: float, until: float) -> float:
        """Seconds of the generator's full garbage collections within [since, until]."""
        return sum(max(0.0, min(until, start + seconds) - max(since, start)) for start, seconds in list(self.gc_pauses))

    # -- the loop -------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        from sessionrec.clients import NO_RETRY, AsyncRecommendClient

        client = AsyncRecommendClient(self.url, timeout=self.timeout_s, retry=self.retry or NO_RETRY, tls=self.tls)
        try:
            self.started = time.monotonic()
            self._ready.set()
            if self.rate is None:
                await asyncio.gather(*(self._caller(client, i) for i in range(self.concurrency)))
            else:
                await self._open_loop(client)
        finally:
            await client.close()

    async def _caller(self, client, offset: int) -> None:
        n = offset
        while not self._stop.is_set():
            await self._one(client, self.probes[n % len(self.probes)])
            n += self.concurrency

    async def _open_loop(self, client) -> None:
        interval = 1.0 / self.rate
        tasks: set[asyncio.Task] = set()
        n = 0
        while not self._stop.is_set():
            due = self.started + n * interval
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            probe = self.probes[n % len(self.probes)]
            n += 1
            if len(tasks) >= self.max_in_flight:
                self._record(time.monotonic(), 0.0, "CLIENT_OVERLOADED",
                             f"{len(tasks)} requests outstanding: arrival not sent")
                continue
            task = asyncio.create_task(self._one(client, probe))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=self.timeout_s + 5)

    async def _one(self, client, probe: Probe) -> None:
        from sessionrec.clients import RecommendError

        start = time.monotonic()
        try:
            answer = await client.recommend(list(probe.items), k=probe.k, exclude_seen=probe.exclude_seen)
        except RecommendError as exc:
            self._record(start, time.monotonic() - start, exc.code or type(exc).__name__, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - anything else is a failure too, named by its type
            self._record(start, time.monotonic() - start, type(exc).__name__, str(exc))
            return
        wrong = bool(probe.answers) and tuple(answer.item_ids) not in probe.answers
        self._record(start, time.monotonic() - start, wrong=wrong)
