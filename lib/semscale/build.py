"""Everything that makes a run: the device, the data-dependent defaults, the network, optimiser, loss and pool,
the learning-rate schedules, and the hooks that observe a run.

* Learning rate: a function of the epoch, set once at the start of each epoch (per-epoch granularity, exactly
  LDAM's ``adjust_learning_rate`` at 200 epochs; no scheduler state to save), or, for the ``airbench`` schedule, of
  the step (set before every step). Each parameter group carries an ``lr_scale``: the schedule's learning rate
  times it is the group's (:func:`optimizer_groups`: airbench's decoupled parametrisation and its 64× rate for the
  batch norms' biases; 1 for a single group otherwise).
* The network is initialised from ``config.seed`` (:func:`build_network`), so every run of one seed starts from
  the same weights, whatever else it does.
* Precision: the resolved ``precision`` (``config.resolved_precision``): bf16 autocast (the classifier and the loss
  stay float32) or fp32; channels_last on CUDA and on the CPU in bf16 (``channels_last``); optional ``torch.compile``.
* Lookahead (airbench): an EMA of the weights and float buffers that the weights move to every 5 steps (:class:`Lookahead`).
* The airbench models' whitening layer is initialised from a seeded sample of the training subset (:func:`build_run`).
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
from .config import ConfigError, TrainConfig, loss_params, resolved_precision
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


PER_STEP_SCHEDULES = ("airbench",)


def airbench_factor(step: int, total_steps: int) -> float:
    """airbench94's learning-rate factor at 0-based ``step`` (legacy/airbench94.py lines 381-389): linear from 0.2 to
    1 over the first 23 % of the steps, then linear down to 0.07 at the last."""
    warmup = int(total_steps * 0.23)
    if step < warmup:
        frac = step / warmup
        return 0.2 * (1 - frac) + 1.0 * frac
    frac = (step - warmup) / (total_steps - warmup)
    return 1.0 * (1 - frac) + 0.07 * frac


def learning_rate(config: TrainConfig, epoch: int, step: int | None = None, total_steps: int | None = None) -> float:
    """The learning rate of 1-based ``epoch`` (constant within the epoch), or of 0-based ``step`` of
    ``total_steps`` for a per-step schedule (airbench).

    ldam: lr·e/w for e <= w (linear warm-up), lr·1e-4 after the second and lr·1e-2 after the first milestone
    (LDAM-DRW's adjust_learning_rate); exponential: lr·decay^(e−1); cosine: lr·½(1 + cos(π(e−1)/E));
    airbench: lr·:func:`airbench_factor`.
    """
    lr, e = config.lr, epoch
    if config.schedule == "airbench":
        return lr * airbench_factor(step, total_steps)
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
    precision: str  # resolved: "bf16" or "fp32"
    memory_format: torch.memory_format
    mwn: MetaWeight | None = None  # with config.mwn
    hooks: list[Hooks] = field(default_factory=list)
    lookahead: Lookahead | None = None  # with config.lookahead

    @property
    def num_batches(self) -> int:
        return pipeline.num_batches(len(self.data.train_labels), self.config.batch_size)

    @property
    def total_steps(self) -> int:
        return self.num_batches * self.config.epochs

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def set_learning_rate(self, lr: float) -> None:
        set_learning_rate(self.optimizer, lr)

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


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every parameter group's learning rate: ``lr`` times its ``lr_scale``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]


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
    """channels_last on CUDA and, in bf16, on the CPU (where oneDNN's bf16 convolutions want it); else contiguous."""
    fast = device.type == "cuda" or resolved_precision(config) == "bf16"
    return torch.channels_last if config.channels_last and fast else torch.contiguous_format


def build_network(config: TrainConfig, num_classes: int, in_channels: int, device: torch.device) -> models.FeatureModel:
    """The run's network, initialised from ``config.seed``, on ``device``."""
    torch.manual_seed(config.seed)
    model = models.build_model(config.model, num_classes, in_channels, config.normed_classifier)
    return model.to(device=device, memory_format=memory_format(config, device))


def optimizer_groups(config: TrainConfig, model: torch.nn.Module) -> list[dict]:
    """The parameter groups of SGD or Adam, each with its ``lr_scale`` and weight decay.

    Classic (``decoupled_lr`` false, ``bias_lr_scale`` 1): one group of every parameter, ``lr_scale`` 1, weight decay
    ``weight_decay`` (exactly the earlier engine's optimiser). Otherwise the trainable parameters in two groups,
    the batch norms' biases and the rest (airbench94.py lines 359-379). With ``decoupled_lr``, ``lr`` and
    ``weight_decay`` are per 1024 examples and decoupled from the momentum μ: the loss here is a mean over the batch
    B (each method keeps its own reduction), so the optimiser's rate is lr·B/(1024·(1 + 1/(1 − μ))) — airbench's
    per-example step on its summed loss — and every group decays by the same weight_decay·B/(1024·(1 + 1/(1 − μ)))
    per step at full rate, whatever its ``lr_scale`` (the biases' 64× rate leaves their decay alone, as there).
    """
    if not config.decoupled_lr and config.bias_lr_scale == 1.0:
        return [{"params": list(model.parameters()), "lr_scale": 1.0, "weight_decay": config.weight_decay}]
    norm_biases = {id(m.bias) for m in model.modules()
                   if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.bias is not None}
    trainable = [p for p in model.parameters() if p.requires_grad]
    biases = [p for p in trainable if id(p) in norm_biases]
    others = [p for p in trainable if id(p) not in norm_biases]
    scale = config.batch_size / (1024 * (1 + 1 / (1 - config.momentum))) if config.decoupled_lr else 1.0
    groups = []
    for params, factor in ((biases, config.bias_lr_scale), (others, 1.0)):
        if params:
            decay = config.weight_decay / (config.lr * factor) if config.decoupled_lr else config.weight_decay
            groups.append({"params": params, "lr_scale": scale * factor, "weight_decay": decay})
    return groups


class Lookahead:
    """airbench's lookahead (airbench94.py lines 263-271, 392, 430-435): every ``EVERY`` steps an EMA of the model's
    float state (weights and batch-norm statistics) takes a step towards it with decay 0.95⁵·(t/T)³ and the model
    jumps to the EMA; after the last step the model becomes the EMA."""

    EVERY = 5

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.ema = {k: v.detach().clone() for k, v in model.state_dict().items() if v.dtype.is_floating_point}

    def step(self, step: int, total_steps: int) -> None:
        """After 1-based ``step`` of ``total_steps``: the lookahead update when it is due, the final copy at the end."""
        if step % self.EVERY == 0:
            self.update(0.95**5 * (step / total_steps) ** 3)
        if step >= total_steps:
            self.update(1.0)

    @torch.no_grad()
    def update(self, decay: float) -> None:
        state = self.model.state_dict()
        for name, ema in self.ema.items():
            ema.lerp_(state[name], 1 - decay)
            state[name].copy_(ema)

    def state_dict(self) -> dict:
        return dict(self.ema)

    def load_state_dict(self, state: dict) -> None:
        for name, ema in self.ema.items():
            ema.copy_(state[name])


WHITEN_SAMPLE = 5000  # airbench94.py line 402: the whitening layer sees 5000 training images


def init_whitening(model: models.FeatureModel, config: TrainConfig, train_data: TrainData) -> None:
    """Initialise an airbench model's whitening layer from a seeded, class-mixed sample of the training subset
    (a uniform draw: subsets are stored in class order, so their first rows would be one class)."""
    generator = torch.Generator().manual_seed(config.seed)
    pick = torch.randperm(len(train_data.train_labels), generator=generator)[:WHITEN_SAMPLE].to(train_data.train_images.device)
    model.init_whitening(pipeline.to_input(train_data.train_images[pick], train_data.mean, train_data.std))


def build_run(config: TrainConfig, train_data: TrainData, device: torch.device, hooks: typing.Iterable[Hooks] = ()) -> Run:
    """Model (seeded by config.seed), optimiser, loss and pool for a resolved config."""
    model = build_network(config, train_data.num_classes, train_data.train_images.shape[1], device)
    forward = model.forward_with_features
    if config.compile != "none":
        forward = torch.compile(forward, mode=None if config.compile == "default" else config.compile)
    if isinstance(model, models.Airbench):
        init_whitening(model, config, train_data)
    groups = optimizer_groups(config, model)
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    else:
        optimizer = torch.optim.Adam(groups, lr=config.lr)
    try:
        loss = losses.build_loss(config.loss, train_data.train_counts, reweight=config.reweight, reduction=config.reduction,
                                 label_smoothing=config.label_smoothing, **loss_params(config)).to(device)
    except ValueError as e:
        raise ConfigError(f"cannot build loss {config.loss!r} with reweight {config.reweight!r}: {e}") from e
    pool = None
    if config.track_pool:
        pool = FeaturePool(train_data.train_labels, train_data.num_classes, dim=config.pool_dim,
                           alpha=config.dsb_alpha, eps=config.dsb_eps)
    mwn = MetaWeight.for_run(config, train_data, device) if config.mwn else None
    return Run(config, device, train_data, model, forward, optimizer, loss, pool, resolved_precision(config),
               memory_format(config, device), mwn, list(hooks), Lookahead(model) if config.lookahead else None)
