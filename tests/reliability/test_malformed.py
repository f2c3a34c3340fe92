"""Bad input at scale over gRPC: thousands of generated requests, good and bad sent together.

Hypothesis draws groups of requests from the categories below; each group is sent at once
(sessionrec.reliability.requests: raw protobuf, so malformed tensors reach the server as written) and
the dynamic batchers of the steps group good and bad requests into the same executions. Every bad
request must get INVALID_ARGUMENT with a message naming the problem; every good one (unknown ids
included: dropped and counted, all-unknown answered with popular items) must get the answer of the
offline pipeline on the same repository version. Outcome counts go to runs/reliability/malformed.json.

    .venv/bin/pytest tests/reliability/test_malformed.py -q        # ~1 min
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessionrec.export.repository import current_version
from sessionrec.reliability.report import write_report
from sessionrec.reliability.requests import RawChannel, RawRequest, Tensor
from sessionrec.serving.artifacts import read_manifest
from sessionrec.serving.embedded import replay_canaries
from sessionrec.serving.pipeline import LocalPipeline

pytestmark = pytest.mark.server

EXAMPLES = 200  # groups of 25..40 requests: ~6,000 requests, ~3,700 of them malformed
MIN_MALFORMED = 2000
SCORE_ATOL = 1e-4
INPUTS = ("ITEMS", "K", "EXCLUDE_SEEN")
DTYPES = {"ITEMS": "INT64", "K": "INT32", "EXCLUDE_SEEN": "BOOL"}
OTHER_DTYPES = ["INT32", "INT64", "FP32", "FP64", "UINT64", "INT8", "BOOL", "BYTES"]


@dataclass(frozen=True)
class Catalogue:
    known: np.ndarray  # raw ids served by this version
    max_k: int
    max_len: int
    max_items: int  # max_request_items


@dataclass
class Case:
    category: str
    request: RawRequest
    rows: list | None = None  # good: [(items, k, exclude_seen)] per row, the expected answer's inputs
    phrases: tuple[str, ...] = ()  # bad: the message must contain each ("A|B": either)


TALLY: dict[str, Counter] = defaultdict(Counter)  # category -> outcome ("answered" / status code / "mismatch")
EXAMPLES_RUN = Counter()


@pytest.fixture(scope="module")
def catalogue(exported_repository) -> Catalogue:
    version = current_version(exported_repository)
    manifest = read_manifest(exported_repository / "recommend" / str(version))
    known = np.load(exported_repository / "preprocess" / str(version) / "item_ids.npy", allow_pickle=False)[1:]
    serving = manifest["serving"]
    return Catalogue(known, min(serving["max_k"], known.size), serving["max_len"], serving["max_request_items"])


@pytest.fixture(scope="module")
def pipeline(exported_repository) -> LocalPipeline:
    return LocalPipeline(exported_repository, current_version(exported_repository))


@pytest.fixture(scope="module")
def channel(embedded_server):
    with RawChannel(embedded_server.grpc_url) as channel:
        yield channel


# ----------------------------------------------------------------------------- request categories

def session(draw, cat: Catalogue, n: int, unknown_share: float = 0.0) -> list[int]:
    """n raw ids: catalogue ids, each replaced by an unknown one (negative or huge) with `unknown_share`.

    Built from one drawn seed: hypothesis keeps a few bytes per session, even for 10,000 ids.
    """
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    items = rng.choice(cat.known, size=n)
    unknown = rng.random(n) < unknown_share
    negative = rng.integers(-(2**63), 0, size=n, dtype=np.int64)
    huge = rng.integers(10**12, 2**63 - 1, size=n, dtype=np.int64)
    return np.where(unknown, np.where(rng.random(n) < 0.5, negative, huge), items).tolist()


def good(category, rows_items, k, exclude) -> Case:
    rows_items = [list(r) for r in rows_items]
    ks = [k] * len(rows_items)
    ex = exclude if isinstance(exclude, list) else [exclude] * len(rows_items)
    return Case(category, RawRequest.recommend(rows_items, np.array(ks), np.array(ex)), list(zip(rows_items, ks, ex)))


def bad(category, tensors, *phrases) -> Case:
    return Case(category, RawRequest(tuple(tensors)), phrases=phrases)


def standard(items, k=5, exclude=False) -> dict[str, Tensor]:
    return {t.name: t for t in RawRequest.recommend(items, k, exclude).tensors}


@st.composite
def case(draw, cat: Catalogue) -> Case:
    kind = draw(st.sampled_from(CATEGORIES))
    k = draw(st.integers(1, cat.max_k))
    safe_k = draw(st.integers(1, cat.max_k - cat.max_len))  # rows of one request answer alike only below this
    exclude = draw(st.booleans())
    n = draw(st.integers(1, 40))
    if kind == "good":
        return good(kind, [session(draw, cat, n)], k, exclude)
    if kind == "good_multi_row":
        rows = draw(st.integers(2, 8))
        return good(kind, [session(draw, cat, n, 0.2) for _ in range(rows)], safe_k,
                    draw(st.lists(st.booleans(), min_size=rows, max_size=rows)))
    if kind == "good_long_session":  # up to the hard cap: only the last max_len known ids count
        return good(kind, [session(draw, cat, draw(st.integers(cat.max_len, cat.max_items)), 0.1)], k, exclude)
    if kind == "unknown_ids_mixed_in":  # negative and huge ids: dropped, counted
        return good(kind, [session(draw, cat, n, 0.5)], k, exclude)
    if kind == "all_unknown_ids":  # FALLBACK: popular items
        rows = draw(st.integers(1, 3))
        return good(kind, [session(draw, cat, n, unknown_share=1.0) for _ in range(rows)], safe_k, exclude)
    if kind == "empty_session":
        return bad(kind, standard(np.zeros((draw(st.integers(1, 4)), 0), np.int64)).values(), "ITEMS is empty")
    if kind == "over_long_session":
        length = draw(st.sampled_from([cat.max_items + 1, draw(st.integers(cat.max_items + 1, 10_000)), 10_000]))
        return bad(kind, standard([session(draw, cat, length, 0.1)]).values(), f"ITEMS has {length} item ids",
                   f"over the limit of {cat.max_items}")
    if kind in ("k_zero", "k_negative", "k_huge"):
        bad_k = {"k_zero": 0, "k_negative": draw(st.integers(-(2**31), -1)),
                 "k_huge": draw(st.integers(cat.max_k + 1, 2**31 - 1))}[kind]
        return bad(kind, standard([session(draw, cat, n)], bad_k).values(), f"K={bad_k} is out of range")
    if kind == "multi_row_one_bad_k":
        rows = draw(st.integers(2, 6))
        ks = [safe_k] * rows
        ks[draw(st.integers(0, rows - 1))] = 0
        return bad(kind, standard([session(draw, cat, n) for _ in range(rows)], np.array(ks)).values(), "K=0 is out of range")
    if kind == "multi_row_different_k":
        rows = draw(st.integers(2, 6))
        ks = [safe_k] * rows
        ks[draw(st.integers(0, rows - 1))] = safe_k + 1 if safe_k < cat.max_k - cat.max_len else safe_k - 1
        return bad(kind, standard([session(draw, cat, n) for _ in range(rows)], np.array(ks)).values(),
                   "different numbers of items")
    tensors = standard([session(draw, cat, n)], safe_k, exclude)
    name = draw(st.sampled_from(INPUTS))
    if kind == "wrong_dtype":
        dtype = draw(st.sampled_from([d for d in OTHER_DTYPES if d != DTYPES[name]]))
        shape = tensors[name].shape
        values = np.ones(shape, dtype=object if dtype == "BYTES" else np.int64)
        array = values.astype(bytes) if dtype == "BYTES" else values.astype({"INT32": np.int32, "INT64": np.int64,
            "FP32": np.float32, "FP64": np.float64, "UINT64": np.uint64, "INT8": np.int8, "BOOL": bool}[dtype])
        tensors[name] = Tensor.of(name, array, dtype)
        return bad(kind, tensors.values(), f"input '{name}' data-type is '{dtype}'", f"expects '{DTYPES[name]}'")
    if kind == "wrong_rank":
        array = np.frombuffer(tensors[name].content, dtype={"ITEMS": np.int64, "K": np.int32, "EXCLUDE_SEEN": bool}[name])
        shape = draw(st.sampled_from([(array.size,), (1, 1, array.size), (1, array.size, 1)]))
        if name != "ITEMS" and shape == (array.size,):
            shape = (1, 1, 1)
        tensors[name] = Tensor.of(name, array.reshape(shape), DTYPES[name])
        # "unexpected shape for input 'K'", or "input 'ITEMS' batch size does not match other inputs"
        return bad(kind, tensors.values(), f"'{name}'|batch size does not match")
    if kind == "batch_size_mismatch":
        rows = draw(st.integers(2, 5))
        tensors[name] = standard([session(draw, cat, n) for _ in range(rows)], safe_k)[name]
        return bad(kind, tensors.values(), "batch size does not match")
    if kind == "missing_input":
        del tensors[name]
        return bad(kind, tensors.values(), "missing required input(s)", f"'{name}'")
    if kind == "extra_input":
        tensors["NOT_AN_INPUT"] = Tensor.of("NOT_AN_INPUT", np.ones((1, 1), np.int32))
        return bad(kind, tensors.values(), "expected 3 inputs but got 4", "NOT_AN_INPUT")
    if kind == "batch_over_max":
        rows = draw(st.integers(65, 80))
        return bad(kind, standard([session(draw, cat, 2)] * rows).values(), "batch-size must be <= 64")
    if kind == "byte_count_mismatch":  # the bytes disagree with the declared shape
        t = tensors[name]
        content = t.content[:-1] if draw(st.booleans()) else t.content + bytes(draw(st.integers(1, 9)))
        tensors[name] = Tensor(name, t.datatype, t.shape, content)
        return bad(kind, tensors.values(), f"input byte size mismatch for input '{name}'")
    raise AssertionError(kind)


GOOD = ["good", "good_multi_row", "good_long_session", "unknown_ids_mixed_in", "all_unknown_ids"]
CATEGORIES = GOOD + [
    "empty_session", "over_long_session", "k_zero", "k_negative", "k_huge", "multi_row_one_bad_k",
    "multi_row_different_k", "wrong_dtype", "wrong_rank", "batch_size_mismatch", "missing_input", "extra_input",
    "batch_over_max", "byte_count_mismatch",
]


# ----------------------------------------------------------------------------- checks


def same_ranking(ids, scores, expected_ids, expected_scores) -> bool:
    """Equal, or different only where scores tie (the server encodes sessions in batches: float noise)."""
    if ids.shape != expected_ids.shape or not np.allclose(scores, expected_scores, atol=SCORE_ATOL):
        return False
    for i in np.flatnonzero(ids != expected_ids):
        if not np.any(np.abs(np.delete(expected_scores, i) - expected_scores[i]) <= SCORE_ATOL):
            return False
    return True


def check(case: Case, outcome, pipeline: LocalPipeline, catalogue: Catalogue) -> str | None:
    """None when the outcome is right, else what is wrong."""
    if case.rows is None:
        if outcome.code != "INVALID_ARGUMENT":
            return f"{case.category}: expected INVALID_ARGUMENT, got {outcome.code}: {outcome.message[:200]}"
        missing = [p for p in case.phrases if not any(a in outcome.message for a in p.split("|"))]
        return f"{case.category}: message {outcome.message[:300]!r} lacks {missing}" if missing else None
    if not outcome.ok:
        return f"{case.category}: good request failed: {outcome.code}: {outcome.message[:300]}"
    known = set(catalogue.known.tolist())
    for r, (items, k, exclude) in enumerate(case.rows):
        expected = pipeline.recommend(items, k, exclude)
        ids, scores = outcome.outputs["ITEM_IDS"][r], outcome.outputs["SCORES"][r]
        unknown = sum(i not in known for i in items)
        if int(outcome.outputs["UNKNOWN_COUNT"][r, 0]) != unknown or expected.unknown_count != unknown:
            return f"{case.category}: row {r}: UNKNOWN_COUNT {outcome.outputs['UNKNOWN_COUNT'][r, 0]}, expected {unknown}"
        if bool(outcome.outputs["FALLBACK"][r, 0]) != (unknown == len(items)):
            return f"{case.category}: row {r}: FALLBACK {outcome.outputs['FALLBACK'][r, 0]} with {unknown}/{len(items)} unknown"
        if not same_ranking(ids, scores, expected.item_ids, expected.scores):
            return f"{case.category}: row {r}: served {ids[:5]}... differs from the offline pipeline {expected.item_ids[:5]}..."
    return None


def model_stats(channel_url: str, steps) -> dict[str, tuple[int, int]]:
    """(inference_count, execution_count) per step: more inferences than executions = batched."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(channel_url)
    out = {}
    for model in steps:
        stats = client.get_inference_statistics(model).model_stats
        out[model] = (sum(s.inference_count for s in stats), sum(s.execution_count for s in stats))
    client.close()
    return out


