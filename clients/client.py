"""A typed gRPC client for the `recommend` ensemble (docs/ARCHITECTURE.md, "The served request").

    from sessionrec.clients import RecommendClient

    with RecommendClient("127.0.0.1:8001", timeout=1.0) as client:
        rec = client.recommend([84051, 14513, 84051], k=20, exclude_seen=True)
        rec.item_ids, rec.scores, rec.unknown_count, rec.fallback
        client.recommend_batch([[1, 2], [3], [4, 5]], k=10)    # list of Recommendation, input order

Every call has a deadline (`timeout`, seconds, over all retries) and is retried with backoff on
UNAVAILABLE and RESOURCE_EXHAUSTED only (RetryPolicy): a `recommend` call is idempotent, so a server
restart or a pod going away is invisible to the caller as long as the deadline allows. Errors come out
as the exceptions in sessionrec.clients.errors.

`AsyncRecommendClient` (sessionrec.clients.aio) is the same over tritonclient.grpc.aio.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from sessionrec.clients.errors import (BadResponse, DeadlineExceeded, InvalidRequest, RecommendError,
                                       from_server_error, retry_code)
from sessionrec.clients.options import ChannelOptions, RetryPolicy
from sessionrec.clients.tracing import call_span
from sessionrec.serving.tls import ClientTLS

MODEL = "recommend"
OUTPUTS = ("ITEM_IDS", "SCORES", "UNKNOWN_COUNT", "FALLBACK")
DEFAULT_TIMEOUT_S = 2.0  # per call, retries included; a healthy server answers in ~5 ms


@dataclass(frozen=True)
class Recommendation:
    """One session's answer."""

    item_ids: list[int]  # raw catalogue ids, best first
    scores: list[float]  # session vector . item vector (popularity share when `fallback`)
    unknown_count: int  # input ids not in the catalogue (dropped before encoding)
    fallback: bool  # no input id was known: popular items answered
    model_version: str = ""  # the ensemble version that answered (Triton's ModelInferResponse.model_version)

    def __len__(self) -> int:
        return len(self.item_ids)

    def pairs(self) -> list[tuple[int, float]]:
        return list(zip(self.item_ids, self.scores))

    def as_dict(self) -> dict:
        return {"item_ids": self.item_ids, "scores": self.scores,
                "unknown_count": self.unknown_count, "fallback": self.fallback}


# ----------------------------------------------------------------------------- request / response


