"""Seeded training subsets, each a :class:`Subset` (indices and the sha256 of the indices as little-endian int64).

* :func:`long_tailed_indices` reproduces LDAM-DRW's ``IMBALANCECIFAR`` subsets exactly (exponential or step
  profile, ``LT_PROFILES``); :func:`default_n_max` picks its largest class size;
* :func:`per_class_indices` takes explicit per-class counts (e.g. :data:`MNIST_LT_1`);
* :func:`nested_balanced_indices` gives nested sample-balanced subsets (every larger one holds every smaller one);
* :func:`heldout_indices` draws a balanced split of the training images a subset leaves unused (CDB's difficulty,
  the second stages' τ, MW-Net's meta set).

Every function takes labels only (a 1-d integer array or tensor) and never touches the images.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, NamedTuple, Sequence

import numpy as np
import torch

#: Class counts of the two long-tailed MNIST variants of the paper (classes 0..9).
MNIST_LT_1 = (5923, 3590, 2940, 2518, 2256, 1972, 1700, 1300, 1100, 900)
MNIST_LT_2 = (5923, 3090, 2540, 1818, 1356, 972, 484, 272, 122, 74)

LT_PROFILES = ("exp", "step")


class Subset(NamedTuple):
    indices: np.ndarray  # int64
    sha256: str  # hex digest of np.asarray(indices, dtype="<i8").tobytes()


def indices_sha256(indices) -> str:
    return hashlib.sha256(np.asarray(indices, dtype="<i8").tobytes()).hexdigest()


def make_subset(indices) -> Subset:
    idx = np.asarray(indices, dtype=np.int64)
    return Subset(idx, indices_sha256(idx))


def _labels_np(labels) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be a 1-d integer array, got shape {arr.shape} dtype {arr.dtype}")
    return arr.astype(np.int64)


def _check_if(imbalance_factor) -> float:
    if not isinstance(imbalance_factor, (int, float, np.integer, np.floating)) or not imbalance_factor >= 1:
        raise ValueError(f"imbalance_factor must be a number >= 1 (n_max / n_min, e.g. 10, 50, 100, 200), got {imbalance_factor!r}")
    return float(imbalance_factor)


def long_tailed_counts(num_classes: int, imbalance_factor: float, n_max: float, profile: str = "exp") -> list[int]:
    """Per-class counts of LDAM-DRW's ``get_img_num_per_cls`` with ``imb_factor = 1 / imbalance_factor``.

    exp: ``int(n_max * imb_factor ** (i / (C - 1)))``; step: the first ``C // 2`` classes ``int(n_max)``,
    the rest ``int(n_max * imb_factor)``.
    """
    if profile not in LT_PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid: {', '.join(LT_PROFILES)}")
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not n_max > 0:
        raise ValueError(f"n_max must be > 0, got {n_max!r}")
    return [int(n_max * share) for share in _long_tailed_shares(num_classes, imbalance_factor, profile)]


def _long_tailed_shares(num_classes: int, imbalance_factor: float, profile: str) -> list[float]:
    """n_i / n_max per class, computed as LDAM does so that ``int(n_max * share)`` matches it bit for bit."""
    imb_factor = 1 / _check_if(imbalance_factor)  # LDAM's imb_factor (e.g. 0.01 == 1 / 100 exactly)
    if profile == "exp":
        return [imb_factor ** (i / (num_classes - 1.0)) for i in range(num_classes)]
    head = num_classes // 2
    return [1.0] * head + [imb_factor] * (num_classes - head)


def _ldam_select(labels: np.ndarray, counts: Sequence[int], seed: int) -> np.ndarray:
    """LDAM's gen_imbalanced_data: seed the global RNG, then per class shuffle and keep a prefix."""
    classes = np.unique(labels)
    if len(counts) != len(classes):
        raise ValueError(f"{len(counts)} counts given for {len(classes)} classes (counts follow the sorted class labels)")
    for c, n in zip(classes, counts):
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"counts must be non-negative integers, got {n!r} for class {c}")
        have = int((labels == c).sum())
        if n > have:
            raise ValueError(f"class {c} has {have} samples, {n} asked")
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        chosen = []
        for c, n in zip(classes, counts):
            idx = np.where(labels == c)[0]
            np.random.shuffle(idx)
            chosen.append(idx[:n])
    finally:
        np.random.set_state(state)
    return np.concatenate(chosen).astype(np.int64)


def default_n_max(labels, imbalance_factor: float, profile: str = "exp") -> float:
    """LDAM's ``len(labels) / C``, lowered where needed to the largest n_max every class can supply.

    On balanced data (CIFAR, Tiny-ImageNet) this is LDAM's value, so subsets match LDAM's bit for bit;
    on MNIST, whose class 0 has 5923 < 6000 images, it is 5923.
    """
    labels = _labels_np(labels)
    available = np.unique(labels, return_counts=True)[1]
    shares = np.array(_long_tailed_shares(len(available), imbalance_factor, profile))
    return float(min(len(labels) / len(available), np.min(available / shares)))


