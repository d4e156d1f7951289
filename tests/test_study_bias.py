"""semscale.study.bias (notebook 02): effective number, Table 1's measures, the correlation table."""

import numpy as np
import pandas as pd
import pytest
import torch
from semscale import pipeline, scale, stats, subsets
from semscale.config import TrainConfig
from semscale.study import bias


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


def test_correlation_table_marks_a_constant_measure_undefined():
    acc = np.random.default_rng(3).uniform(size=(3, 10))
    table = bias.correlation_table(
        pd.DataFrame({"class": range(10), "N": 5000, "E_n": bias.effective_number(np.full(10, 5000)), "S_prime": np.arange(10.0)}),
        pd.DataFrame([{"seed": s, "class": c, "accuracy": acc[s, c]} for s in range(3) for c in range(10)]),
        ["N", "E_n", "S_prime"], n_boot=100)
    assert list(table[table.measure.isin(["N", "E_n"])].text.unique()) == ["undefined"]
    assert table[table.measure == "S_prime"].defined.all()


def test_class_measures_columns_and_alpha():
    rng = torch.Generator().manual_seed(0)
    vol = torch.tensor([10.0, 20.0, 40.0])
    centers = torch.randn(3, 5, generator=rng, dtype=torch.float64)
    frame = bias.class_measures(vol, scale.center_distances(centers), [100, 50, 10], alphas=(1.0, 2.0), w_alpha=2.0)
    assert list(frame.columns[:6]) == ["class", "N", "E_n", "volume", "W", "S_prime"]
    np.testing.assert_allclose(frame.S_prime, [0.25, 0.5, 1.0])
    w_prime = 2 ** frame.W - 2.0  # W = log2(α + W′) at w_alpha = 2
    np.testing.assert_allclose(frame.S_a1, frame.S_prime * np.log2(1 + w_prime))
    np.testing.assert_allclose(frame.S_a2, frame.S_prime * frame.W)
    assert bias.measure_columns((1.0, 2.5)) == ["N", "E_n", "N_curve", "W", "S_prime", "S_a1", "S_a2.5"]


def test_sample_measures_use_the_trainers_subset():
    fields = {"dataset": "digits", "train_counts": (50, 40, 30, 30, 30, 30, 30, 30, 30, 20)}
    subset = pipeline.training_images(TrainConfig(**{"progress": False, **fields}))
    assert subset.labels.shape[0] == sum(fields["train_counts"])
    frame = bias.sample_measures(subset, alphas=(1.0,))
    assert frame.N.tolist() == list(fields["train_counts"]) and frame.S_prime.max() == pytest.approx(1.0)
    assert frame.volume_shrinkage.notna().all() and (frame.volume_shrinkage > 0).all()
    ablation = bias.estimator_ablation(frame)
    assert ablation.loc[0, ["source", "classes"]].tolist() == [frame.source[0], 10]
    assert -1 <= ablation.spearman[0] <= 1 and 0 <= ablation.classes_moved[0] <= 10
    assert bias.dataset_alpha(fields) == 2.0 and bias.dataset_alpha({"dataset": "digits"}) == 1.0
    assert bias.VARIANTS["mnist-lt-2"]["train_counts"] == subsets.MNIST_LT_2


def test_estimator_ablation_names_the_classes_whose_rank_changes():
    measures = pd.DataFrame({"variant": "v", "source": "s", "name": list("abcd"), "volume": [4.0, 3.0, 2.0, 1.0],
                             "volume_shrinkage": [4.0, 2.0, 3.0, 1.0]})
    (row,) = bias.estimator_ablation(measures).to_dict("records")
    assert (row["classes"], row["classes_moved"], row["largest_move"]) == (4, 2, 1.0)
    assert row["spearman"] == pytest.approx(0.8) and row["moved_most"] == "b (2→3), c (3→2)"


