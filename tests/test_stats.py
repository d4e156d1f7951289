"""semscale.stats: correlations with bootstrap intervals, rank agreement, incremental R²."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from semscale import stats


def test_corr_matches_scipy_and_constant_is_undefined():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=20), rng.normal(size=20)
    assert stats.corr(x, y, "pearson") == pytest.approx(scipy_stats.pearsonr(x, y).statistic)
    y[3] = y[5]  # a tie
    assert stats.corr(x, y, "spearman") == pytest.approx(scipy_stats.spearmanr(x, y).statistic)
    assert math.isnan(stats.corr(np.full(20, 3.0), y))
    with pytest.raises(ValueError):
        stats.corr(x, y, "kendall")


def test_bootstrap_interval_covers_a_strong_effect_and_excludes_zero():
    rng = np.random.default_rng(1)
    measure = np.linspace(0, 1, 30)
    acc = measure[None, :] + 0.1 * rng.normal(size=(4, 30))
    iv = stats.bootstrap_corr(measure, acc, "pearson", n_boot=500, seed=0)
    assert iv.defined and iv.low <= iv.estimate <= iv.high
    assert iv.low > 0.8
    noise = rng.normal(size=(4, 30))
    iv0 = stats.bootstrap_corr(measure, noise, "spearman", n_boot=500, seed=0)
    assert iv0.low < 0 < iv0.high
    # the interval is seeded: same seed, same numbers
    assert stats.bootstrap_corr(measure, acc, n_boot=200, seed=3) == stats.bootstrap_corr(measure, acc, n_boot=200, seed=3)


def test_bootstrap_resamples_seeds_for_a_per_seed_measure():
    rng = np.random.default_rng(2)
    measure = rng.normal(size=(3, 10))
    acc = measure + 0.05 * rng.normal(size=(3, 10))
    iv = stats.bootstrap_corr(measure, acc, n_boot=300)
    assert iv.estimate == pytest.approx(stats.corr(measure.mean(0), acc.mean(0)))
    with pytest.raises(ValueError):
        stats.bootstrap_corr(measure[:, :5], acc)


def test_constant_measure_gives_undefined_not_a_number():
    acc = np.random.default_rng(3).uniform(size=(3, 10))
    iv = stats.bootstrap_corr(np.full(10, 5000), acc)
    assert not iv.defined and math.isnan(iv.estimate) and iv.text() == "undefined"


def test_kendalls_w_identical_reversed_and_relation_to_spearman():
    ranks = np.arange(8.0)
    assert stats.kendalls_w(np.stack([ranks, ranks, ranks])) == pytest.approx(1.0)
    assert stats.kendalls_w(np.stack([ranks, ranks[::-1]])) == pytest.approx(0.0)
    rng = np.random.default_rng(4)
    scores = rng.normal(size=(4, 12))  # no ties: mean pairwise Spearman = (mW − 1)/(m − 1)
    w = stats.kendalls_w(scores)
    assert stats.mean_pairwise_spearman(scores) == pytest.approx((4 * w - 1) / 3)
    assert 0 <= w <= 1
    assert stats.friedman_p(1.0, 5, 10) < 1e-4 < stats.friedman_p(0.05, 5, 10)


def test_rank_agreement_interval():
    rng = np.random.default_rng(5)
    base = rng.normal(size=10)
    agree = stats.rank_agreement(base + 0.1 * rng.normal(size=(4, 10)), n_boot=200)
    assert agree["kendalls_w"] > 0.8 and agree["spearman_low"] > 0.5 and agree["friedman_p"] < 0.01
    none = stats.rank_agreement(rng.normal(size=(4, 10)), n_boot=200)
    assert none["kendalls_w"] < agree["kendalls_w"] and none["spearman_low"] < 0.2


def test_incremental_r2_on_data_with_a_known_effect():
    rng = np.random.default_rng(6)
    n = 400
    log_n, s = rng.normal(size=n), rng.normal(size=n)
    y = 1.0 * log_n + 2.0 * s + 0.5 * rng.normal(size=n)
    out = stats.incremental_r2(y, log_n, s)
    # population: var(y) = 1 + 4 + 0.25, R²(log N) = 1/5.25, ΔR² = 4/5.25
    assert out["r2_base"] == pytest.approx(1 / 5.25, abs=0.06)
    assert out["delta_r2"] == pytest.approx(4 / 5.25, abs=0.06)
    assert out["partial_r"] ** 2 == pytest.approx(out["delta_r2"] / (1 - out["r2_base"]))
    null = stats.incremental_r2(1.0 * log_n + rng.normal(size=n), log_n, s)
    assert null["delta_r2"] < 0.02
    # a constant base (balanced data: log N the same for every class) drops out: ΔR² = R² of the measure alone
    flat = stats.incremental_r2(y, np.zeros(n), s)
    assert flat["r2_base"] == pytest.approx(0.0) and flat["delta_r2"] == pytest.approx(stats.corr(y, s) ** 2)


def test_bootstrap_incremental_r2_interval():
    rng = np.random.default_rng(7)
    log_n, s = rng.normal(size=40), rng.normal(size=40)
    acc = (0.5 * log_n + s)[None, :] + 0.3 * rng.normal(size=(3, 40))
    out = stats.bootstrap_incremental_r2(acc, log_n, s, n_boot=300)
    assert out["delta_r2_low"] > 0.3 and out["delta_r2_low"] <= out["delta_r2"] <= out["delta_r2_high"]


# --- power of a paired comparison; the count-only null ------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 5, 10])
def test_the_detectable_effect_is_detected_at_the_stated_power(n):
    """Simulated paired t-tests at the detectable effect reject in about 80 % of 20,000 draws (exact noncentral t)."""
    sd = 0.7
    effect = stats.detectable_effect(sd, n)
    rng = np.random.default_rng(n)
    diffs = rng.normal(effect, sd, size=(20000, n))
    p = scipy_stats.ttest_1samp(diffs, 0.0, axis=1).pvalue
    assert abs(np.mean(p < 0.05) - 0.8) < 0.015
    assert stats.detectable_effect(sd, n + 1) < effect  # more seeds, smaller effects
    assert stats.detectable_effect(2 * sd, n) == pytest.approx(2 * effect, rel=1e-6)  # in units of sd


def test_seeds_for_effect_is_the_fewest_that_reach_it():
    n = stats.seeds_for_effect(1.0, 1.5)
    assert stats.detectable_effect(1.0, n) <= 1.5 < stats.detectable_effect(1.0, n - 1)
    assert math.isnan(stats.detectable_effect(1.0, 1))
    with pytest.raises(ValueError, match="effect"):
        stats.seeds_for_effect(1.0, 0.0)


def test_best_count_curve_finds_the_saturating_shape_of_the_count():
    m = np.array([10, 30, 100, 300, 1000, 3000.0])
    b, r = stats.best_count_curve(m, 5 - 3 / np.sqrt(m))  # an affine map of 1 - m^(-1/2)
    assert b == pytest.approx(0.5, rel=0.03) and r == pytest.approx(1.0)
    b_log, r_log = stats.best_count_curve(m, np.log(m))  # log m is the limit b -> 0: the smallest exponent wins
    assert b_log == stats.EXPONENTS[0] and r_log > 0.999
    assert all(math.isnan(v) for v in stats.best_count_curve(m, np.ones(6)))  # a constant y: undefined
    with pytest.raises(ValueError, match="counts"):
        stats.best_count_curve([0, 1, 2], [1, 2, 3])


def test_detectable_from_an_interval_is_the_normal_power_formula():
    # a 95 % interval of half-width 1.96 sigma: 80 % power at (1.96 + 0.84) sigma
    assert stats.detectable_from_interval(-1.96, 1.96) == pytest.approx(1.96 + 0.8416, rel=1e-3)
    assert stats.detectable_from_interval(0.0, 0.0) == 0.0
