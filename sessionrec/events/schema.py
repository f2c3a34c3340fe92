"""Exposure and interaction events: JSON Schemas (draft 2020-12), constructors and validation.

    exposure_event("ranker-v8", answer, session_items=[...])     # what was shown, to whom, by which version
    interaction_event("click", unit_id="guest-42", session_id="s1", item_id=84051, request_id=answer.request_id)
    validate(event)                                              # raises EventError naming the field

Every event has a unique `event_id` (uuid4 hex by default): transports deliver at least once, and
`sessionrec ingest` and the readout de-duplicate on it. `timestamp` is unix seconds (float).
The schemas are documented in docs/EXPERIMENTS.md ("Events").
"""

from __future__ import annotations

import time
import uuid

from sessionrec.errors import SessionrecError

INTERACTION_TYPES = ("click", "add_to_cart", "purchase")
MAX_ITEMS = 1000  # the served request's hard cap (max_request_items), so no event outgrows a request

_ID = {"type": "string", "minLength": 1, "maxLength": 256}
_ITEMS = {"type": "array", "items": {"type": "integer"}, "maxItems": MAX_ITEMS}

EXPOSURE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://sessionrec/schemas/exposure/1",
    "title": "exposure: a list of recommendations shown to a unit",
    "type": "object",
    "required": ["schema", "type", "event_id", "timestamp", "experiment", "unit_id", "variant", "in_experiment",
                 "request_id", "model", "model_version", "items_shown"],
    "additionalProperties": False,
    "properties": {
        "schema": {"const": "exposure/1"},
        "type": {"const": "exposure"},
        "event_id": _ID,
        "timestamp": {"type": "number", "minimum": 0},
        "experiment": _ID,
        "unit_id": _ID,
        "variant": _ID,
        "in_experiment": {"type": "boolean"},
        "request_id": _ID,
        "model": _ID,  # the ensemble that answered
        "model_version": {"type": "string", "maxLength": 32},
        "session_id": _ID,
        "session_items": _ITEMS,  # the request's items (raw ids, oldest first)
        "items_shown": _ITEMS,  # the answer, best first
    },
}

INTERACTION_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://sessionrec/schemas/interaction/1",
    "title": "interaction: what the guest did (click, add to cart, purchase)",
    "type": "object",
    "required": ["schema", "type", "event_id", "timestamp", "unit_id", "session_id", "item_id"],
    "additionalProperties": False,
    "properties": {
        "schema": {"const": "interaction/1"},
        "type": {"enum": list(INTERACTION_TYPES)},
        "event_id": _ID,
        "timestamp": {"type": "number", "minimum": 0},
        "unit_id": _ID,
        "session_id": _ID,
        "item_id": {"type": "integer"},
        "request_id": {"type": ["string", "null"], "maxLength": 256},  # the exposure it followed, if any
        "experiment": _ID,
        "value": {"type": "number"},  # order value of a purchase (optional)
    },
}

SCHEMAS = {"exposure": EXPOSURE_SCHEMA, **{t: INTERACTION_SCHEMA for t in INTERACTION_TYPES}}


class EventError(SessionrecError, ValueError):
    """An event does not follow its schema; the message names the field."""


_VALIDATORS: dict = {}


def validate(event: dict) -> dict:
    """The event itself, or EventError naming the first problem."""
    from jsonschema import Draft202012Validator

    kind = event.get("type") if isinstance(event, dict) else None
    if kind not in SCHEMAS:
        raise EventError(f"event type {kind!r} is not one of {sorted(SCHEMAS)}")
    validator = _VALIDATORS.get(kind)
    if validator is None:
        validator = _VALIDATORS[kind] = Draft202012Validator(SCHEMAS[kind])
    error = next(iter(validator.iter_errors(event)), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(event)"
        raise EventError(f"{kind} event {event.get('event_id', '?')}: {where}: {error.message}")
    return event


def new_event_id() -> str:
    return uuid.uuid4().hex


def exposure_event(experiment: str, answer, session_items=(), session_id: str | None = None,
                   timestamp: float | None = None, event_id: str | None = None) -> dict:
    """From a sessionrec.clients.experiment.ExperimentAnswer."""
    event = {"schema": "exposure/1", "type": "exposure", "event_id": event_id or new_event_id(),
             "timestamp": time.time() if timestamp is None else timestamp, "experiment": experiment,
             "unit_id": answer.unit_id, "variant": answer.variant, "in_experiment": answer.in_experiment,
             "request_id": answer.request_id, "model": answer.model, "model_version": answer.model_version,
             "session_items": [int(i) for i in session_items][:MAX_ITEMS],
             "items_shown": [int(i) for i in answer.recommendation.item_ids]}
    if session_id is not None:
        event["session_id"] = session_id
    return event


def interaction_event(kind: str, *, unit_id: str, session_id: str, item_id: int, request_id: str | None = None,
                      timestamp: float | None = None, event_id: str | None = None, **extra) -> dict:
    event = {"schema": "interaction/1", "type": kind, "event_id": event_id or new_event_id(),
             "timestamp": time.time() if timestamp is None else timestamp, "unit_id": unit_id,
             "session_id": session_id, "item_id": int(item_id), "request_id": request_id, **extra}
    return validate(event)
