"""Notebook 02's study functions: figures, words and the measure explorer over its whole option grid; and the
explorer cells of notebooks 01 and 02."""

import itertools
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from figure_checks import figure_words, png
from semscale import sweep
from semscale.study import bias

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


pytestmark = pytest.mark.usefixtures("styled_figures")


# ---------------------------------------------------------------------------------------------------------
# notebook 02: scale and bias


def _bias_frames():
    """Measures and per-class accuracy of two variants: 'lt' (trained with cnn, seeds 0-1, features of seed 0) and
    'lt-m100' (balanced, cnn only, no features), with the study's sources."""
    rng = np.random.default_rng(0)
    counts = {"lt": np.array([500, 300, 200, 120, 80, 50, 30, 20, 10, 5]), "lt-m100": np.full(10, 100)}
    names = [f"{c} - class" for c in range(10)]
    measures, per_class = [], []
    for variant, n in counts.items():
        for source in [bias.sample_source(1.0), bias.sample_source(255.0)]:
            frame = bias.class_measures(rng.uniform(100, 300, 10), rng.uniform(1, 2, 10), n, w_alpha=1.0)
            measures.append(frame.assign(variant=variant, source=source, name=names))
        for seed in (0, 1):
            per_class.append(pd.DataFrame({"variant": variant, "model": "cnn", "seed": seed, "class": range(10),
                                           "name": names, "accuracy": rng.uniform(0.3, 0.99, 10)}))
    features = bias.class_measures(rng.uniform(20, 40, 10), rng.uniform(1, 2, 10), counts["lt"])
    measures.append(features.assign(variant="lt", source=bias.FEATURE_SOURCE, name=names, model="cnn", seed=0))
    return pd.concat(measures, ignore_index=True), pd.concat(per_class, ignore_index=True)


def test_measure_explorer_over_its_whole_option_grid():
    measures, per_class = _bias_frames()
    explorer = bias.MeasureExplorer(measures, per_class)
    columns = [c for _, c in bias.measure_options([*bias.measure_columns(), "volume"])]
    sources = [s for _, s in bias.source_options(measures)]
    assert set(sources) == {bias.sample_source(1.0), bias.sample_source(255.0), bias.FEATURE_SOURCE}
    limits = {}
    for variant, measure, source, model in itertools.product(["lt", "lt-m100"], columns, sources, ["cnn", "resnet32"]):
        fig = explorer.figure(variant, measure, source, model)
        words = figure_words(fig)
        if model == "resnet32":
            assert "No resnet32 network was trained" in words
        elif variant == "lt-m100" and source == bias.FEATURE_SOURCE:  # the ValueError: now a message
            assert "was not measured for lt-m100" in words
        else:
            ax = fig.axes[0]
            assert bias.source_label(source) in ax.get_title() and bias.measure_label(measure) in ax.get_title()
            assert "S_a" not in words and "S_prime" not in words
            if variant == "lt-m100" and measure in ("N", "E_n", bias.COUNT_CURVE):
                assert "Pearson r undefined" in words
            else:
                assert "Pearson r = " in words
            limits.setdefault(variant, set()).add(ax.get_ylim())
        plt.close(fig)
    assert all(len(v) == 1 for v in limits.values()), "the accuracy axis must stay fixed for a variant"


def test_measure_explorer_draws_the_same_picture_and_names_the_classes_in_a_legend():
    measures, per_class = _bias_frames()
    explorer = bias.MeasureExplorer(measures, per_class)
    fig = explorer.figure("lt", "S_a1.5", bias.sample_source(1.0), "cnn")
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [f"{c} - class" for c in range(10)]
    assert png(fig) == png(explorer.figure("lt", "S_a1.5", bias.sample_source(1.0), "cnn"))


def test_display_names_for_measures_and_sources():
    assert [bias.measure_label(c) for c in ["S_a1.5", "S_prime", "E_n", "N"]] == ["S α=1.5", "S′", "E_n", "N"]
    assert bias.source_label("sample, pixels x255") == "sample volume, pixels in [0, 255]"
    assert bias.source_label(bias.FEATURE_SOURCE) == "network features (64-d pool)"
    assert bias.run_words(["cnn"], 1, [0]) == "cnn, 1 epoch, 1 seed"
    assert bias.run_words(["cnn", "resnet32"], 3, [0, 1, 2]) == "cnn and resnet32, 3 epochs, 3 seeds"


