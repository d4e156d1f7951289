"""Statistics of the study: correlations with bootstrap intervals, rank agreement, incremental R².

* :func:`corr` / :func:`rowwise_corr`: Pearson or Spearman (``CORRELATIONS``); NaN (undefined) for a constant input.
* :func:`bootstrap_corr`: the correlation across classes of a measure with the seed-mean per-class accuracy, with
  a percentile bootstrap interval that resamples classes and seeds together (:class:`Interval`).
* :func:`kendalls_w`, :func:`mean_pairwise_spearman` and :func:`rank_agreement`: agreement of rankings across
  raters, with Friedman's p and a bootstrap interval over items.
* :func:`incremental_r2` and :func:`bootstrap_incremental_r2`: how much one predictor adds to others in a
  least-squares fit, with the partial correlation.
* :func:`detectable_effect` and :func:`seeds_for_effect`: the power of a paired comparison over seeds, from a
  pilot's standard deviation of the differences (the pre-registered primary tests' sizing).
* :func:`best_count_curve`: the count-only null, a saturating curve of the count alone fitted to do its best.
* :func:`percentile_interval` (a bootstrap's central interval) and :func:`fit_line`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

CORRELATIONS = ("pearson", "spearman")


# ---------------------------------------------------------------------------------------------------------
# correlations with intervals


def rowwise_corr(x: np.ndarray, y: np.ndarray, method: str) -> np.ndarray:
    """Correlation of each row of x with the same row of y (B, C); NaN where either row is constant."""
    if method not in CORRELATIONS:
        raise ValueError(f"method must be one of {CORRELATIONS}, got {method!r}")
    x, y = np.atleast_2d(np.asarray(x, dtype=np.float64)), np.atleast_2d(np.asarray(y, dtype=np.float64))
    constant = (np.ptp(x, axis=1) == 0) | (np.ptp(y, axis=1) == 0)
    if method == "spearman":
        x, y = stats.rankdata(x, axis=1), stats.rankdata(y, axis=1)
    xc, yc = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=1) / np.sqrt((xc**2).sum(axis=1) * (yc**2).sum(axis=1))
    r = np.clip(r, -1.0, 1.0)
    r[constant] = np.nan
    return r


def percentile_interval(values, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of ``values`` (a bootstrap's replicates); NaNs when empty."""
    if len(values) == 0:
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def corr(x, y, method: str = "pearson") -> float:
    """Pearson or Spearman correlation; NaN (undefined) when x or y is constant."""
    return float(rowwise_corr(x, y, method)[0])


@dataclass
class Interval:
    estimate: float
    low: float
    high: float
    defined: bool
    n_classes: int
    n_seeds: int
    n_boot: int

    def text(self, digits: int = 2) -> str:
        if not self.defined:
            return "undefined"
        return f"{self.estimate:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _as_seed_matrix(values, n_seeds: int) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return np.broadcast_to(values, (n_seeds, values.shape[-1])) if values.ndim == 1 else values


def _resampled_means(values: np.ndarray, s_idx: np.ndarray, c_idx: np.ndarray) -> np.ndarray:
    """(B, C): per replicate, the classes ``c_idx[b]`` of ``values`` (seeds, classes) averaged over seeds ``s_idx[b]``."""
    return values[s_idx[:, :, None], c_idx[:, None, :]].mean(axis=1)


