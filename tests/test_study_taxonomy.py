"""semscale.study.taxonomy (notebook 04): closed forms against Monte Carlo, regimes, generators, simulation, reference results."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from semscale.study import taxonomy as tx

REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "default" / "04_imbalance_taxonomy"


@pytest.mark.parametrize("eta, delta", [(1, 1.0), (4, 2.0), (30, 2.0), (200, 3.0), (50, 1.5)])
def test_closed_form_matches_monte_carlo_within_4_se(eta, delta):
    mc = tx.monte_carlo_bayes_errors(eta, delta, n=60_000, d=4, seed=int(eta))
    closed = tx.bayes_errors(eta, delta)
    for cls, value in [("minority", closed.minority), ("majority", closed.majority)]:
        assert abs(mc[cls] - value) < 4 * mc[f"{cls}_se"], (cls, mc[cls], value)


def test_monte_carlo_check_would_catch_a_wrong_formula():
    # the same estimate is far from the unshifted (balanced) threshold's error: the check has power
    mc = tx.monte_carlo_bayes_errors(10, 2.0, n=60_000, d=3, seed=1)
    balanced = tx.bayes_errors(1, 2.0)
    assert abs(mc["minority"] - balanced.minority) > 20 * mc["minority_se"]


def test_balanced_case_has_equal_errors():
    for delta in [0.5, 1.0, 2.0, 5.0]:
        e = tx.bayes_errors(1.0, delta)
        assert e.minority == pytest.approx(e.majority, abs=1e-15)
        assert e.total == pytest.approx(stats.norm.cdf(-delta / 2))
        assert tx.threshold_shift(1.0, delta) == 0.0
        assert tx.regime(1.0, delta) == "Normal"


@pytest.mark.parametrize("eta, delta", [(2.0, 1.0), (10.0, 2.0), (1000.0, 3.5)])
def test_threshold_shift_is_log_eta_over_delta_and_sets_the_errors(eta, delta):
    t = tx.threshold_shift(eta, delta)
    assert t == pytest.approx(math.log(eta) / delta)
    # at the threshold the prior-weighted densities of the standardised score are equal
    p1 = 1 / (1 + eta)
    assert p1 * stats.norm.pdf(t, delta / 2) == pytest.approx((1 - p1) * stats.norm.pdf(t, -delta / 2))
    e = tx.bayes_errors(eta, delta)
    assert e.minority == pytest.approx(stats.norm.cdf(t - delta / 2))
    assert e.majority == pytest.approx(stats.norm.cdf(-t - delta / 2))
    assert e.minority > e.majority  # imbalance moves the errors onto the minority
    assert e.total <= tx.bayes_errors(1.0, delta).total  # ... while the Bayes error does not grow


def test_recall_is_one_half_at_the_collapse_point():
    for delta in [1.0, 2.0, 3.0]:
        log_eta = tx.collapse_log_eta(delta)
        assert log_eta == pytest.approx(delta**2 / 2)
        assert tx.bayes_errors(math.exp(log_eta), delta).recall == pytest.approx(0.5)


@pytest.mark.parametrize("delta", [1.0, 2.0, 3.0])
def test_regime_boundaries(delta):
    cuts = tx.regime_boundaries(delta)
    assert list(cuts.values()) == pytest.approx([delta**2 / 4, delta**2 / 2, delta**2 / 2 + delta])
    for (name, cut), (below, above) in zip(cuts.items(), zip(tx.REGIMES, tx.REGIMES[1:])):
        assert tx.regime(math.exp(cut - 1e-6), delta) == below, name
        assert tx.regime(math.exp(cut + 1e-6), delta) == above, name
    # regimes only ever get worse as eta grows
    order = [tx.REGIMES.index(r) for r in tx.regime(np.geomspace(1, 1e6, 200), delta)]
    assert order == sorted(order) and order[0] == 0 and order[-1] == 3


def test_regime_with_kappa_uses_the_finite_sample_recall():
    assert tx.regime(1.0, 2.0, kappa=10) == "Normal"
    names = tx.regime(np.array([1.0, 4.0, 16.0, 64.0]), 2.0, kappa=25, d=20)
    assert list(names) == ["Normal", "Mild", "Extreme", "Catastrophic"]


def test_plugin_lda_formula_tends_to_bayes_and_loses_recall_at_small_kappa():
    for eta in [1.0, 8.0, 64.0]:
        big = tx.plugin_lda_errors(eta, 2.0, kappa=1e6, d=20)
        bayes = tx.bayes_errors(eta, 2.0)
        assert big.minority == pytest.approx(bayes.minority, abs=1e-3)
        assert big.majority == pytest.approx(bayes.majority, abs=1e-3)
    recalls = [float(tx.plugin_lda_errors(8.0, 2.0, k, d=20).recall) for k in [2, 5, 25, 100]]
    assert recalls == sorted(recalls)
    assert tx.collapse_log_eta(2.0, 5, 20) < tx.collapse_log_eta(2.0)


def test_plugin_lda_formula_matches_simulated_lda():
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    eta, delta, kappa, d = 8.0, 2.0, 25.0, 10
    recalls = []
    for seed in range(12):
        data = tx.gaussian_problem(eta, kappa, delta, d, seed=seed, n_test_per_class=3000)
        pred = LinearDiscriminantAnalysis().fit(data.X_train, data.y_train).predict(data.X_test)
        recalls.append(np.mean(pred[data.y_test == 1] == 1))
    se = np.std(recalls, ddof=1) / np.sqrt(len(recalls))
    formula = float(tx.plugin_lda_errors(eta, delta, kappa, d).recall)
    assert abs(np.mean(recalls) - formula) < 4 * se + 0.01, (np.mean(recalls), se, formula)


def test_minority_metrics_and_pr_auc():
    m = tx.minority_metrics([1.0, 8.0], 2.0)
    assert m.recall.iloc[0] == pytest.approx(stats.norm.cdf(1.0))
    assert m.precision.iloc[0] == pytest.approx(stats.norm.cdf(1.0))  # balanced: precision = recall
    assert np.all((m.f1 > 0) & (m.f1 < 1))
    balanced_test = tx.minority_metrics(8.0, 2.0, test_eta=1.0)
    assert balanced_test.precision.iloc[0] > m.precision.iloc[1]
    assert tx.bayes_pr_auc(1e-3, 1.0) == pytest.approx(0.5, abs=2e-3)
    assert tx.bayes_pr_auc(2.0, 1.0) > tx.bayes_pr_auc(2.0, 10.0) > tx.bayes_pr_auc(1.0, 10.0)


def test_bayes_pr_auc_matches_a_sampled_average_precision():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    n = 200_000
    s = np.r_[rng.normal(1.0, 1.0, n), rng.normal(-1.0, 1.0, n)]
    y = np.r_[np.ones(n), np.zeros(n)]
    w = np.where(y == 1, 1.0, 5.0)
    assert average_precision_score(y, s, sample_weight=w) == pytest.approx(tx.bayes_pr_auc(2.0, 5.0), abs=5e-3)


@pytest.mark.parametrize("call", [
    lambda: tx.bayes_errors(0.5, 1.0),
    lambda: tx.bayes_errors(float("nan"), 1.0),
    lambda: tx.bayes_errors(2.0, 0.0),
    lambda: tx.bayes_errors(2.0, -1.0),
    lambda: tx.threshold_shift(2.0, float("inf")),
    lambda: tx.plugin_lda_errors(2.0, 1.0, kappa=0.0),
    lambda: tx.plugin_lda_errors(2.0, 1.0, kappa=1.1, d=20),  # n = 22 <= d + 5
    lambda: tx.regime(0.9, 1.0),
    lambda: tx.regime_boundaries(0.0),
    lambda: tx.split_counts(10, 20.0),  # fewer than two minority samples
    lambda: tx.gaussian_problem(4.0, 10.0, 2.0, d=0),
    lambda: tx.gaussian_problem(4.0, 10.0, 2.0, scale_ratio=0.0),
    lambda: tx.subsample_problem(np.zeros((3, 2)), np.zeros((100, 2)), np.zeros((1, 2)), np.zeros((1, 2)), 2.0, 30),
])
def test_bad_input_raises_a_clear_value_error(call):
    with pytest.raises(ValueError, match=r"eta|delta|kappa|n =|d must|scale_ratio|minority|need"):
        call()


def test_gaussian_problem_counts_seeds_and_weights():
    a = tx.gaussian_problem(4.0, 10.0, 2.0, d=5, seed=3, n_test_per_class=100)
    b = tx.gaussian_problem(4.0, 10.0, 2.0, d=5, seed=3, n_test_per_class=100)
    assert np.array_equal(a.X_train, b.X_train) and np.array_equal(a.X_test, b.X_test)
    assert len(a.y_train) == 50 and a.n_minority == 10
    assert set(np.unique(a.test_weight[a.y_test == 0])) == {4.0}
    wide = tx.gaussian_problem(1.0, 100.0, 2.0, d=5, seed=0, scale_ratio=2.0)
    assert wide.X_train[wide.y_train == 1].std() == pytest.approx(2.0, rel=0.1)
    assert wide.X_train[wide.y_train == 0, 1:].std() == pytest.approx(1.0, rel=0.1)


def test_subsample_problem_draws_the_ratio_and_weights_the_test_prior():
    rng = np.random.default_rng(0)
    Xa, Xb = rng.normal(size=(200, 3)), rng.normal(size=(300, 3)) + 1
    Ta, Tb = rng.normal(size=(50, 3)), rng.normal(size=(100, 3))
    p = tx.subsample_problem(Xa, Xb, Ta, Tb, eta=9.0, n=100, seed=0)
    assert p.n_minority == 10 and len(p.y_train) == 100
    w = p.test_weight
    assert w[p.y_test == 0].sum() / w[p.y_test == 1].sum() == pytest.approx(9.0)


def test_simulate_is_tidy_reproducible_and_skips_impossible_etas():
    clfs = {k: v for k, v in tx.default_classifiers(n_trees=5).items() if k in ("LDA", "5-NN")}

    def make(eta, seed):
        return tx.gaussian_problem(eta, 5.0, 2.0, d=4, seed=seed, n_test_per_class=200)

    a = tx.simulate(make, [1, 4, 100], [0, 1], clfs, tag="x")
    b = tx.simulate(make, [1, 4, 100], [0, 1], clfs, tag="x")
    pd.testing.assert_frame_equal(a, b)
    assert set(a.eta) == {1.0, 4.0}  # n = 20 leaves no two minority samples at eta = 100
    assert len(a) == 2 * 2 * 2
    assert {"classifier", "eta", "log_eta", "seed", "recall", "precision", "f1", "pr_auc", "tag"} <= set(a.columns)
    assert a[["recall", "f1", "pr_auc"]].apply(lambda c: c.between(0, 1)).all().all()


def test_collapse_point_interpolates_in_log_eta():
    frame = pd.DataFrame({"classifier": "m", "log_eta": [0.0, 1.0, 2.0, 3.0], "recall": [0.9, 0.7, 0.3, 0.1]})
    assert tx.collapse_point(frame).collapse_log_eta.iloc[0] == pytest.approx(1.5)
    assert math.isnan(tx.collapse_point(frame.assign(recall=0.9)).collapse_log_eta.iloc[0])


def test_reference_results_parse_and_name_their_provenance():
    assert REFERENCE.is_dir(), f"missing {REFERENCE}"
    tables = sorted(REFERENCE.glob("*.csv"))
    assert tables, "no reference tables"
    for path in tables:
        frame = pd.read_csv(path)
        assert len(frame) > 0 and len(frame.columns) > 1, path.name
    assert sorted(REFERENCE.glob("*.png")), "no reference figures"
    prov = json.loads((REFERENCE / "provenance.json").read_text())
    for key in ("git_commit", "packages", "device", "profile", "parameters", "minutes", "date"):
        assert key in prov, key
    assert prov["profile"] == "default"
    assert (REFERENCE / "FINDINGS.md").read_text().strip()
