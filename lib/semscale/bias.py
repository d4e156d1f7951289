"""Semantic scale against model bias (notebook 02; PAPER.md §2, §4.2 and §6).

Per class, on exactly the training subset a network saw: N, the effective number E_n = (1 − β^N)/(1 − β)
(β = 0.9999, PAPER.md §6), the volume, W, S′ and S = S′ ⊙ W for several α, measured in pixel space (the
paper's sample volume, d = 768) or on a trained network's 64-d pooled features. Then the statistics of
Table 1 and Figs 3–4:

* ``bootstrap_corr``: Pearson or Spearman correlation across classes between a measure and the seed-mean
  per-class accuracy, with a percentile bootstrap interval that resamples classes and seeds together. A
  measure that is constant across classes (N and E_n on balanced data) has no correlation: ``defined`` is
  False and the numbers are NaN.
* ``kendalls_w`` and ``mean_pairwise_spearman``: agreement of per-class rankings across raters
  (architectures, subset sizes, seeds); ``rank_agreement`` adds a bootstrap interval over classes.
* ``incremental_r2``: how much a measure (S′) adds to log N in a least-squares fit of accuracy, with the
  partial correlation; ``bootstrap_incremental_r2`` gives its interval.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

from . import data, pipeline, scale
from .config import TrainConfig

BETA = 0.9999
ALPHAS = (1.0, 1.5, 2.0, 2.5, 3.0)
METHODS = ("pearson", "spearman")

#: The study's dataset variants as TrainConfig fields (names follow ``pipeline.training_subset``).
DATASETS: dict[str, dict] = {
    "mnist": {"dataset": "mnist"},
    "mnist-lt-1": {"dataset": "mnist", "train_counts": data.MNIST_LT_1},
    "mnist-lt-2": {"dataset": "mnist", "train_counts": data.MNIST_LT_2},
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


@dataclass
class TrainingSubset:
    images: torch.Tensor  # uint8 (N, C, H, W), after the config's resize
    labels: torch.Tensor
    classes: tuple[str, ...]
    variant: str
    sha256: str


def training_subset(fields: dict | TrainConfig) -> TrainingSubset:
    """The images a run with these config fields trains on (the same subset and resize as the trainer)."""
    config = fields if isinstance(fields, TrainConfig) else TrainConfig(**{"progress": False, **fields})
    split = data.load(config.dataset, "train", progress=False)
    subset, _, variant = pipeline.training_subset(config, split.labels)
    idx = torch.as_tensor(subset.indices)
    images = split.images[idx]
    if config.resize is not None:  # as the trainer does (pipeline.load_data), before the sample volume's 16×16
        images = pipeline._resize(images, config.resize)
        variant += f"-{config.resize}px"
    return TrainingSubset(images, split.labels[idx], split.classes, variant, subset.sha256)


def sample_measures(subset: TrainingSubset, *, pixel_scale: float = 1.0, size: int = 16,
                    alphas: Sequence[float] = ALPHAS, beta: float = BETA, w_alpha: float = 1.0) -> pd.DataFrame:
    """Table 1's measures from the sample volume (pixels resized to size×size×3) of a training subset."""
    C = len(subset.classes)
    vol = scale.sample_volume(subset.images, subset.labels, C, size, pixel_scale=pixel_scale)
    centers = scale.class_centers(scale.sample_features(subset.images, size, pixel_scale=pixel_scale), subset.labels, C)
    counts = np.bincount(subset.labels.numpy(), minlength=C)
    frame = class_measures(vol, centers, counts, alphas=alphas, beta=beta, w_alpha=w_alpha)
    frame.insert(1, "name", [subset.classes[c] for c in frame["class"]])
    frame.insert(0, "dataset_variant", subset.variant)
    frame["source"] = f"sample, pixels x{pixel_scale:g}"
    frame["pixel_scale"], frame["subset_sha256"] = pixel_scale, subset.sha256
    return frame


def feature_measures(run_dir, *, alphas: Sequence[float] = ALPHAS, beta: float = BETA, w_alpha: float = 1.0) -> pd.DataFrame:
    """The same measures on a trained run's 64-d pooled features of its training subset (final weights, eval mode)."""
    from . import features

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


def _rowwise_corr(x: np.ndarray, y: np.ndarray, method: str) -> np.ndarray:
    """Correlation of each row of x with the same row of y (B, C); NaN where either row is constant."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    x, y = np.atleast_2d(np.asarray(x, dtype=np.float64)), np.atleast_2d(np.asarray(y, dtype=np.float64))
    constant = (np.ptp(x, axis=1) == 0) | (np.ptp(y, axis=1) == 0)
    if method == "spearman":
        x, y = stats.rankdata(x, axis=1), stats.rankdata(y, axis=1)
    xc, yc = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=1) / np.sqrt((xc**2).sum(axis=1) * (yc**2).sum(axis=1))
    r = np.clip(r, -1.0, 1.0)
    r[constant] = np.nan
    return r


def percentile_interval(values, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of ``values`` (a bootstrap's replicates); NaNs when empty."""
    if len(values) == 0:
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def corr(x, y, method: str = "pearson") -> float:
    """Pearson or Spearman correlation; NaN (undefined) when x or y is constant."""
    return float(_rowwise_corr(x, y, method)[0])


