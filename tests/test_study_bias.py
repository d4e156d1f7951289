"""semscale.study.bias (notebook 02): effective number, Table 1's measures, the correlation table."""

import numpy as np
import pandas as pd
import pytest
import torch
from semscale import pipeline, subsets
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
    frame = bias.class_measures(vol, centers, [100, 50, 10], alphas=(1.0, 2.0), w_alpha=2.0)
    assert list(frame.columns[:6]) == ["class", "N", "E_n", "volume", "W", "S_prime"]
    np.testing.assert_allclose(frame.S_prime, [0.25, 0.5, 1.0])
    w_prime = 2 ** frame.W - 2.0  # W = log2(α + W′) at w_alpha = 2
    np.testing.assert_allclose(frame.S_a1, frame.S_prime * np.log2(1 + w_prime))
    np.testing.assert_allclose(frame.S_a2, frame.S_prime * frame.W)
    assert bias.measure_columns((1.0, 2.5)) == ["N", "E_n", "W", "S_prime", "S_a1", "S_a2.5"]


def test_sample_measures_use_the_trainers_subset():
    fields = {"dataset": "digits", "train_counts": (50, 40, 30, 30, 30, 30, 30, 30, 30, 20)}
    subset = pipeline.training_images(TrainConfig(**{"progress": False, **fields}))
    assert subset.labels.shape[0] == sum(fields["train_counts"])
    frame = bias.sample_measures(subset, alphas=(1.0,))
    assert frame.N.tolist() == list(fields["train_counts"]) and frame.S_prime.max() == pytest.approx(1.0)
    assert frame.volume_shrinkage.notna().all() and (frame.volume_shrinkage > 0).all()
    ablation = bias.estimator_ablation(frame)
    assert ablation.loc[0, ["dataset_variant", "source", "classes"]].tolist() == [subset.variant, frame.source[0], 10]
    assert -1 <= ablation.spearman[0] <= 1 and 0 <= ablation.classes_moved[0] <= 10
    assert bias.dataset_alpha(fields) == 2.0 and bias.dataset_alpha({"dataset": "digits"}) == 1.0
    assert bias.VARIANTS["mnist-lt-2"]["train_counts"] == subsets.MNIST_LT_2


def test_estimator_ablation_names_the_classes_whose_rank_changes():
    measures = pd.DataFrame({"dataset_variant": "v", "source": "s", "name": list("abcd"), "volume": [4.0, 3.0, 2.0, 1.0],
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
