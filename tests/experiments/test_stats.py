"""Readout statistics: reference values, and simulated error rates at alpha and power as planned."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sessionrec.experiments.sequential import msprt
from sessionrec.experiments.simulate import aa_error_rates, ab_power, ctr_aa_error_rates
from sessionrec.experiments.stats import (chi2_sf, delta_method_test, sample_size_two_proportions, srm_test,
                                          two_proportion_ztest)

ALPHA = 0.05


@pytest.mark.parametrize("statistic, df, p", [
    (3.841458820694124, 1, 0.05), (10.827566170662733, 1, 0.001), (16.918977604620448, 9, 0.05),
    (0.0, 3, 1.0), (124.342113404, 100, 0.05), (10_232.85, 9_999, 0.05),
])
def test_chi_square_tail_matches_tabulated_quantiles(statistic, df, p):
    assert chi2_sf(statistic, df) == pytest.approx(p, abs=5e-4 if df > 1000 else 1e-9)


def test_sample_size_matches_the_textbook_formula():
    # Fleiss eq. 4.14 by hand for 5 % -> 5.5 %: the same number online calculators give (31,234)
    assert sample_size_two_proportions(0.05, 0.10) == 31234
    assert sample_size_two_proportions(0.05, 0.10, power=0.9) > 31234
    with pytest.raises(ValueError, match="outside"):
        sample_size_two_proportions(0.6, 1.0)


def test_two_proportion_ztest_reference_values():
    r = two_proportion_ztest(200, 2000, 250, 2000)
    assert r.z == pytest.approx(0.025 / math.sqrt(0.1125 * 0.8875 * (2 / 2000)))
    assert r.p_value == pytest.approx(0.01235, abs=5e-5)
    half = 1.959963985 * math.sqrt(0.1 * 0.9 / 2000 + 0.125 * 0.875 / 2000)
    assert (r.ci_low, r.ci_high) == pytest.approx((0.025 - half, 0.025 + half))
    assert r.relative == pytest.approx(0.25) and r.significant


def test_srm_flags_a_lost_tenth_of_one_arm():
    assert not srm_test({"control": 5000, "candidate": 5040}, {"control": 0.5, "candidate": 0.5}).mismatch
    broken = srm_test({"control": 5000, "candidate": 4500}, {"control": 0.5, "candidate": 0.5})
    assert broken.mismatch and broken.p_value < 1e-6
    with pytest.raises(ValueError, match="not in the plan"):
        srm_test({"control": 1, "other": 1}, {"control": 0.5, "candidate": 0.5})


def test_delta_method_equals_the_binomial_test_when_every_unit_has_one_impression():
    rng = np.random.default_rng(3)
    clicks_c, clicks_t = rng.binomial(1, 0.1, 5000), rng.binomial(1, 0.12, 5000)
    ones = np.ones(5000)
    delta = delta_method_test(clicks_c, ones, clicks_t, ones)
    plain = two_proportion_ztest(int(clicks_c.sum()), 5000, int(clicks_t.sum()), 5000)
    assert delta.ci_low == pytest.approx(plain.ci_low, rel=1e-3) and delta.ci_high == pytest.approx(plain.ci_high, rel=1e-3)


def within(rate, target, sigmas=4.0):
    return abs(rate.rate - target) <= sigmas * math.sqrt(target * (1 - target) / rate.runs)


def test_aa_false_positive_rates_fixed_horizon_sequential_and_naive_peeking():
    rates = aa_error_rates(runs=4000, looks=14)
    assert within(rates["fixed_horizon"], ALPHA), rates
    # always valid under 14 daily looks: at most alpha (the mSPRT is conservative), never above
    assert rates["msprt"].rate <= ALPHA + 2 * rates["msprt"].se, rates
    # stopping at the first daily p < alpha: several times alpha (this is why the mSPRT exists)
    assert rates["naive_peeking"].rate > 3 * ALPHA, rates


def test_ab_detects_the_planned_effect_at_the_planned_power():
    result = ab_power(runs=4000, baseline=0.05, relative_mde=0.10, power=0.8)
    assert within(result["fixed_horizon"], 0.8), result
    assert 0.2 < result["msprt_same_units"].rate < result["fixed_horizon"].rate  # the price of looking daily


def test_delta_method_keeps_alpha_where_the_per_impression_test_does_not():
    rates = ctr_aa_error_rates(runs=1000)
    assert within(rates["delta_method"], ALPHA), rates
    assert rates["naive_per_impression"].rate > 3 * ALPHA, rates


def test_msprt_rejects_a_large_effect_early_and_its_p_value_never_rises():
    days = np.arange(1, 15)
    n = 2000 * days
    conv_c = (0.05 * n).astype(int)
    conv_t = (0.07 * n).astype(int)
    result = msprt(conv_c, n, conv_t, n, tau=0.005)
    assert result.stopped_at is not None and result.stopped_at < 14
    ps = [look.p_value for look in result.looks]
    assert all(b <= a for a, b in zip(ps, ps[1:]))
    assert all(look.cs_low <= look.difference <= look.cs_high for look in result.looks)
