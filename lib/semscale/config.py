"""The run configuration: ``TrainConfig``, its coercion and validation, and the protocol presets.

Every ``TrainConfig`` field is a flag of ``python -m semscale.train`` (:mod:`semscale.cli`) (``--batch-size 64``, ``--dsb/--no-dsb``,
``--resize none``). Values from Python, YAML or the command line are coerced to the field's type and checked on
creation; an invalid value or combination is a ``ConfigError`` that says what is valid.

Protocols (``protocol``) are named presets that set several optimisation and input fields at once:

* ``ldam-cifar-lt`` (the default; PAPER.md §5): SGD lr 0.1, momentum 0.9, weight decay 2e-4, batch 128,
  LDAM's schedule (5 warm-up epochs, ×0.01 after 160/200, ×1e-4 after 180/200), random crop (padding 4)
  and horizontal flip.
* ``paper-sec3`` (PAPER.md §4.1–4.2 and §6): Adam lr 0.01 ×0.98 per epoch, batch 64, no augmentation, no
  weight decay. The paper states no epoch count: ``epochs`` stays a choice of each experiment.

A preset field left at ``None`` takes the protocol's value; a field given explicitly overrides the preset
(``protocol_overrides`` lists those, and run.json records them). ``normalization`` defaults to the fixed
per-channel constants where they exist (LDAM-DRW's for CIFAR) and to the training subset's statistics
elsewhere. Presets are resolved when the config is created: ``dataclasses.replace(config, protocol=...)``
keeps the old values, which then count as overrides.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import re
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import data, losses, models, subsets
from .progress import show_progress

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("ldam", "exponential", "cosine", "airbench")
PRECISIONS = ("auto", "bf16", "fp32")
PAD_MODES = ("zeros", "reflect")
FLIP_MODES = ("random", "alternating")
NORMALIZATIONS = ("subset", "fixed")
COMPILE_MODES = ("none", "default", "max-autotune-no-cudagraphs", "reduce-overhead")
SAMPLERS = ("none", "class-balanced", "sqrt")  # pipeline.epoch_order
SECOND_STAGES = ("none", "posthoc-la", "crt", "tau-norm", "lws")  # semscale.second_stage
# What the earlier engine did, for the fields the airbench protocol added: the two older protocols keep it.
_CLASSIC = {"nesterov": False, "precision": "fp32", "label_smoothing": 0.0, "decoupled_lr": False, "bias_lr_scale": 1.0,
            "lookahead": False, "crop_padding": 4, "pad_mode": "zeros", "flip_mode": "random"}
PROTOCOLS: dict[str, dict[str, typing.Any]] = {
    # LDAM-DRW's CIFAR-LT script (kaidic/LDAM-DRW, cifar_train.py): SGD 0.1, momentum 0.9, wd 2e-4, batch 128
    "ldam-cifar-lt": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 2e-4, "batch_size": 128,
                      "schedule": "ldam", "lr_decay": 0.98, "augment": True, **_CLASSIC},
    # the paper's Appendix B.2: Adam, lr 0.01 decayed by 0.98 per epoch, batch 64, no augmentation or other tricks
    "paper-sec3": {"optimizer": "adam", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 64,
                   "schedule": "exponential", "lr_decay": 0.98, "augment": False, **_CLASSIC},
    # airbench94 (KellerJordan/cifar10-airbench, legacy/airbench94.py lines 38-63, 359-392): Nesterov SGD, momentum
    # 0.85, lr 11.5 and weight decay 0.0153 per 1024 examples decoupled from the momentum, a 64x learning rate for the
    # batch norms' biases, the per-step warm-up/warm-down schedule, a lookahead EMA, label smoothing 0.2,
    # alternating flip and a 2-pixel reflect-padded translation; bf16 where the device has it
    "airbench": {"optimizer": "sgd", "lr": 11.5, "momentum": 0.85, "weight_decay": 0.0153, "batch_size": 1024,
                 "schedule": "airbench", "lr_decay": 0.98, "augment": True, "nesterov": True, "precision": "auto",
                 "label_smoothing": 0.2, "decoupled_lr": True, "bias_lr_scale": 64.0, "lookahead": True,
                 "crop_padding": 2, "pad_mode": "reflect", "flip_mode": "alternating"},
}
# airbench for long-tailed data, the study's CPU tier: batch 128 (LDAM-DRW's; 97 steps per epoch of CIFAR-10-LT IF 100
# instead of 12), no label smoothing (none of the long-tailed methods' sources uses it) and one learning rate for every
# parameter: with the batch norms' biases at 64x, LDAM's cosine head swung between 13 % and 52 % test top-1 from one
# epoch to the next (BENCHMARKS.md, "CPU tier"), while at 1x every method trains smoothly and CE and Balanced Softmax
# gain 0.5 and 2.9 points.
PROTOCOLS["airbench-lt"] = {**PROTOCOLS["airbench"], "batch_size": 128, "label_smoothing": 0.0, "bias_lr_scale": 1.0}
PRESET_FIELDS = tuple(PROTOCOLS["ldam-cifar-lt"])
CHOICES = {
    "dataset": data.DATASETS,
    "profile": subsets.LT_PROFILES,
    "protocol": tuple(PROTOCOLS),
    "normalization": NORMALIZATIONS,
    "model": models.MODELS,
    "loss": losses.LOSSES,
    "reweight": losses.REWEIGHTS,
    "reduction": losses.REDUCTIONS,
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "compile": COMPILE_MODES,
    "precision": PRECISIONS,
    "pad_mode": PAD_MODES,
    "flip_mode": FLIP_MODES,
    "sampler": SAMPLERS,
    "second_stage": SECOND_STAGES,
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
    "gce_q": "q",
    "gca_margin": "margin_max",
}
# fields that may differ when resuming: they change how the run is executed or logged, not what it computes
# Fields added after the first sweeps (issue 11 and later), with their defaults: at the default they are left out of the sweep's
# config hash (cache.canonical) and a checkpoint or record without them reads as the default, so the folders and
# checkpoints of earlier runs keep their names and stay resumable.
ADDED_FIELDS: dict[str, typing.Any] = {
    "sampler": "none", "gce_q": None, "gca_margin": None, "mwn": False, "mwn_meta_per_class": 10, "mwn_lr": 1e-5,
    "second_stage": "none", "stage2_tau": None, "stage2_epochs": None, "stage2_lr": 0.2, "stage2_batch_size": 512,
    "stage2_steps": "n_max",
    "record_drift": False, "label_smoothing": 0.0, "decoupled_lr": False, "bias_lr_scale": 1.0, "lookahead": False,
    "pad_mode": "zeros", "flip_mode": "random", "whiten_bias_epochs": 3, "precision": "fp32",
    "eval_heldout": False,
}
# Fields that earlier configs carried and this code no longer has, with the one value they ever had: ``bf16`` (True:
# bf16 autocast on CUDA, fp32 on the CPU) gave way to ``precision``. Read from old records, they are dropped.
REMOVED_FIELDS: dict[str, typing.Any] = {"bf16": True}
SECOND_STAGE_FIELDS = ("second_stage", "stage2_tau", "stage2_epochs", "stage2_lr", "stage2_batch_size", "stage2_steps")
STAGE2_STEPS = ("reference", "n_max")  # semscale.second_stage: classifier-balancing's epoch and schedule, or n_max·C draws
RESUMABLE_FIELDS = ("device", "compile", "progress", "checkpoint_every", "stop_after_epoch", "eval_every", "eval_batch_size")
FIXED_NORMALIZATION = {  # (mean, std) per channel
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),  # LDAM-DRW's constants
    "cifar100": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar10-jpeg75": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "tiny-imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet's
}


class ConfigError(ValueError):
    """An invalid configuration or combination; the message says what is valid."""


def _opt(default, help: str):
    return field(default=default, metadata={"help": help})


_PRESET = "set by the protocol"


@dataclass
class TrainConfig:
    """Everything that defines a run; each field is also a CLI flag. Values are coerced and checked on creation."""

    dataset: str = field(metadata={"help": "dataset name"})
    protocol: str = _opt("ldam-cifar-lt", "preset of the optimisation and input fields; explicit fields override it")
    # training subset
    imbalance: float = _opt(1.0, "imbalance factor n_max/n_min of the long-tailed subset; 1 = the full training set")
    profile: str = _opt("exp", "long-tailed profile")
    train_counts: tuple[int, ...] | None = _opt(None, "explicit per-class training counts (e.g. MNIST-LT-1); excludes --imbalance")
    train_per_class: int | None = _opt(None, "balanced subset with this many images per class (nested across sizes)")
    subset_seed: int = _opt(0, "seed of the subset selection (LDAM's rand_number)")
    # input pipeline
    augment: bool | None = _opt(None, "random crop and flip on the device (the paper's Sec 3 uses none)")
    crop_padding: int | None = _opt(None, "padding of the random crop, in pixels (0: no crop)")
    pad_mode: str | None = _opt(None, "how the crop pads: zeros, or reflect (airbench's translation)")
    flip: bool = _opt(True, "horizontal flip")
    flip_mode: str | None = _opt(None, "random: each image with probability 1/2 every epoch; alternating: a seeded half of "
                                       "the images flipped, all flipped every other epoch (airbench)")
    sampler: str = _opt("none", "re-sampling: each epoch draws N samples with replacement, p ∝ n_c^-1 (class-balanced) or n_c^-1/2 (sqrt)")
    resize: int | None = _opt(None, "resize every image once to SIZE x SIZE (e.g. 32 for Tiny-ImageNet)")
    normalization: str | None = _opt(None, "per-channel mean/std: fixed constants (default where they exist) or from the training subset")
    # model and loss
    model: str = _opt("resnet32", "network")
    normed_classifier: bool | None = _opt(None, "cosine classifier; default: what the loss needs (LDAM)")
    loss: str = _opt("ce", "loss")
    label_smoothing: float | None = _opt(None, "label smoothing of the loss's target (every loss: (1-e) l(z, y) + e mean_c l(z, c))")
    reweight: str = _opt("none", "the loss's own class reweighting")
    reduction: str = _opt("weighted_mean", "batch reduction of the weighted loss")
    focal_gamma: float | None = _opt(None, "focal loss gamma (default 1)")
    ldam_max_m: float | None = _opt(None, "LDAM largest margin (default 0.5)")
    ldam_s: float | None = _opt(None, "LDAM logit scale (default 30)")
    logit_tau: float | None = _opt(None, "logit-adjusted loss tau (default 1)")
    cb_beta: float | None = _opt(None, "class-balanced beta for cb/drw (default 0.9999)")
    drw_fraction: float | None = _opt(None, "DRW switches to CB weights at this fraction of the epochs (default 0.8)")
    cdb_tau: str | None = _opt(None, "CDB tau: 'dynamic-v1' (CDB's CIFAR-LT script), 'dynamic' or a number (default dynamic-v1)")
    cdb_heldout: int = _opt(25, "CDB: images per class of the balanced held-out split its difficulty is measured on (also the split of the second stages' tau)")
    gce_q: float | None = _opt(None, "GLA/GCA: q of the general cross-entropy family (1 - p^q)/q, 0 = CE (default 0.5)")
    gca_margin: float | None = _opt(None, "GCA: largest class-dependent confidence margin, m_c ∝ n_c^-1/4 (default 0.5)")
    # Meta-Weight-Net
    mwn: bool = _opt(False, "Meta-Weight-Net: per-sample weights from an MLP of the loss, learned on a balanced meta set")
    mwn_meta_per_class: int = _opt(10, "MWN: meta-set images per class, from training images the subset leaves unused")
    mwn_lr: float = _opt(1e-5, "MWN: learning rate of the weighting net (SGD, momentum 0.9, Nesterov, wd 5e-4)")
    # second stage on a finished run
    second_stage: str = _opt("none", "second stage on the finished first-stage run (the same config without it)")
    stage2_tau: str | None = _opt(None, "posthoc-la / tau-norm tau: a number or 'heldout' (chosen on the held-out split; default: 1 for posthoc-la, heldout for tau-norm)")
    stage2_epochs: int | None = _opt(None, "crt / lws epochs (default 10 for crt, 5 for lws)")
    stage2_lr: float = _opt(0.2, "crt / lws learning rate (SGD, momentum 0.9, wd 5e-4, cosine)")
    stage2_batch_size: int = _opt(512, "crt / lws batch size")
    stage2_steps: str = _opt("n_max", "crt / lws epoch: 'reference' (classifier-balancing's: int(N / batch) class-aware "
                                      "batches, cosine stepped at each epoch's start; the methods catalogue's) or 'n_max' "
                                      "(n_max*C draws, lr from the epoch's start)")
    # DSB
    dsb: bool = _opt(False, "weight the loss by 1/S from the feature pool (DSB)")
    dsb_stage_epochs: int = _opt(5, "n: epoch 1 fills the pool, 2..n refresh it, weighting from n+1")
    dsb_alpha: float | None = _opt(None, "alpha >= 1 of W = log2(alpha + W'); default 2 on long-tailed, 1 on balanced subsets")
    dsb_eps: float = _opt(1.0, "epsilon of the volume")
    track_pool: bool = _opt(True, "keep the pool in non-DSB runs too (S columns in the outputs)")
    pool_dim: int = _opt(64, "features are average-pooled to this many dimensions")
    record_drift: bool = _opt(False, "also record how far pooled features move between visits (drift_*.csv; semscale.drift)")
    eval_heldout: bool = _opt(False, "at every evaluation also record top-1 on the balanced held-out split of unused training "
                                     "images (cdb_heldout per class; epochs.csv heldout_top1): selecting an epoch without the test set")
    # optimisation
    epochs: int = _opt(200, "training epochs")
    batch_size: int | None = _opt(None, "mini-batch size (the last partial batch is kept)")
    optimizer: str | None = _opt(None, "optimiser")
    lr: float | None = _opt(None, "base learning rate")
    momentum: float | None = _opt(None, "SGD momentum")
    nesterov: bool | None = _opt(None, "Nesterov momentum (SGD)")
    weight_decay: float | None = _opt(None, "weight decay")
    schedule: str | None = _opt(None, "ldam: 5/200 warm-up, x0.01 after 160/200, x1e-4 after 180/200; exponential: x lr_decay per epoch; cosine; airbench: per step, 0.2 -> 1 over 23 % of the steps, then -> 0.07")
    lr_decay: float | None = _opt(None, "factor per epoch of the exponential schedule")
    decoupled_lr: bool | None = _opt(None, "lr and weight_decay per 1024 examples, decoupled from the momentum (airbench)")
    bias_lr_scale: float | None = _opt(None, "learning-rate factor of the batch norms' biases (airbench: 64)")
    lookahead: bool | None = _opt(None, "airbench's lookahead EMA: every 5 steps the weights move to an EMA of themselves")
    whiten_bias_epochs: int = _opt(3, "airbench models: epochs the whitening layer's bias trains before it is frozen")
    # execution
    seed: int = _opt(0, "seed of initialisation, shuffling and augmentation")
    device: str = _opt("auto", "auto (cuda if available), cpu, cuda, cuda:1, ...")
    precision: str | None = _opt(None, "auto (bf16 autocast on CUDA and on a CPU with native bf16, fp32 elsewhere), bf16 or fp32")
    channels_last: bool = _opt(True, "channels_last memory format (on CUDA, and on the CPU in bf16)")
    compile: str = _opt("none", "torch.compile mode of the model's forward")
    eval_every: int = _opt(1, "evaluate every k epochs (0: only at the end)")
    eval_batch_size: int = _opt(256, "evaluation batch size (larger batches were 2.5-3x slower per image on CPU)")
    checkpoint_every: int = _opt(10, "checkpoint every k epochs (0: only on SIGINT/SIGTERM)")
    stop_after_epoch: int | None = _opt(None, "stop (checkpoint and exit) after this epoch, as if interrupted")
    progress: bool | None = _opt(None, "progress bar (default: on a terminal or in a live notebook)")

    def __post_init__(self):
        hints = field_types()
        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(f.name, hints[f.name], getattr(self, f.name)))
        _check(self.protocol in PROTOCOLS, f"unknown protocol {self.protocol!r}; valid choices: {', '.join(PROTOCOLS)}")
        for name, value in PROTOCOLS[self.protocol].items():
            if getattr(self, name) is None:
                setattr(self, name, _coerce(name, hints[name], value))
        if self.normalization is None:
            self.normalization = "fixed" if self.dataset in FIXED_NORMALIZATION else "subset"
        if self.progress is None:
            self.progress = show_progress()
        _validate(self)


def protocol_overrides(config: TrainConfig) -> dict[str, typing.Any]:
    """The preset fields whose value differs from the config's protocol."""
    preset = PROTOCOLS[config.protocol]
    return {k: getattr(config, k) for k in PRESET_FIELDS if getattr(config, k) != preset[k]}


