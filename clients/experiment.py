"""Serve an experiment: assign the unit, ask that variant's ensemble, log the exposure.

    from sessionrec.clients import RecommendClient
    from sessionrec.clients.assignment import Experiment
    from sessionrec.clients.experiment import ExperimentClient

    exp = Experiment("ranker-v8", salt="ranker-v8-2026-12", ramp_bp=1000)
    with ExperimentClient(exp, {"control": RecommendClient(url), "candidate": RecommendClient(url,
                          model="recommend_candidate")}, sink=sink) as client:
        answer = client.recommend("guest-42", [84051, 14513], k=20)
        answer.request_id, answer.variant, answer.model, answer.model_version, answer.recommendation.item_ids

Every answer carries a request id, its variant and the model name and version that produced it; the
exposure event (sessionrec.events.schema) carries the same, so interactions the site reports with the
request id join back to what was shown. The sink's `emit` never blocks and never raises into this
call (sessionrec.events.sink): logging cannot fail a recommendation.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Iterable, Mapping

from sessionrec.clients.assignment import Experiment
from sessionrec.clients.client import Recommendation, RecommendClient


@dataclass(frozen=True)
class ExperimentAnswer:
    request_id: str  # uuid4 hex; the site sends it back with clicks and purchases
    unit_id: str
    variant: str
    in_experiment: bool
    model: str  # the ensemble that answered (recommend, recommend_candidate)
    model_version: str  # its version, as Triton reported it
    recommendation: Recommendation


class ExperimentClient:
    """One RecommendClient per variant.

    `experiment` is an Experiment, or something with `current() -> Experiment` (ExperimentFile: the
    ramp that `sessionrec rollout` moves), read at every call.
    """

    def __init__(self, experiment, clients: Mapping[str, RecommendClient], sink=None):
        self._source = experiment if hasattr(experiment, "current") else None
        experiment = self._source.current() if self._source is not None else experiment
        missing = [v for v in experiment.split_bp if v not in clients]
        if missing:
            raise ValueError(f"experiment {experiment.name!r}: no client for variant(s) {missing}")
        self.experiment = experiment
        self.clients = dict(clients)
        self.sink = sink  # anything with emit(event: dict) -> bool; None logs nothing
        self.log_failures = 0  # emits that raised (sessionrec's sinks never do; a custom one might)

    def recommend(self, unit_id: str, session_items: Iterable[int], k: int = 20, exclude_seen: bool = False,
                  **kwargs) -> ExperimentAnswer:
        if self._source is not None:
            self.experiment = self._source.current()
        assignment = self.experiment.assign(unit_id)
        client = self.clients[assignment.variant]
        items = list(session_items)
        rec = client.recommend(items, k=k, exclude_seen=exclude_seen, **kwargs)
        answer = ExperimentAnswer(uuid.uuid4().hex, assignment.unit_id, assignment.variant, assignment.in_experiment,
                                  client.model, rec.model_version, rec)
        if self.sink is not None:
            self._log(answer, items)
        return answer

    def _log(self, answer: ExperimentAnswer, items: list) -> None:
        from sessionrec.events.schema import exposure_event

        try:
            self.sink.emit(exposure_event(self.experiment.name, answer, session_items=items, timestamp=time.time()))
        except Exception:  # noqa: BLE001 - a broken sink must not fail the recommendation it logs
            self.log_failures += 1

    def close(self) -> None:
        for client in self.clients.values():
            client.close()

    def __enter__(self) -> "ExperimentClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
