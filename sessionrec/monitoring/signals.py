"""Serving-side monitoring signals of the serving steps, aggregated in each stub and flushed at most once a second.

Triton's python-backend custom metrics (`pb_utils.MetricFamily`, 2.51) cost a round trip from the
stub to the server process per call, so nothing is sent per request: `observe` adds a batch into
numpy counters (a few bincounts), and `flush` sends only what changed since the last flush, once a
second at most, one `increment` per changed series. Series (all labelled `model_version`):

| series | kind | meaning |
|---|---|---|
| `sessionrec_input_clicks_total{bucket}` | counter | the click that triggered each answer (last ITEMS id; a `recommend_session` event's NEW_ITEMS, duplicates not recounted) by training-popularity bucket `0`..`9` (0 = head), `unknown` when not in the catalogue |
| `sessionrec_reference_click_share{bucket}` | gauge | the manifest's training share of each bucket: the PSI reference, set once at load |
| `sessionrec_top_score_total{bucket}` | counter | the best answer's score, by decile of the export-time test-set top scores |
| `sessionrec_reference_score_share{bucket}` | gauge | 0.1 per score decile (the reference of the above) |
| `sessionrec_recommended_items_total{bucket}` | counter | popularity bucket of every recommended item |
| `sessionrec_sessions_total`, `sessionrec_fallback_total` | counter | answered sessions; those answered with popular items (no known id) |
| `sessionrec_session_items_total`, `sessionrec_unknown_items_total` | counter | session ids received; of them not in the catalogue (dropped) |
| `sessionrec_session_length_bucket{le}` (+`_sum`, `_count`) | counter | session length histogram (clicks the answer used) |
| `sessionrec_request_errors_total` | counter | requests answered with an error |
| `sessionrec_history_state_total{state}` | counter | `recommend_session` events by HISTORY_STATE: stored / duplicate / degraded / not_stored |
| `sessionrec_history_predictions_total{outcome}` | counter | event histories predicted before Redis answered (`hit`), not predictable (`miss`), predicted wrong and computed again (`wrong`); only with speculation on (sessionrec.serving.history_cache) |

Histograms are exported as counters with an `le` label (Prometheus's `histogram_quantile` reads
any such series), so a flush is increments only.

Either layout emits the same series. The fused CPU step sees a request whole (`observe_step`). In
the three-step layout each python step observes what it sees, with the same primitives:
`session_history` the events (history states, an event's NEW_ITEMS), `preprocess` the sessions
(the last click of a `recommend` request, unknown ids, fallback, length), `retrieval` the answers
(top score, recommended items); errors are counted by the step that answers them. Series two
stubs both write (input clicks, errors) are one series on the server: Triton's core hands both
stubs the same counter and reference-counts it on removal. The rules over these series (PSI, alerts) are in
`helm/sessionrec/files/monitoring-rules.yaml`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from sessionrec.monitoring.reference import N_BUCKETS, item_buckets
from sessionrec.serving.history import CANARY_PREFIX, ClickEvent

# Monitoring in the serving step: on unless the server's environment says off (read by the stub at
# load, like SESSIONREC_LOAD_NICENESS, so an operator turns it off without a new export).
MONITORING_ENV = "SESSIONREC_MONITORING"
FLUSH_SECONDS = 1.0  # at most one flush a second (each metric call is a round trip to the server)
SESSION_LENGTH_LE = (1, 2, 3, 5, 8, 13, 20, 50, 100, 1000)  # clicks; +Inf added
HISTORY_STATES = ("stored", "duplicate", "degraded", "not_stored")
UNKNOWN = N_BUCKETS  # index of the `unknown` bucket in the input-click counters


def monitoring_enabled(environ=None) -> bool:
    value = (os.environ if environ is None else environ).get(MONITORING_ENV, "on").strip().lower()
    if value in ("on", "1", "true", "yes"):
        return True
    if value in ("off", "0", "false", "no"):
        return False
    raise ValueError(f"{MONITORING_ENV}={value!r}: expected on or off")


class Counter(Protocol):
    def increment(self, value: float) -> None: ...


class Gauge(Protocol):
    def set(self, value: float) -> None: ...


class Sink(Protocol):
    """Where flushed values go: Triton's custom metrics in the stub (TritonSink), memory in tests."""

    def counter(self, name: str, description: str, labels: dict[str, str]) -> Counter: ...

    def gauge(self, name: str, description: str, labels: dict[str, str]) -> Gauge: ...

    def close(self) -> None: ...


class _Value:
    def __init__(self) -> None:
        self.value = 0.0

    def increment(self, value: float) -> None:
        self.value += value

    def set(self, value: float) -> None:
        self.value = value


