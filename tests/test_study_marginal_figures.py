"""Notebook 01's study functions: tables, figures and the class explorer over its whole option grid (no text
under plots.MIN_FONT_SIZE, words instead of nan, the same picture for the same setting)."""

import itertools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from figure_checks import figure_words, png
from semscale import data, plots
from semscale.study import marginal

pytestmark = pytest.mark.usefixtures("styled_figures")


# ---------------------------------------------------------------------------------------------------------
# notebook 01: the marginal effect


@pytest.fixture(scope="module")
def digits_train():
    return data.load("digits", "train")


@pytest.fixture(scope="module")
def digits_curves(digits_train):
    return marginal.sample_volume_curves(digits_train.images, digits_train.labels, digits_train.classes, [5, 10, 20, 40],
                                         [0, 1], dataset="digits")


def test_class_explorer_over_its_whole_option_grid(digits_train, digits_curves):
    explorer = marginal.ClassExplorer([5, 10, 20, 40], [0, 1], curves={"digits": digits_curves}, splits={"digits": digits_train})
    limits = set()
    for dataset, cls, seed in itertools.product(["digits", "no-such-dataset"], range(-1, 12), [0, 1, 7]):
        fig = explorer.figure(dataset, cls, seed)
        words = figure_words(fig)
        if dataset != "digits":
            assert "cannot be loaded here" in words
        elif not 0 <= cls < 10:
            assert f"there is no class {cls}" in words and "10 classes" in words
        elif seed == 7:
            assert "Subset seed 7 was not measured" in words
        else:
            volume_axes = fig.subfigs[0].axes[0]
            limits.add((volume_axes.get_xlim(), volume_axes.get_ylim()))
            assert f"class {cls}: {digits_train.classes[cls]}" in words and "#5" in words
        plt.close(fig)
    assert len(limits) == 1, "the volume axes must stay fixed within a dataset so classes compare"


def test_class_explorer_draws_the_same_picture_for_the_same_setting(digits_train, digits_curves):
    explorer = marginal.ClassExplorer([5, 10, 20, 40], [0, 1], curves={"digits": digits_curves}, splits={"digits": digits_train})
    assert png(explorer.figure("digits", 3, 1)) == png(explorer.figure("digits", 3, 1))
    assert png(explorer.figure("digits", 3, 1)) != png(explorer.figure("digits", 3, 0))


def test_class_explorer_measures_an_unmeasured_dataset_on_first_pick_capped_at_its_smallest_class(digits_train):
    explorer = marginal.ClassExplorer([10, 100, 100000], [0])
    assert explorer.class_count("digits") == 10
    figure_words(explorer.figure("digits", 0, 0))
    smallest = int(np.bincount(digits_train.labels.numpy()).min())
    assert sorted(explorer.curves["digits"].m.unique()) == [10, 100]
    assert smallest >= 100
    assert explorer.splits["digits"] is explorer.split("digits")  # loaded once, kept


def test_class_explorer_images_are_the_ones_the_nested_subsets_add_in_order(digits_train, digits_curves):
    seed, cls = 1, 4
    order = marginal.nested_subsets(digits_train.labels, [40], [seed])[(seed, 40)]
    order = order[digits_train.labels.numpy()[order] == cls]
    fig = marginal.class_explorer_figure(digits_curves, digits_train, "digits", cls, seed)
    shown = [ax for ax in fig.subfigs[1].axes if ax.images]
    assert [ax.get_title() for ax in shown] == ["#5", "#10", "#20", "#40"]
    np.testing.assert_array_equal(shown[1].images[0].get_array(), digits_train.images[int(order[9])][0].numpy())


def test_marginal_figures_are_readable(digits_curves):
    fits = marginal.fit_saturation(digits_curves)
    figure_words(marginal.figure_volume_curves(digits_curves, fits, ["digits"], 1.0))
    frame = _trend_frame([0.2, 0.5, 0.4])
    assert "2 seeds" in figure_words(marginal.figure_volume_and_accuracy(frame, [("digits", "cnn")]))
    fvol = digits_curves.rename(columns={"volume": "sample_volume"}).assign(
        model="cnn", seed=digits_curves.subset_seed, feature_volume_pooled=digits_curves.volume / 10)
    figure_words(marginal.figure_feature_volumes(fvol, [("digits", "cnn")]))


def test_class_curves_without_a_fit_keep_the_classes_error_bars_apart(digits_curves):
    fig, ax = plt.subplots()
    marginal.plot_class_curves(ax, digits_curves, None, "digits")
    xs = {round(float(line.get_xdata()[0]), 6) for line in ax.lines if len(line.get_xdata())}
    assert len(xs) == 10  # ten classes at m = 5, each at its own position: no stripe


def _trend_frame(top1_by_m, seeds=(0, 1)):
    rows = [{"dataset": "digits", "model": "cnn", "m": m, "seed": s, "subset_seed": s, "steps": 40,
             "summed_volume": 100.0 * (k + 1) + s, "top1": t}
            for k, (m, t) in enumerate(zip([10, 30, 100], top1_by_m)) for s in seeds]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("top1, expected", [
    ([0.44, 0.49, 0.32], "rises in 1 and falls in 1 of 2 steps"),
    ([0.80, 0.90, 0.95], "rises at every step"),
    ([0.50, 0.40, 0.30], "falls at every step"),
])
def test_describe_trends_says_what_this_run_shows(top1, expected):
    text = marginal.describe_trends(_trend_frame(top1))
    assert f"top-1 {100 * top1[0]:.1f} → {100 * top1[1]:.1f} → {100 * top1[2]:.1f} % ({expected})" in text
    assert "2 seeds" in text
    assert ("Both rise together" in text) == (expected == "rises at every step")


def test_count_and_volume_sizes():
    assert plots.count(1, "seed") == "1 seed" and plots.count(3, "seed") == "3 seeds"
    assert marginal.volume_sizes({"a": [30, 10], "b": [5]}, {"a": [20], "c": [7]}) == {"a": [10, 20, 30], "b": [5], "c": [7]}


def test_sample_vs_feature_rank_is_undefined_in_words_not_a_warning_for_constant_volumes():
    fvol = pd.DataFrame({"dataset": "d", "model": "cnn", "m": 10, "class": range(4), "class_name": list("abcd"),
                         "sample_volume": [1.0, 2.0, 3.0, 4.0], "feature_volume_pooled": 5.0})
    assert np.isnan(marginal.sample_vs_feature_rank(fvol).spearman_sample_vs_feature.iloc[0])


def test_schedule_table_lists_one_row_per_m():
    points = marginal.training_points({"digits": [10, 30]}, [0, 1], ["cnn"], 40, {"digits": 10}, decay_epochs=100)
    table = marginal.schedule_table(points)
    assert list(table.m) == [10, 30] and "seed" not in table
    assert (table.final_lr < 0.01).all()


