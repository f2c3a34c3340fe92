"""Request preprocessing: raw catalogue ids of one session -> the encoder's padded input tensors.

Runs inside Triton's `preprocess` python model (model_repository/preprocess/model.py only adapts
tensors) and in the offline pipeline that computes canary answers, so both share this code and the
schema's builder used in training (sessionrec.schemas: the session graph, or the click sequence).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sessionrec.errors import SessionrecError
from sessionrec.schemas import DEFAULT_SCHEMA, get_schema


class RequestError(SessionrecError, ValueError):
    """A malformed request; served back as INVALID_ARGUMENT for that request only."""


@dataclass
class IdMap:
    """Raw catalogue id <-> model id (1..N), vectorised with a sorted array (no per-id dict lookups)."""

    raw_ids: np.ndarray  # (N+1,) raw id of each model id; [0] = -1 padding

    def __post_init__(self) -> None:
        self.raw_ids = np.asarray(self.raw_ids, dtype=np.int64)
        real = self.raw_ids[1:]
        order = np.argsort(real, kind="stable")
        self._sorted = real[order]
        self._model_ids = order.astype(np.int64) + 1

    @property
    def n_items(self) -> int:
        return self.raw_ids.size - 1

    def to_model(self, raw: np.ndarray) -> np.ndarray:
        """Model id of each raw id, 0 where unknown."""
        raw = np.asarray(raw, dtype=np.int64)
        if self._sorted.size == 0:
            return np.zeros_like(raw)
        pos = np.clip(np.searchsorted(self._sorted, raw), 0, self._sorted.size - 1)
        return np.where(self._sorted[pos] == raw, self._model_ids[pos], 0)

    def to_raw(self, model_ids: np.ndarray) -> np.ndarray:
        return self.raw_ids[np.asarray(model_ids, dtype=np.int64)]


@dataclass
class Preprocessor:
    id_map: IdMap
    max_len: int  # graph size: sessions keep their last max_len known clicks
    max_request_items: int = 1000  # hard cap on one request's session length (bad input beyond it)
    schema: str = DEFAULT_SCHEMA  # the version's input schema (its manifest's serving.schema)

    def __post_init__(self) -> None:
        self._schema = get_schema(self.schema)

    def process(self, raw_sessions: np.ndarray, pad_to_longest: bool = False) -> dict[str, np.ndarray]:
        """(B, n) raw ids, one session per row -> encoder inputs + bookkeeping, each (B, ...).

        Unknown ids are dropped and counted; a session with no known id gets an empty graph and
        `fallback` = True (retrieval then answers with popular items). Padded to max_len (what the
        three-step layout's encoder batcher needs: one shape for every request), or to the longest
        session when asked (same answers, less encoder work: LocalPipeline batches itself).
        """
        return self.tensors([self.known(raw_sessions)], pad_to_longest)

    def known(self, raw_sessions: np.ndarray) -> "KnownSessions":
        """Check one request's (B, n) raw ids and map them to model ids (RequestError if malformed)."""
        raw_sessions = np.asarray(raw_sessions)
        if raw_sessions.ndim == 1:
            raw_sessions = raw_sessions[None, :]
        if raw_sessions.ndim != 2:
            raise RequestError(f"ITEMS must be a list of item ids per session, got shape {list(raw_sessions.shape)}")
        if not np.issubdtype(raw_sessions.dtype, np.integer):
            raise RequestError(f"ITEMS must be int64 item ids, got {raw_sessions.dtype}")
        n = raw_sessions.shape[1]
        if n == 0:
            raise RequestError("ITEMS is empty: a session needs at least one item id")
        if n > self.max_request_items:
            raise RequestError(
                f"ITEMS has {n} item ids, over the limit of {self.max_request_items} per session "
                f"(only the last {self.max_len} are used; send at most {self.max_request_items})"
            )
        model_ids = self.id_map.to_model(raw_sessions)  # (B, n)
        sessions = [row[row > 0] for row in model_ids]
        unknown = np.asarray([row.size - known.size for row, known in zip(model_ids, sessions)], dtype=np.int32)
        return KnownSessions(sessions, unknown.reshape(-1, 1), (unknown == n).reshape(-1, 1))

    def tensors(self, requests: list["KnownSessions"], pad_to_longest: bool = False) -> dict[str, np.ndarray]:
        """The encoder inputs + bookkeeping of several requests' sessions, stacked in order (one batch)."""
        sessions = [s for r in requests for s in r.sessions]
        out = self._schema.batch(sessions, self.max_len, pad_to_longest=pad_to_longest)
        out["unknown_count"] = np.concatenate([r.unknown_count for r in requests])
        out["fallback"] = np.concatenate([r.fallback for r in requests])
        return out


@dataclass
class KnownSessions:
    """One request's sessions as model ids (unknown ids dropped), with the request's bookkeeping."""

    sessions: list[np.ndarray]  # per row: the known model ids, oldest first (may be empty)
    unknown_count: np.ndarray  # (B, 1) int32
    fallback: np.ndarray  # (B, 1) bool: no id of the row was known
