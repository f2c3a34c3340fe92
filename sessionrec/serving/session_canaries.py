"""The manifest's canaries through `recommend_session`: at export (no Redis) and at every load and switch.

A version's canaries (export/exporter.py: real sessions, exclusion, unknown ids, one-click sessions)
record the answer `recommend` must give. The stateful ensemble must give the same answer for the
same session, whether it arrives whole (the caller's `ITEMS`) or click by click, rebuilt from Redis:

- at export, `check_at_export` runs every canary through the fused step's own code
  (stateful.recommend_with_history) as an event with the full session in ITEMS and no Redis (state
  `not_stored`): the stateful step answers this version exactly as the stateless one does;
- at load and at every switch, `replay` sends each canary to the served ensemble twice: once as a
  look-up event carrying ITEMS and no click (answered from ITEMS, stores nothing), once click by
  click under a fresh session id, where the last click's answer comes from the history Redis kept.

Canary session ids start with history.CANARY_PREFIX: the step keeps them under
`<key_prefix>canary:` with a TTL of a minute, never among guests' keys, and each replay uses new
ids (a nonce), so no replay reads another's clicks. When Redis is down or slow the click-by-click
answers are `degraded` and not compared (nothing is wrong with the version; a Redis outage must
never block a start or a switch); the report counts them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import numpy as np

from sessionrec.serving.history import CANARY_PREFIX, DEGRADED, NOT_STORED, STORED, ClickEvent, HistoryConfig, SessionHistory

SESSION_MODEL = "recommend_session"
SCORE_TOLERANCE = 1e-3  # the same bound as the `recommend` canaries (sessionrec.serving.embedded)


@dataclass
class SessionCanaryReport:
    version: int
    checked: int  # canaries answered from the caller's ITEMS (every one)
    through_history: int = 0  # canaries replayed click by click and answered from Redis
    degraded: int = 0  # canaries whose click-by-click replay found Redis unavailable (not compared)
    failures: list[str] = field(default_factory=list)
    errors: int = 0  # failures that are requests with no answer (a timeout, a dead stub), not wrong answers

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def disagrees(self) -> bool:
        """Some answer came back and differs: the version is wrong, not the moment (no retry helps)."""
        return len(self.failures) > self.errors

    def summary(self) -> str:
        return (f"{self.checked} session canaries ok, {self.through_history} through the Redis history"
                + (f", {self.degraded} degraded (Redis unavailable, not compared)" if self.degraded else ""))


def canary_session_id(version: int, nonce: str, index: int, kind: str) -> bytes:
    return CANARY_PREFIX + f"v{version}:{nonce}:{index}:{kind}".encode()


def differs(canary: dict, ids, scores, unknown_count: int, fallback: bool) -> str | None:
    """What differs between an answer and the canary's recorded one (None: the same answer)."""
    ids = [int(i) for i in ids]
    if ids != canary["expected_ids"]:
        return f"items {ids[:5]}... differ from expected {canary['expected_ids'][:5]}..."
    if np.abs(np.asarray(scores) - np.asarray(canary["expected_scores"])).max(initial=0) > SCORE_TOLERANCE:
        return f"scores differ by more than {SCORE_TOLERANCE}"
    if bool(fallback) != canary["fallback"]:
        return "FALLBACK flag differs"
    if int(unknown_count) != canary["unknown_count"]:
        return "UNKNOWN_COUNT differs"
    return None


def check_at_export(pipeline, canaries: list[dict]) -> list[str]:
    """Failures of the canaries sent to the fused step's code as recommend_session events (no Redis)."""
    from sessionrec.serving.stateful import StepRequest, recommend_with_history

    history = SessionHistory(HistoryConfig(url=None))  # history off: the answer comes from ITEMS
    requests = [StepRequest(None, np.array([[c["k"]]], dtype=np.int32), np.array([[c["exclude_seen"]]], dtype=bool),
                            ClickEvent(canary_session_id(0, "export", i, "items"), np.asarray(c["items"][-1:], dtype=np.int64),
                                       1, np.asarray(c["items"], dtype=np.int64)))
                for i, c in enumerate(canaries)]
    failures = []
    for i, (canary, out) in enumerate(zip(canaries, recommend_with_history(pipeline, history, requests))):
        if isinstance(out, Exception):
            failures.append(f"session canary {i}: {out}")
            continue
        state, length = out.history_state[0, 0].decode(), int(out.history_length[0, 0])
        problem = differs(canary, out.answer.item_ids[0], out.answer.scores[0], out.answer.unknown_count[0, 0],
                          out.answer.fallback[0, 0])
        if problem is None and (state, length) != (NOT_STORED, len(canary["items"])):
            problem = f"HISTORY_STATE/LENGTH {state}/{length}, expected {NOT_STORED}/{len(canary['items'])}"
        if problem:
            failures.append(f"session canary {i}: {problem}")
    return failures