def bootstrap_corr(measure, accuracy, method: str = "pearson", *, n_boot: int = 2000, level: float = 0.95,
                   seed: int = 0) -> Interval:
    """Correlation across classes of ``measure`` with the seed-mean ``accuracy``, with a bootstrap interval.

    accuracy: (seeds, classes); measure: (classes,) or (seeds, classes) (e.g. feature volumes, one per network).
    Each replicate draws classes and seeds with replacement and correlates the seed means; replicates whose
    resampled measure is constant are dropped. A measure constant across classes is ``defined=False``.
    """
    acc = np.atleast_2d(np.asarray(accuracy, dtype=np.float64))
    S, C = acc.shape
    m = _as_seed_matrix(measure, S)
    if m.shape != (S, C):
        raise ValueError(f"measure must be ({C},) or ({S}, {C}), got {m.shape}")
    estimate = corr(m.mean(axis=0), acc.mean(axis=0), method)
    if not math.isfinite(estimate):
        return Interval(math.nan, math.nan, math.nan, False, C, S, n_boot)
    rng = np.random.default_rng(seed)
    s_idx = rng.integers(0, S, size=(n_boot, S))
    c_idx = rng.integers(0, C, size=(n_boot, C))
    r = rowwise_corr(_resampled_means(m, s_idx, c_idx), _resampled_means(acc, s_idx, c_idx), method)
    low, high = percentile_interval(r[np.isfinite(r)], level)
    return Interval(estimate, low, high, True, C, S, n_boot)


def bootstrap_corr_difference(measure_a, measure_b, accuracy, method: str = "pearson", *, n_boot: int = 2000,
                              level: float = 0.95, seed: int = 0, power: float = 0.8) -> dict:
    """r(a) − r(b): the correlations across classes of two measures with the seed-mean ``accuracy`` (seeds, classes),
    paired: each replicate resamples classes and seeds once for both. Returns the estimates, the difference with
    its percentile interval, the share of replicates where a wins, and ``detectable``: the smallest true difference
    found at ``power`` given the interval's width (normal approximation: (z₁₋α/₂ + z_power) · half-width / z₁₋α/₂)."""
    acc = np.atleast_2d(np.asarray(accuracy, dtype=np.float64))
    S, C = acc.shape
    a, b = _as_seed_matrix(measure_a, S), _as_seed_matrix(measure_b, S)
    r_a, r_b = corr(a.mean(axis=0), acc.mean(axis=0), method), corr(b.mean(axis=0), acc.mean(axis=0), method)
    rng = np.random.default_rng(seed)
    s_idx, c_idx = rng.integers(0, S, size=(n_boot, S)), rng.integers(0, C, size=(n_boot, C))
    acc_boot = _resampled_means(acc, s_idx, c_idx)
    diff = (rowwise_corr(_resampled_means(a, s_idx, c_idx), acc_boot, method)
            - rowwise_corr(_resampled_means(b, s_idx, c_idx), acc_boot, method))
    diff = diff[np.isfinite(diff)]
    low, high = percentile_interval(diff, level)
    return {"r_measure": r_a, "r_against": r_b, "difference": r_a - r_b, "low": low, "high": high,
            "share_measure_better": float(np.mean(diff > 0)) if len(diff) else math.nan,
            "detectable": detectable_from_interval(low, high, level=level, power=power), "n_classes": C, "n_seeds": S,
            "n_boot": n_boot}


def detectable_from_interval(low: float, high: float, *, level: float = 0.95, power: float = 0.8) -> float:
    """The smallest true difference a test with this ``level`` interval finds with probability ``power``, from the
    interval's width (normal approximation: (z₁₋α/₂ + z_power) · half-width / z₁₋α/₂)."""
    z = stats.norm.ppf(0.5 + level / 2)
    return float((z + stats.norm.ppf(power)) * (high - low) / (2 * z))


# ---------------------------------------------------------------------------------------------------------
# rank agreement


