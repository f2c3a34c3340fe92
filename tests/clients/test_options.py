"""Client pieces without a server: retry policy, channel arguments, input checks, batching plan, errors.

    .venv/bin/pytest tests/clients/test_options.py -q
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from sessionrec.clients import (ChannelOptions, DeadlineExceeded, InvalidRequest, ModelNotReady, Overloaded,
                                Recommendation, RetryPolicy, ServerUnavailable)
from sessionrec.clients.client import batch_plan, session_array
from sessionrec.clients.errors import RecommendError, from_server_error
from sessionrec.commands.recommend_cmd import format_table


def test_retry_policy_retries_only_retryable_codes_within_attempts():
    policy = RetryPolicy(max_attempts=3)
    assert policy.should_retry("UNAVAILABLE", 1) and policy.should_retry("RESOURCE_EXHAUSTED", 2)
    assert not policy.should_retry("UNAVAILABLE", 3)  # the third attempt was the last
    for code in ("INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "INTERNAL", None):
        assert not policy.should_retry(code, 1)
    with pytest.raises(ValueError, match="INVALID_ARGUMENT"):
        RetryPolicy(retryable_codes=frozenset({"UNAVAILABLE", "INVALID_ARGUMENT"}))


def test_backoff_is_jittered_exponential_and_capped():
    policy = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=0.5, multiplier=2)
    rng = random.Random(0)
    for attempt, ceiling in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (10, 0.5)):
        draws = [policy.backoff(attempt, rng) for _ in range(200)]
        assert 0 <= min(draws) and max(draws) <= ceiling
        assert max(draws) > 0.8 * ceiling  # full jitter spreads over the whole range


def test_channel_args_suit_kubernetes():
    args = dict(ChannelOptions().channel_args())
    assert args["grpc.lb_policy_name"] == "round_robin"
    assert args["grpc.keepalive_time_ms"] == 60_000 and args["grpc.keepalive_permit_without_calls"] == 0
    assert args["grpc.max_reconnect_backoff_ms"] <= 2000
    assert args["grpc.enable_retries"] == 0  # the client's own policy counts every attempt
    assert args["grpc.max_receive_message_length"] >= 1 << 20
    extra = dict(ChannelOptions(extra=(("grpc.primary_user_agent", "shop"),)).channel_args())
    assert extra["grpc.primary_user_agent"] == "shop"


def test_session_array_refuses_what_is_not_a_flat_list_of_ids():
    assert session_array([3, 1, 2]).dtype == np.int64
    assert session_array(np.array([5], dtype=np.int32)).tolist() == [5]
    assert session_array([]).size == 0  # the server names the problem (tested against it)
    with pytest.raises(InvalidRequest, match="integers"):
        session_array([1.5, 2.0])
    with pytest.raises(InvalidRequest, match="flat list"):
        session_array([[1, 2], [3, 4]])


def test_batch_plan_groups_equal_lengths_up_to_the_batch_size():
    sessions = [np.arange(n) for n in (1, 2, 1, 3, 1, 2, 1)]
    plan = batch_plan(sessions, max_batch=3)
    assert sorted(i for group in plan for i in group) == list(range(7))
    for group in plan:
        assert len(group) <= 3 and len({len(sessions[i]) for i in group}) == 1
    assert [0, 2, 4] in plan and [6] in plan


@pytest.mark.parametrize("status, cls", [
    ("StatusCode.INVALID_ARGUMENT", InvalidRequest), ("StatusCode.NOT_FOUND", ModelNotReady),
    ("StatusCode.DEADLINE_EXCEEDED", DeadlineExceeded), ("StatusCode.UNAVAILABLE", ServerUnavailable),
    ("StatusCode.RESOURCE_EXHAUSTED", Overloaded), ("StatusCode.INTERNAL", RecommendError),
])
def test_server_errors_map_to_exceptions_with_readable_messages(status, cls):
    error = from_server_error(InferenceServerException("boom detail", status=status), "h:1", "recommend",
                              timeout=0.5, attempts=3)
    assert type(error) is cls
    assert error.code == status.split(".")[1]
    assert "h:1" in str(error) and "recommend" in str(error)
    assert ("0.5 s" in str(error)) if cls is DeadlineExceeded else ("boom detail" in str(error))
    assert error.retryable == (cls in (ServerUnavailable, Overloaded))


def test_table_lists_items_and_flags_the_fallback():
    table = format_table(Recommendation([11, 22], [0.5, 0.25], unknown_count=2, fallback=True))
    lines = table.splitlines()
    assert lines[1].split() == ["1", "11", "0.5000"] and lines[2].split() == ["2", "22", "0.2500"]
    assert "unknown input ids: 2" in table and "fallback" in table


def test_click_sequence_numbers_increase_per_session_even_within_one_millisecond():
    from sessionrec.clients.session import SequenceNumbers

    numbers = SequenceNumbers(capacity=2, clock=lambda: 1000.0)
    assert [numbers.next("a"), numbers.next("a"), numbers.next("b"), numbers.next("a")] == [1_000_000, 1_000_001, 1_000_000, 1_000_002]
    numbers.next("c")  # evicts "b" (capacity 2): its next number restarts from the clock
    assert numbers.next("b") == 1_000_000
