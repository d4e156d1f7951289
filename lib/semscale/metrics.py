"""Classification metrics of long-tailed evaluation. Accuracies are fractions in [0, 1].

Counting happens on the device (``class_counts``: no host sync, call it per batch and add up); the
summary (``accuracy_summary``) on the host from the (C,) counts.

* top-1: correct / total over all test samples.
* per-class accuracy: correct_c / total_c, NaN for a class without test samples.
* balanced accuracy: the mean per-class accuracy over classes with test samples (scikit-learn's
  ``balanced_accuracy_score``).
* many / medium / few: the mean per-class accuracy over the classes with > 100, 20–100 and < 20
  *training* images (the convention of Liu et al. 2019 and the paper's Head/Middle/Tail); NaN when a
  group has no class.
"""

from __future__ import annotations

import numpy as np
import torch

MANY_SHOT = 100  # many: more than this many training images
FEW_SHOT = 20  # few: fewer than this many
GROUPS = ("many", "medium", "few")


def class_counts(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(correct, total) per class as int64 (C,) tensors on the inputs' device."""
    targets = targets.long()
    correct = torch.zeros(num_classes, dtype=torch.int64, device=targets.device)
    correct.index_add_(0, targets, (preds == targets).long())
    total = torch.bincount(targets, minlength=num_classes)
    return correct, total


def per_class_accuracy(correct, total) -> np.ndarray:
    """correct / total per class (float64); NaN where total is 0."""
    correct = np.asarray(correct, dtype=np.float64)
    total = np.asarray(total, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, correct / np.where(total > 0, total, 1), np.nan)


def shot_groups(train_counts) -> np.ndarray:
    """'many' (> 100 training images), 'medium' (20–100) or 'few' (< 20) for each class."""
    n = np.asarray(train_counts)
    return np.where(n > MANY_SHOT, "many", np.where(n >= FEW_SHOT, "medium", "few"))


def group_accuracy(accuracy, train_counts) -> dict[str, float]:
    """Mean per-class accuracy of the many/medium/few classes; NaN for an empty group."""
    accuracy = np.asarray(accuracy, dtype=np.float64)
    groups = shot_groups(train_counts)
    out = {}
    for g in GROUPS:
        values = accuracy[(groups == g) & ~np.isnan(accuracy)]
        out[g] = float(values.mean()) if values.size else float("nan")
    return out


def accuracy_summary(correct, total, train_counts) -> dict:
    """top1, balanced, many, medium, few (floats) and per_class (np.ndarray) from per-class counts."""
    correct = np.asarray(correct.cpu() if isinstance(correct, torch.Tensor) else correct, dtype=np.int64)
    total = np.asarray(total.cpu() if isinstance(total, torch.Tensor) else total, dtype=np.int64)
    if total.sum() == 0:
        raise ValueError("no test samples: every class total is 0")
    accuracy = per_class_accuracy(correct, total)
    return {
        "top1": float(correct.sum() / total.sum()),
        "balanced": float(np.nanmean(accuracy)),
        **group_accuracy(accuracy, train_counts),
        "per_class": accuracy,
    }
