"""The training engine: one config dataclass, ``train``, ``run_seeds`` and the CLI ``python -m semscale.train``.

    python -m semscale.train --dataset mnist --imbalance 100 --model cnn --loss ce --dsb --epochs 2 --out runs/x
    python -m semscale.train --config exp.yaml --seeds 0 1 2 --out runs/y      # YAML values, flags override them
    python -m semscale.train ... --out runs/x --resume                          # continue from the checkpoint

Every ``TrainConfig`` field is a flag (``--batch-size 64``, ``--dsb/--no-dsb``, ``--resize none``). The defaults
are LDAM-DRW's CIFAR-LT protocol (PAPER.md §5): ResNet-32, 200 epochs, batch 128, SGD momentum 0.9, wd 2e-4,
lr 0.1 with the LDAM schedule, random crop (padding 4) and horizontal flip.

How it runs (the design in one place):

* Data: the whole training subset and the test set live on the training device as uint8; the subset is
  LDAM's long-tailed one (``imbalance``, ``profile``, ``subset_seed``), explicit per-class counts
  (``train_counts``, e.g. MNIST-LT-1) or ``train_per_class`` images per class (nested across sizes).
  Each epoch draws its permutation, crops and flips from one ``torch.Generator`` on the device seeded
  from (seed, epoch), so a resumed run sees the same batches. The last partial batch is kept (as LDAM).
  Augmentation (crop with zero padding, flip) is batched on the device; ``resize`` resizes every image
  once at load time (antialiased bilinear, back to uint8), e.g. Tiny-ImageNet 64 -> 32. Normalisation
  uses the training subset's per-channel mean/std (``normalization="subset"``) or the usual constants
  (``"fixed"``).
* Learning rate: a function of the epoch, set once at the start of each epoch (per-epoch granularity,
  exactly LDAM's ``adjust_learning_rate`` at 200 epochs; no scheduler state to save).
* DSB (PAPER.md §3, :mod:`semscale.pool`): the pool is kept for every run unless ``track_pool=False`` (it
  costs one small scatter per iteration and one scale computation per epoch), so per_class.csv and
  pool_history.csv carry S′, W, S and weights for baselines too; only ``dsb=True`` weights the loss.
* CDB gets the per-class accuracy of the training epoch just finished (running counts over the epoch's
  augmented batches, no test data involved); DRW gets ``set_epoch`` (0-based) before each epoch.
* No host sync inside an epoch: loss and per-class correct counts accumulate on the device and are read
  once per epoch. The progress bar counts images (rate = img/s) and shows the last epoch's loss/accuracy.
* On CUDA: bf16 autocast and channels_last (``bf16``, ``channels_last``), optional ``torch.compile``.
* Outputs under ``out_dir`` (atomic writes): run.json, epochs.csv, per_class.csv, pool_history.csv,
  model.pt (final weights); checkpoint.pt while the run is unfinished (every ``checkpoint_every`` epochs
  and on SIGINT/SIGTERM, which finish the current iteration, save and stop with exit status 128+signal).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import shlex
import signal
import sys
import threading
import time
import types
import typing
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import yaml
from tqdm.auto import tqdm

from . import data, losses, metrics, models, records
from .pool import FeaturePool, stage

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("ldam", "exponential", "cosine")
NORMALIZATIONS = ("subset", "fixed")
COMPILE_MODES = ("none", "default", "max-autotune-no-cudagraphs", "reduce-overhead")
CHOICES = {
    "dataset": data.DATASETS,
    "profile": data.PROFILES,
    "normalization": NORMALIZATIONS,
    "model": models.MODELS,
    "loss": losses.LOSSES,
    "reweight": losses.REWEIGHTS,
    "reduction": losses.REDUCTIONS,
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "compile": COMPILE_MODES,
}
# config field -> build_loss parameter (None = the loss's default; only valid for losses/reweights that have it)
LOSS_PARAM_FIELDS = {
    "focal_gamma": "gamma",
    "ldam_max_m": "max_m",
    "ldam_s": "s",
    "logit_tau": "tau",
    "cb_beta": "beta",
    "drw_fraction": "drw_fraction",
    "cdb_tau": "cdb_tau",
}
# fields that may differ when resuming: they change how the run is executed or logged, not what it computes
RESUMABLE_FIELDS = ("device", "compile", "progress", "checkpoint_every", "stop_after_epoch", "eval_every", "eval_batch_size")
FIXED_NORMALIZATION = {  # (mean, std) per channel
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),  # LDAM-DRW's constants
    "cifar100": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar10-jpeg75": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "tiny-imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet's
}
CHECKPOINT_FORMAT = 1


class ConfigError(ValueError):
    """An invalid configuration or combination; the message says what is valid."""


class TrainingInterrupted(RuntimeError):
    """The run stopped early (signal or ``stop_after_epoch``) after saving a checkpoint."""

    def __init__(self, message: str, out_dir: Path, signum: int | None):
        super().__init__(message)
        self.out_dir = out_dir
        self.signum = signum


def _opt(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything that defines a run; each field is also a CLI flag. Values are coerced and checked on creation."""

    dataset: str = field(metadata={"help": "dataset name"})
    # training subset
    imbalance: float = _opt(1.0, "imbalance factor n_max/n_min of the long-tailed subset; 1 = the full training set")
    profile: str = _opt("exp", "long-tailed profile")
    train_counts: tuple[int, ...] | None = _opt(None, "explicit per-class training counts (e.g. MNIST-LT-1); excludes --imbalance")
    train_per_class: int | None = _opt(None, "balanced subset with this many images per class (nested across sizes)")
    subset_seed: int = _opt(0, "seed of the subset selection (LDAM's rand_number)")
    # input pipeline
    augment: bool = _opt(True, "random crop and flip on the device (the paper's Sec 3 uses none)")
    crop_padding: int = _opt(4, "zero padding of the random crop (0: no crop)")
    flip: bool = _opt(True, "random horizontal flip")
    resize: int | None = _opt(None, "resize every image once to SIZE x SIZE (e.g. 32 for Tiny-ImageNet)")
    normalization: str = _opt("subset", "per-channel mean/std from the training subset or fixed constants")
    # model and loss
    model: str = _opt("resnet32", "network")
    normed_classifier: bool | None = _opt(None, "cosine classifier; default: what the loss needs (LDAM)")
    loss: str = _opt("ce", "loss")
    reweight: str = _opt("none", "the loss's own class reweighting")
    reduction: str = _opt("weighted_mean", "batch reduction of the weighted loss")
    focal_gamma: float | None = _opt(None, "focal loss gamma (default 1)")
    ldam_max_m: float | None = _opt(None, "LDAM largest margin (default 0.5)")
    ldam_s: float | None = _opt(None, "LDAM logit scale (default 30)")
    logit_tau: float | None = _opt(None, "logit-adjusted loss tau (default 1)")
    cb_beta: float | None = _opt(None, "class-balanced beta for cb/drw (default 0.9999)")
    drw_fraction: float | None = _opt(None, "DRW switches to CB weights at this fraction of the epochs (default 0.8)")
    cdb_tau: str | None = _opt(None, "CDB tau: 'dynamic', 'dynamic-v1' or a number (default dynamic)")
    # DSB
    dsb: bool = _opt(False, "weight the loss by 1/S from the feature pool (DSB)")
    dsb_stage_epochs: int = _opt(5, "n: epoch 1 fills the pool, 2..n refresh it, weighting from n+1")
    dsb_alpha: float | None = _opt(None, "alpha >= 1 of W = log2(alpha + W'); default 2 on long-tailed, 1 on balanced subsets")
    dsb_eps: float = _opt(1.0, "epsilon of the volume")
    track_pool: bool = _opt(True, "keep the pool in non-DSB runs too (S columns in the outputs)")
    pool_dim: int = _opt(64, "features are average-pooled to this many dimensions")
    # optimisation
    epochs: int = _opt(200, "training epochs")
    batch_size: int = _opt(128, "mini-batch size (the last partial batch is kept)")
    optimizer: str = _opt("sgd", "optimiser")
    lr: float = _opt(0.1, "base learning rate")
    momentum: float = _opt(0.9, "SGD momentum")
    nesterov: bool = _opt(False, "Nesterov momentum (SGD)")
    weight_decay: float = _opt(2e-4, "weight decay")
    schedule: str = _opt("ldam", "ldam: 5/200 warm-up, x0.01 after 160/200, x1e-4 after 180/200; exponential: x lr_decay per epoch; cosine")
    lr_decay: float = _opt(0.98, "factor per epoch of the exponential schedule")
    # execution
    seed: int = _opt(0, "seed of initialisation, shuffling and augmentation")
    device: str = _opt("auto", "auto (cuda if available), cpu, cuda, cuda:1, ...")
    bf16: bool = _opt(True, "bf16 autocast (CUDA only)")
    channels_last: bool = _opt(True, "channels_last memory format (CUDA only)")
    compile: str = _opt("none", "torch.compile mode of the model's forward")
    eval_every: int = _opt(1, "evaluate every k epochs (0: only at the end)")
    eval_batch_size: int = _opt(256, "evaluation batch size (larger batches were 2.5-3x slower per image on CPU)")
    checkpoint_every: int = _opt(10, "checkpoint every k epochs (0: only on SIGINT/SIGTERM)")
    stop_after_epoch: int | None = _opt(None, "stop (checkpoint and exit) after this epoch, as if interrupted")
    progress: bool = _opt(True, "progress bar")

    def __post_init__(self):
        hints = _field_types()
        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(f.name, hints[f.name], getattr(self, f.name)))
        _validate(self)


