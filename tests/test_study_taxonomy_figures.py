"""Notebook 04's study functions (semscale.study.taxonomy): the plug-in LDA threshold, the regime tables and the
threshold explorer over its option grid."""

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from figure_checks import check_controls, fixed_values, grid_sample, png
from matplotlib.figure import Figure
from scipy import stats
from semscale.study import taxonomy as tx

widgets = pytest.importorskip("ipywidgets")


# --- the primer -------------------------------------------------------------------------------------------------------


# --- the taxonomy's notebook functions -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kappa", [1.6, 5.0, 100.0])
@pytest.mark.parametrize("delta", [0.5, 2.0, 4.0])
def test_plugin_lda_threshold_is_zero_at_balance_and_gives_the_lda_errors(kappa, delta):
    assert tx.plugin_lda_threshold(1.0, delta, kappa) == pytest.approx(0.0, abs=1e-12)
    eta, d = 6.0, 20
    t = tx.plugin_lda_threshold(eta, delta, kappa, d)
    s1, sd, _, spread = tx._lda_moments(eta, delta, kappa, d)
    width = sd * spread / (s1 * delta)  # LDA's score on the standardised axis
    errors = tx.plugin_lda_errors(eta, delta, kappa, d)
    assert stats.norm.cdf((t - delta / 2) / width) == pytest.approx(float(errors.minority))
    assert stats.norm.sf((t + delta / 2) / width) == pytest.approx(float(errors.majority))


def test_plugin_lda_threshold_tends_to_the_bayes_threshold():
    assert tx.plugin_lda_threshold(50.0, 2.0, 1e7) == pytest.approx(tx.threshold_shift(50.0, 2.0), rel=1e-4)


def test_closed_form_regime_table_and_mean_se():
    log_eta = np.linspace(0, 3, 7)
    closed = tx.closed_form(log_eta, [1.0, 2.0])
    assert len(closed) == 14 and list(closed.delta.unique()) == [1.0, 2.0]
    assert closed.regime.iloc[0] == "Normal" and closed.regime.iloc[6] == "Catastrophic"
    table = tx.regime_table([2.0], kappa=25)
    assert table.iloc[0]["Mild|Extreme"] == 2.0 and table.iloc[0]["rule of thumb Δ√κ"] == 10.0
    runs = pd.DataFrame({"g": ["a", "a", "b"], "x": [1.0, 3.0, 5.0]})
    summary = tx.mean_se(runs, ["g"], ["x"])
    assert summary.x_mean.tolist() == [2.0, 5.0] and summary.x_se.iloc[0] == 1.0 and summary.runs.tolist() == [2, 1]


def test_monte_carlo_check_has_one_row_per_class_and_small_z():
    check = tx.monte_carlo_check([2.0], [1, 8], n=20_000)
    assert len(check) == 4 and set(check["class"]) == {"minority", "majority"}
    assert check.z.abs().max() < 4


def _collapse(rows):
    return pd.DataFrame(rows, columns=["pair", "minority", "classifier", "collapse_log_eta"])


def _pairs(*rows):
    return pd.DataFrame(rows, columns=["pair", "class_a", "class_b", "log_volume_ratio_a_over_b"])


