"""Synthetic experiment events: units assigned by the real Experiment, exposures, clicks and purchases."""

from __future__ import annotations

import numpy as np
import pytest

from sessionrec.clients.assignment import Experiment
from sessionrec.events.schema import validate

DAY = 86_400.0
START = 1_767_225_600.0  # 2026-01-01 UTC


def synth_events(units: int = 6000, conversion=(0.05, 0.05), ctr=(0.1, 0.1), days: int = 7, seed: int = 0,
                 experiment: str = "exp-test", ramp_bp: int = 10_000) -> list[dict]:
    rng = np.random.default_rng(seed)
    exp = Experiment(experiment, salt=f"{experiment}-salt", ramp_bp=ramp_bp)
    events, n = [], 0
    for u in range(units):
        unit = f"guest-{u}"
        a = exp.assign(unit)
        arm = 1 if a.variant == "candidate" else 0
        t = START + rng.integers(0, days) * DAY + rng.uniform(0, DAY / 2)
        for shown in range(1 + rng.poisson(2)):
            n += 1
            request = f"req-{u}-{shown}"
            events.append({"schema": "exposure/1", "type": "exposure", "event_id": f"x{n}", "timestamp": t + shown,
                           "experiment": experiment, "unit_id": unit, "variant": a.variant,
                           "in_experiment": a.in_experiment, "request_id": request,
                           "model": "recommend_candidate" if arm else "recommend", "model_version": "2" if arm else "1",
                           "session_items": [1, 2], "items_shown": [3, 4, 5]})
            if rng.random() < ctr[arm]:
                n += 1
                events.append({"schema": "interaction/1", "type": "click", "event_id": f"c{n}",
                               "timestamp": t + shown + 1, "unit_id": unit, "session_id": f"s{u}", "item_id": 3,
                               "request_id": request})
        if a.in_experiment and rng.random() < conversion[arm]:
            n += 1
            events.append({"schema": "interaction/1", "type": "purchase", "event_id": f"p{n}",
                           "timestamp": t + 600, "unit_id": unit, "session_id": f"s{u}", "item_id": 4,
                           "request_id": None})
    for event in events[:50]:
        validate(event)  # the factory writes what the schemas allow
    return events


@pytest.fixture
def events_factory():
    return synth_events


@pytest.fixture(scope="session")
def other_checkpoint(tmp_path_factory, sample_path):
    """A second, different model (another size and seed): the candidate."""
    from sessionrec.model import ModelConfig
    from sessionrec.train import TrainConfig, train

    out = tmp_path_factory.mktemp("candidate-model")
    return train(sample_path, out, ModelConfig(dim=24, max_len=16), TrainConfig(epochs=1, batch_size=50, seed=7),
                 progress=False).best_path