# ---------------------------------------------------------------------------------------------------------
# config: types and validation


def _field_types() -> dict[str, typing.Any]:
    return typing.get_type_hints(TrainConfig)


def _base_type(kind):
    """(base type, optional?) of an annotation like ``int | None``."""
    args = typing.get_args(kind)
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        (base,) = [a for a in args if a is not type(None)]
        return base, True
    return kind, False


def _coerce(name: str, kind, value):
    """Convert ``value`` (from Python, YAML or the command line) to the field's type; ConfigError if impossible."""
    base, optional = _base_type(kind)
    if value is None or (optional and isinstance(value, str) and value.lower() == "none"):
        if optional:
            return None
        raise ConfigError(f"{name} must be given (got None)")
    try:
        if base is bool:
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError
            return bool(value)
        if base is int:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise TypeError
            return int(float(value))
        if base is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if base is str:
            return str(value)
        # tuple[int, ...]
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise TypeError
        return tuple(_coerce(name, int, v) for v in value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{name} must be {_type_name(kind)}, got {value!r}") from None


def _type_name(kind) -> str:
    base, optional = _base_type(kind)
    name = "a list of integers" if typing.get_origin(base) is tuple else f"a {base.__name__}"
    return name + (" or none" if optional else "")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _validate(c: TrainConfig) -> None:
    for name, valid in CHOICES.items():
        _check(getattr(c, name) in valid, f"unknown {name} {getattr(c, name)!r}; valid choices: {', '.join(valid)}")
    _check(c.imbalance >= 1, f"imbalance must be >= 1 (n_max / n_min; 1 = full data), got {c.imbalance}")
    chosen = [n for n, on in (("imbalance", c.imbalance != 1), ("train_counts", c.train_counts is not None),
                              ("train_per_class", c.train_per_class is not None)) if on]
    _check(len(chosen) <= 1, f"choose one way to make the training subset, got {' and '.join(chosen)}")
    _check(c.train_per_class is None or c.train_per_class >= 1, f"train_per_class must be >= 1, got {c.train_per_class}")
    _check(c.subset_seed >= 0 and c.seed >= 0, "seed and subset_seed must be >= 0")
    _check(c.crop_padding >= 0, f"crop_padding must be >= 0, got {c.crop_padding}")
    _check(c.resize is None or c.resize >= 4, f"resize must be at least 4 pixels (or none), got {c.resize}")
    _check(c.normalization != "fixed" or c.dataset in FIXED_NORMALIZATION,
           f"no fixed normalisation constants for {c.dataset!r} (they exist for {', '.join(FIXED_NORMALIZATION)}); use normalization=subset")
    _check(c.epochs >= 1, f"epochs must be >= 1, got {c.epochs}")
    _check(c.batch_size >= 1 and c.eval_batch_size >= 1, "batch sizes must be >= 1")
    _check(c.lr >= 0 and c.weight_decay >= 0, "lr and weight_decay must be >= 0")
    _check(0 <= c.momentum < 1, f"momentum must be in [0, 1), got {c.momentum}")
    _check(not c.nesterov or (c.optimizer == "sgd" and c.momentum > 0), "nesterov needs optimizer=sgd and momentum > 0")
    _check(0 < c.lr_decay <= 1, f"lr_decay must be in (0, 1], got {c.lr_decay}")
    _check(c.eval_every >= 0 and c.checkpoint_every >= 0, "eval_every and checkpoint_every must be >= 0")
    _check(c.stop_after_epoch is None or c.stop_after_epoch >= 1, f"stop_after_epoch must be >= 1, got {c.stop_after_epoch}")
    _check(c.dsb_stage_epochs >= 1, f"dsb_stage_epochs must be >= 1 (epoch 1 fills the pool), got {c.dsb_stage_epochs}")
    _check(c.dsb_alpha is None or (math.isfinite(c.dsb_alpha) and c.dsb_alpha >= 1), f"dsb_alpha must be >= 1, got {c.dsb_alpha}")
    _check(c.dsb_eps > 0, f"dsb_eps must be > 0, got {c.dsb_eps}")
    _check(c.pool_dim >= 1, f"pool_dim must be >= 1, got {c.pool_dim}")
    _check(not c.dsb or c.track_pool, "dsb needs the feature pool: track_pool cannot be false with dsb")
    try:
        torch.device("cuda" if c.device == "auto" else c.device)
    except RuntimeError:
        raise ConfigError(f"invalid device {c.device!r}; use auto, cpu, cuda or cuda:N") from None
    valid_params = {**losses.LOSS_PARAMS[c.loss], **losses.REWEIGHT_PARAMS[c.reweight]}
    for name, param in LOSS_PARAM_FIELDS.items():
        _check(getattr(c, name) is None or param in valid_params,
               f"{name} does not apply to loss {c.loss!r} with reweight {c.reweight!r}")


def _warn_combinations(c: TrainConfig) -> None:
    """Valid but probably unintended combinations (warned once per run, not per config object)."""
    if c.dsb and c.dsb_stage_epochs >= c.epochs:
        warnings.warn(f"dsb_stage_epochs={c.dsb_stage_epochs} >= epochs={c.epochs}: the pool is filled but the loss is "
                      f"never weighted (weighting starts at epoch {c.dsb_stage_epochs + 1})", UserWarning, stacklevel=3)
    if c.loss == "ldam" and c.normed_classifier is False:
        warnings.warn("LDAM is meant for the cosine classifier (normed_classifier=True)", UserWarning, stacklevel=3)


def _loss_params(c: TrainConfig) -> dict:
    params = {p: getattr(c, name) for name, p in LOSS_PARAM_FIELDS.items() if getattr(c, name) is not None}
    if isinstance(params.get("cdb_tau"), str):
        with contextlib.suppress(ValueError):
            params["cdb_tau"] = float(params["cdb_tau"])
    return params


# ---------------------------------------------------------------------------------------------------------
# learning rate


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def ldam_milestones(epochs: int) -> tuple[int, int, int]:
    """(warm-up epochs, first decay, second decay) of LDAM's 200-epoch schedule (5, 160, 180) scaled to ``epochs``."""
    return _round_half_up(5 * epochs / 200), _round_half_up(160 * epochs / 200), _round_half_up(180 * epochs / 200)


def learning_rate(config: TrainConfig, epoch: int) -> float:
    """The learning rate of 1-based ``epoch`` (constant within the epoch).

    ldam: lr·e/w for e <= w (linear warm-up), lr·1e-4 after the second and lr·1e-2 after the first milestone
    (LDAM-DRW's adjust_learning_rate); exponential: lr·decay^(e−1); cosine: lr·½(1 + cos(π(e−1)/E)).
    """
    lr, e = config.lr, epoch
    if config.schedule == "ldam":
        warmup, first, second = ldam_milestones(config.epochs)
        if e <= warmup:
            return lr * e / warmup
        if e > second:
            return lr * 1e-4
        if e > first:
            return lr * 1e-2
        return lr
    if config.schedule == "exponential":
        return lr * config.lr_decay ** (e - 1)
    return lr * 0.5 * (1 + math.cos(math.pi * (e - 1) / config.epochs))


# ---------------------------------------------------------------------------------------------------------
# data


@dataclass
class TrainData:
    train_images: torch.Tensor  # uint8 (N, C, H, W) on the device, in subset order
    train_labels: torch.Tensor  # int64 (N,)
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    train_counts: np.ndarray  # (C,) int64
    subset: data.Subset
    n_max: float | None  # of a long-tailed subset
    variant: str  # e.g. "mnist-lt100", "cifar10-jpeg75", "mnist-lt-1", "cifar10-m500"
    mean: torch.Tensor  # (1, C, 1, 1) float32
    std: torch.Tensor

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def training_subset(config: TrainConfig, labels: torch.Tensor) -> tuple[data.Subset, float | None, str]:
    """The training subset, its n_max if long-tailed, and a short name for it."""
    c = config
    try:
        if c.train_counts is not None:
            named = {data.MNIST_LT_1: "lt-1", data.MNIST_LT_2: "lt-2"}
            suffix = named.get(c.train_counts, "counts") if c.dataset == "mnist" else "counts"
            return data.per_class_indices(labels, c.train_counts, seed=c.subset_seed), None, f"{c.dataset}-{suffix}"
        if c.train_per_class is not None:
            subsets = data.nested_balanced_indices(labels, [c.train_per_class], seed=c.subset_seed)
            return subsets[c.train_per_class], None, f"{c.dataset}-m{c.train_per_class}"
        if c.imbalance != 1:
            n_max = data.default_n_max(labels, c.imbalance, c.profile)
            subset = data.long_tailed_indices(labels, c.imbalance, n_max, profile=c.profile, seed=c.subset_seed)
            return subset, n_max, f"{c.dataset}-lt{c.imbalance:g}" + ("-step" if c.profile == "step" else "")
    except ValueError as e:
        raise ConfigError(f"cannot make the training subset of {c.dataset}: {e}") from e
    return data.make_subset(np.arange(len(labels))), None, c.dataset


def _resize(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
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


def load_data(config: TrainConfig, device: torch.device) -> TrainData:
    """Load both splits, select the training subset and move everything to ``device`` as uint8."""
    train = data.load(config.dataset, "train")
    test = data.load(config.dataset, "test")
    subset, n_max, variant = training_subset(config, train.labels)
    index = torch.from_numpy(subset.indices)
    train_images = train.images[index].to(device)
    test_images = test.images.to(device)
    if config.resize is not None:
        train_images, test_images = _resize(train_images, config.resize), _resize(test_images, config.resize)
        variant += f"-{config.resize}px"
    if config.normalization == "fixed":
        mean, std = (torch.tensor(v, dtype=torch.float64, device=device) for v in FIXED_NORMALIZATION[config.dataset])
    else:
        mean, std = _channel_stats(train_images)
    train_labels = train.labels[index].to(device)
    counts = np.bincount(train.labels[index].numpy(), minlength=len(train.classes))
    return TrainData(train_images, train_labels, test_images, test.labels.to(device), train.classes, counts, subset,
                     n_max, variant, mean.float().view(1, -1, 1, 1), std.float().view(1, -1, 1, 1))


# ---------------------------------------------------------------------------------------------------------
# augmentation (batched, on the device, drawn from the epoch's generator)


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """The generator of one epoch (permutation, crops, flips), seeded from (seed, epoch) only."""
    g = torch.Generator(device=device)
    g.manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))
    return g


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Per image, a random H×W window of the image zero-padded by ``padding`` on every side."""
    n, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4)
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=images.device)
    rows = (offsets[0, :, None] + torch.arange(h, device=images.device))[:, :, None]  # (n, h, 1)
    cols = (offsets[1, :, None] + torch.arange(w, device=images.device))[:, None, :]  # (n, 1, w)
    batch = torch.arange(n, device=images.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # gather (n, h, w, C) -> (n, C, h, w)


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=generator, device=images.device) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def augment(images: torch.Tensor, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
    if config.augment and config.crop_padding:
        images = random_crop(images, config.crop_padding, generator)
    if config.augment and config.flip:
        images = random_flip(images, generator)
    return images


def to_input(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """uint8 images -> normalised float32 network input."""
    x = images.to(torch.float32).div_(255).sub_(mean).div_(std)
    return x.contiguous(memory_format=memory_format)


# ---------------------------------------------------------------------------------------------------------
# the run


@dataclass
class EpochState:
    """An epoch in progress: what a mid-epoch checkpoint must hold besides the model."""

    epoch: int
    generator: torch.Generator
    order: torch.Tensor  # the epoch's permutation of sample ids
    loss_sum: torch.Tensor  # Σ batch loss × batch size (float64, device)
    correct: torch.Tensor  # running per-class correct counts (int64, device)
    next_batch: int = 0
    seconds: float = 0.0


@dataclass
class Run:
    config: TrainConfig
    device: torch.device
    data: TrainData
    model: models.FeatureModel
    forward: typing.Callable  # model.forward_with_features, compiled or not
    optimizer: torch.optim.Optimizer
    loss: losses.ClassWeightedLoss
    pool: FeaturePool | None
    bf16: bool
    memory_format: torch.memory_format

    @property
    def num_batches(self) -> int:
        return math.ceil(len(self.data.train_labels) / self.config.batch_size)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked but CUDA is not available; use --device cpu or auto")
    return device


def resolve(config: TrainConfig, train_counts: np.ndarray) -> TrainConfig:
    """Fill the data-dependent defaults (normed classifier, DSB alpha) and check the subset fits the method."""
    normed = config.normed_classifier
    if normed is None:
        normed = config.loss == "ldam"
    alpha = config.dsb_alpha
    if alpha is None:
        alpha = 1.0 if len(set(train_counts.tolist())) == 1 else 2.0
    if config.dsb and train_counts.min() < 2:
        small = np.flatnonzero(train_counts < 2).tolist()
        raise ConfigError(f"DSB needs at least 2 training images per class (a class with one has volume 0 and infinite "
                          f"weight); class(es) {small} have fewer: lower the imbalance or use a larger dataset")
    return dataclasses.replace(config, normed_classifier=normed, dsb_alpha=alpha)


def build_run(config: TrainConfig, train_data: TrainData, device: torch.device) -> Run:
    """Model (seeded by config.seed), optimiser, loss and pool for a resolved config."""
    cuda = device.type == "cuda"
    memory_format = torch.channels_last if cuda and config.channels_last else torch.contiguous_format
    torch.manual_seed(config.seed)
    model = models.build_model(config.model, train_data.num_classes, train_data.train_images.shape[1], config.normed_classifier)
    model = model.to(device=device, memory_format=memory_format)
    forward = model.forward_with_features
    if config.compile != "none":
        forward = torch.compile(forward, mode=None if config.compile == "default" else config.compile)
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                    nesterov=config.nesterov, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    try:
        loss = losses.build_loss(config.loss, train_data.train_counts, reweight=config.reweight,
                                 reduction=config.reduction, **_loss_params(config)).to(device)
    except ValueError as e:
        raise ConfigError(f"cannot build loss {config.loss!r} with reweight {config.reweight!r}: {e}") from e
    pool = None
    if config.track_pool:
        pool = FeaturePool(train_data.train_labels, train_data.num_classes, dim=config.pool_dim,
                           alpha=config.dsb_alpha, eps=config.dsb_eps)
    return Run(config, device, train_data, model, forward, optimizer, loss, pool, cuda and config.bf16, memory_format)


def new_epoch(run: Run, epoch: int) -> EpochState:
    generator = epoch_generator(run.config.seed, epoch, run.device)
    n = len(run.data.train_labels)
    order = torch.randperm(n, generator=generator, device=run.device)
    return EpochState(epoch, generator, order, torch.zeros((), dtype=torch.float64, device=run.device),
                      torch.zeros(run.data.num_classes, dtype=torch.int64, device=run.device))


def train_epoch(run: Run, state: EpochState, should_stop: typing.Callable[[], bool] = lambda: False, bar=None) -> None:
    """Train from ``state.next_batch`` to the end of the epoch, or until ``should_stop()`` after an iteration."""
    cfg = run.config
    for group in run.optimizer.param_groups:
        group["lr"] = learning_rate(cfg, state.epoch)
    run.loss.set_epoch(state.epoch - 1, cfg.epochs)  # losses count epochs from 0
    weighting = cfg.dsb and stage(state.epoch, cfg.dsb_stage_epochs) == "weight"
    run.model.train()
    start = time.perf_counter()
    for b in range(state.next_batch, run.num_batches):
        ids = state.order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
        x = to_input(augment(run.data.train_images[ids], cfg, state.generator), run.data.mean, run.data.std, run.memory_format)
        y = run.data.train_labels[ids]
        with run.autocast():
            logits, features = run.forward(x)
        if run.pool is not None:
            run.pool.update(ids, features)
        class_weights = run.pool.scales().weight if weighting else None
        loss = run.loss(logits, y, class_weights=class_weights)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        state.loss_sum += loss.detach().double() * len(ids)
        state.correct.index_add_(0, y, (logits.argmax(1) == y).long())
        state.next_batch = b + 1
        if bar is not None:
            bar.update(len(ids))
        if should_stop():
            break
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    state.seconds += time.perf_counter() - start


@torch.no_grad()
def evaluate(run: Run) -> dict:
    """Test-set metrics (semscale.metrics.summarize) of the current model."""
    run.model.eval()
    num_classes = run.data.num_classes
    correct = torch.zeros(num_classes, dtype=torch.int64, device=run.device)
    total = torch.zeros_like(correct)
    for s in range(0, len(run.data.test_labels), run.config.eval_batch_size):
        x = to_input(run.data.test_images[s:s + run.config.eval_batch_size], run.data.mean, run.data.std, run.memory_format)
        y = run.data.test_labels[s:s + run.config.eval_batch_size]
        with run.autocast():
            logits, _ = run.forward(x)
        c, t = metrics.class_counts(logits.argmax(1), y, num_classes)
        correct += c
        total += t
    run.model.train()
    return metrics.summarize(correct, total, run.data.train_counts)


def pool_table(run: Run, epoch: int | None = None) -> pd.DataFrame:
    """Per-class volume, S′, W, S and DSB weight from the pool (NaN without a pool)."""
    columns = ("S_prime", "W", "S", "weight", "volume")
    if run.pool is None:
        values = {k: np.full(run.data.num_classes, np.nan) for k in columns}
    else:
        values = {k: v.cpu().numpy() for k, v in run.pool.scales()._asdict().items()}
    table = pd.DataFrame({"class": np.arange(run.data.num_classes), **{k: values[k] for k in columns}})
    if epoch is not None:
        table.insert(0, "epoch", epoch)
    return table


# ---------------------------------------------------------------------------------------------------------
# checkpoints and stop signals


class _StopRequest:
    """Signal handler: the first SIGINT/SIGTERM asks to stop after the current iteration, a second one stops now."""

    def __init__(self):
        self.signum: int | None = None

    def __call__(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum


@contextlib.contextmanager
def _stop_signals():
    stop = _StopRequest()
    if threading.current_thread() is not threading.main_thread():  # signal handlers only work there
        yield stop
        return
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def save_checkpoint(path: Path, run: Run, next_epoch: int, state: EpochState | None, history: dict) -> None:
    """Everything needed to continue exactly: the learning rate is a function of the epoch (no scheduler state)."""
    obj = {
        "format": CHECKPOINT_FORMAT,
        "config": dataclasses.asdict(run.config),
        "next_epoch": next_epoch,
        "epoch_state": None if state is None else {
            "generator": state.generator.get_state(),
            "loss_sum": state.loss_sum,
            "correct": state.correct,
            "next_batch": state.next_batch,
            "seconds": state.seconds,
        },
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "loss": run.loss.state_dict(),
        "pool": None if run.pool is None else run.pool.state_dict(),
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        "history": history,
    }
    records.save_torch_atomic(path, obj)


def restore_checkpoint(run: Run, checkpoint: dict) -> tuple[int, EpochState | None, dict]:
    run.model.load_state_dict(checkpoint["model"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    run.loss.load_state_dict(checkpoint["loss"])
    if run.pool is not None:
        run.pool.load_state_dict(checkpoint["pool"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    if checkpoint["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
    epoch, saved = checkpoint["next_epoch"], checkpoint["epoch_state"]
    state = None
    if saved is not None:
        state = new_epoch(run, epoch)  # the same permutation, then the generator where it stopped
        state.generator.set_state(saved["generator"])
        state.loss_sum.copy_(saved["loss_sum"])
        state.correct.copy_(saved["correct"])
        state.next_batch, state.seconds = saved["next_batch"], saved["seconds"]
    return epoch, state, checkpoint["history"]


def _check_same_config(saved: dict, config: TrainConfig) -> None:
    saved, now = (json.loads(json.dumps(d)) for d in (saved, dataclasses.asdict(config)))  # tuples vs JSON lists
    differ = [f"{k}: checkpoint {saved.get(k)!r}, now {now[k]!r}" for k in now
              if k not in RESUMABLE_FIELDS and saved.get(k) != now[k]]
    if differ:
        raise ConfigError("cannot resume with a different config (only " + ", ".join(RESUMABLE_FIELDS)
                          + " may change):\n  " + "\n  ".join(differ))


# ---------------------------------------------------------------------------------------------------------
# train


def train_class_accuracy(run: Run, state: EpochState) -> np.ndarray:
    """Per-class accuracy of the epoch's running training counts (what CDB's difficulty is computed from)."""
    return state.correct.cpu().numpy() / np.maximum(run.data.train_counts, 1)


def end_epoch(run: Run, state: EpochState, history: dict) -> dict | None:
    """After a complete epoch: CDB update, pool and epoch rows, evaluation when due. Returns the test metrics or None."""
    c, n = run.config, len(run.data.train_labels)
    train_loss = float(state.loss_sum) / n  # the epoch's one host read of the running sums
    if not math.isfinite(train_loss):
        raise FloatingPointError(f"training loss is {train_loss} in epoch {state.epoch}: lower the learning rate?")
    correct = state.correct.cpu().numpy()
    run.loss.update_class_accuracy(torch.from_numpy(train_class_accuracy(run, state)))
    if run.pool is not None:
        history["pool"] += pool_table(run, state.epoch).to_dict("records")
    start = time.perf_counter()
    test = evaluate(run) if state.epoch == c.epochs or (c.eval_every and state.epoch % c.eval_every == 0) else None
    history["train_seconds"] += state.seconds
    history["epochs"].append({
        "epoch": state.epoch,
        "lr": learning_rate(c, state.epoch),
        "train_loss": train_loss,
        "train_acc": float(correct.sum()) / n,
        **{k: (test[k] if test else float("nan")) for k in ("top1", "balanced", "many", "medium", "few")},
        "img_per_s": n / state.seconds,
        "seconds": state.seconds,
        "eval_seconds": time.perf_counter() - start if test else 0.0,
    })
    return test


def _write_history(out: Path, history: dict) -> None:
    records.write_csv_atomic(out / "epochs.csv", pd.DataFrame(history["epochs"]))
    records.write_csv_atomic(out / "pool_history.csv", pd.DataFrame(
        history["pool"], columns=["epoch", "class", "S_prime", "W", "S", "weight", "volume"]))


def train(config: TrainConfig, out_dir, resume: bool = False) -> dict:
    """Train one run into ``out_dir`` and return its record (also written to out_dir/run.json).

    ``resume``: continue from out_dir/checkpoint.pt (the config must match, see RESUMABLE_FIELDS); a finished
    run returns its record; an empty out_dir starts a new run. Without ``resume`` an out_dir that already
    holds a run is an error. Raises TrainingInterrupted after saving a checkpoint on SIGINT/SIGTERM or
    ``stop_after_epoch``.
    """
    out = Path(out_dir)
    wall_start = time.perf_counter()
    checkpoint_path, run_path = out / "checkpoint.pt", out / "run.json"
    if not resume and (checkpoint_path.exists() or run_path.exists()):
        raise FileExistsError(f"{out} already holds a run: resume it (--resume) or choose another --out")
    if resume and run_path.exists() and not checkpoint_path.exists():
        record = json.loads(run_path.read_text())
        _check_same_config(record["config"], resolve(config, np.asarray(record["subset"]["class_counts"])))
        return record
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True) if resume and checkpoint_path.exists() else None
    if checkpoint is not None and checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{checkpoint_path} has checkpoint format {checkpoint.get('format')}, this code reads {CHECKPOINT_FORMAT}")

    _warn_combinations(config)
    device = resolve_device(config.device)
    train_data = load_data(config, device)
    config = resolve(config, train_data.train_counts)
    if checkpoint is not None:
        _check_same_config(checkpoint["config"], config)
    run = build_run(config, train_data, device)
    next_epoch, state, history = 1, None, {"epochs": [], "pool": [], "train_seconds": 0.0, "wall_seconds": 0.0,
                                           "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if checkpoint is not None:
        next_epoch, state, history = restore_checkpoint(run, checkpoint)
    elif resume:
        warnings.warn(f"no checkpoint in {out}: starting a new run", UserWarning, stacklevel=2)
    out.mkdir(parents=True, exist_ok=True)

    n = len(train_data.train_labels)
    done = (next_epoch - 1) * n + (state.next_batch * config.batch_size if state else 0)
    bar = tqdm(total=config.epochs * n, initial=min(done, config.epochs * n), unit="img", unit_scale=True,
               disable=not config.progress, dynamic_ncols=True)

    def stop_here(epoch: int, current: EpochState | None, reason: str, signum: int | None):
        history["wall_seconds"] += time.perf_counter() - wall_start
        following = epoch if current is not None else epoch + 1
        save_checkpoint(checkpoint_path, run, following, current, history)
        where = f"epoch {epoch}, iteration {current.next_batch}/{run.num_batches}" if current else f"the end of epoch {epoch}"
        raise TrainingInterrupted(f"{reason}: stopped at {where}; checkpoint saved to {checkpoint_path}. Continue with the "
                                  f"same options plus --resume (python -m semscale.train ... --out {out} --resume) "
                                  f"or train(config, {str(out)!r}, resume=True)", out, signum)

    test = None
    with _stop_signals() as stop, bar:
        for epoch in range(next_epoch, config.epochs + 1):
            bar.set_description(f"epoch {epoch}/{config.epochs}")
            if state is None or state.epoch != epoch:
                state = new_epoch(run, epoch)
            train_epoch(run, state, lambda: stop.signum is not None, bar)
            if state.next_batch < run.num_batches:
                stop_here(epoch, state, signal.Signals(stop.signum).name, stop.signum)
            test = end_epoch(run, state, history)
            row = history["epochs"][-1]
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", acc=f"{row['train_acc']:.3f}",
                            **({"test": f"{test['top1']:.3f}"} if test else {}))
            _write_history(out, history)
            if stop.signum is not None:
                stop_here(epoch, None, signal.Signals(stop.signum).name, stop.signum)
            if epoch < config.epochs and epoch == config.stop_after_epoch:
                stop_here(epoch, None, f"stop_after_epoch={epoch}", None)
            if config.checkpoint_every and epoch % config.checkpoint_every == 0 and epoch < config.epochs:
                history["wall_seconds"] += time.perf_counter() - wall_start
                wall_start = time.perf_counter()
                save_checkpoint(checkpoint_path, run, epoch + 1, None, history)

    history["wall_seconds"] += time.perf_counter() - wall_start
    return _finish(run, out, history, test, state)


def _finish(run: Run, out: Path, history: dict, test: dict, state: EpochState) -> dict:
    """Write per_class.csv, model.pt and run.json; drop the checkpoint."""
    c, d = run.config, run.data
    test_total = np.bincount(d.test_labels.cpu().numpy(), minlength=d.num_classes)
    per_class = pd.DataFrame({
        "class": np.arange(d.num_classes),
        "name": d.classes,
        "train_count": d.train_counts,
        "test_count": test_total,
        "group": metrics.shot_groups(d.train_counts),
        "accuracy": test["per_class"],
        "train_accuracy": train_class_accuracy(run, state),
    }).merge(pool_table(run), on="class")
    records.write_csv_atomic(out / "per_class.csv", per_class)
    records.save_torch_atomic(out / "model.pt", run.model.state_dict())
    last = history["epochs"][-1]
    images = c.epochs * len(d.train_labels)
    record = {
        "status": "complete",
        "config": dataclasses.asdict(c),
        "seed": c.seed,
        "dataset": c.dataset,
        "dataset_variant": d.variant,
        "subset": {"sha256": d.subset.sha256, "size": int(len(d.train_labels)), "class_counts": d.train_counts.tolist(),
                   "subset_seed": c.subset_seed, "n_max": d.n_max},
        "classes": list(d.classes),
        "normalization": {"mean": d.mean.flatten().tolist(), "std": d.std.flatten().tolist()},
        "loss": run.loss.config,
        "parameters": sum(p.numel() for p in run.model.parameters()),
        "engine": {"partial_batch": "kept", "lr_granularity": "epoch", "cdb_accuracy": "training epoch running counts",
                   "pool": "tracked" if run.pool is not None else "off",
                   "amp": "bf16" if run.bf16 else "none", "channels_last": run.memory_format == torch.channels_last},
        **records.provenance(run.device),
        "device_type": run.device.type,
        "started": history["started"],
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": history["wall_seconds"],
        "train_seconds": history["train_seconds"],
        "img_per_s": images / history["train_seconds"],
        "final": {**{k: test[k] for k in ("top1", "balanced", "many", "medium", "few")},
                  "train_loss": last["train_loss"], "train_acc": last["train_acc"]},
    }
    records.write_json_atomic(out / "run.json", record)
    (out / "checkpoint.pt").unlink(missing_ok=True)
    return record


# ---------------------------------------------------------------------------------------------------------
# several seeds


SUMMARY_METRICS = ("top1", "balanced", "many", "medium", "few", "train_loss", "train_acc")


def run_seeds(config: TrainConfig, seeds, out_dir, resume: bool = False) -> dict:
    """Train ``config`` once per seed into out_dir/seed_<k>/; write summary.csv and summary.json (mean ± sample std)."""
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct and at least one, got {seeds}")
    out = Path(out_dir)
    finals = {s: train(dataclasses.replace(config, seed=s), out / f"seed_{s}", resume)["final"] for s in seeds}
    table = pd.DataFrame.from_dict(finals, orient="index")[list(SUMMARY_METRICS)]
    summary = pd.DataFrame({
        "metric": SUMMARY_METRICS,
        "mean": table.mean().to_numpy(),
        "std": table.std(ddof=1).to_numpy(),
        "n": table.count().to_numpy(),
        **{f"seed_{s}": table.loc[s].to_numpy() for s in seeds},
    })
    records.write_csv_atomic(out / "summary.csv", summary)
    result = {"config": {**dataclasses.asdict(config), "seed": None}, "seeds": seeds, "std": "sample (ddof=1)",
              "metrics": {m: {"mean": r["mean"], "std": r["std"], "n": int(r["n"]), "values": {str(s): r[f"seed_{s}"] for s in seeds}}
                          for m, r in summary.set_index("metric").iterrows()}}
    records.write_json_atomic(out / "summary.json", result)
    return result


# ---------------------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m semscale.train", argument_default=argparse.SUPPRESS,
                                     description="Train one run (or one per seed) of the semscale engine.")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--config", type=Path, help="YAML file of config fields; explicit flags override it")
    parser.add_argument("--seeds", type=int, nargs="+", help="one run per seed into OUT/seed_<k>/ plus summary.csv/json")
    parser.add_argument("--resume", action="store_true", help="continue from OUT's checkpoint")
    hints = _field_types()
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        base, _ = _base_type(hints[f.name])
        default = defaults[f.name]
        help_text = f.metadata["help"] + ("" if default is dataclasses.MISSING else f" (default: {default})")
        if base is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, help=help_text)
        elif typing.get_origin(base) is tuple:
            parser.add_argument(flag, dest=f.name, type=int, nargs="+", help=help_text)
        else:  # parsed by TrainConfig (numbers, 'none')
            parser.add_argument(flag, dest=f.name, choices=CHOICES.get(f.name), help=help_text)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Dataclass defaults <- YAML file <- explicit flags."""
    values = {}
    if getattr(args, "config", None) is not None:
        try:
            loaded = yaml.safe_load(args.config.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read config file {args.config}: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"{args.config} must hold a mapping of config fields")
        values = {str(k).replace("-", "_"): v for k, v in loaded.items()}
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown config field(s) {unknown} in {args.config}; valid: {', '.join(names)}")
    values.update({k: v for k, v in vars(args).items() if k in names})
    if "dataset" not in values:
        raise ConfigError(f"--dataset is required (in the flags or the config file); valid: {', '.join(data.DATASETS)}")
    return TrainConfig(**values)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    resume = getattr(args, "resume", False)
    try:
        config = config_from_args(args)
        if getattr(args, "seeds", None) is not None:
            result = run_seeds(config, args.seeds, args.out, resume)
            lines = [f"{m}: {v['mean']:.4f} ± {v['std']:.4f} (n={v['n']})" for m, v in result["metrics"].items()]
            print(f"{len(result['seeds'])} seeds -> {args.out}/summary.csv\n" + "\n".join(lines))
        else:
            record = train(config, args.out, resume)
            final = record["final"]
            print(f"{record['dataset_variant']} -> {args.out}: " + ", ".join(f"{k} {v:.4f}" for k, v in final.items())
                  + f"; {record['img_per_s']:.0f} img/s, {record['wall_seconds']:.1f} s")
    except (ConfigError, FileExistsError, data.DatasetError) as e:
        parser.error(str(e))
    except TrainingInterrupted as e:
        command = " ".join(shlex.quote(a) for a in ["python", "-m", "semscale.train", *argv] if a != "--resume")
        print(f"{e}\nresume with: {command} --resume", file=sys.stderr)
        return 128 + e.signum if e.signum else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