def test_scale_asymmetry_and_its_summary_in_words_for_degenerate_cases():
    one_pair = _pairs(("A | B", "A", "B", 0.5))
    collapse = _collapse([("A | B", "A", c, a) for c, a in [("k", 2.0), ("l", 3.0), ("m", 1.0)]]
                         + [("A | B", "B", c, b) for c, b in [("k", 1.0), ("l", 4.0), ("m", np.nan)]])
    asym = tx.scale_asymmetry(collapse, one_pair)
    assert asym.agrees_with_scale.tolist()[:2] == [1.0, 0.0] and np.isnan(asym.agrees_with_scale.iloc[2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConstantInputWarning: the degenerate case is said in words
        text = tx.asymmetry_summary(asym)
        assert "1 of 2" in text and "not computed" in text
        three = tx.scale_asymmetry(_collapse([("A | B", m, c, v) for m, v in [("A", 2.0), ("B", 1.0)] for c in "klm"]), one_pair)
        assert "undefined, every case has the same volume ratio" in tx.asymmetry_summary(three)
        two_pairs = _pairs(("A | B", "A", "B", 0.5), ("C | D", "C", "D", -0.2))
        rows = [("A | B", "A", "k", 2.0), ("A | B", "B", "k", 1.0), ("A | B", "A", "l", 3.0), ("A | B", "B", "l", 1.0),
                ("C | D", "C", "k", 1.0), ("C | D", "D", "k", 2.5)]
        assert "Spearman correlation across cases: " in tx.asymmetry_summary(tx.scale_asymmetry(_collapse(rows), two_pairs))


def test_shade_regimes_colours_four_spans():
    fig, ax = plt.subplots()
    ax.set_xlim(0, 10)
    tx.shade_regimes(ax, 2.0)
    assert len(ax.patches) == 4 and [p.get_label() for p in ax.patches][0] == "Normal (Bayes regime)"
    plt.close(fig)


def test_the_threshold_explorers_controls_read_in_words():
    controls = tx.threshold_explorer_controls(d=20)
    check_controls(controls)
    assert controls["delta"].max == tx.EXPLORER_MAX_DELTA and controls["eta"].max == 3  # η up to 10³


def test_the_threshold_explorer_draws_every_setting_of_its_grid_on_fixed_axes():
    controls = tx.threshold_explorer_controls(d=20)
    limits = set()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for setting in grid_sample(controls, 60):
            fig = tx.threshold_explorer(**setting, **fixed_values(controls))
            assert isinstance(fig, Figure), setting
            density, bars = fig.axes[:2]
            limits.add((density.get_xlim(), density.get_ylim(), bars.get_ylim()))
            lda = "plug-in LDA (expected)" in [t.get_text() for t in bars.get_legend().get_texts()]
            n = round(setting["kappa"] * 20)
            assert lda == (round(n / (1 + setting["eta"])) >= 2), setting  # LDA numbers only where it can be trained
            assert lda or "No plug-in LDA" in bars.get_title(), setting
    assert len(limits) == 1


def test_the_threshold_explorer_at_balance_and_with_too_few_minority_samples():
    balanced = tx.threshold_explorer(1.0, 10**0.2, 2.0)
    lines = {line.get_label(): line for line in balanced.axes[0].get_lines()}
    lda_line = next(line for label, line in lines.items() if label.startswith("plug-in LDA threshold"))
    assert lda_line.get_xdata()[0] == pytest.approx(0.0)  # symmetric errors, threshold in the middle
    starved = tx.threshold_explorer(708.0, 10.0, 2.0)
    title = starved.axes[1].get_title().replace("\n", " ")
    assert "No plug-in LDA" in title and "leave 0.28 of the minority" in title
    assert [t.get_text() for t in starved.axes[1].get_legend().get_texts()] == ["Bayes rule"]
    assert png(starved) == png(tx.threshold_explorer(708.0, 10.0, 2.0))


def test_the_threshold_explorer_says_why_it_cannot_draw_an_impossible_setting():
    for bad in [dict(eta=0.5, kappa=10.0, delta=2.0), dict(eta=2.0, kappa=10.0, delta=0.0), dict(eta=2.0, kappa=-1.0, delta=2.0)]:
        fig = tx.threshold_explorer(**bad)
        assert fig.axes[0].get_title() == "Cannot draw this setting" and fig.axes[1].texts, bad
    beyond = tx.threshold_explorer(1000.0, 1000.0, 0.2)  # Bayes threshold at s = 34.5, beyond the fixed axis
    labels = [line.get_label() for line in beyond.axes[0].get_lines()]
    assert any("beyond the right edge" in label for label in labels)

