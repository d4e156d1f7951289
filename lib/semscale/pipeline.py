"""The training data on the device: subset selection, held-out split, batched augmentation and the batch loader.

* The whole training subset and the test set live on the training device as uint8. The subset is LDAM's
  long-tailed one (``imbalance``, ``profile``, ``subset_seed``), explicit per-class counts (``train_counts``,
  e.g. MNIST-LT-1) or ``train_per_class`` images per class (nested across sizes).
* ``resize`` resizes every image once at load time (antialiased bilinear, back to uint8), e.g. Tiny-ImageNet
  64 -> 32. Normalisation uses fixed per-channel constants or the training subset's mean/std.
* Each epoch draws its permutation, crops and flips from one ``torch.Generator`` on the device seeded from
  (seed, epoch), so a resumed run sees the same batches; ``batches`` yields ``(ids, x, y)`` from any batch
  index on. The last partial batch is kept (as LDAM).
* Re-sampling (``sampler``; Buda et al. 2018, the square-root form of Mahajan et al. 2018 / Kang et al. 2020):
  instead of the permutation, the epoch draws N = subset-size sample ids with replacement from the epoch's
  generator, each with probability ∝ n_c^(−1) (``class-balanced``: every class equally likely) or n_c^(−1/2)
  (``sqrt``: class c drawn ∝ √n_c). While the feature pool is kept (every run unless ``track_pool=False``; DSB
  needs it), epoch 1 is the plain permutation, so that the pool holds every sample before any weighting;
  re-sampling starts at epoch 2 (``epoch_order``). Draws come from the same generator as crops and flips, so
  checkpoint/resume stays exact; a sample drawn twice in one batch leaves its last feature in the pool
  (``FeaturePool.update(..., duplicates=True)``).
* CDB's difficulty is measured on a balanced held-out split of training images that the subset leaves unused
  (``subsets.heldout_indices``), never on the test set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from . import data, subsets
from .config import FIXED_NORMALIZATION, ConfigError, TrainConfig


@dataclass
class TrainData:
    train_images: torch.Tensor  # uint8 (N, C, H, W) on the device, in subset order
    train_labels: torch.Tensor  # int64 (N,)
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    train_counts: np.ndarray  # (C,) int64
    subset: subsets.Subset
    n_max: float | None  # of a long-tailed subset
    variant: str  # e.g. "mnist-lt100", "cifar10-jpeg75", "mnist-lt-1", "cifar10-m500"
    mean: torch.Tensor  # (1, C, 1, 1) float32
    std: torch.Tensor
    heldout_images: torch.Tensor | None = None  # CDB's balanced held-out split, uint8 on the device
    heldout_labels: torch.Tensor | None = None
    heldout_from_subset: list[int] | None = None  # per class, held-out images taken from the training subset
    meta_images: torch.Tensor | None = None  # MWN's balanced meta set (the same draw, ``mwn_meta_per_class`` each)
    meta_labels: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def select_subset(config: TrainConfig, labels: torch.Tensor) -> tuple[subsets.Subset, float | None, str]:
    """The training subset of ``config`` over the training split's ``labels``, its n_max if long-tailed, and its
    dataset variant's name (e.g. ``mnist-lt100``, ``mnist-lt-1``, ``cifar10-jpeg75-m500``)."""
    c = config
    try:
        if c.train_counts is not None:
            named = {subsets.MNIST_LT_1: "lt-1", subsets.MNIST_LT_2: "lt-2"}
            suffix = named.get(c.train_counts, "counts") if c.dataset == "mnist" else "counts"
            return subsets.per_class_indices(labels, c.train_counts, seed=c.subset_seed), None, f"{c.dataset}-{suffix}"
        if c.train_per_class is not None:
            nested = subsets.nested_balanced_indices(labels, [c.train_per_class], seed=c.subset_seed)
            return nested[c.train_per_class], None, f"{c.dataset}-m{c.train_per_class}"
        if c.imbalance != 1:
            n_max = subsets.default_n_max(labels, c.imbalance, c.profile)
            subset = subsets.long_tailed_indices(labels, c.imbalance, n_max, profile=c.profile, seed=c.subset_seed)
            return subset, n_max, f"{c.dataset}-lt{c.imbalance:g}" + ("-step" if c.profile == "step" else "")
    except ValueError as e:
        raise ConfigError(f"cannot make the training subset of {c.dataset}: {e}") from e
    return subsets.make_subset(np.arange(len(labels))), None, c.dataset