# ----------------------------------------------------------------------------- tests


def test_generated_requests_good_and_bad_together(embedded_server, channel, catalogue, pipeline):
    before = model_stats(embedded_server.grpc_url, embedded_server.steps)
    problems: list[str] = []

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(st.lists(case(catalogue), min_size=25, max_size=40))
    def run(cases):
        EXAMPLES_RUN["groups"] += 1
        outcomes = channel.send_together([c.request for c in cases])
        failures = []
        for c, outcome in zip(cases, outcomes):
            wrong = check(c, outcome, pipeline, catalogue)
            TALLY[c.category]["mismatch" if wrong else ("answered" if outcome.ok else outcome.code)] += 1
            if wrong:
                failures.append(wrong)
        problems.extend(failures)
        assert not failures, failures[:3]

    try:
        run()
    finally:
        after = model_stats(embedded_server.grpc_url, embedded_server.steps)
        batching = {m: {"inferences": after[m][0] - before[m][0], "executions": after[m][1] - before[m][1]} for m in after}
        sent = sum(sum(c.values()) for c in TALLY.values())
        write_report("malformed", {
            "requests": sent, "groups": EXAMPLES_RUN["groups"],
            "good_requests": sum(sum(TALLY[c].values()) for c in GOOD),
            "bad_requests": sum(sum(TALLY[c].values()) for c in TALLY if c not in GOOD),
            "wrong_outcomes": sum(c["mismatch"] for c in TALLY.values()),
            "by_category": {c: dict(TALLY[c]) for c in CATEGORIES if c in TALLY},
            "batching": batching,
            "first_problems": problems[:10],
        })
    # The groups did reach the batcher together: executions grouped several requests.
    first = embedded_server.steps[0]
    assert batching[first]["inferences"] > batching[first]["executions"]


def test_thousands_sent_and_the_server_is_alive_and_correct_afterwards(embedded_server, exported_repository, channel,
                                                                      catalogue, pipeline):
    malformed = sum(sum(TALLY[c].values()) for c in TALLY if c not in GOOD)
    assert malformed >= MIN_MALFORMED, f"only {malformed} malformed requests were generated"
    assert set(TALLY) == set(CATEGORIES), f"categories never drawn: {set(CATEGORIES) - set(TALLY)}"
    assert all(c["mismatch"] == 0 for c in TALLY.values())
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(embedded_server.grpc_url)
    assert client.is_server_live() and client.is_model_ready("recommend")
    version = current_version(exported_repository)
    assert replay_canaries(client, read_manifest(exported_repository / "recommend" / str(version))).ok
    items = catalogue.known[:5].tolist()
    outcome = channel.send(RawRequest.recommend([items], 20, False))
    assert check(Case("good", None, [(items, 20, False)]), outcome, pipeline, catalogue) is None
