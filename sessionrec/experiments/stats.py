"""Fixed-horizon statistics for an A/B readout: sample size, SRM gate, two-proportion z-test, delta method.

Formulas (all two-sided, normal approximations valid for the thousands of units an experiment has):

- sample size per arm for two proportions (Fleiss, Levin & Paik, *Statistical Methods for Rates and
  Proportions*, 3rd ed., eq. 4.14 without continuity correction):
  n = (z_{1-a/2} sqrt(2 pbar qbar) + z_{1-b} sqrt(p1 q1 + p2 q2))^2 / (p2 - p1)^2
- sample-ratio mismatch: Pearson chi-square goodness of fit of the unit counts against the planned
  split (Fabijan et al., "Diagnosing Sample Ratio Mismatch in Online Controlled Experiments", KDD 2019;
  they gate at p < 0.0005-0.001; we use 0.001).
- conversion: z-test with the pooled variance for the p-value, unpooled for the confidence interval
  of the difference (Newcombe's "Wald" interval), both reported absolute and relative.
- per-unit ratio metrics such as CTR = sum(clicks) / sum(impressions): the impressions of one guest are
  not independent, so the variance of the ratio of means comes from the delta method (Deng, Knoblich
  & Lu, "Applying the Delta Method in Metric Analytics", KDD 2018, eq. 3).

No scipy: the normal comes from the standard library and the chi-square tail from the regularised
incomplete gamma function (Numerical Recipes 3rd ed., 6.2), checked against tabulated values in tests.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

NORMAL = NormalDist()
SRM_ALPHA = 0.001  # below this p-value the split is broken and nothing else is read


def z_quantile(p: float) -> float:
    return NORMAL.inv_cdf(p)


def two_sided_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2.0))


# ----------------------------------------------------------------------------- chi-square tail


def _gamma_q(a: float, x: float) -> float:
    """Regularised upper incomplete gamma Q(a, x): series below a+1, continued fraction above."""
    if x <= 0:
        return 1.0
    log_prefix = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:  # series for P(a, x)
        term = total = 1.0 / a
        n = a
        for _ in range(10_000):
            n += 1.0
            term *= x / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_prefix))
    # Lentz's continued fraction for Q(a, x)
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        step = d * c
        h *= step
        if abs(step - 1.0) < 1e-15:
            break
    return math.exp(log_prefix) * h


def chi2_sf(statistic: float, df: int) -> float:
    """P(X > statistic) for X ~ chi-square(df)."""
    if df < 1:
        raise ValueError(f"chi-square needs df >= 1, got {df}")
    return _gamma_q(df / 2.0, statistic / 2.0)


# ----------------------------------------------------------------------------- planning


def sample_size_two_proportions(baseline: float, relative_mde: float, alpha: float = 0.05,
                                power: float = 0.8) -> int:
    """Units per arm to detect conversion `baseline` -> `baseline * (1 + relative_mde)` (two-sided)."""
    if not 0 < baseline < 1:
        raise ValueError(f"baseline conversion must be in (0, 1), got {baseline}")
    p2 = baseline * (1 + relative_mde)
    if relative_mde == 0 or not 0 < p2 < 1:
        raise ValueError(f"relative MDE {relative_mde} gives a treated rate {p2:.4g} outside (0, 1) or no effect")
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"alpha {alpha} and power {power} must be in (0, 1)")
    pbar = (baseline + p2) / 2
    numerator = (z_quantile(1 - alpha / 2) * math.sqrt(2 * pbar * (1 - pbar))
                 + z_quantile(power) * math.sqrt(baseline * (1 - baseline) + p2 * (1 - p2)))
    return math.ceil(numerator ** 2 / (p2 - baseline) ** 2)


# ----------------------------------------------------------------------------- SRM


@dataclass(frozen=True)
class SRMResult:
    counts: dict[str, int]
    expected_share: dict[str, float]
    chi2: float
    p_value: float
    mismatch: bool  # p < alpha: the assignment or the logging is broken; do not read the experiment

    def as_dict(self) -> dict:
        return asdict(self)


def srm_test(counts: dict[str, int], expected_share: dict[str, float], alpha: float = SRM_ALPHA) -> SRMResult:
    """Chi-square goodness of fit of observed unit counts against the planned shares."""
    names = list(expected_share)
    if set(counts) - set(names):
        raise ValueError(f"units logged for variant(s) {sorted(set(counts) - set(names))} not in the plan {names}")
    total_share = sum(expected_share.values())
    observed = np.array([counts.get(n, 0) for n in names], dtype=float)
    total = observed.sum()
    if total == 0:
        raise ValueError("no units to test for sample-ratio mismatch")
    expected = np.array([expected_share[n] / total_share for n in names]) * total
    if np.any(expected <= 0):
        raise ValueError(f"every planned share must be positive, got {expected_share}")
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    p = chi2_sf(chi2, len(names) - 1)
    return SRMResult({n: int(c) for n, c in zip(names, observed)}, {n: expected_share[n] / total_share for n in names},
                     chi2, p, p < alpha)


# ----------------------------------------------------------------------------- conversion


@dataclass(frozen=True)
class ComparisonResult:
    """Treatment minus control for one metric."""

    metric: str
    control: float
    treatment: float
    n_control: int
    n_treatment: int
    difference: float  # absolute
    ci_low: float  # (1 - alpha) interval of the absolute difference
    ci_high: float
    relative: float  # difference / control
    relative_ci_low: float  # the absolute interval over the control mean (first-order)
    relative_ci_high: float
    z: float
    p_value: float
    alpha: float

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha

    def as_dict(self) -> dict:
        return {**asdict(self), "significant": self.significant}


def _comparison(metric, mean_c, mean_t, n_c, n_t, se_test, se_ci, alpha) -> ComparisonResult:
    diff = mean_t - mean_c
    z = diff / se_test if se_test > 0 else 0.0
    half = z_quantile(1 - alpha / 2) * se_ci
    rel = diff / mean_c if mean_c else math.nan
    rel_lo = (diff - half) / mean_c if mean_c else math.nan
    rel_hi = (diff + half) / mean_c if mean_c else math.nan
    return ComparisonResult(metric, mean_c, mean_t, n_c, n_t, diff, diff - half, diff + half, rel, rel_lo, rel_hi,
                            z, two_sided_p(z) if se_test > 0 else 1.0, alpha)


def two_proportion_ztest(successes_c: int, n_c: int, successes_t: int, n_t: int, alpha: float = 0.05,
                         metric: str = "conversion") -> ComparisonResult:
    if n_c <= 0 or n_t <= 0:
        raise ValueError(f"{metric}: both arms need units (control {n_c}, treatment {n_t})")
    p_c, p_t = successes_c / n_c, successes_t / n_t
    pooled = (successes_c + successes_t) / (n_c + n_t)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_t))
    se_unpooled = math.sqrt(p_c * (1 - p_c) / n_c + p_t * (1 - p_t) / n_t)
    return _comparison(metric, p_c, p_t, n_c, n_t, se_pooled, se_unpooled, alpha)


def ratio_variance(numerator: np.ndarray, denominator: np.ndarray) -> tuple[float, float]:
    """(ratio of sums, delta-method variance of it) for per-unit numerator/denominator arrays."""
    x = np.asarray(denominator, dtype=float)
    y = np.asarray(numerator, dtype=float)
    n = x.size
    mean_x, mean_y = x.mean(), y.mean()
    ratio = mean_y / mean_x
    var_x, var_y = x.var(ddof=1), y.var(ddof=1)
    cov = np.cov(x, y, ddof=1)[0, 1]
    # Deng et al. 2018 eq. 3: Var(Ybar/Xbar) ~ (var_y - 2 R cov + R^2 var_x) / (n mean_x^2)
    variance = (var_y - 2 * ratio * cov + ratio ** 2 * var_x) / (n * mean_x ** 2)
    return float(ratio), float(max(variance, 0.0))


def delta_method_test(num_c, den_c, num_t, den_t, alpha: float = 0.05, metric: str = "ctr") -> ComparisonResult:
    """Per-unit ratio metric (e.g. clicks / impressions per guest), unit = the randomisation unit."""
    if np.size(den_c) < 2 or np.size(den_t) < 2:
        raise ValueError(f"{metric}: the delta method needs at least 2 units per arm")
    if np.sum(den_c) <= 0 or np.sum(den_t) <= 0:
        raise ValueError(f"{metric}: an arm has no denominator events")
    r_c, v_c = ratio_variance(num_c, den_c)
    r_t, v_t = ratio_variance(num_t, den_t)
    se = math.sqrt(v_c + v_t)
    return _comparison(metric, r_c, r_t, int(np.size(den_c)), int(np.size(den_t)), se, se, alpha)
