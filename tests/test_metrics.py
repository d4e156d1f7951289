import numpy as np
import pytest
import torch
from semscale import metrics
from sklearn.metrics import accuracy_score, balanced_accuracy_score


def _random_predictions(n=500, num_classes=7, seed=0):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, num_classes, n)
    preds = np.where(rng.random(n) < 0.6, targets, rng.integers(0, num_classes, n))
    return torch.from_numpy(preds), torch.from_numpy(targets)


def test_class_counts_match_a_direct_count():
    preds, targets = _random_predictions()
    correct, total = metrics.class_counts(preds, targets, 7)
    for c in range(7):
        in_class = targets == c
        assert total[c] == in_class.sum()
        assert correct[c] == (preds[in_class] == c).sum()


def test_top1_and_balanced_accuracy_match_sklearn():
    preds, targets = _random_predictions()
    train_counts = [500, 300, 150, 90, 40, 15, 5]
    result = metrics.accuracy_summary(*metrics.class_counts(preds, targets, 7), train_counts)
    assert result["top1"] == pytest.approx(accuracy_score(targets, preds), abs=1e-12)
    assert result["balanced"] == pytest.approx(balanced_accuracy_score(targets, preds), abs=1e-12)
    per_class = [(preds[targets == c] == c).float().mean().item() for c in range(7)]
    np.testing.assert_allclose(result["per_class"], per_class, rtol=1e-6)


def test_class_without_test_samples_is_nan_and_ignored_like_sklearn():
    preds, targets = _random_predictions(num_classes=5)
    accuracy = metrics.per_class_accuracy(*metrics.class_counts(preds, targets, 6))
    assert np.isnan(accuracy[5]) and not np.isnan(accuracy[:5]).any()
    result = metrics.accuracy_summary(*metrics.class_counts(preds, targets, 6), [50] * 6)
    assert result["balanced"] == pytest.approx(balanced_accuracy_score(targets, preds), abs=1e-12)


def test_shot_groups_boundaries():
    assert metrics.shot_groups([101, 100, 20, 19, 1000, 0]).tolist() == ["many", "medium", "medium", "few", "many", "few"]


def test_group_accuracy_is_the_mean_per_class_accuracy_of_each_group():
    accuracy = np.array([0.9, 0.8, 0.5, 0.4, 0.1])
    groups = metrics.group_accuracy(accuracy, [1000, 200, 100, 20, 3])
    assert groups["many"] == pytest.approx(0.85)
    assert groups["medium"] == pytest.approx(0.45)
    assert groups["few"] == pytest.approx(0.1)


def test_empty_group_is_nan():
    groups = metrics.group_accuracy([0.9, 0.7], [500, 150])
    assert groups["many"] == pytest.approx(0.8)
    assert np.isnan(groups["medium"]) and np.isnan(groups["few"])


def test_no_test_samples_is_an_error():
    with pytest.raises(ValueError, match="no test samples"):
        metrics.accuracy_summary([0, 0], [0, 0], [10, 10])