def long_tailed_indices(labels, imbalance_factor: float, n_max: float | None = None, profile: str = "exp", seed: int = 0,
                        allow_empty: bool = False) -> Subset:
    """LDAM-DRW's long-tailed subset (IMBALANCECIFAR10/100 with ``rand_number=seed``), bit for bit.

    ``n_max`` defaults to :func:`default_n_max` (LDAM's ``len(labels) / C`` on balanced data).
    Indices are concatenated in class order. An imbalance so large that a class gets no image is a ValueError
    naming the largest the data allow (:func:`largest_imbalance`); ``allow_empty=True`` gives LDAM's subset anyway.
    """
    labels = _labels_np(labels)
    num_classes = len(np.unique(labels))
    given = n_max
    if n_max is None:
        n_max = default_n_max(labels, imbalance_factor, profile)
    counts = long_tailed_counts(num_classes, imbalance_factor, n_max, profile)
    if min(counts) < 1 and not allow_empty:
        empty = [c for c, n in enumerate(counts) if n < 1]
        raise ValueError(f"imbalance {imbalance_factor:g} leaves class(es) {empty} without an image (n_max {n_max:g}); "
                         f"the largest imbalance these data allow is {largest_imbalance(labels, given, profile):g}")
    return make_subset(_ldam_select(labels, counts, seed))


def largest_imbalance(labels, n_max: float | None = None, profile: str = "exp") -> int:
    """The largest integer imbalance factor whose long-tailed subset of ``labels`` keeps an image in every class."""
    labels = _labels_np(labels)
    num_classes = len(np.unique(labels))

    def fits(factor: int) -> bool:
        top = default_n_max(labels, factor, profile) if n_max is None else n_max
        return min(long_tailed_counts(num_classes, factor, top, profile)) >= 1

    factor = max(1, int(default_n_max(labels, 1e9, profile) if n_max is None else n_max))  # the tail gets n_max / IF
    while factor > 1 and not fits(factor):
        factor -= 1
    return factor


def per_class_indices(labels, counts: Sequence[int], seed: int = 0) -> Subset:
    """``counts[i]`` samples of the i-th class (sorted labels), chosen as in :func:`long_tailed_indices`."""
    return make_subset(_ldam_select(_labels_np(labels), list(counts), seed))


def nested_balanced_indices(labels, sizes: Iterable[int], seed: int = 0) -> dict[int, Subset]:
    """``{m: Subset}`` with ``m`` samples per class; each class uses one seeded permutation, so
    every larger subset contains every smaller one. Indices are concatenated in class order."""
    labels = _labels_np(labels)
    sizes = list(sizes)
    if not sizes:
        raise ValueError("sizes must list at least one per-class size")
    classes = np.unique(labels)
    smallest = min(int((labels == c).sum()) for c in classes)
    for m in sizes:
        if not isinstance(m, (int, np.integer)) or not 1 <= m <= smallest:
            raise ValueError(f"sizes must be integers in 1..{smallest} (the smallest class), got {m!r}")
    rng = np.random.default_rng(seed)
    perms = [rng.permutation(np.where(labels == c)[0]) for c in classes]
    return {int(m): make_subset(np.concatenate([p[:m] for p in perms])) for m in sorted(set(int(m) for m in sizes))}


def heldout_indices(labels, subset_indices, per_class: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """A balanced split of ``per_class`` training images per class, drawn from the images the subset leaves unused.

    CDB's CIFAR-LT code holds out 25 training images per class before making the long-tailed subset
    (hitachi-rd-cv/CDB-loss, CIFAR-LT/cifar_train.py lines 157-160). Here the subset stays the same as every
    other method's, so the split is drawn from the unused images; a class whose subset uses all but fewer than
    ``per_class`` of its images (the head class at n_max) is filled up with its own training images, and how
    many is returned per class (recorded in run.json). Returns (indices, from_subset counts).
    """
    labels = np.asarray(labels)
    used = np.zeros(len(labels), dtype=bool)
    used[np.asarray(subset_indices)] = True
    rng = np.random.default_rng([seed, 0xCDB])  # its own stream, apart from the subset's
    chosen, from_subset = [], []
    for c in range(int(labels.max()) + 1):
        unused = rng.permutation(np.flatnonzero((labels == c) & ~used))[:per_class]
        fill = per_class - len(unused)
        if fill:
            unused = np.concatenate([unused, rng.permutation(np.flatnonzero((labels == c) & used))[:fill]])
        chosen.append(unused)
        from_subset.append(int(fill))
    return np.concatenate(chosen), from_subset
