"""Simulated experiments that check the readout's error rates (vectorised numpy; seconds).

    sessionrec experiment simulate            # prints the table docs/EXPERIMENTS.md records

- `aa_error_rates`: A/A tests (no effect) read at the fixed horizon, by naive daily peeking (stop at the
  first fixed-horizon p < alpha) and by the mSPRT at every daily look: the false-positive rates.
- `ab_power`: A/B tests at the planned effect with the calculator's sample size: the detection rates.
- `ctr_aa_error_rates`: A/A tests of a per-guest CTR where guests differ (over-dispersed clicks): the
  delta method against the naive test that treats every impression as independent.

Each rate comes with its binomial standard error, so a test can say how far from alpha is too far.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from sessionrec.experiments.sequential import msprt_lambda
from sessionrec.experiments.stats import sample_size_two_proportions, z_quantile


@dataclass(frozen=True)
class Rate:
    rate: float
    se: float  # binomial standard error of the simulated rate
    runs: int

    def as_dict(self) -> dict:
        return asdict(self)


def _rate(hits: np.ndarray) -> Rate:
    runs = int(hits.size)
    rate = float(hits.mean())
    return Rate(rate, math.sqrt(max(rate * (1 - rate), 1e-12) / runs), runs)


def _z(conv_c, n_c, conv_t, n_t, pooled: bool = True) -> np.ndarray:
    p_c, p_t = conv_c / n_c, conv_t / n_t
    if pooled:
        p = (conv_c + conv_t) / (n_c + n_t)
        se = np.sqrt(p * (1 - p) * (1 / n_c + 1 / n_t))
    else:
        se = np.sqrt(p_c * (1 - p_c) / n_c + p_t * (1 - p_t) / n_t)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(se > 0, (p_t - p_c) / se, 0.0)


def aa_error_rates(runs: int = 4000, looks: int = 14, units_per_look: int = 500, rate: float = 0.05,
                   alpha: float = 0.05, tau: float = 0.005, seed: int = 0) -> dict[str, Rate]:
    """False-positive rates of A/A tests: fixed horizon, naive daily peeking, mSPRT at every look."""
    rng = np.random.default_rng(seed)
    conv = rng.binomial(units_per_look, rate, size=(2, runs, looks)).cumsum(axis=2).astype(float)
    n = units_per_look * np.arange(1, looks + 1, dtype=float)  # (looks,) cumulative units per arm
    z = np.abs(_z(conv[0], n, conv[1], n))  # (runs, looks)
    critical = z_quantile(1 - alpha / 2)
    lam = msprt_lambda(conv[0], n, conv[1], n, tau * tau)
    return {"fixed_horizon": _rate(z[:, -1] > critical),
            "naive_peeking": _rate((z > critical).any(axis=1)),
            "msprt": _rate((lam >= 1 / alpha).any(axis=1))}


def ab_power(runs: int = 4000, baseline: float = 0.05, relative_mde: float = 0.10, alpha: float = 0.05,
             power: float = 0.8, looks: int = 14, seed: int = 1) -> dict:
    """Detection rates at the planned effect, with the calculator's units per arm."""
    n = sample_size_two_proportions(baseline, relative_mde, alpha, power)
    rng = np.random.default_rng(seed)
    per_look = np.full(looks, n // looks)
    per_look[: n % looks] += 1
    treated = baseline * (1 + relative_mde)
    conv_c = rng.binomial(per_look, baseline, size=(runs, looks)).cumsum(axis=1).astype(float)
    conv_t = rng.binomial(per_look, treated, size=(runs, looks)).cumsum(axis=1).astype(float)
    cum_n = per_look.cumsum().astype(float)
    z = _z(conv_c[:, -1], n, conv_t[:, -1], n)
    lam = msprt_lambda(conv_c, cum_n, conv_t, cum_n, (baseline * relative_mde) ** 2)
    return {"units_per_arm": n, "planned_power": power,
            "fixed_horizon": _rate(np.abs(z) > z_quantile(1 - alpha / 2)),
            "msprt_same_units": _rate((lam >= 1 / alpha).any(axis=1))}


def ctr_aa_error_rates(runs: int = 1000, units: int = 1000, alpha: float = 0.05, mean_ctr: float = 0.1,
                       concentration: float = 2.0, mean_impressions: float = 6.0, seed: int = 2) -> dict[str, Rate]:
    """A/A per-guest CTR: delta method vs. the naive impression-level two-proportion test.

    Guests' own CTRs are Beta(mean * c, (1 - mean) * c): a small c means guests differ a lot, so clicks
    within a guest are correlated and the naive test's variance is too small.
    """
    rng = np.random.default_rng(seed)
    shape = (2, runs, units)
    impressions = 1 + rng.poisson(mean_impressions - 1, size=shape)
    ctr = rng.beta(mean_ctr * concentration, (1 - mean_ctr) * concentration, size=shape)
    clicks = rng.binomial(impressions, ctr).astype(float)
    x, y = impressions.astype(float), clicks
    mean_x, mean_y = x.mean(axis=2), y.mean(axis=2)  # (2, runs)
    ratio = mean_y / mean_x
    var_x, var_y = x.var(axis=2, ddof=1), y.var(axis=2, ddof=1)
    cov = ((x - mean_x[..., None]) * (y - mean_y[..., None])).sum(axis=2) / (units - 1)
    variance = (var_y - 2 * ratio * cov + ratio ** 2 * var_x) / (units * mean_x ** 2)
    critical = z_quantile(1 - alpha / 2)
    delta_z = (ratio[1] - ratio[0]) / np.sqrt(variance[0] + variance[1])
    naive_z = _z(y[0].sum(axis=1), x[0].sum(axis=1), y[1].sum(axis=1), x[1].sum(axis=1))
    return {"delta_method": _rate(np.abs(delta_z) > critical), "naive_per_impression": _rate(np.abs(naive_z) > critical)}