def _event(client, session_id: bytes, new_items: list[int], seq: int, canary: dict, full=None, model=SESSION_MODEL):
    import tritonclient.grpc as grpcclient

    from sessionrec.clients.session import build_click_inputs

    inputs = build_click_inputs(grpcclient, session_id, np.asarray(new_items, dtype=np.int64), seq, canary["k"],
                                canary["exclude_seen"], full)
    result = client.infer(model, inputs, client_timeout=10.0)
    return (result.as_numpy("ITEM_IDS")[0], result.as_numpy("SCORES")[0], int(result.as_numpy("UNKNOWN_COUNT")[0, 0]),
            bool(result.as_numpy("FALLBACK")[0, 0]), int(result.as_numpy("HISTORY_LENGTH")[0, 0]),
            result.as_numpy("HISTORY_STATE")[0, 0].decode())


def probe(client, canary: dict, version: int, model: str = SESSION_MODEL) -> str:
    """One look-up event carrying the canary's whole session (no click: nothing is stored) under a
    reserved canary id; its HISTORY_STATE. For EmbeddedServer.heal: a dead step raises, while a
    Redis that is down or hung answers `degraded` (within one timeout), which is not a dead step."""
    *_, state = _event(client, canary_session_id(version, "heal", 0, "items"), [], 1, canary,
                       full=[int(x) for x in canary["items"]], model=model)
    return state


def replay(client, manifest: dict, model: str = SESSION_MODEL) -> SessionCanaryReport:
    """The manifest's canaries through the served `model` (a tritonclient.grpc client)."""
    version = int(manifest["version"])
    canaries = manifest.get("canaries", [])
    window = int(manifest.get("serving", {}).get("max_len", 0)) or None
    report = SessionCanaryReport(version=version, checked=len(canaries))
    nonce = uuid.uuid4().hex[:16]
    if not canaries:
        report.failures.append("manifest has no canary requests")
    for i, canary in enumerate(canaries):
        items = [int(x) for x in canary["items"]]
        try:
            # 1. The caller's whole session, no click: answered from ITEMS; a look-up stores nothing.
            *answer, length, state = _event(client, canary_session_id(version, nonce, i, "items"), [], 1, canary,
                                            full=items, model=model)
            problem = differs(canary, *answer)
            if problem is None and (state not in (NOT_STORED, DEGRADED) or length != len(items)):
                problem = f"ITEMS override answered HISTORY_STATE/LENGTH {state}/{length} for {len(items)} clicks"
            if problem:
                report.failures.append(f"session canary {i} (ITEMS): {problem}")
                continue
            # 2. Click by click under a fresh id: the last answer comes from the history in Redis.
            # Within the model's window only: a history trimmed below it (not the default) changes answers.
            if window is not None and len(items) > window:
                continue
            sid = canary_session_id(version, nonce, i, "clicks")
            problem = None
            for position, item in enumerate(items, 1):
                *answer, length, state = _event(client, sid, [item], position, canary, model=model)
                if state == DEGRADED:  # Redis unavailable: this replay proves nothing either way
                    problem = DEGRADED
                elif state != STORED:
                    problem = f"click {position} answered {state} (expected {STORED})"
                elif length != position:
                    problem = f"click {position} answered from {length} stored clicks"
                if problem:
                    break
            else:
                problem = differs(canary, *answer)
                if problem:
                    problem = f"last click: {problem}"
            if problem == DEGRADED:
                report.degraded += 1
            elif problem:
                report.failures.append(f"session canary {i} (click by click): {problem}")
            else:
                report.through_history += 1
        except Exception as exc:  # noqa: BLE001 - any failure to answer is a canary failure
            report.failures.append(f"session canary {i}: request failed: {exc}")
            report.errors += 1
    return report