def test_training_points_take_the_protocol_and_per_variant_epochs():
    points = bias.training_points(["cifar10-jpeg75", "cifar10-jpeg75-lt200"], ["airbench-small"], [0], 10,
                                  "cifar10-jpeg75", [400], ["airbench-small"], 1000, [0], protocol="airbench-lt",
                                  variant_epochs={"cifar10-jpeg75-lt200": 30, "cifar10-jpeg75-m400": 60})
    epochs = {p.labels["variant"]: p.config().epochs for group in points.values() for p in group}
    assert epochs == {"cifar10-jpeg75": 10, "cifar10-jpeg75-lt200": 30, "cifar10-jpeg75-m400": 60, "cifar10-jpeg75-m1000": 10}
    assert {p.config().protocol for group in points.values() for p in group} == {"airbench-lt"}


def test_epochs_label_is_one_number_or_a_range():
    runs = pd.DataFrame({"variant": ["a", "a", "b", "c"], "epochs": [10, 10, 30, 60]})
    assert bias.epochs_label(runs, ["a"]) == 10 and isinstance(bias.epochs_label(runs, ["a"]), int)
    assert bias.epochs_label(runs, ["a", "c"]) == "10–60" and bias.epochs_label(runs) == "10–60"
    assert bias.run_words(["airbench-small"], "10–60", [0, 1]) == "airbench-small, 10–60 epochs, 2 seeds"


def _long_tailed(accuracy_of_n, seeds=3):
    """A long-tailed variant whose per-class accuracy is ``accuracy_of_n(N)`` plus seed noise; "scale" is N plus
    noise unrelated to accuracy (the measure a test must not credit)."""
    rng = np.random.default_rng(0)
    n = np.array([5000, 2000, 900, 500, 300, 150, 90, 60, 40, 25])
    measures = pd.DataFrame({"variant": "lt", "source": "s", "class": range(10), "N": n,
                             "scale": n * rng.uniform(0.5, 1.5, 10)})
    per_class = pd.DataFrame([{"variant": "lt", "model": "cnn", "seed": s, "class": c,
                               "accuracy": accuracy_of_n(n[c]) + rng.normal(0, 0.01)} for s in range(seeds) for c in range(10)])
    return measures, per_class


def test_the_count_only_curve_fits_the_shape_of_accuracy_against_n():
    measures, per_class = _long_tailed(lambda n: 1 - n**-0.3)
    acc = bias.accuracy_matrix(per_class, variant="lt", model="cnn").mean(axis=0)
    curve = bias.with_count_curve(measures, acc)
    assert curve.N_curve_b.iloc[0] == pytest.approx(0.3, rel=0.2)
    assert stats.corr(curve.N_curve, acc) > max(stats.corr(measures.N, acc), stats.corr(measures.scale, acc)) > 0
    table = bias.correlation_table(measures, per_class, ["N", bias.COUNT_CURVE], methods=["pearson"], n_boot=200)
    assert table.set_index("measure").estimate[bias.COUNT_CURVE] > 0.99 and bias.measure_label("N_curve") == "1 − N^(−b)"
    # balanced (N the same for every class), measures per seed as the features' are: undefined, as for N itself
    balanced = pd.concat([measures.assign(N=100, seed=s) for s in range(3)])
    table = bias.correlation_table(balanced, per_class, ["N", bias.COUNT_CURVE], methods=["pearson"], n_boot=200)
    assert table.text.tolist() == ["undefined", "undefined"]


def test_the_primary_test_of_02_does_not_credit_a_scale_that_is_a_noisy_count():
    measures, per_class = _long_tailed(lambda n: 1 - n**-0.3)
    (row,) = bias.primary_test(per_class, measures, "lt", "cnn", "s", "scale", "N_curve", n_boot=500).to_dict("records")
    assert row["verdict"] == "the count beats the scale" and row["high"] < 0 < row["detectable"]
    assert row["difference"] == pytest.approx(row["r_measure"] - row["r_against"])
    (same,) = bias.primary_test(per_class, measures.assign(scale=measures.N), "lt", "cnn", "s", "scale", "N",
                                n_boot=500).to_dict("records")
    assert same["difference"] == 0 and same["low"] == same["high"] == 0 and same["verdict"].startswith("no difference")
    with pytest.raises(ValueError, match="trained variant"):
        bias.primary_test(per_class, measures, "other", "cnn", "s", "scale")