def protocol_record(config: TrainConfig) -> dict[str, typing.Any]:
    """run.json's ``protocol``: the preset's name and the fields that override it."""
    return {"name": config.protocol, "overrides": protocol_overrides(config)}


# ---------------------------------------------------------------------------------------------------------
# types and validation


def field_types() -> dict[str, typing.Any]:
    return typing.get_type_hints(TrainConfig)


def base_type(kind):
    """(base type, optional?) of an annotation like ``int | None``."""
    args = typing.get_args(kind)
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        (base,) = [a for a in args if a is not type(None)]
        return base, True
    return kind, False


def _coerce(name: str, kind, value):
    """Convert ``value`` (from Python, YAML or the command line) to the field's type; ConfigError if impossible."""
    base, optional = base_type(kind)
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
    base, optional = base_type(kind)
    name = "a list of integers" if typing.get_origin(base) is tuple else f"a {base.__name__}"
    return name + (" or none" if optional else "")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _number(text: str) -> float | None:
    """The number a numeric-or-named field (``cdb_tau``, ``stage2_tau``) holds, or None for a name."""
    try:
        return float(text)
    except ValueError:
        return None


def _validate(c: TrainConfig) -> None:
    for f in dataclasses.fields(c):  # nan and inf slip through the range checks below: refuse them first
        value = getattr(c, f.name)
        number = _number(value) if f.name in ("cdb_tau", "stage2_tau") and value is not None else value
        _check(not isinstance(number, float) or math.isfinite(number), f"{f.name} must be a finite number, got {value}")
    for name, valid in CHOICES.items():
        _check(getattr(c, name) in valid, f"unknown {name} {getattr(c, name)!r}; valid choices: {', '.join(valid)}")
    _check(c.imbalance >= 1, f"imbalance must be >= 1 (n_max / n_min; 1 = full data), got {c.imbalance}")
    if c.train_counts is not None:
        empty = [i for i, n in enumerate(c.train_counts) if n < 1]
        _check(not empty, f"train_counts must give every class at least one image; class(es) {empty} have none")
    _check(c.subset_seed < 2**32, f"subset_seed must be < 2**32 (numpy's seed), got {c.subset_seed}")
    _check(c.seed < 2**64, f"seed must be < 2**64 (torch's seed), got {c.seed}")
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
    _check(c.cdb_heldout >= 1, f"cdb_heldout must be >= 1 image per class, got {c.cdb_heldout}")
    _check(c.dsb_stage_epochs >= 1, f"dsb_stage_epochs must be >= 1 (epoch 1 fills the pool), got {c.dsb_stage_epochs}")
    _check(c.dsb_alpha is None or (math.isfinite(c.dsb_alpha) and c.dsb_alpha >= 1), f"dsb_alpha must be >= 1, got {c.dsb_alpha}")
    _check(c.dsb_eps > 0, f"dsb_eps must be > 0, got {c.dsb_eps}")
    _check(c.pool_dim >= 1, f"pool_dim must be >= 1, got {c.pool_dim}")
    _check(not c.dsb or c.track_pool, "dsb needs the feature pool: track_pool cannot be false with dsb")
    _check(not c.record_drift or c.track_pool, "record_drift measures the feature pool: track_pool cannot be false with it")
    _check(0 <= c.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {c.label_smoothing}")
    _check(c.bias_lr_scale > 0, f"bias_lr_scale must be > 0, got {c.bias_lr_scale}")
    _check(not c.decoupled_lr or (c.optimizer == "sgd" and c.lr > 0),
           "decoupled_lr is airbench's SGD parametrisation: it needs optimizer=sgd and lr > 0")
    _check(c.whiten_bias_epochs >= 0, f"whiten_bias_epochs must be >= 0, got {c.whiten_bias_epochs}")
    _check(c.pad_mode != "reflect" or c.crop_padding < 28, "reflect padding must be smaller than the image (crop_padding < 28)")
    try:
        torch.device("cuda" if c.device == "auto" else c.device)
    except RuntimeError:
        raise ConfigError(f"invalid device {c.device!r}; use auto, cpu, cuda or cuda:N") from None
    _check(c.loss != "gca" or c.reweight == "none", "gca has its own inverse-frequency class weights: use reweight=none")
    _check_loss_ranges(c)
    _check(c.mwn_meta_per_class >= 1 and c.mwn_lr >= 0, "mwn_meta_per_class must be >= 1 and mwn_lr >= 0")
    _check(c.mwn or (c.mwn_meta_per_class, c.mwn_lr) == (ADDED_FIELDS["mwn_meta_per_class"], ADDED_FIELDS["mwn_lr"]),
           "mwn_meta_per_class and mwn_lr apply only with mwn=true")
    if c.second_stage == "none":
        _check(all(getattr(c, f) == ADDED_FIELDS[f] for f in SECOND_STAGE_FIELDS),
               "stage2_* fields apply only with a second_stage")
    else:
        _check(not (c.normed_classifier or (c.normed_classifier is None and c.loss == "ldam")),
               f"second_stage {c.second_stage!r} needs a linear classifier (normed_classifier=false)")
        _check(c.stage2_tau is None or c.second_stage in ("posthoc-la", "tau-norm"), "stage2_tau applies to posthoc-la and tau-norm")
        _check(c.stage2_epochs is None or c.second_stage in ("crt", "lws"), "stage2_epochs applies to crt and lws")
        _check(c.stage2_epochs is None or c.stage2_epochs >= 1, "stage2_epochs must be >= 1")
        _check(c.stage2_lr >= 0 and c.stage2_batch_size >= 1, "stage2_lr must be >= 0 and stage2_batch_size >= 1")
        _check(c.stage2_steps in STAGE2_STEPS, f"stage2_steps must be one of {', '.join(STAGE2_STEPS)}, got {c.stage2_steps!r}")
        _check(c.stage2_steps == ADDED_FIELDS["stage2_steps"] or c.second_stage in ("crt", "lws"),
               "stage2_steps applies to crt and lws")
        if c.stage2_tau is not None and c.stage2_tau != "heldout":
            tau = _number(c.stage2_tau)
            _check(tau is not None and tau >= 0,
                   f"stage2_tau must be a number or 'heldout' (a number >= 0), got {c.stage2_tau!r}")
    valid_params = {**losses.LOSS_PARAMS[c.loss], **losses.REWEIGHT_PARAMS[c.reweight]}
    for name, param in LOSS_PARAM_FIELDS.items():
        _check(getattr(c, name) is None or param in valid_params,
               f"{name} does not apply to loss {c.loss!r} with reweight {c.reweight!r}")


def _check_loss_ranges(c: TrainConfig) -> None:
    """The loss parameters' ranges (semscale.losses checks them again when it builds the loss)."""
    ranges = {"focal_gamma": (lambda v: v >= 0, ">= 0"), "ldam_max_m": (lambda v: v > 0, "> 0"),
              "ldam_s": (lambda v: v > 0, "> 0"), "cb_beta": (lambda v: 0 <= v < 1, "in [0, 1)"),
              "drw_fraction": (lambda v: 0 <= v <= 1, "in [0, 1]"), "gce_q": (lambda v: -1 <= v <= 1, "in [-1, 1]"),
              "gca_margin": (lambda v: v >= 0, ">= 0")}
    for name, (ok, text) in ranges.items():
        value = getattr(c, name)
        _check(value is None or ok(value), f"{name} must be {text}, got {value}")
    if c.cdb_tau is not None and c.cdb_tau not in ("dynamic", "dynamic-v1"):
        tau = _number(c.cdb_tau)
        _check(tau is not None and tau >= 0, f"cdb_tau must be 'dynamic', 'dynamic-v1' or a number >= 0, got {c.cdb_tau!r}")


def device_type(config: TrainConfig) -> str:
    """'cuda' or 'cpu': where the config runs (``device="auto"`` takes CUDA when there is one)."""
    if config.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(config.device).type


@functools.cache
def cpu_has_native_bf16() -> bool:
    """The CPU computes bf16 natively (AVX512-BF16 or AMX): there bf16 autocast trains a conv net 1.4-2.3x faster than
    fp32, while emulated bf16 is slower than fp32. Read from /proc/cpuinfo (False where there is none)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def resolved_precision(config: TrainConfig) -> str:
    """'bf16' or 'fp32': ``auto`` is bf16 on CUDA and on a CPU with native bf16, fp32 elsewhere."""
    if config.precision != "auto":
        return config.precision
    return "bf16" if device_type(config) == "cuda" or cpu_has_native_bf16() else "fp32"


def legacy_precision(config: TrainConfig) -> str:
    """What the earlier engine computed in: bf16 on CUDA, fp32 on the CPU (its ``bf16`` flag, always true)."""
    return "bf16" if device_type(config) == "cuda" else "fp32"


def from_record(fields: dict) -> TrainConfig:
    """A TrainConfig from a config saved in run.json or a checkpoint, written by this code or an earlier one."""
    return TrainConfig(**{k: v for k, v in fields.items() if k not in REMOVED_FIELDS})


def first_stage(c: TrainConfig) -> TrainConfig:
    """The first stage of a two-stage config: the same config without its second stage (the plain run it shares)."""
    return dataclasses.replace(c, **{f: ADDED_FIELDS[f] for f in SECOND_STAGE_FIELDS})


def warn_combinations(c: TrainConfig) -> None:
    """Valid but probably unintended combinations (warned once per run, not per config object)."""
    if c.dsb and c.dsb_stage_epochs >= c.epochs:
        warnings.warn(f"dsb_stage_epochs={c.dsb_stage_epochs} >= epochs={c.epochs}: the pool is filled but the loss is "
                      f"never weighted (weighting starts at epoch {c.dsb_stage_epochs + 1})", UserWarning, stacklevel=3)
    if c.loss == "ldam" and c.normed_classifier is False:
        warnings.warn("LDAM is meant for the cosine classifier (normed_classifier=True)", UserWarning, stacklevel=3)


def loss_params(c: TrainConfig) -> dict:
    """The config's loss parameters as ``losses.build_loss`` keywords (only those that are set)."""
    params = {p: getattr(c, name) for name, p in LOSS_PARAM_FIELDS.items() if getattr(c, name) is not None}
    if isinstance(params.get("cdb_tau"), str):
        with contextlib.suppress(ValueError):
            params["cdb_tau"] = float(params["cdb_tau"])
    return params