def resize_images(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """uint8 images resized to size×size (antialiased bilinear), back to uint8."""
    out = torch.empty(images.shape[0], images.shape[1], size, size, dtype=torch.uint8, device=images.device)
    for s in range(0, images.shape[0], chunk):
        x = F.interpolate(images[s:s + chunk].float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[s:s + chunk] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (population) std of uint8 images scaled to [0, 1], in float64."""
    total = torch.zeros(images.shape[1], dtype=torch.float64, device=images.device)
    squares = torch.zeros_like(total)
    for s in range(0, images.shape[0], chunk):
        x = images[s:s + chunk].to(torch.float64) / 255
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
    n = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / n
    return mean, (squares / n - mean.square()).clamp_min(0).sqrt()


@dataclass
class TrainingImages:
    """The training subset of a config: uint8 images (after ``resize``) and labels on one device."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    subset: subsets.Subset
    n_max: float | None
    variant: str  # with "-<size>px" when resized


def _resized(images: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    return images if config.resize is None else resize_images(images, config.resize)


def training_images(config: TrainConfig, device: torch.device = torch.device("cpu"),
                    train: data.Split | None = None) -> TrainingImages:
    """The images a run of ``config`` trains on (the same subset, resize and variant name as :func:`load_data`)."""
    train = data.load(config.dataset, "train") if train is None else train
    subset, n_max, variant = select_subset(config, train.labels)
    index = torch.from_numpy(subset.indices)
    images = _resized(train.images[index].to(device), config)
    variant += f"-{config.resize}px" if config.resize is not None else ""
    return TrainingImages(images, train.labels[index].to(device), train.classes, subset, n_max, variant)


def _heldout(train: data.Split, subset: subsets.Subset, config: TrainConfig, device: torch.device,
             per_class: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The held-out split of ``subsets.heldout_indices`` as uint8 images (resized like the training images) and labels."""
    index, from_subset = subsets.heldout_indices(train.labels.numpy(), subset.indices, per_class, config.subset_seed)
    index = torch.from_numpy(index)
    return _resized(train.images[index].to(device), config), train.labels[index].to(device), from_subset


def load_data(config: TrainConfig, device: torch.device, heldout: bool = False, meta: bool = False) -> TrainData:
    """Load both splits, select the training subset (and, with ``heldout``, the balanced held-out split of
    ``config.cdb_heldout`` images per class; with ``meta``, MWN's meta set of ``config.mwn_meta_per_class``)
    and move them to ``device`` as uint8."""
    train = data.load(config.dataset, "train")
    test = data.load(config.dataset, "test")
    chosen = training_images(config, device, train)
    held = held_labels = from_subset = meta_images = meta_labels = None
    if heldout:
        held, held_labels, from_subset = _heldout(train, chosen.subset, config, device, config.cdb_heldout)
    if meta:
        meta_images, meta_labels, _ = _heldout(train, chosen.subset, config, device, config.mwn_meta_per_class)
    if config.normalization == "fixed":
        mean, std = (torch.tensor(v, dtype=torch.float64, device=device) for v in FIXED_NORMALIZATION[config.dataset])
    else:
        mean, std = _channel_stats(chosen.images)
    counts = np.bincount(chosen.labels.cpu().numpy(), minlength=len(train.classes))
    return TrainData(chosen.images, chosen.labels, _resized(test.images.to(device), config), test.labels.to(device),
                     train.classes, counts, chosen.subset, chosen.n_max, chosen.variant, mean.float().view(1, -1, 1, 1),
                     std.float().view(1, -1, 1, 1), held, held_labels, from_subset, meta_images, meta_labels)


def load_run_data(config: TrainConfig, device: torch.device) -> TrainData:
    """:func:`load_data` with the extra splits ``config`` trains or evaluates with: the held-out split (CDB's
    difficulty, ``eval_heldout``), MWN's meta set."""
    return load_data(config, device, heldout=config.reweight == "cdb" or config.eval_heldout, meta=config.mwn)


# ---------------------------------------------------------------------------------------------------------
# augmentation (batched, on the device, drawn from the epoch's generator)


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """The generator of one epoch (permutation, crops, flips), seeded from (seed, epoch) only."""
    g = torch.Generator(device=device)
    g.manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))
    return g


def sampling_probabilities(labels: torch.Tensor, counts, sampler: str) -> torch.Tensor:
    """Per-sample draw probabilities (float64, sum 1) of ``sampler``: ∝ n_y^(−1) or n_y^(−1/2)."""
    n = torch.as_tensor(np.asarray(counts, dtype=np.float64), device=labels.device)[labels]
    power = {"class-balanced": 1.0, "sqrt": 0.5}[sampler]
    p = n.pow(-power)
    return p / p.sum()


def epoch_order(train_data: TrainData, config: TrainConfig, epoch: int, generator: torch.Generator,
                pool_kept: bool) -> torch.Tensor:
    """The epoch's sample ids: a permutation, or N draws with replacement under ``config.sampler``.

    With a sampler, epoch 1 is still the permutation while the feature pool is kept (``pool_kept``), so the pool
    is full before DSB weights anything.
    """
    n = len(train_data.train_labels)
    if config.sampler == "none" or (epoch == 1 and pool_kept):
        return torch.randperm(n, generator=generator, device=train_data.train_labels.device)
    p = sampling_probabilities(train_data.train_labels, train_data.train_counts, config.sampler)
    return torch.multinomial(p.float(), n, replacement=True, generator=generator)


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator, mode: str = "zeros") -> torch.Tensor:
    """Per image, a random H×W window of the image padded by ``padding`` on every side: with zeros, or by reflection
    (airbench's translation: a shift of up to ``padding`` pixels in each direction, reflect-padded)."""
    n, _, h, w = images.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=images.device)
    batch = torch.arange(n, device=images.device)[:, None, None]
    if mode == "zeros":
        padded = F.pad(images, (padding,) * 4)
        rows = (offsets[0, :, None] + torch.arange(h, device=images.device))[:, :, None]  # (n, h, 1)
        cols = (offsets[1, :, None] + torch.arange(w, device=images.device))[:, None, :]  # (n, 1, w)
        return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # gather (n, h, w, C) -> (n, C, h, w)
    rows = _reflect(offsets[0, :, None] - padding + torch.arange(h, device=images.device), h)[:, :, None]
    cols = _reflect(offsets[1, :, None] - padding + torch.arange(w, device=images.device), w)[:, None, :]
    return images.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices outside 0..size−1 mirrored back inside, without repeating the edge (F.pad's 'reflect')."""
    index = index.abs()
    return (size - 1) - ((size - 1) - index).abs()


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=generator, device=images.device) < 0.5
    return flip_where(images, flip)


def flip_where(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """The images whose ``flip`` is true, flipped horizontally."""
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def epoch_flips(config: TrainConfig, n: int, epoch: int, device: torch.device) -> torch.Tensor | None:
    """Alternating flip (airbench94.py lines 130-147): a seeded half of the ``n`` training images is flipped in odd
    epochs and the other half in even ones, so every image is seen both ways every two epochs. None unless
    ``flip_mode`` is alternating (and augmentation flips)."""
    if not (config.augment and config.flip and config.flip_mode == "alternating"):
        return None
    generator = epoch_generator(config.seed, 0, device)  # epoch 0: a stream of its own, the same every epoch
    return (torch.rand(n, generator=generator, device=device) < 0.5) ^ (epoch % 2 == 0)


def augment(images: torch.Tensor, config: TrainConfig, generator: torch.Generator,
            flips: torch.Tensor | None = None) -> torch.Tensor:
    """Crop (with the config's padding) and flip (randomly, or where ``flips`` says: :func:`epoch_flips`)."""
    if config.augment and config.crop_padding:
        images = random_crop(images, config.crop_padding, generator, config.pad_mode)
    if config.augment and config.flip:
        images = random_flip(images, generator) if flips is None else flip_where(images, flips)
    return images


def to_input(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
             memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """uint8 images -> normalised float32 network input."""
    x = images.to(torch.float32).div_(255).sub_(mean).div_(std)
    return x.contiguous(memory_format=memory_format)


def batches(train_data: TrainData, config: TrainConfig, order: torch.Tensor, generator: torch.Generator,
            start: int = 0, memory_format: torch.memory_format = torch.contiguous_format,
            flips: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(ids, x, y)`` of the epoch's batches from batch ``start`` on: sample ids, augmented normalised input, labels.

    ``generator`` must be where batch ``start`` left it (a resumed epoch restores its state).
    """
    for b in range(start, num_batches(len(order), config.batch_size)):
        ids = order[b * config.batch_size:(b + 1) * config.batch_size]
        images = augment(train_data.train_images[ids], config, generator, None if flips is None else flips[ids])
        yield ids, to_input(images, train_data.mean, train_data.std, memory_format), train_data.train_labels[ids]


def num_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)
