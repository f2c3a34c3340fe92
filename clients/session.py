"""Click-by-click requests to the `recommend_session` ensemble (the session is kept server-side, in Redis).

    with RecommendClient("127.0.0.1:8001") as client:
        rec = client.click("guest-42", 84051)          # the item just viewed
        rec.item_ids, rec.history_length, rec.state    # state: stored | duplicate | degraded | not_stored

Every click carries a sequence number, its idempotency key and its place in the session: a retried
request sends the same number, so the server stores the click once (state `duplicate` on the
retry), and a late request lands at its own place in the history. By default the client numbers
clicks with the time in milliseconds, strictly increasing per session within the process, so
clicks of one guest sent from several processes still order by time; a caller that has its own
event counter passes `seq`. `degraded` means Redis was slow or down and the answer came from the
clicks the request carried: send `full_session` then to keep answers exact.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from sessionrec.clients.client import Recommendation, parse_result, session_array
from sessionrec.clients.errors import BadResponse, DeadlineExceeded, InvalidRequest, from_server_error, retry_code

SESSION_MODEL = "recommend_session"
STATES = ("stored", "duplicate", "degraded", "not_stored")


@dataclass(frozen=True)
class SessionRecommendation(Recommendation):
    """A Recommendation plus what the server did with the session."""

    history_length: int = 0  # clicks the answer was computed from
    state: str = "not_stored"  # stored | duplicate | degraded | not_stored
    seq: int = 0  # the click's sequence number (send it again to retry by hand)

    def as_dict(self) -> dict:
        return {**super().as_dict(), "history_length": self.history_length, "state": self.state, "seq": self.seq}


class SequenceNumbers:
    """Per-session click numbers: the time in ms, bumped to stay strictly increasing per session.

    Remembers the last number of the `capacity` most recent sessions (LRU); a forgotten session
    restarts from the clock, which is still after its earlier clicks.
    """

    def __init__(self, capacity: int = 100_000, clock=time.time):
        self.capacity = capacity
        self.clock = clock
        self._last: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def next(self, session_id: str) -> int:
        now = int(self.clock() * 1000)
        with self._lock:
            seq = max(now, self._last.get(session_id, 0) + 1)
            self._last[session_id] = seq
            self._last.move_to_end(session_id)
            while len(self._last) > self.capacity:
                self._last.popitem(last=False)
        return seq


def click_items(items) -> np.ndarray:
    if isinstance(items, (int, np.integer)) and not isinstance(items, bool):
        return np.asarray([items], dtype=np.int64)
    return session_array(items)


def build_click_inputs(grpcclient, session_id: str | bytes, items: np.ndarray, seq: int, k: int, exclude_seen: bool,
                       full_session: Iterable[int] | None = None) -> list:
    """InferInputs of one recommend_session event."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InvalidRequest(f"k must be an integer, got {k!r}")
    session = session_id.encode() if isinstance(session_id, str) else bytes(session_id)
    if not session:
        raise InvalidRequest("session_id is empty")
    arrays = [("SESSION_ID", "BYTES", np.array([[session]], dtype=object)),
              ("NEW_ITEMS", "INT64", items.reshape(1, -1)),
              ("CLICK_SEQ", "INT64", np.array([[seq]], dtype=np.int64)),
              ("K", "INT32", np.array([[k]], dtype=np.int32)),
              ("EXCLUDE_SEEN", "BOOL", np.array([[bool(exclude_seen)]], dtype=bool))]
    if full_session is not None:
        arrays.append(("ITEMS", "INT64", session_array(full_session).reshape(1, -1)))
    inputs = []
    for name, datatype, array in arrays:
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def parse_click_result(result, k: int, seq: int, where: str) -> SessionRecommendation:
    base = parse_result(result, 1, k, where)[0]
    length, state = result.as_numpy("HISTORY_LENGTH"), result.as_numpy("HISTORY_STATE")
    if length is None or state is None:
        raise BadResponse(f"{where}: answer has no HISTORY_LENGTH/HISTORY_STATE (is this `{SESSION_MODEL}`?)")
    state_text = state.reshape(-1)[0]
    state_text = state_text.decode() if isinstance(state_text, bytes) else str(state_text)
    if state_text not in STATES:
        raise BadResponse(f"{where}: unknown HISTORY_STATE {state_text!r}")
    fields = {name: getattr(base, name) for name in ("item_ids", "scores", "unknown_count", "fallback")}
    return SessionRecommendation(**fields, history_length=int(length.reshape(-1)[0]), state=state_text, seq=seq)



def _deadline_error(client, model: str, timeout, attempts: int) -> DeadlineExceeded:
    return DeadlineExceeded(f"{client.url} model {model!r}: deadline exceeded: no answer within {timeout:g} s after "
                            f"{attempts} attempts", code="DEADLINE_EXCEEDED", attempts=attempts)


def infer_with_retries(client, model: str, inputs: list, timeout: float | None, headers=None, request_id: str = ""):
    """RecommendClient's retry loop (RetryPolicy, one deadline over all attempts) for any model.

    Safe for recommend_session because the retried request carries the same CLICK_SEQ.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    attempt = 0
    while True:
        attempt += 1
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise _deadline_error(client, model, timeout, attempt - 1)
        try:
            return client._current().infer(model, inputs, client_timeout=remaining, headers=headers, request_id=request_id)
        except client._grpc.InferenceServerException as exc:
            pause = client.retry.backoff(attempt, client._rng)
            if client.retry.should_retry(retry_code(exc), attempt) and (deadline is None or time.monotonic() + pause < deadline):
                with client._lock:
                    client.retries += 1
                time.sleep(pause)
                continue
            raise from_server_error(exc, client.url, model, timeout, attempt) from None


async def infer_with_retries_async(client, model: str, inputs: list, timeout: float | None, headers=None,
                                   request_id: str = ""):
    """infer_with_retries for AsyncRecommendClient."""
    import asyncio

    deadline = None if timeout is None else time.monotonic() + timeout
    attempt = 0
    while True:
        attempt += 1
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise _deadline_error(client, model, timeout, attempt - 1)
        try:
            return await (await client._current()).infer(model, inputs, client_timeout=remaining, headers=headers,
                                                        request_id=request_id)
        except client._grpc.InferenceServerException as exc:
            pause = client.retry.backoff(attempt, client._rng)
            if client.retry.should_retry(retry_code(exc), attempt) and (deadline is None or time.monotonic() + pause < deadline):
                client.retries += 1
                await asyncio.sleep(pause)
                continue
            raise from_server_error(exc, client.url, model, timeout, attempt) from None