@dataclass
class Interval:
    estimate: float
    low: float
    high: float
    defined: bool
    n_classes: int
    n_seeds: int
    n_boot: int

    def text(self, digits: int = 2) -> str:
        if not self.defined:
            return "undefined"
        return f"{self.estimate:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _as_seed_matrix(values, n_seeds: int) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return np.broadcast_to(values, (n_seeds, values.shape[-1])) if values.ndim == 1 else values


def bootstrap_corr(measure, accuracy, method: str = "pearson", *, n_boot: int = 2000, level: float = 0.95,
                   seed: int = 0) -> Interval:
    """Correlation across classes of ``measure`` with the seed-mean ``accuracy``, with a bootstrap interval.

    accuracy: (seeds, classes); measure: (classes,) or (seeds, classes) (e.g. feature volumes, one per network).
    Each replicate draws classes and seeds with replacement and correlates the seed means; replicates whose
    resampled measure is constant are dropped. A measure constant across classes is ``defined=False``.
    """
    acc = np.atleast_2d(np.asarray(accuracy, dtype=np.float64))
    S, C = acc.shape
    m = _as_seed_matrix(measure, S)
    if m.shape != (S, C):
        raise ValueError(f"measure must be ({C},) or ({S}, {C}), got {m.shape}")
    estimate = corr(m.mean(axis=0), acc.mean(axis=0), method)
    if not math.isfinite(estimate):
        return Interval(math.nan, math.nan, math.nan, False, C, S, n_boot)
    rng = np.random.default_rng(seed)
    s_idx = rng.integers(0, S, size=(n_boot, S))
    c_idx = rng.integers(0, C, size=(n_boot, C))
    m_boot = m[s_idx[:, :, None], c_idx[:, None, :]].mean(axis=1)  # (B, C)
    a_boot = acc[s_idx[:, :, None], c_idx[:, None, :]].mean(axis=1)
    r = _rowwise_corr(m_boot, a_boot, method)
    low, high = percentile_interval(r[np.isfinite(r)], level)
    return Interval(estimate, low, high, True, C, S, n_boot)


def correlation_table(measures: pd.DataFrame, accuracy: pd.DataFrame, columns: Sequence[str], *,
                      methods: Sequence[str] = METHODS, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
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
            iv = bootstrap_corr(m, acc.to_numpy(), method, n_boot=n_boot, level=level, seed=seed)
            rows.append({"measure": col, "label": measure_label(col), "method": method, **asdict(iv), "text": iv.text()})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------
# rank agreement


def kendalls_w(scores) -> float:
    """Kendall's coefficient of concordance of ``scores`` (raters, items), ties averaged and corrected.

    1: every rater orders the items the same way; 0: no agreement (e.g. two raters in reverse order).
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    m, n = scores.shape
    if m < 2 or n < 2:
        raise ValueError(f"Kendall's W needs at least 2 raters and 2 items, got {m} x {n}")
    ranks = stats.rankdata(scores, axis=1)
    R = ranks.sum(axis=0)
    S = ((R - R.mean()) ** 2).sum()
    ties = 0.0
    for row in ranks:
        _, t = np.unique(row, return_counts=True)
        ties += (t**3 - t).sum()
    denom = m**2 * (n**3 - n) - m * ties
    return float(12 * S / denom) if denom > 0 else math.nan


def friedman_p(w: float, m: int, n: int) -> float:
    """p-value of Kendall's W under no agreement (Friedman's χ² = m(n − 1)W, n − 1 degrees of freedom)."""
    return float(stats.chi2.sf(m * (n - 1) * w, n - 1))


def mean_pairwise_spearman(scores) -> float:
    """Mean Spearman correlation over all pairs of raters (rows)."""
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    m = scores.shape[0]
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
    if not pairs:
        raise ValueError("need at least 2 raters")
    x = np.stack([scores[i] for i, _ in pairs])
    y = np.stack([scores[j] for _, j in pairs])
    return float(np.nanmean(_rowwise_corr(x, y, "spearman")))


def rank_agreement(scores, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """Kendall's W (with Friedman's p) and the mean pairwise Spearman with a bootstrap interval over items.

    Resampled items carry duplicates (tied ranks), which pulls the interval up a little; the p-value is exact
    for the items as given.
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    m, n = scores.shape
    w = kendalls_w(scores)
    rng = np.random.default_rng(seed)
    boot_w, boot_r = [], []
    for _ in range(n_boot):
        sample = scores[:, rng.integers(0, n, n)]
        if np.all(np.ptp(sample, axis=1) > 0):
            boot_w.append(kendalls_w(sample))
            boot_r.append(mean_pairwise_spearman(sample))
    wl, wh = percentile_interval(boot_w, level)
    rl, rh = percentile_interval(boot_r, level)
    return {"raters": m, "items": n, "kendalls_w": w, "w_low": wl, "w_high": wh,
            "friedman_p": friedman_p(w, m, n), "mean_spearman": mean_pairwise_spearman(scores),
            "spearman_low": rl, "spearman_high": rh, "n_boot": n_boot}