class MemorySink:
    """Values by (name, sorted labels): what the server would expose. Also counts the calls."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, tuple], _Value] = {}
        self.calls = 0

    def _get(self, name: str, labels: dict[str, str]) -> _Value:
        return self.values.setdefault((name, tuple(sorted(labels.items()))), _Value())

    def counter(self, name, description, labels):
        return _Counting(self, self._get(name, labels))

    gauge = counter

    def get(self, name: str, **labels: str) -> float:
        value = self.values.get((name, tuple(sorted(labels.items()))))
        return 0.0 if value is None else value.value

    def close(self) -> None:
        pass


class _Counting:
    def __init__(self, sink: MemorySink, value: _Value) -> None:
        self.sink, self.value = sink, value

    def increment(self, v):
        self.sink.calls += 1
        self.value.increment(v)

    def set(self, v):
        self.sink.calls += 1
        self.value.set(v)


class TritonSink:
    """Triton's python-backend custom metrics. One MetricFamily per name, one Metric per label set.

    close() drops every Metric before its family: the stub refuses (and newer releases crash on)
    a family deleted before its metrics, which happens at unload unless done in this order.

    Every series carries `stub` (this stub's process id), so no two stubs ever hold the same
    prometheus series. tritonserver 2.51 counts references to a series per MetricFamily object,
    and each stub's family is its own object: when two stubs with the same labels (two instances of
    one version, a version reloaded while its old stub unloads, two steps of the three-step layout)
    share a series, the first to unload frees it under the other, whose next increment corrupts the
    server's heap ("malloc_consolidate(): unaligned fastbin chunk detected", then SIGABRT: seen on
    an instance-count reload and on a switch that reloaded a version). The rules aggregate `stub`
    away like replicas (sum for counters, max for the reference gauges).
    """

    def __init__(self, pb_utils) -> None:
        self.pb = pb_utils
        self.families: dict[str, object] = {}
        self.metrics: list[object] = []
        self.stub = str(os.getpid())

    def _metric(self, name: str, description: str, labels: dict[str, str], kind):
        family = self.families.get(name)
        if family is None:
            family = self.families[name] = self.pb.MetricFamily(name=name, description=description, kind=kind)
        metric = family.Metric(labels={**labels, "stub": self.stub})
        self.metrics.append(metric)
        return metric

    def counter(self, name, description, labels):
        return self._metric(name, description, labels, self.pb.MetricFamily.COUNTER)

    def gauge(self, name, description, labels):
        return self._metric(name, description, labels, self.pb.MetricFamily.GAUGE)

    def close(self) -> None:
        self.metrics.clear()
        self.families.clear()


@dataclass
class MonitorSpec:
    """What the monitor needs from a served version (its artifacts and manifest)."""

    version: str  # the model_version label
    id_map: object  # sessionrec.serving.preprocess.IdMap
    popularity: np.ndarray  # (N+1,) training clicks per model id
    reference_share: list[float]  # the manifest's monitoring.popularity_buckets.click_share
    score_edges: list[float] = field(default_factory=list)  # the manifest's score deciles' inner edges


def spec_from_version(version: str, id_map, popularity: np.ndarray, manifest: dict) -> MonitorSpec:
    """The spec from a version's manifest; a version exported before monitoring gets the reference
    recomputed from its popularity counts (the same function export uses)."""
    from sessionrec.monitoring.reference import bucket_reference, check_reference

    section = manifest.get("monitoring") or {}
    reference = section.get("popularity_buckets")
    if reference is None:
        reference = bucket_reference(popularity)
    else:
        check_reference(popularity, reference)
    return MonitorSpec(version, id_map, np.asarray(popularity), list(reference["click_share"]),
                       list((section.get("top_score") or {}).get("edges", [])))


class ServingMonitor:
    def __init__(self, spec: MonitorSpec, sink: Sink, clock=time.monotonic, skip_batches: int = 0,
                 inputs: bool = True, scores: bool = True) -> None:
        """`inputs` / `scores`: whether this step sees the clicks / the answers' scores, and so sets up
        their series at load (the input buckets at zero, the reference gauges). The fused step sees
        both; in the three-step layout preprocess sees the inputs and retrieval the scores."""
        self.spec, self.sink, self.clock = spec, sink, clock
        # Triton's model_warmup requests (all-zero ITEMS) go through execute before the version is
        # READY: the first `skip_batches` batches are not traffic and are not counted.
        self.skip_batches = skip_batches
        self.buckets = item_buckets(spec.popularity, len(spec.reference_share))
        self.n_buckets = len(spec.reference_share)
        self.score_edges = np.asarray(spec.score_edges, dtype=np.float64)
        self.length_le = np.asarray(SESSION_LENGTH_LE, dtype=np.float64)
        self._zero()
        self._sent = None  # totals at the last flush
        self._last_flush = clock()
        self._handles: dict[tuple, object] = {}
        label = {"model_version": spec.version}
        # Every input bucket's series exists from load (at 0): a bucket live traffic never hits is
        # still a term of the PSI rule (a missing series would silently drop it).
        for b in [str(b) for b in range(self.n_buckets)] + ["unknown"] if inputs else ():
            key = ("sessionrec_input_clicks_total", "bucket", b)
            self._handles[key] = sink.counter(key[0], DESCRIPTIONS[key[0]], {**label, "bucket": b})
        for b, share in enumerate(spec.reference_share if inputs else ()):
            sink.gauge("sessionrec_reference_click_share", "Training share of each popularity bucket (PSI reference)",
                       {**label, "bucket": str(b)}).set(float(share))
        if scores and self.score_edges.size:
            for b in range(self.score_edges.size + 1):
                sink.gauge("sessionrec_reference_score_share", "Export-time share of each top-score bucket",
                           {**label, "bucket": str(b)}).set(1.0 / (self.score_edges.size + 1))

    def _zero(self) -> None:
        self.input_clicks = np.zeros(self.n_buckets + 1, np.int64)
        self.recommended = np.zeros(self.n_buckets, np.int64)
        self.top_score = np.zeros(self.score_edges.size + 1, np.int64)
        self.length_hist = np.zeros(self.length_le.size + 1, np.int64)  # last: over the largest le (+Inf only)
        self.scalars = {"sessions": 0, "fallback": 0, "session_items": 0, "unknown_items": 0, "errors": 0,
                        "length_sum": 0}
        self.states = dict.fromkeys(HISTORY_STATES, 0)
        self.predictions: dict[str, int] = {}

    # -- aggregation (per batch, in the request path: numpy only, no metric calls) -----------------

    def observe_clicks(self, raw_clicks: np.ndarray) -> None:
        model = self.spec.id_map.to_model(np.asarray(raw_clicks, dtype=np.int64).reshape(-1))
        known = model[model > 0]
        self.input_clicks[:self.n_buckets] += np.bincount(self.buckets[known], minlength=self.n_buckets)
        self.input_clicks[UNKNOWN] += model.size - known.size

    def observe_sessions(self, unknown_count: np.ndarray, fallback: np.ndarray, lengths: np.ndarray) -> None:
        """One request's sessions (B rows) as they came in: ids unknown, popularity fallback, length."""
        fallback = np.asarray(fallback).reshape(-1)
        self.scalars["sessions"] += fallback.size
        self.scalars["fallback"] += int(np.count_nonzero(fallback))
        self.scalars["unknown_items"] += int(np.sum(unknown_count))
        lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
        self.scalars["session_items"] += int(lengths.sum())
        self.scalars["length_sum"] += int(lengths.sum())
        self.length_hist += np.bincount(np.searchsorted(self.length_le, lengths, side="left"),
                                        minlength=self.length_hist.size)

    def observe_recommended(self, item_ids: np.ndarray, scores: np.ndarray) -> None:
        """One request's answers (B, K): popularity of what was recommended, the best score."""
        recommended = self.spec.id_map.to_model(np.asarray(item_ids).reshape(-1))
        recommended = recommended[recommended > 0]
        self.recommended += np.bincount(self.buckets[recommended], minlength=self.n_buckets)
        if self.score_edges.size and scores.shape[-1]:
            self.top_score += np.bincount(np.searchsorted(self.score_edges, scores[:, 0], side="right"),
                                          minlength=self.top_score.size)

    def observe_answer(self, item_ids: np.ndarray, scores: np.ndarray, unknown_count: np.ndarray,
                       fallback: np.ndarray, lengths: np.ndarray) -> None:
        """One request's answer (B rows): what came in and what was recommended (the fused step sees both)."""
        self.observe_sessions(unknown_count, fallback, lengths)
        self.observe_recommended(item_ids, scores)

    def observe_error(self) -> None:
        self.scalars["errors"] += 1

    def observe_state(self, state: str) -> None:
        if state in self.states:
            self.states[state] += 1

    def observe_predictions(self, totals: dict) -> None:
        """The history's prediction counts since the stub started (SessionHistory.predictions)."""
        self.predictions = {"hit": totals.get("hits", 0), "miss": totals.get("misses", 0),
                            "wrong": totals.get("wrong", 0)} if totals else {}

    def observe_event(self, event: ClickEvent, state) -> None:
        """A recommend_session event recorded with HISTORY_STATE `state` (str, bytes or a (1, 1) array)."""
        if isinstance(state, np.ndarray):
            state = state.reshape(-1)[0]
        state = state.decode() if isinstance(state, bytes) else str(state)
        self.observe_state(state)
        if state != "duplicate":  # a retried event: its clicks were counted the first time
            self.observe_clicks(event.new_items)

    def _warming_up(self) -> bool:
        """True for the batches of Triton's model_warmup (counted down here)."""
        if self.skip_batches > 0:
            self.skip_batches -= 1
            return True
        return False

    # One method per step: what that step sees of a batch, its answers or errors in request order.

    def observe_step(self, requests, outs) -> None:
        """The fused step's batch: StepRequests and their StepAnswers or errors (sessionrec.serving.stateful)."""
        if self._warming_up():
            return
        for request, out in zip(requests, outs):
            if isinstance(out, Exception):
                self.observe_error()
                continue
            answer = out.answer
            event = request.event
            if is_canary(event):
                continue
            if event is None:
                self.observe_clicks(np.asarray(request.items)[:, -1])
            else:
                self.observe_event(event, out.history_state)
            self.observe_answer(answer.item_ids, answer.scores, answer.unknown_count, answer.fallback,
                                out.history_length)

    def observe_history(self, events, answers) -> None:
        """`session_history`'s batch: ClickEvents (or a request's error) and their HistoryAnswers or errors."""
        if self._warming_up():
            return
        for event, answer in zip(events, answers):
            if isinstance(answer, Exception):
                self.observe_error()
            elif not is_canary(event):
                self.observe_event(event, answer.state)

    def observe_preprocess(self, requests, outs) -> None:
        """`preprocess`'s batch: (ITEMS (B, n), canary flag or None) per request, and its tensors or errors.

        The flag is the `canary` input, which only `recommend_session` maps (from session_history):
        present, the request is an event whose clicks session_history counted (ITEMS is its history);
        true, it is one of the server's canary replays. Absent, a `recommend` request: its last click.
        """
        if self._warming_up():
            return
        for (items, canary), out in zip(requests, outs):
            if isinstance(out, Exception):
                self.observe_error()
                continue
            if canary is not None and np.any(canary):
                continue
            items = np.asarray(items)
            if canary is None:
                self.observe_clicks(items[:, -1])
            self.observe_sessions(out["unknown_count"], out["fallback"], np.full(items.shape[0], items.shape[-1]))

    def observe_retrieval(self, canaries, outs) -> None:
        """`retrieval`'s batch: the canary flag (or None) per request, and its (ids, scores) (B, K) or errors."""
        if self._warming_up():
            return
        for canary, out in zip(canaries, outs):
            if isinstance(out, Exception):
                self.observe_error()
            elif canary is None or not np.any(canary):
                self.observe_recommended(*out)

    # -- flushing (at most once a second: round trips to the server) ---------------------------

    def maybe_flush(self) -> bool:
        if self.clock() - self._last_flush < FLUSH_SECONDS:
            return False
        self.flush()
        return True

    def _totals(self) -> dict[tuple, float]:
        out: dict[tuple, float] = {}
        for b in range(self.n_buckets):
            out[("sessionrec_input_clicks_total", "bucket", str(b))] = self.input_clicks[b]
            out[("sessionrec_recommended_items_total", "bucket", str(b))] = self.recommended[b]
        out[("sessionrec_input_clicks_total", "bucket", "unknown")] = self.input_clicks[UNKNOWN]
        for b in range(self.top_score.size if self.score_edges.size else 0):
            out[("sessionrec_top_score_total", "bucket", str(b))] = self.top_score[b]
        cumulative = np.cumsum(self.length_hist)
        for le, c in zip(self.length_le, cumulative[:-1]):
            out[("sessionrec_session_length_bucket", "le", f"{le:g}")] = c
        out[("sessionrec_session_length_bucket", "le", "+Inf")] = cumulative[-1]
        out[("sessionrec_session_length_count", None, None)] = cumulative[-1]
        out[("sessionrec_session_length_sum", None, None)] = self.scalars["length_sum"]
        for key in ("sessions", "fallback", "session_items", "unknown_items"):
            out[(f"sessionrec_{key}_total", None, None)] = self.scalars[key]
        out[("sessionrec_request_errors_total", None, None)] = self.scalars["errors"]
        for state, n in self.states.items():
            out[("sessionrec_history_state_total", "state", state)] = n
        for outcome, n in self.predictions.items():
            out[("sessionrec_history_predictions_total", "outcome", outcome)] = n
        return out

    def flush(self) -> None:
        """Send every series' increase since the last flush; create a series on its first increase."""
        self._last_flush = self.clock()
        totals = self._totals()
        sent = self._sent or {}
        for key, total in totals.items():
            delta = float(total) - sent.get(key, 0.0)
            if delta <= 0:
                continue
            handle = self._handles.get(key)
            if handle is None:
                name, label, value = key
                labels = {"model_version": self.spec.version}
                if label is not None:
                    labels[label] = value
                handle = self._handles[key] = self.sink.counter(name, DESCRIPTIONS.get(name, name), labels)
            handle.increment(delta)
        self._sent = {k: float(v) for k, v in totals.items()}

    def close(self) -> None:
        """Flush what is left, then release the metrics before their families (see TritonSink)."""
        try:
            self.flush()
        finally:
            self._handles.clear()
            self.sink.close()