def kendalls_w(scores) -> float:
    """Kendall's coefficient of concordance of ``scores`` (raters, items), ties averaged and corrected.

    1: every rater orders the items the same way; 0: no agreement (e.g. two raters in reverse order).
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    m, n = scores.shape
    if m < 2 or n < 2:
        raise ValueError(f"Kendall's W needs at least 2 raters and 2 items, got {m} x {n}")
    ranks = stats.rankdata(scores, axis=1)
    R = ranks.sum(axis=0)
    S = ((R - R.mean()) ** 2).sum()
    ties = 0.0
    for row in ranks:
        _, t = np.unique(row, return_counts=True)
        ties += (t**3 - t).sum()
    denom = m**2 * (n**3 - n) - m * ties
    return float(12 * S / denom) if denom > 0 else math.nan


def friedman_p(w: float, m: int, n: int) -> float:
    """p-value of Kendall's W under no agreement (Friedman's χ² = m(n − 1)W, n − 1 degrees of freedom)."""
    return float(stats.chi2.sf(m * (n - 1) * w, n - 1))


def mean_pairwise_spearman(scores) -> float:
    """Mean Spearman correlation over all pairs of raters (rows)."""
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    m = scores.shape[0]
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
    if not pairs:
        raise ValueError("need at least 2 raters")
    x = np.stack([scores[i] for i, _ in pairs])
    y = np.stack([scores[j] for _, j in pairs])
    return float(np.nanmean(rowwise_corr(x, y, "spearman")))


def rank_agreement(scores, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """Kendall's W (with Friedman's p) and the mean pairwise Spearman with a bootstrap interval over items.

    Resampled items carry duplicates (tied ranks), which pulls the interval up a little; the p-value is exact
    for the items as given.
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    m, n = scores.shape
    w = kendalls_w(scores)
    rng = np.random.default_rng(seed)
    boot_w, boot_r = [], []
    for _ in range(n_boot):
        sample = scores[:, rng.integers(0, n, n)]
        if np.all(np.ptp(sample, axis=1) > 0):
            boot_w.append(kendalls_w(sample))
            boot_r.append(mean_pairwise_spearman(sample))
    wl, wh = percentile_interval(boot_w, level)
    rl, rh = percentile_interval(boot_r, level)
    return {"raters": m, "items": n, "kendalls_w": w, "w_low": wl, "w_high": wh,
            "friedman_p": friedman_p(w, m, n), "mean_spearman": mean_pairwise_spearman(scores),
            "spearman_low": rl, "spearman_high": rh, "n_boot": n_boot}


# ---------------------------------------------------------------------------------------------------------
# incremental R²


def _design(columns) -> np.ndarray:
    """Intercept plus the non-constant columns of ``columns`` ((n,) or (n, k))."""
    X = np.asarray(columns, dtype=np.float64)
    X = X[:, None] if X.ndim == 1 else X
    keep = np.ptp(X, axis=0) > 0 if X.shape[1] else np.zeros(0, dtype=bool)
    return np.column_stack([np.ones(len(X)), X[:, keep]])


def _residuals(y: np.ndarray, X: np.ndarray) -> np.ndarray:
    return y - X @ np.linalg.lstsq(X, y, rcond=None)[0]


def _r2(y: np.ndarray, residuals: np.ndarray) -> float:
    total = ((y - y.mean()) ** 2).sum()
    return float(1 - (residuals**2).sum() / total) if total > 0 else math.nan


def r_squared(y, columns) -> float:
    """R² of the least-squares fit of y on an intercept and the non-constant ``columns``."""
    y = np.asarray(y, dtype=np.float64)
    return _r2(y, _residuals(y, _design(columns)))


def incremental_r2(y, base, extra) -> dict:
    """What ``extra`` adds to ``base`` in explaining y: R² of each model, ΔR² and the partial correlation.

    partial_r is the correlation of y and ``extra`` (one column) after both are regressed on ``base``;
    partial_r² = ΔR² / (1 − R²_base).
    """
    y = np.asarray(y, dtype=np.float64)
    base = np.asarray(base, dtype=np.float64)
    base = base[:, None] if base.ndim == 1 else base
    extra = np.asarray(extra, dtype=np.float64)
    Xb = _design(base)
    res_y = _residuals(y, Xb)
    r2_base = _r2(y, res_y)
    r2_full = r_squared(y, np.column_stack([base, extra]))
    partial = corr(_residuals(extra, Xb), res_y) if extra.ndim == 1 else math.nan
    return {"r2_base": r2_base, "r2_full": r2_full, "delta_r2": r2_full - r2_base, "partial_r": partial}


