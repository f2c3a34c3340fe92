"""Assignment: the spec's reference vectors, no sample-ratio mismatch over 10^6 ids, ramps only add units."""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sessionrec.clients.assignment import BUCKETS, CANDIDATE, CONTROL, Experiment, bucket
from sessionrec.experiments.stats import chi2_sf, srm_test

SPEC = Path(__file__).resolve().parents[2] / "docs" / "EXPERIMENTS.md"
SALT = "sessionrec-spec-v1"
THREE_WAY = {"control": 3334, "candidate": 3333, "candidate_b": 3333}


def spec_vectors() -> list[list[str]]:
    """Rows of the reference-vector table in docs/EXPERIMENTS.md (the spec is the source of truth)."""
    rows = [line.split("|")[1:-1] for line in SPEC.read_text(encoding="utf-8").splitlines()
            if re.match(r"^\| `[^`]+` \| `[0-9a-f]{16}` \|", line)]
    assert len(rows) >= 10, "the spec's reference-vector table is missing"
    return [[cell.strip().strip("`") for cell in row] for row in rows]


def independent_bucket(salt: str, purpose: str, unit: str) -> int:
    """Written from the spec's text, not from the library."""
    digest = hashlib.sha256(salt.encode() + b"\x1f" + purpose.encode() + b"\x1f" + unit.encode("utf-8")).digest()
    return struct.unpack(">Q", digest[:8])[0] % 10000


def test_reference_vectors_match_the_library_and_an_independent_implementation():
    for unit, digest, ramp, split, v10, v50, v100, v3 in spec_vectors():
        raw = hashlib.sha256(f"{SALT}\x1framp\x1f{unit}".encode()).digest()[:8].hex()
        assert raw == digest, unit
        assert bucket(SALT, "ramp", unit) == independent_bucket(SALT, "ramp", unit) == int(ramp), unit
        assert bucket(SALT, "split", unit) == independent_bucket(SALT, "split", unit) == int(split), unit
        for ramp_bp, want in ((1000, v10), (5000, v50), (10000, v100)):
            assert Experiment("spec", SALT, ramp_bp=ramp_bp).assign(unit).variant == want, (unit, ramp_bp)
        assert Experiment("spec", SALT, split_bp=THREE_WAY, ramp_bp=10000).assign(unit).variant == v3, unit


@pytest.fixture(scope="module")
def million():
    ids = [f"guest-{i}" for i in range(1_000_000)]
    ramp = np.fromiter((bucket("srm-check", "ramp", u) for u in ids), dtype=np.int64, count=len(ids))
    split = np.fromiter((bucket("srm-check", "split", u) for u in ids), dtype=np.int64, count=len(ids))
    return ramp, split


def test_no_sample_ratio_mismatch_over_a_million_ids(million):
    ramp, split = million
    exp = Experiment("srm", "srm-check", ramp_bp=BUCKETS)
    arms = np.where(split < exp.split_bp[CONTROL], CONTROL, CANDIDATE)
    counts = {CONTROL: int((arms == CONTROL).sum()), CANDIDATE: int((arms == CANDIDATE).sum())}
    assert not srm_test(counts, {CONTROL: 0.5, CANDIDATE: 0.5}).mismatch, counts
    # a 10 % ramp lets 10 % of units in, and inside it the arms are still 50/50
    inside = ramp < 1000
    assert srm_test({"in": int(inside.sum()), "out": int((~inside).sum())}, {"in": 0.1, "out": 0.9}).p_value > 0.001
    small = {CONTROL: int((arms[inside] == CONTROL).sum()), CANDIDATE: int((arms[inside] == CANDIDATE).sum())}
    assert srm_test(small, {CONTROL: 0.5, CANDIDATE: 0.5}).p_value > 0.001, small
    # an uneven 3-way split follows its plan
    three = Experiment("srm3", "srm-check", split_bp=THREE_WAY, ramp_bp=BUCKETS)
    edges = np.cumsum(list(three.split_bp.values()))
    labels = np.searchsorted(edges, split, side="right")
    counts3 = {name: int((labels == i).sum()) for i, name in enumerate(three.split_bp)}
    assert srm_test(counts3, {k: v / BUCKETS for k, v in THREE_WAY.items()}).p_value > 0.001, counts3


