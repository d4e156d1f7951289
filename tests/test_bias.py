"""semscale.bias: effective number, correlations with bootstrap intervals, rank agreement, incremental R²."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from semscale import bias, data


def test_effective_number_formula_and_limits():
    n = np.array([0, 1, 10, 5000])
    en = bias.effective_number(n, 0.9999)
    expected = [(1 - 0.9999**k) / (1 - 0.9999) for k in n]
    np.testing.assert_allclose(en, expected, rtol=1e-10)
    assert en[1] == pytest.approx(1.0)
    # β → 0: every non-empty class counts as one sample; β → 1: E_n → n
    np.testing.assert_allclose(bias.effective_number(n, 0.0), [0, 1, 1, 1])
    np.testing.assert_allclose(bias.effective_number(n, 1 - 1e-12), n, rtol=1e-6)
    assert np.all(np.diff(bias.effective_number(n, 0.99)) > 0)
    with pytest.raises(ValueError):
        bias.effective_number(n, 1.0)


def test_corr_matches_scipy_and_constant_is_undefined():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=20), rng.normal(size=20)
    assert bias.corr(x, y, "pearson") == pytest.approx(stats.pearsonr(x, y).statistic)
    y[3] = y[5]  # a tie
    assert bias.corr(x, y, "spearman") == pytest.approx(stats.spearmanr(x, y).statistic)
    assert math.isnan(bias.corr(np.full(20, 3.0), y))
    with pytest.raises(ValueError):
        bias.corr(x, y, "kendall")


def test_bootstrap_interval_covers_a_strong_effect_and_excludes_zero():
    rng = np.random.default_rng(1)
    measure = np.linspace(0, 1, 30)
    acc = measure[None, :] + 0.1 * rng.normal(size=(4, 30))
    iv = bias.bootstrap_corr(measure, acc, "pearson", n_boot=500, seed=0)
    assert iv.defined and iv.low <= iv.estimate <= iv.high
    assert iv.low > 0.8
    noise = rng.normal(size=(4, 30))
    iv0 = bias.bootstrap_corr(measure, noise, "spearman", n_boot=500, seed=0)
    assert iv0.low < 0 < iv0.high
    # the interval is seeded: same seed, same numbers
    assert bias.bootstrap_corr(measure, acc, n_boot=200, seed=3) == bias.bootstrap_corr(measure, acc, n_boot=200, seed=3)


def test_bootstrap_resamples_seeds_for_a_per_seed_measure():
    rng = np.random.default_rng(2)
    measure = rng.normal(size=(3, 10))
    acc = measure + 0.05 * rng.normal(size=(3, 10))
    iv = bias.bootstrap_corr(measure, acc, n_boot=300)
    assert iv.estimate == pytest.approx(bias.corr(measure.mean(0), acc.mean(0)))
    with pytest.raises(ValueError):
        bias.bootstrap_corr(measure[:, :5], acc)


def test_constant_measure_gives_undefined_not_a_number():
    acc = np.random.default_rng(3).uniform(size=(3, 10))
    iv = bias.bootstrap_corr(np.full(10, 5000), acc)
    assert not iv.defined and math.isnan(iv.estimate) and iv.text() == "undefined"
    table = bias.correlation_table(
        pd.DataFrame({"class": range(10), "N": 5000, "E_n": bias.effective_number(np.full(10, 5000)), "S_prime": np.arange(10.0)}),
        pd.DataFrame([{"seed": s, "class": c, "accuracy": acc[s, c]} for s in range(3) for c in range(10)]),
        ["N", "E_n", "S_prime"], n_boot=100)
    assert list(table[table.measure.isin(["N", "E_n"])].text.unique()) == ["undefined"]
    assert table[table.measure == "S_prime"].defined.all()


def test_kendalls_w_identical_reversed_and_relation_to_spearman():
    ranks = np.arange(8.0)
    assert bias.kendalls_w(np.stack([ranks, ranks, ranks])) == pytest.approx(1.0)
    assert bias.kendalls_w(np.stack([ranks, ranks[::-1]])) == pytest.approx(0.0)
    rng = np.random.default_rng(4)
    scores = rng.normal(size=(4, 12))  # no ties: mean pairwise Spearman = (mW − 1)/(m − 1)
    w = bias.kendalls_w(scores)
    assert bias.mean_pairwise_spearman(scores) == pytest.approx((4 * w - 1) / 3)
    assert 0 <= w <= 1
    assert bias.friedman_p(1.0, 5, 10) < 1e-4 < bias.friedman_p(0.05, 5, 10)


def test_rank_agreement_interval():
    rng = np.random.default_rng(5)
    base = rng.normal(size=10)
    agree = bias.rank_agreement(base + 0.1 * rng.normal(size=(4, 10)), n_boot=200)
    assert agree["kendalls_w"] > 0.8 and agree["spearman_low"] > 0.5 and agree["friedman_p"] < 0.01
    none = bias.rank_agreement(rng.normal(size=(4, 10)), n_boot=200)
    assert none["kendalls_w"] < agree["kendalls_w"] and none["spearman_low"] < 0.2


def test_incremental_r2_on_data_with_a_known_effect():
    rng = np.random.default_rng(6)
    n = 400
    log_n, s = rng.normal(size=n), rng.normal(size=n)
    y = 1.0 * log_n + 2.0 * s + 0.5 * rng.normal(size=n)
    out = bias.incremental_r2(y, log_n, s)
    # population: var(y) = 1 + 4 + 0.25, R²(log N) = 1/5.25, ΔR² = 4/5.25
    assert out["r2_base"] == pytest.approx(1 / 5.25, abs=0.06)
    assert out["delta_r2"] == pytest.approx(4 / 5.25, abs=0.06)
    assert out["partial_r"] ** 2 == pytest.approx(out["delta_r2"] / (1 - out["r2_base"]))
    null = bias.incremental_r2(1.0 * log_n + rng.normal(size=n), log_n, s)
    assert null["delta_r2"] < 0.02
    # a constant base (balanced data: log N the same for every class) drops out: ΔR² = R² of the measure alone
    flat = bias.incremental_r2(y, np.zeros(n), s)
    assert flat["r2_base"] == pytest.approx(0.0) and flat["delta_r2"] == pytest.approx(bias.corr(y, s) ** 2)


def test_bootstrap_incremental_r2_interval():
    rng = np.random.default_rng(7)
    log_n, s = rng.normal(size=40), rng.normal(size=40)
    acc = (0.5 * log_n + s)[None, :] + 0.3 * rng.normal(size=(3, 40))
    out = bias.bootstrap_incremental_r2(acc, log_n, s, n_boot=300)
    assert out["delta_r2_low"] > 0.3 and out["delta_r2_low"] <= out["delta_r2"] <= out["delta_r2_high"]


def test_class_measures_columns_and_alpha():
    rng = torch.Generator().manual_seed(0)
    vol = torch.tensor([10.0, 20.0, 40.0])
    centers = torch.randn(3, 5, generator=rng, dtype=torch.float64)
    frame = bias.class_measures(vol, centers, [100, 50, 10], alphas=(1.0, 2.0), w_alpha=2.0)
    assert list(frame.columns[:6]) == ["class", "N", "E_n", "volume", "W", "S_prime"]
    np.testing.assert_allclose(frame.S_prime, [0.25, 0.5, 1.0])
    w_prime = 2 ** frame.W - 2.0  # W = log2(α + W′) at w_alpha = 2
    np.testing.assert_allclose(frame.S_a1, frame.S_prime * np.log2(1 + w_prime))
    np.testing.assert_allclose(frame.S_a2, frame.S_prime * frame.W)
    assert bias.measure_columns((1.0, 2.5)) == ["N", "E_n", "W", "S_prime", "S_a1", "S_a2.5"]


def test_sample_measures_use_the_trainers_subset():
    fields = {"dataset": "digits", "train_counts": (50, 40, 30, 30, 30, 30, 30, 30, 30, 20)}
    subset = bias.training_subset(fields)
    assert subset.labels.shape[0] == sum(fields["train_counts"])
    frame = bias.sample_measures(subset, alphas=(1.0,))
    assert frame.N.tolist() == list(fields["train_counts"]) and frame.S_prime.max() == pytest.approx(1.0)
    assert bias.dataset_alpha(fields) == 2.0 and bias.dataset_alpha({"dataset": "digits"}) == 1.0
    assert bias.DATASETS["mnist-lt-2"]["train_counts"] == data.MNIST_LT_2