def bootstrap_incremental_r2(accuracy, base, extra, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """``incremental_r2`` of the seed-mean accuracy, with bootstrap intervals over classes and seeds.

    accuracy: (seeds, classes); base: (classes,) or (classes, k); extra: (classes,).
    """
    acc = np.atleast_2d(np.asarray(accuracy, dtype=np.float64))
    S, C = acc.shape
    base = np.asarray(base, dtype=np.float64)
    base = base[:, None] if base.ndim == 1 else base
    extra = np.asarray(extra, dtype=np.float64)
    point = incremental_r2(acc.mean(axis=0), base, extra)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        c = rng.integers(0, C, C)
        s = rng.integers(0, S, S)
        if np.ptp(extra[c]) == 0:
            continue
        draws.append(incremental_r2(acc[np.ix_(s, c)].mean(axis=0), base[c], extra[c]))
    out = dict(point, n_classes=C, n_seeds=S, n_boot=n_boot)
    for key in ("delta_r2", "partial_r"):
        vals = np.array([d[key] for d in draws])
        out[f"{key}_low"], out[f"{key}_high"] = percentile_interval(vals[np.isfinite(vals)], level)
    return out


def fit_line(x, y) -> tuple[float, float] | None:
    """Least-squares slope and intercept, or None when x is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if np.ptp(x) == 0:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)


# ---------------------------------------------------------------------------------------------------------
# power of a paired comparison over seeds


def _power(effect: float, sd: float, n: int, alpha: float) -> float:
    """Probability that a two-sided paired t-test at level ``alpha`` over ``n`` pairs rejects a zero mean difference
    when the true one is ``effect`` (differences with standard deviation ``sd``): the noncentral t."""
    df, nc = n - 1, effect * math.sqrt(n) / sd
    critical = stats.t.ppf(1 - alpha / 2, df)
    lower = stats.nct.cdf(-critical, df, nc)  # the wrong-sign tail: tiny, and NaN in scipy where it underflows
    return float(stats.nct.sf(critical, df, nc) + (lower if np.isfinite(lower) else 0.0))


def detectable_effect(sd: float, n: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true mean difference that a two-sided paired t-test at level ``alpha`` over ``n`` seeds detects
    with probability ``power``, when the per-seed differences have standard deviation ``sd`` (a pilot's). Exact
    (noncentral t), not the normal approximation, which is optimistic at a handful of seeds. NaN when n < 2."""
    if n < 2 or not sd > 0:
        return math.nan
    high = sd
    while _power(high, sd, n, alpha) < power:
        high *= 2
    return float(optimize.brentq(lambda e: _power(e, sd, n, alpha) - power, 0.0, high, xtol=1e-9 * sd))


def seeds_for_effect(sd: float, effect: float, *, alpha: float = 0.05, power: float = 0.8, most: int = 1000) -> int:
    """The fewest seeds (≥ 2) whose paired comparison detects ``effect`` (see :func:`detectable_effect`)."""
    if not effect > 0:
        raise ValueError(f"effect must be > 0, got {effect}")
    for n in range(2, most + 1):
        if detectable_effect(sd, n, alpha=alpha, power=power) <= effect:
            return n
    raise ValueError(f"more than {most} seeds would be needed to detect {effect} with sd {sd}")


# ---------------------------------------------------------------------------------------------------------
# the count-only null


EXPONENTS = np.geomspace(0.01, 10.0, 121)


def best_count_curve(count, y, exponents=EXPONENTS) -> tuple[float, float]:
    """(b, r): the count-only saturating curve 1 − count^(−b) (b > 0; b → 0 is log count) with the highest Pearson r
    with ``y``, and that r. A measure credited with predicting ``y`` must beat this curve, which knows nothing but
    the count and is chosen on ``y`` itself (so the null is, if anything, favoured); r is invariant to the curve's
    scale and offset, so these curves are all saturating shapes of the count there are up to an affine map."""
    count, y = np.asarray(count, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if np.any(count <= 0):
        raise ValueError("counts must be > 0")
    rs = np.array([corr(-(count ** -b), y) for b in exponents])
    if not np.isfinite(rs).any():
        return math.nan, math.nan
    best = int(np.nanargmax(rs))
    return float(exponents[best]), float(rs[best])