def test_variant_fields_and_points():
    assert bias.variant_fields("cifar10-jpeg75-m400", "cifar10-jpeg75") == {"dataset": "cifar10-jpeg75", "train_per_class": 400}
    assert bias.variant_fields("mnist-lt-1") is bias.VARIANTS["mnist-lt-1"]
    assert bias.balanced_variants("mnist", [300, 100], 200) == ["mnist-m100", "mnist-m200", "mnist-m300"]
    points = bias.training_points(["mnist-lt-1"], ["cnn"], [0, 1], 1, "mnist", [100, 300], ["cnn", "resnet32"], 100, [0])
    assert [len(points[k]) for k in ("main", "sizes", "architectures")] == [2, 2, 2]
    assert all(isinstance(p, sweep.Point) and p.fields["protocol"] == "paper-sec3" for group in points.values() for p in group)


def test_rank_heatmap_writes_tied_ranks_as_they_are():
    groups = {"seed (cnn, all images)": pd.DataFrame([[0.5, 0.5, 0.9], [0.1, 0.6, 0.7]], index=pd.Index([0, 1], name="seed"),
                                                      columns=[0, 1, 2])}
    by_scale = pd.DataFrame({"name": ["a", "b", "c"]}, index=[2, 0, 1])
    fig = bias.figure_rank_heatmap(groups, by_scale, "toy", "toy ranks; cnn, 1 epoch, 2 seeds")
    annotations = {t.get_text() for t in fig.axes[0].texts}
    assert "1.5" in annotations and "4" not in annotations
    figure_words(fig)
    assert "No comparison has two raters" in figure_words(bias.figure_rank_heatmap({}, by_scale, "toy", "t"))


def test_beta_sweep_figure_places_beta_on_a_log_axis_and_says_where_r_is_undefined():
    table = pd.DataFrame({"variant": "lt", "model": "cnn", "beta": [0.9, 0.99, 0.9999], "pearson": [np.nan, 0.6, 0.8],
                          "low": [np.nan, 0.4, 0.7], "high": [np.nan, 0.8, 0.9], "pearson_N": 0.7, "seeds": 2})
    fig = bias.figure_beta_sweep(table, "E_n; cnn, 1 epoch, 2 seeds")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == ["0.9", "0.99", "0.9999"]
    assert "undefined at β = 0.9" in figure_words(fig)
    assert "No long-tailed variant" in figure_words(bias.figure_beta_sweep(table.iloc[:0], "t"))


def test_fig3_says_undefined_in_words_for_a_constant_count():
    rows = [{"variant": v, "model": "cnn", "x": x, "class": c, "x_value": (100.0 if x == "N" and v == "mnist" else c + 1.0),
             "accuracy_mean": 0.5 + 0.04 * c, "accuracy_std": 0.01, "seeds": 2}
            for v in ("mnist", "mnist-lt-1") for x in ("N", bias.S_DATA) for c in range(10)]
    words = figure_words(bias.figure_fig3(pd.DataFrame(rows), ["mnist", "mnist-lt-1"], "t; cnn, 1 epoch, 2 seeds"))
    assert "Pearson r undefined (N constant)" in words and "Pearson r = 1.00" in words


def test_describe_smallest_counts_the_raters_that_find_the_smallest_class_weakest():
    smallest = pd.DataFrame([
        {"what": "smallest S′, pixels x1", "class": "b", "largest": "a", "rank_of_cat": None},
        {"what": "smallest S α=1, pixels x1", "class": "a", "largest": "c", "rank_of_cat": None},
        {"what": "weakest: seed (cnn, all images)", "rater": 0, "class": "a", "largest": "c", "rank_of_cat": None},
        {"what": "weakest: seed (cnn, all images)", "rater": 1, "class": "b", "largest": "c", "rank_of_cat": None}])
    text = bias.describe_smallest(smallest, "toy")
    assert text.startswith("In this run (toy)") and "a, the smallest by S α=1, pixels x1, is the weakest for 1 of 2 raters" in text


def test_raters_pivot_the_rows_that_match():
    frame = pd.DataFrame({"variant": ["a", "a", "b", "c"], "class": [0, 1, 0, 0], "accuracy": [0.1, 0.2, 0.3, 0.4]})
    table = bias.raters(frame, "variant", variant=["a", "b"])
    assert list(table.index) == ["a", "b"] and table.loc["a", 1] == 0.2


# ---------------------------------------------------------------------------------------------------------
# the notebooks' explorer cells


@pytest.mark.parametrize("notebook", ["01_marginal_effect.ipynb", "02_scale_and_bias.ipynb"])
def test_explorer_cells_are_short_with_readable_labels_and_tooltips(notebook):
    cells = json.loads((NOTEBOOKS / notebook).read_text())["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code" and "parameters" not in c["metadata"].get("tags", [])]
    assert max(len(s.splitlines()) for s in code) <= 15
    explore = next(s for s in code if "widgets.interact" in s)
    controls = explore.count("widgets.Dropdown(") + explore.count("widgets.IntSlider(")
    assert explore.count("tooltip=") == controls and explore.count("style=style") == controls
    assert '"description_width": "initial"' in explore and ".show" in explore