# ---------------------------------------------------------------------------------------------------------
# incremental R²


def _design(columns) -> np.ndarray:
    """Intercept plus the non-constant columns of ``columns`` ((n,) or (n, k))."""
    X = np.asarray(columns, dtype=np.float64)
    X = X[:, None] if X.ndim == 1 else X
    keep = np.ptp(X, axis=0) > 0 if X.shape[1] else np.zeros(0, dtype=bool)
    return np.column_stack([np.ones(len(X)), X[:, keep]])


def r_squared(y, columns) -> float:
    """R² of the least-squares fit of y on an intercept and the non-constant ``columns``."""
    y = np.asarray(y, dtype=np.float64)
    X = _design(columns)
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    total = ((y - y.mean()) ** 2).sum()
    return float(1 - (resid**2).sum() / total) if total > 0 else math.nan


def incremental_r2(y, base, extra) -> dict:
    """What ``extra`` adds to ``base`` in explaining y: R² of each model, ΔR² and the partial correlation.

    partial_r is the correlation of y and ``extra`` (one column) after both are regressed on ``base``;
    partial_r² = ΔR² / (1 − R²_base).
    """
    y = np.asarray(y, dtype=np.float64)
    base = np.asarray(base, dtype=np.float64)
    base = base[:, None] if base.ndim == 1 else base
    extra = np.asarray(extra, dtype=np.float64)
    r2_base = r_squared(y, base)
    r2_full = r_squared(y, np.column_stack([base, extra]))
    Xb = _design(base)
    res_y = y - Xb @ np.linalg.lstsq(Xb, y, rcond=None)[0]
    res_x = extra - Xb @ np.linalg.lstsq(Xb, extra, rcond=None)[0]
    partial = corr(res_x, res_y) if extra.ndim == 1 else math.nan
    return {"r2_base": r2_base, "r2_full": r2_full, "delta_r2": r2_full - r2_base, "partial_r": partial}


def bootstrap_incremental_r2(accuracy, base, extra, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """``incremental_r2`` of the seed-mean accuracy, with bootstrap intervals over classes and seeds.

    accuracy: (seeds, classes); base: (classes,) or (classes, k); extra: (classes,).
    """
    acc = np.atleast_2d(np.asarray(accuracy, dtype=np.float64))
    S, C = acc.shape
    base = np.asarray(base, dtype=np.float64)
    base = base[:, None] if base.ndim == 1 else base
    extra = np.asarray(extra, dtype=np.float64)
    point = incremental_r2(acc.mean(axis=0), base, extra)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        c = rng.integers(0, C, C)
        s = rng.integers(0, S, S)
        if np.ptp(extra[c]) == 0:
            continue
        draws.append(incremental_r2(acc[np.ix_(s, c)].mean(axis=0), base[c], extra[c]))
    out = dict(point, n_classes=C, n_seeds=S, n_boot=n_boot)
    for key in ("delta_r2", "partial_r"):
        vals = np.array([d[key] for d in draws])
        out[f"{key}_low"], out[f"{key}_high"] = percentile_interval(vals[np.isfinite(vals)], level)
    return out


# ---------------------------------------------------------------------------------------------------------
# the paper's numbers and small helpers for the notebook

#: Table 1 of the paper (PAPER.md §4.2): Pearson r between per-class accuracy and each measure.
PAPER_TABLE1 = pd.DataFrame(
    [["CIFAR-10-LT (IF 200)", "ResNet-18", .8346, .8664, .2957, .8688, .8456, .9603, .9553, .9398, .9269],
     ["CIFAR-10-LT (IF 200)", "ResNet-34", .7938, .8476, .3186, .9426, .7950, .9678, .9884, .9854, .9796],
     ["CIFAR-10", "ResNet-18", .0950, .0950, .1743, .5433, .7850, .7250, .6644, .6060, .5607],
     ["CIFAR-10", "ResNet-34", .1502, .1502, .2075, .5750, .8056, .7442, .6870, .6465, .5906]],
    columns=["data", "model", *measure_columns(ALPHAS)])
#: our stand-ins for the paper's datasets in Table 1
PAPER_COUNTERPART = {"cifar10-jpeg75-lt200": "CIFAR-10-LT (IF 200)", "cifar10-jpeg75": "CIFAR-10"}


def accuracy_matrix(per_class: pd.DataFrame, **where) -> pd.DataFrame:
    """Per-class test accuracy as a (seed × class) frame for the rows matching ``where`` (column = value)."""
    rows = per_class
    for column, value in where.items():
        rows = rows[rows[column] == value]
    if rows.empty:
        raise KeyError(f"no per-class rows for {where}")
    return rows.pivot_table(index="seed", columns="class", values="accuracy")


def fit_line(x, y) -> tuple[float, float] | None:
    """Least-squares slope and intercept, or None when x is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if np.ptp(x) == 0:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)