def session_array(items: Iterable[int]) -> np.ndarray:
    """One session as a 1-D int64 array; refuses floats, strings and nested lists with a clear message."""
    array = np.asarray(list(items) if not isinstance(items, np.ndarray) else items)
    if array.ndim != 1:
        raise InvalidRequest(f"a session is a flat list of item ids, got an array of shape {list(array.shape)}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise InvalidRequest(f"item ids must be integers (raw catalogue ids), got {array.dtype}: {array[:3].tolist()}")
    return array.astype(np.int64, copy=False)


def build_inputs(grpcclient, rows: np.ndarray, k: int, exclude_seen: bool) -> list:
    """InferInputs for a (B, n) block of equal-length sessions sharing K and EXCLUDE_SEEN."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InvalidRequest(f"k must be an integer, got {k!r}")
    batch = rows.shape[0]
    items = grpcclient.InferInput("ITEMS", list(rows.shape), "INT64")
    items.set_data_from_numpy(np.ascontiguousarray(rows, dtype=np.int64))
    count = grpcclient.InferInput("K", [batch, 1], "INT32")
    count.set_data_from_numpy(np.full((batch, 1), k, dtype=np.int32))
    exclude = grpcclient.InferInput("EXCLUDE_SEEN", [batch, 1], "BOOL")
    exclude.set_data_from_numpy(np.full((batch, 1), bool(exclude_seen), dtype=bool))
    return [items, count, exclude]


def parse_result(result, rows: int, k: int, where: str) -> list[Recommendation]:
    """InferResult -> one Recommendation per row, checking the tensor contract."""
    arrays = {}
    for name in OUTPUTS:
        array = result.as_numpy(name)
        if array is None:
            raise BadResponse(f"{where}: answer has no {name} output (is this the `recommend` ensemble?)")
        arrays[name] = array
    ids, scores = arrays["ITEM_IDS"], arrays["SCORES"]
    if ids.ndim != 2 or ids.shape != scores.shape or ids.shape[0] != rows:
        raise BadResponse(f"{where}: ITEM_IDS {list(ids.shape)} and SCORES {list(scores.shape)} "
                          f"should both be [{rows}, K]")
    if ids.shape[1] > k:
        raise BadResponse(f"{where}: {ids.shape[1]} items answered for K={k}")
    unknown = arrays["UNKNOWN_COUNT"].reshape(-1)
    fallback = arrays["FALLBACK"].reshape(-1)
    if unknown.size != rows or fallback.size != rows:
        raise BadResponse(f"{where}: UNKNOWN_COUNT/FALLBACK have {unknown.size}/{fallback.size} values for {rows} sessions")
    version = _answered_version(result)
    return [Recommendation(ids[r].tolist(), scores[r].tolist(), int(unknown[r]), bool(fallback[r]), version)
            for r in range(rows)]


def _answered_version(result) -> str:
    """The version Triton says answered (an experiment logs it with every exposure); "" if not told."""
    try:
        return str(result.get_response().model_version or "")
    except AttributeError:  # a result object without the protobuf response
        return ""


def batch_plan(sessions: Sequence[np.ndarray], max_batch: int) -> list[list[int]]:
    """Group session indices by length into requests of at most `max_batch` rows.

    The ensemble takes one (B, n) ITEMS tensor per request, so only sessions of equal length share a
    request (padding is impossible: any pad id would count as an unknown item).
    """
    by_length: dict[int, list[int]] = {}
    for index, session in enumerate(sessions):
        by_length.setdefault(len(session), []).append(index)
    return [group[i:i + max_batch] for group in by_length.values() for i in range(0, len(group), max_batch)]


# ----------------------------------------------------------------------------- the client


class RecommendClient:
    """Synchronous client; thread-safe (and greenlet-safe with gevent's grpc integration).

    Args:
        url: "host:port", or any gRPC target ("dns:///svc.ns.svc.cluster.local:8001", "ipv4:a:p,b:p").
        timeout: default deadline of one call in seconds, retries included (None: no deadline).
        retry: RetryPolicy; sessionrec.clients.NO_RETRY disables retries.
        channel: ChannelOptions (load balancing, keepalive, reconnect backoff, channel max age).
        tls: ClientTLS (CA, and client cert/key for mutual TLS); None = plaintext.
        model: the ensemble's name.
        max_batch_size: rows per request in recommend_batch (the ensemble's max_batch_size).
        batch_concurrency: requests one recommend_batch call keeps in flight.
        tracer: an OpenTelemetry Tracer; each call then sends its span's W3C traceparent and a
            request id (sessionrec.clients.tracing). None: no tracing work.
    """

    def __init__(self, url: str, *, timeout: float | None = DEFAULT_TIMEOUT_S, retry: RetryPolicy | None = None,
                 channel: ChannelOptions | None = None, tls: ClientTLS | None = None, model: str = MODEL,
                 max_batch_size: int = 64, batch_concurrency: int = 4, tracer=None):
        import tritonclient.grpc as grpcclient

        self._grpc = grpcclient
        self.tracer = tracer  # an OpenTelemetry Tracer: a CLIENT span + traceparent per call (clients/tracing.py)
        self.url = url
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.channel = channel or ChannelOptions()
        self.tls = tls
        self.model = model
        self.max_batch_size = max_batch_size
        self.batch_concurrency = batch_concurrency
        self._rng = random.Random()
        self.retries = 0  # attempts repeated after a retryable error, over the client's life (for metrics, tests)
        self._lock = threading.Lock()
        self._retired: list[tuple[float, object]] = []  # (close after, old client) from channel rotation
        self._client = self._connect()
        self._born = time.monotonic()
        self._closed = False
        from sessionrec.clients.session import SESSION_MODEL, SequenceNumbers

        self.session_model = SESSION_MODEL  # click() goes here
        self.sequence = SequenceNumbers()  # click numbers per session (idempotency keys)

    # -- public API ------------------------------------------------------------------------------
    def recommend(self, session_items: Iterable[int], k: int = 20, exclude_seen: bool = False,
                  timeout: float | None = ...) -> Recommendation:
        """Top-k raw item ids for one session (raw ids, oldest first)."""
        rows = session_array(session_items)[None, :]
        return self._call(rows, k, exclude_seen, self.timeout if timeout is ... else timeout)[0]

    def recommend_batch(self, sessions: Sequence[Iterable[int]], k: int = 20, exclude_seen: bool = False,
                        timeout: float | None = ..., return_exceptions: bool = False) -> list:
        """One Recommendation per session, in input order.

        Sessions of equal length travel together (up to `max_batch_size` per request, `batch_concurrency`
        requests in flight). A request refused as invalid is re-sent session by session, so each error
        belongs to its own session; with `return_exceptions` errors are returned in place, otherwise the
        first one is raised.
        """
        arrays = [session_array(s) for s in sessions]
        deadline = self.timeout if timeout is ... else timeout
        results: list = [None] * len(arrays)

        def run(indices: list[int]) -> None:
            for index, outcome in zip(indices, self._group(arrays, indices, k, exclude_seen, deadline)):
                results[index] = outcome

        plan = batch_plan(arrays, self.max_batch_size)
        if len(plan) <= 1 or self.batch_concurrency <= 1:
            for indices in plan:
                run(indices)
        else:
            with ThreadPoolExecutor(max_workers=min(self.batch_concurrency, len(plan))) as pool:
                list(pool.map(run, plan))
        if not return_exceptions:
            for outcome in results:
                if isinstance(outcome, BaseException):
                    raise outcome
        return results

    def click(self, session_id: str | bytes, items, k: int = 20, exclude_seen: bool = False, *, seq: int | None = None,
              full_session: Iterable[int] | None = None, timeout: float | None = ...):
        """Record the guest's click(s) server-side and recommend from the whole session (`recommend_session`).

        `items`: the item id just viewed (or a list of ids of this event). `seq`: the event's
        sequence number (default: generated, the time in ms); retries resend it, so a click is stored
        once. `full_session`: the caller's own copy of the session, answered from instead of the
        stored one. Returns a SessionRecommendation (sessionrec.clients.session). Example:
        `client.click("guest-42", 84051).item_ids`.
        """
        from sessionrec.clients import session as s

        seq = self.sequence.next(str(session_id)) if seq is None else int(seq)
        inputs = s.build_click_inputs(self._grpc, session_id, s.click_items(items), seq, k, exclude_seen, full_session)
        deadline = self.timeout if timeout is ... else timeout
        with call_span(self.tracer, self.session_model, self.url) as (headers, request_id):
            result = s.infer_with_retries(self, self.session_model, inputs, deadline, headers, request_id)
        return s.parse_click_result(result, k, seq, f"{self.url} model {self.session_model!r}")

    def ready(self, timeout: float = 2.0) -> bool:
        """The server is live and the ensemble has a ready version."""
        try:
            return bool(self._client.is_server_live(client_timeout=timeout)
                        and self._client.is_model_ready(self.model, client_timeout=timeout))
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for _, old in self._retired:
                old.close()
            self._retired.clear()
            self._client.close()

    def __enter__(self) -> "RecommendClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------------
    def _connect(self):
        kwargs = self.tls.grpc_kwargs() if self.tls is not None else {}
        return self._grpc.InferenceServerClient(self.url, channel_args=self.channel.channel_args(), **kwargs)

    def _current(self):
        """The live tritonclient client; rebuilt when older than max_connection_age_s (DNS re-resolved)."""
        age = self.channel.max_connection_age_s
        if age is None or time.monotonic() - self._born < age:
            return self._client
        with self._lock:
            now = time.monotonic()
            if not self._closed and now - self._born >= age:
                # In-flight calls on the old channel finish within their deadline: close it after that.
                grace = (self.timeout or 30.0) + 1.0
                self._retired.append((now + grace, self._client))
                self._client, self._born = self._connect(), now
            due = [old for when, old in self._retired if when <= now]
            self._retired = [(when, old) for when, old in self._retired if when > now]
        for old in due:
            old.close()
        return self._client

    def _group(self, arrays, indices, k, exclude_seen, timeout) -> list:
        rows = np.stack([arrays[i] for i in indices])
        try:
            return self._call(rows, k, exclude_seen, timeout)
        except InvalidRequest as exc:
            if len(indices) == 1:
                return [exc]
            return [outcome for i in indices for outcome in self._group(arrays, [i], k, exclude_seen, timeout)]
        except RecommendError as exc:
            return [exc] * len(indices)

    def _call(self, rows: np.ndarray, k: int, exclude_seen: bool, timeout: float | None) -> list[Recommendation]:
        if self.tracer is None:
            return self._attempts(rows, k, exclude_seen, timeout, None, "")
        with call_span(self.tracer, self.model, self.url) as (headers, request_id):
            return self._attempts(rows, k, exclude_seen, timeout, headers, request_id)

    def _attempts(self, rows, k, exclude_seen, timeout, headers, request_id) -> list[Recommendation]:
        inputs = build_inputs(self._grpc, rows, k, exclude_seen)
        deadline = None if timeout is None else time.monotonic() + timeout
        attempt = 0
        while True:
            attempt += 1
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise DeadlineExceeded(f"{self.url} model {self.model!r}: deadline exceeded: no answer within "
                                       f"{timeout:g} s after {attempt - 1} attempts", code="DEADLINE_EXCEEDED",
                                       attempts=attempt - 1)
            try:
                result = self._current().infer(self.model, inputs, client_timeout=remaining, headers=headers,
                                               request_id=request_id)
            except self._grpc.InferenceServerException as exc:
                code = retry_code(exc)
                pause = self.retry.backoff(attempt, self._rng)
                if self.retry.should_retry(code, attempt) and (deadline is None or time.monotonic() + pause < deadline):
                    with self._lock:
                        self.retries += 1
                    time.sleep(pause)
                    continue
                raise from_server_error(exc, self.url, self.model, timeout, attempt) from None
            return parse_result(result, rows.shape[0], k, f"{self.url} model {self.model!r}")
