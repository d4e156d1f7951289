"""Everything that makes a run: the device, the data-dependent defaults, the network, optimiser, loss and pool,
the learning-rate schedules, and the hooks that observe a run.

* Learning rate: a function of the epoch, set once at the start of each epoch (per-epoch granularity, exactly
  LDAM's ``adjust_learning_rate`` at 200 epochs; no scheduler state to save).
* The network is initialised from ``config.seed`` (:func:`build_network`), so every run of one seed starts from
  the same weights, whatever else it does.
* On CUDA: bf16 autocast and channels_last (``bf16``, ``channels_last``), optional ``torch.compile``.
* :class:`Hooks`: observers of a run in the manner of Dassl's trainer hooks (``before_epoch``, ``after_epoch``):
  subclass and override what you need, pass them to ``train.train(..., hooks=[...])``. They watch; a run with
  hooks computes exactly what it computes without them.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field

import numpy as np
import torch

from . import losses, models, pipeline
from .config import ConfigError, TrainConfig, loss_params
from .metaweight import MetaWeight
from .pipeline import TrainData
from .pool import FeaturePool


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
    return cosine_lr(lr, e, config.epochs)


def cosine_lr(lr: float, epoch: int, epochs: int) -> float:
    """Cosine from lr to 0 over ``epochs`` (1-based ``epoch``), constant within an epoch."""
    return lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / epochs))


# ---------------------------------------------------------------------------------------------------------
# hooks


class Hooks:
    """Observers of a run; every method is a no-op here. ``run`` is the :class:`Run`."""

    def before_epoch(self, run: Run, epoch: int) -> None:
        """The epoch's learning rate and the loss's epoch are set; its first batch comes next."""

    def on_features(self, run: Run, ids: torch.Tensor, features: torch.Tensor) -> None:
        """A batch's penultimate features, before they are written into the pool (``run.pool`` holds the old ones)."""

    def after_step(self, run: Run, ids: torch.Tensor, class_weights: torch.Tensor | None) -> None:
        """After the optimiser step; ``class_weights``: the DSB weights the loss used (None when it was not weighted)."""

    def after_epoch(self, run: Run, epoch: int, test: dict | None) -> None:
        """After a complete epoch's bookkeeping (CDB's update, the pool's rows, the evaluation when due)."""


# ---------------------------------------------------------------------------------------------------------
# the run


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
    mwn: MetaWeight | None = None  # with config.mwn
    hooks: list[Hooks] = field(default_factory=list)

    @property
    def num_batches(self) -> int:
        return pipeline.num_batches(len(self.data.train_labels), self.config.batch_size)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def store_features(self, ids: torch.Tensor, features: torch.Tensor) -> None:
        """Write a batch's features into the pool (after showing them to the hooks); no-op without a pool."""
        if self.pool is None:
            return
        for hook in self.hooks:
            hook.on_features(self, ids, features)
        self.pool.update(ids, features, duplicates=self.config.sampler != "none")

    def dsb_weights(self, weighting: bool) -> torch.Tensor | None:
        """DSB's class weights from the whole pool now, or None when the loss is not weighted."""
        return self.pool.scales().weight if weighting else None


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


def memory_format(config: TrainConfig, device: torch.device) -> torch.memory_format:
    return torch.channels_last if device.type == "cuda" and config.channels_last else torch.contiguous_format


def build_network(config: TrainConfig, num_classes: int, in_channels: int, device: torch.device) -> models.FeatureModel:
    """The run's network, initialised from ``config.seed``, on ``device``."""
    torch.manual_seed(config.seed)
    model = models.build_model(config.model, num_classes, in_channels, config.normed_classifier)
    return model.to(device=device, memory_format=memory_format(config, device))


def build_run(config: TrainConfig, train_data: TrainData, device: torch.device, hooks: typing.Iterable[Hooks] = ()) -> Run:
    """Model (seeded by config.seed), optimiser, loss and pool for a resolved config."""
    cuda = device.type == "cuda"
    model = build_network(config, train_data.num_classes, train_data.train_images.shape[1], device)
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
                                 reduction=config.reduction, **loss_params(config)).to(device)
    except ValueError as e:
        raise ConfigError(f"cannot build loss {config.loss!r} with reweight {config.reweight!r}: {e}") from e
    pool = None
    if config.track_pool:
        pool = FeaturePool(train_data.train_labels, train_data.num_classes, dim=config.pool_dim,
                           alpha=config.dsb_alpha, eps=config.dsb_eps)
    mwn = MetaWeight.for_run(config, train_data, device) if config.mwn else None
    return Run(config, device, train_data, model, forward, optimizer, loss, pool, cuda and config.bf16,
               memory_format(config, device), mwn, list(hooks))
