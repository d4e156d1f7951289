"""Semantic scale against model bias (notebook 02; PAPER.md §2, §4.2 and §6).

Per class, on exactly the training subset a network saw: N, the effective number E_n = (1 − β^N)/(1 − β)
(β = 0.9999, PAPER.md §6), the volume, W, S′ and S = S′ ⊙ W for several α, measured in pixel space (the
paper's sample volume, d = 768) or on a trained network's 64-d pooled features. Then the statistics of
Table 1 and Figs 3–4:

* :func:`correlation_table`: Table 1 for one dataset, model and source, each measure's Pearson and Spearman
  correlation across classes with the seed-mean per-class accuracy and a bootstrap interval over classes and seeds
  (:func:`semscale.stats.bootstrap_corr`). A measure that is constant across classes (N and E_n on balanced data)
  has no correlation: ``defined`` is False and the numbers are NaN.
* Rank agreement across raters and incremental R² are :mod:`semscale.stats`'s; the paper's Table 1 is
  :data:`semscale.study.paper.PAPER_TABLE1`.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from .. import features, pipeline, scale, stats, subsets

BETA = 0.9999
ALPHAS = (1.0, 1.5, 2.0, 2.5, 3.0)

#: The study's dataset variants as TrainConfig fields (names follow ``pipeline.select_subset``).
VARIANTS: dict[str, dict] = {
    "mnist": {"dataset": "mnist"},
    "mnist-lt-1": {"dataset": "mnist", "train_counts": subsets.MNIST_LT_1},
    "mnist-lt-2": {"dataset": "mnist", "train_counts": subsets.MNIST_LT_2},
    "fashion-mnist": {"dataset": "fashion-mnist"},
    "cifar10-jpeg75": {"dataset": "cifar10-jpeg75"},
    "cifar10-jpeg75-lt200": {"dataset": "cifar10-jpeg75", "imbalance": 200},
    # the stand-in for CIFAR-100-LT (the paper's IF for Fig. 3 is not stated; 100 is this project's choice)
    "tiny-imagenet-lt100": {"dataset": "tiny-imagenet", "imbalance": 100, "resize": 32},
}


def is_long_tailed(fields: dict) -> bool:
    return fields.get("train_counts") is not None or float(fields.get("imbalance", 1)) != 1


def dataset_alpha(fields: dict) -> float:
    """PAPER.md §2: α = 2 on long-tailed data, 1 on balanced data (used for W and the 'S at the dataset's α')."""
    return 2.0 if is_long_tailed(fields) else 1.0


def s_column(alpha: float) -> str:
    return f"S_a{alpha:g}"


def measure_columns(alphas: Iterable[float] = ALPHAS) -> list[str]:
    """Table 1's columns, in its order: N, E_n, W, S′, S at every α."""
    return ["N", "E_n", "W", "S_prime", *[s_column(a) for a in alphas]]


def measure_label(column: str) -> str:
    if column.startswith("S_a"):
        return f"S α={column[3:]}"
    return {"S_prime": "S′", "E_n": "E_n"}.get(column, column)


# ---------------------------------------------------------------------------------------------------------
# per-class measures


def effective_number(n, beta: float = BETA) -> np.ndarray:
    """Cui et al.'s effective number (1 − β^n)/(1 − β), β in [0, 1); n = 0 gives 0."""
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    n = np.asarray(n, dtype=np.float64)
    if beta == 0.0:
        return np.where(n > 0, 1.0, 0.0)
    return np.where(n > 0, -np.expm1(np.maximum(n, 1) * math.log(beta)) / (1.0 - beta), 0.0)


def class_measures(volumes, centers, counts, *, alphas: Sequence[float] = ALPHAS, beta: float = BETA,
                   w_alpha: float = 1.0) -> pd.DataFrame:
    """One row per class: N, E_n, volume, W (at ``w_alpha``), S′ and S at every α (PAPER.md §2)."""
    volumes = torch.as_tensor(volumes, dtype=torch.float64)
    centers = torch.as_tensor(centers, dtype=torch.float64)
    counts = np.asarray(counts, dtype=np.int64)
    s_prime, w, _ = scale.imbalance(volumes, centers, w_alpha)
    frame = pd.DataFrame({"class": np.arange(len(counts)), "N": counts, "E_n": effective_number(counts, beta),
                          "volume": volumes.cpu().numpy(), "W": w.cpu().numpy(), "S_prime": s_prime.cpu().numpy()})
    for a in alphas:
        frame[s_column(a)] = scale.imbalance(volumes, centers, a)[2].cpu().numpy()
    frame["beta"], frame["w_alpha"] = beta, w_alpha
    return frame


def sample_measures(subset: pipeline.TrainingImages, *, pixel_scale: float = 1.0, size: int = 16,
                    alphas: Sequence[float] = ALPHAS, beta: float = BETA, w_alpha: float = 1.0) -> pd.DataFrame:
    """Table 1's measures from the sample volume (pixels resized to size×size×3) of a training subset
    (:func:`semscale.pipeline.training_images`, on the CPU)."""
    C = len(subset.classes)
    vol = scale.sample_volume(subset.images, subset.labels, C, size, pixel_scale=pixel_scale)
    centers = scale.class_centers(scale.sample_features(subset.images, size, pixel_scale=pixel_scale), subset.labels, C)
    counts = np.bincount(subset.labels.numpy(), minlength=C)
    frame = class_measures(vol, centers, counts, alphas=alphas, beta=beta, w_alpha=w_alpha)
    frame.insert(1, "name", [subset.classes[c] for c in frame["class"]])
    frame.insert(0, "dataset_variant", subset.variant)
    frame["source"] = f"sample, pixels x{pixel_scale:g}"
    frame["pixel_scale"], frame["subset_sha256"] = pixel_scale, subset.subset.sha256
    return frame


def feature_measures(run_dir, *, alphas: Sequence[float] = ALPHAS, beta: float = BETA, w_alpha: float = 1.0) -> pd.DataFrame:
    """The same measures on a trained run's 64-d pooled features of its training subset (final weights, eval mode)."""
    rf = features.extract(run_dir, split="train")
    C = len(rf.classes)
    vol = scale.class_volumes(rf.pooled, rf.labels, C)
    centers = scale.class_centers(rf.pooled, rf.labels, C)
    counts = np.bincount(rf.labels.numpy(), minlength=C)
    frame = class_measures(vol, centers, counts, alphas=alphas, beta=beta, w_alpha=w_alpha)
    frame.insert(1, "name", list(rf.classes))
    frame["source"], frame["run"] = "feature (64-d pool)", rf.run
    return frame


# ---------------------------------------------------------------------------------------------------------
# correlations with intervals


def correlation_table(measures: pd.DataFrame, accuracy: pd.DataFrame, columns: Sequence[str], *,
                      methods: Sequence[str] = stats.CORRELATIONS, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Tidy Table 1 for one (dataset, model, source): a row per measure and method.

    measures: per-class rows with ``class`` and the measure columns, plus ``seed`` if they vary by seed.
    accuracy: per-class rows with ``seed``, ``class``, ``accuracy``.
    """
    acc = accuracy.pivot_table(index="seed", columns="class", values="accuracy")
    rows = []
    for col in columns:
        if "seed" in measures.columns and measures["seed"].notna().all():
            m = measures.pivot_table(index="seed", columns="class", values=col).loc[acc.index, acc.columns].to_numpy()
        else:
            m = measures.set_index("class")[col].loc[acc.columns].to_numpy()
        for method in methods:
            iv = stats.bootstrap_corr(m, acc.to_numpy(), method, n_boot=n_boot, level=level, seed=seed)
            rows.append({"measure": col, "label": measure_label(col), "method": method, **asdict(iv), "text": iv.text()})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------
# small helpers for the notebook

def accuracy_matrix(per_class: pd.DataFrame, **where) -> pd.DataFrame:
    """Per-class test accuracy as a (seed × class) frame for the rows matching ``where`` (column = value)."""
    rows = per_class
    for column, value in where.items():
        rows = rows[rows[column] == value]
    if rows.empty:
        raise KeyError(f"no per-class rows for {where}")
    return rows.pivot_table(index="seed", columns="class", values="accuracy")