DESCRIPTIONS = {
    "sessionrec_input_clicks_total": "Clicks that triggered an answer, by training-popularity bucket (0 = head)",
    "sessionrec_recommended_items_total": "Recommended items by training-popularity bucket",
    "sessionrec_top_score_total": "Best answer's score by export-time decile",
    "sessionrec_session_length_bucket": "Sessions by length (clicks used), cumulative",
    "sessionrec_session_length_count": "Sessions with a length observed",
    "sessionrec_session_length_sum": "Sum of session lengths",
    "sessionrec_sessions_total": "Sessions answered",
    "sessionrec_fallback_total": "Sessions answered with popular items (no known id)",
    "sessionrec_session_items_total": "Session item ids received",
    "sessionrec_unknown_items_total": "Session item ids not in the catalogue",
    "sessionrec_request_errors_total": "Requests answered with an error",
    "sessionrec_history_state_total": "recommend_session events by HISTORY_STATE",
    "sessionrec_history_predictions_total": "recommend_session events by history prediction outcome (hit, miss, wrong)",
}


def for_step(pipeline, version: str, manifest: dict, pb_utils, environ=None,
             model_config: dict | None = None) -> ServingMonitor | None:
    """The fused step's monitor (None when SESSIONREC_MONITORING=off). A version's model.py is copied
    at export and calls the library installed with the server: keep this signature compatible."""
    if not monitoring_enabled(environ):
        return None
    spec = spec_from_version(version, pipeline.preprocessor.id_map, pipeline.retriever.popularity, manifest)
    return ServingMonitor(spec, TritonSink(pb_utils), skip_batches=warmup_batches(model_config or {}))