def test_buckets_are_uniform_and_ramp_and_split_independent(million):
    ramp, split = million
    for name, values in (("ramp", ramp), ("split", split)):
        observed = np.bincount(values, minlength=BUCKETS)
        expected = values.size / BUCKETS
        p = chi2_sf(float(((observed - expected) ** 2 / expected).sum()), BUCKETS - 1)
        assert p > 0.001, (name, p)
    # 2x2 independence of "inside a 10 % ramp" and "candidate arm": the ramp does not pick an arm
    table = np.array([[np.sum((ramp < 1000) & (split < 5000)), np.sum((ramp < 1000) & (split >= 5000))],
                      [np.sum((ramp >= 1000) & (split < 5000)), np.sum((ramp >= 1000) & (split >= 5000))]], float)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    assert chi2_sf(float(((table - expected) ** 2 / expected).sum()), 1) > 0.001


def test_ramping_up_never_moves_a_unit_back_to_control():
    exp = Experiment("ramp", "ramp-salt")
    ids = [f"u{i}" for i in range(20_000)]
    ramps = [0, 100, 500, 1000, 2500, 5000, 7500, 10000]
    previous = None
    for ramp_bp in ramps:
        now = {u: exp.with_ramp(ramp_bp).assign(u) for u in ids}
        if previous is not None:
            for u, before in previous.items():
                if before.in_experiment:
                    assert now[u].in_experiment and now[u].variant == before.variant, (u, ramp_bp)
        share = sum(a.variant == CANDIDATE for a in now.values()) / len(ids)
        assert abs(share - exp.with_ramp(ramp_bp).variant_share(CANDIDATE)) < 0.015, (ramp_bp, share)
        previous = now
    # and a rollback (ramp 0) serves everyone control
    assert all(exp.with_ramp(0).assign(u).variant == CONTROL for u in ids[:1000])


@settings(max_examples=300, deadline=None)
@given(salt=st.text(min_size=1, max_size=20), unit=st.text(min_size=1, max_size=30),
       low=st.integers(0, BUCKETS), high=st.integers(0, BUCKETS))
def test_ramp_is_monotonic_for_any_salt_and_unit(salt, unit, low, high):
    low, high = sorted((low, high))
    before = Experiment("p", salt, ramp_bp=low).assign(unit)
    after = Experiment("p", salt, ramp_bp=high).assign(unit)
    if before.in_experiment:
        assert after.in_experiment and after.variant == before.variant
    assert before.split_bucket == after.split_bucket


def test_different_salts_give_independent_assignments():
    a = Experiment("a", "salt-a", ramp_bp=BUCKETS)
    b = Experiment("b", "salt-b", ramp_bp=BUCKETS)
    pairs = [(a.assign(f"g{i}").variant, b.assign(f"g{i}").variant) for i in range(40_000)]
    table = np.array([[sum(p == (x, y) for p in pairs) for y in (CONTROL, CANDIDATE)] for x in (CONTROL, CANDIDATE)],
                     float)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    assert chi2_sf(float(((table - expected) ** 2 / expected).sum()), 1) > 0.001, table


@pytest.mark.parametrize("kwargs, words", [
    ({"salt": ""}, "empty salt"),
    ({"salt": "s", "split_bp": {"control": 5000, "candidate": 4000}}, "summing to 10000"),
    ({"salt": "s", "split_bp": {"a": 5000, "b": 5000}}, "'control'"),
    ({"salt": "s", "ramp_bp": 10001}, "ramp_bp"),
    ({"salt": "s", "ramp_bp": 0.5}, "ramp_bp"),
])
def test_bad_experiments_are_refused_with_the_reason(kwargs, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        Experiment("bad", **kwargs)


def test_an_empty_unit_id_is_refused():
    with pytest.raises(ValueError, match="empty unit id"):
        Experiment("e", "s", ramp_bp=100).assign("")
