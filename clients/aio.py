"""asyncio variant of RecommendClient, over tritonclient.grpc.aio (same results, errors and retries).

    async with AsyncRecommendClient("127.0.0.1:8001") as client:
        rec = await client.recommend([84051, 14513], k=20)
        recs = await client.recommend_batch(sessions, k=20)

Create it inside the running event loop (grpc.aio channels belong to the loop that made them).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Iterable, Sequence

import numpy as np

from sessionrec.clients.client import (DEFAULT_TIMEOUT_S, MODEL, Recommendation, batch_plan, build_inputs,
                                       parse_result, session_array)
from sessionrec.clients.errors import DeadlineExceeded, InvalidRequest, RecommendError, from_server_error, retry_code
from sessionrec.clients.options import ChannelOptions, RetryPolicy
from sessionrec.clients.tracing import call_span
from sessionrec.serving.tls import ClientTLS


class AsyncRecommendClient:
    """See RecommendClient for the arguments."""

    def __init__(self, url: str, *, timeout: float | None = DEFAULT_TIMEOUT_S, retry: RetryPolicy | None = None,
                 channel: ChannelOptions | None = None, tls: ClientTLS | None = None, model: str = MODEL,
                 max_batch_size: int = 64, batch_concurrency: int = 4, tracer=None):
        import tritonclient.grpc as grpcclient
        import tritonclient.grpc.aio as aioclient

        self._grpc, self._aio = grpcclient, aioclient
        self.tracer = tracer  # see RecommendClient
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
        self._retired: list[tuple[float, object]] = []
        self._client = self._connect()
        self._born = time.monotonic()
        from sessionrec.clients.session import SESSION_MODEL, SequenceNumbers

        self.session_model = SESSION_MODEL  # click() goes here
        self.sequence = SequenceNumbers()  # click numbers per session (idempotency keys)

    async def recommend(self, session_items: Iterable[int], k: int = 20, exclude_seen: bool = False,
                        timeout: float | None = ...) -> Recommendation:
        rows = session_array(session_items)[None, :]
        return (await self._call(rows, k, exclude_seen, self.timeout if timeout is ... else timeout))[0]

    async def recommend_batch(self, sessions: Sequence[Iterable[int]], k: int = 20, exclude_seen: bool = False,
                              timeout: float | None = ..., return_exceptions: bool = False) -> list:
        arrays = [session_array(s) for s in sessions]
        deadline = self.timeout if timeout is ... else timeout
        results: list = [None] * len(arrays)
        gate = asyncio.Semaphore(max(1, self.batch_concurrency))

        async def run(indices: list[int]) -> None:
            async with gate:
                outcomes = await self._group(arrays, indices, k, exclude_seen, deadline)
            for index, outcome in zip(indices, outcomes):
                results[index] = outcome

        await asyncio.gather(*(run(indices) for indices in batch_plan(arrays, self.max_batch_size)))
        if not return_exceptions:
            for outcome in results:
                if isinstance(outcome, BaseException):
                    raise outcome
        return results

    async def click(self, session_id: str | bytes, items, k: int = 20, exclude_seen: bool = False, *,
                    seq: int | None = None, full_session: Iterable[int] | None = None, timeout: float | None = ...):
        """See RecommendClient.click."""
        from sessionrec.clients import session as s

        seq = self.sequence.next(str(session_id)) if seq is None else int(seq)
        inputs = s.build_click_inputs(self._grpc, session_id, s.click_items(items), seq, k, exclude_seen, full_session)
        deadline = self.timeout if timeout is ... else timeout
        with call_span(self.tracer, self.session_model, self.url) as (headers, request_id):
            result = await s.infer_with_retries_async(self, self.session_model, inputs, deadline, headers, request_id)
        return s.parse_click_result(result, k, seq, f"{self.url} model {self.session_model!r}")

    async def ready(self, timeout: float = 2.0) -> bool:
        try:
            return bool(await self._client.is_server_live(client_timeout=timeout)
                        and await self._client.is_model_ready(self.model, client_timeout=timeout))
        except Exception:  # noqa: BLE001
            return False

    async def close(self) -> None:
        for _, old in self._retired:
            await old.close()
        self._retired.clear()
        await self._client.close()

    async def __aenter__(self) -> "AsyncRecommendClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- internals -------------------------------------------------------------------------------
    def _connect(self):
        kwargs = self.tls.grpc_kwargs() if self.tls is not None else {}
        return self._aio.InferenceServerClient(self.url, channel_args=self.channel.channel_args(), **kwargs)

    async def _current(self):
        age = self.channel.max_connection_age_s
        now = time.monotonic()
        if age is not None and now - self._born >= age:  # one event loop: no lock needed
            self._retired.append((now + (self.timeout or 30.0) + 1.0, self._client))
            self._client, self._born = self._connect(), now
        due = [old for when, old in self._retired if when <= now]
        self._retired = [(when, old) for when, old in self._retired if when > now]
        for old in due:
            await old.close()
        return self._client

    async def _group(self, arrays, indices, k, exclude_seen, timeout) -> list:
        rows = np.stack([arrays[i] for i in indices])
        try:
            return await self._call(rows, k, exclude_seen, timeout)
        except InvalidRequest as exc:
            if len(indices) == 1:
                return [exc]
            out = []
            for i in indices:
                out += await self._group(arrays, [i], k, exclude_seen, timeout)
            return out
        except RecommendError as exc:
            return [exc] * len(indices)

    async def _call(self, rows: np.ndarray, k: int, exclude_seen: bool, timeout: float | None) -> list[Recommendation]:
        if self.tracer is None:
            return await self._attempts(rows, k, exclude_seen, timeout, None, "")
        with call_span(self.tracer, self.model, self.url) as (headers, request_id):
            return await self._attempts(rows, k, exclude_seen, timeout, headers, request_id)

    async def _attempts(self, rows, k, exclude_seen, timeout, headers, request_id) -> list[Recommendation]:
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
                client = await self._current()
                result = await client.infer(self.model, inputs, client_timeout=remaining, headers=headers,
                                            request_id=request_id)
            except self._grpc.InferenceServerException as exc:
                code = retry_code(exc)
                pause = self.retry.backoff(attempt, self._rng)
                if self.retry.should_retry(code, attempt) and (deadline is None or time.monotonic() + pause < deadline):
                    self.retries += 1
                    await asyncio.sleep(pause)
                    continue
                raise from_server_error(exc, self.url, self.model, timeout, attempt) from None
            return parse_result(result, rows.shape[0], k, f"{self.url} model {self.model!r}")