STEP_ROLES = {"preprocess": {"inputs": True, "scores": False}, "retrieval": {"inputs": False, "scores": True},
              "session_history": {"inputs": False, "scores": False}}


def for_three_step(step: str, version_dir, pb_utils, environ=None, model_config: dict | None = None,
                   retriever=None) -> ServingMonitor | None:
    """A three-step layout step's monitor (None when SESSIONREC_MONITORING=off): `preprocess`,
    `retrieval` (pass its Retriever: its id map and popularity are the ones served) or
    `session_history`. Like for_step, called from a version's copied model.py: keep it compatible."""
    if not monitoring_enabled(environ):
        return None
    from pathlib import Path

    from sessionrec.serving.artifacts import read_manifest, verified_array
    from sessionrec.serving.preprocess import IdMap

    version_dir = Path(version_dir)
    if retriever is not None:
        id_map, popularity = retriever.id_map, retriever.popularity
    else:  # the bucket map comes from retrieval's counts, the same files the fused step reads
        retrieval = version_dir.parent.parent / "retrieval" / version_dir.name
        id_map = IdMap(verified_array(retrieval, "retrieval", "item_ids.npy"))
        popularity = verified_array(retrieval, "retrieval", "popularity.npy")
    spec = spec_from_version(version_dir.name, id_map, popularity, read_manifest(version_dir))
    return ServingMonitor(spec, TritonSink(pb_utils), skip_batches=warmup_batches(model_config or {}),
                          **STEP_ROLES[step])


def is_canary(event) -> bool:
    """The server's own canary replays (start, switch: history.CANARY_PREFIX ids) are not guest traffic."""
    return isinstance(event, ClickEvent) and event.session_id.startswith(CANARY_PREFIX)


def warmup_batches(model_config: dict) -> int:
    """How many execute calls Triton's model_warmup makes before serving (one per sample and count)."""
    return sum(max(1, int(w.get("count", 1) or 1)) for w in model_config.get("model_warmup", []))
