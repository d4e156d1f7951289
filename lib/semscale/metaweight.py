"""Meta-Weight-Net (Shu et al., NeurIPS 2019): per-sample loss weights from an MLP learned on a balanced meta set.

What the official class-imbalance code does (xjtushujun/Meta-weight-net_class-imbalance,
meta-weight-net-class-imbalance.py; followed here, written anew):

* The weighting net ``V``: Linear(1, 100) -> ReLU -> Linear(100, 1) -> sigmoid of each sample's loss
  (resnet.py, ``VNet`` lines 275-289).
* The meta set: 10 training images per class (``--num_meta 10``, line 29) held out of the long-tailed subset
  (data_utils.py ``build_dataset``). Here: ``mwn_meta_per_class`` images per class from the training images the
  subset leaves unused (``pipeline.load_data(..., meta=True)``, the same draw as CDB's held-out split, so the two overlap);
  meta batches get the training augmentation, as there (data_utils.py line 35).
* Every iteration (``train``, lines 146-211):
  1. look-ahead: the per-sample loss ``L_i`` of the training batch under the current network, weights
     ``v_i = V(L_i)`` normalised to sum 1 (lines 159-168), one plain SGD step of the network with the current
     learning rate and no momentum or weight decay, kept differentiable in V (``create_graph``; lines 170-172,
     resnet.py ``update_params`` line 57). V takes the loss *values* (``L_i`` detached), as in the paper's update
     (θ̂ = θ − α Σ V(L_i; Θ) ∇_θ L_i) and the noisy-label code (xjtushujun/meta-weight-net, MW-Net.py line 206,
     ``vnet(cost_v.data)``); the class-imbalance script feeds the undetached loss (line 159), which adds a
     ∂V/∂L term to the look-ahead gradient;
  2. the meta loss: mean CE of the looked-ahead network on a meta batch (lines 175-179), one step of V's optimiser
     (lines 183-186);
  3. the real step: ``Σ v_i L_i / Σ v_i`` with the updated V, without gradient into V (lines 188-211).
* V's optimiser: SGD, lr 1e-5, momentum 0.9, Nesterov, weight decay 5e-4 (lines 112-114; ``mwn_lr``).

Here the look-ahead network is the run's own model evaluated with ``torch.func.functional_call`` on the looked-ahead
parameters (no copied network): each trained parameter takes a plain step at its own group's learning rate (the
official code has one group; under airbench's protocol the batch norms' biases step 64× faster, as in the real
step), frozen parameters (airbench's whitening filters and batch-norm scales) stay as they are; its BatchNorm buffers are cloned so the look-ahead forwards leave the real running
statistics alone (the official code's copied network has the same effect). The meta batch has the run's batch size
(the official code uses one batch size, 100, for both) and is drawn from the epoch generator, so resume stays exact.

Composition: ``L_i`` is the per-sample loss of the configured loss (CE in ``sweep.METHODS``). The run's class
weights — the loss's own reweighting and, with DSB, ``1/S`` from the pool — multiply V's weights,
``a_i = V(L_i)·c_{y_i}``, in the look-ahead and in the real step, and the batch loss is ``Σ a_i L_i / Σ a_i``
(the official normalisation; ``reduction`` does not apply). The meta loss is plain CE on the balanced meta set.
Cost: three forwards and a second-order backward per iteration (BENCHMARKS.md).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from . import pipeline

MOMENTUM, NESTEROV, WEIGHT_DECAY = 0.9, True, 5e-4  # meta-weight-net-class-imbalance.py lines 112-114
HIDDEN = 100


class WeightNet(nn.Module):
    """V: a loss value -> a weight in (0, 1)."""

    def __init__(self, hidden: int = HIDDEN):
        super().__init__()
        self.linear1 = nn.Linear(1, hidden)
        self.linear2 = nn.Linear(hidden, 1)

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        """(N,) losses -> (N,) weights."""
        return torch.sigmoid(self.linear2(F.relu(self.linear1(losses[:, None].float())))).squeeze(1)


class MetaWeight:
    """The weighting net, its optimiser and the meta set of one run (``state_dict`` for checkpoints)."""

    def __init__(self, config, device: torch.device, meta_images: torch.Tensor, meta_labels: torch.Tensor):
        self.config = config
        self.net = WeightNet().to(device)  # initialised from the global generator, right after the seeded model
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=config.mwn_lr, momentum=MOMENTUM,
                                         nesterov=NESTEROV, weight_decay=WEIGHT_DECAY)
        self.meta_images = meta_images
        self.meta_labels = meta_labels

    @classmethod
    def for_run(cls, config, train_data, device: torch.device) -> "MetaWeight":
        if train_data.meta_images is None:
            raise ValueError("MWN needs the meta set: load the data with pipeline.load_run_data (or load_data(..., meta=True))")
        return cls(config, device, train_data.meta_images, train_data.meta_labels)

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])


def _normalised(a: torch.Tensor) -> torch.Tensor:
    """a / Σa, or a where Σa = 0 (the official code's guard, lines 161-166), without a host sync."""
    total = a.sum()
    return a / torch.where(total > 0, total, torch.ones_like(total))


def weighted_step(run, ids, x, y, class_weights: torch.Tensor | None, generator: torch.Generator):
    """One MWN iteration on ``run`` (a build.Run with ``run.mwn``): V's meta step, then the network's weighted step.

    ``class_weights``: the extra per-class weights (DSB's) or None. Returns (loss, logits) like train.train_step.
    """
    mwn, model, cfg = run.mwn, run.model, run.config
    c = run.loss.reweight_weights.float()
    if class_weights is not None:
        c = c * class_weights.detach().float()
    lr = {id(p): group["lr"] for group in run.optimizer.param_groups for p in group["params"]}
    params = dict(model.named_parameters())
    trained = {k: p for k, p in params.items() if p.requires_grad}  # frozen ones (airbench's) stay as they are
    buffers = {k: b.clone() for k, b in model.named_buffers()}  # look-ahead BN statistics stay off the model

    # 1. look-ahead step, differentiable in V
    with run.autocast():
        logits_hat = functional_call(model, (params, buffers), (x,))
    losses_hat = run.loss.sample_losses(logits_hat.float(), y)
    a_hat = _normalised(mwn.net(losses_hat.detach()) * c[y])
    grads = torch.autograd.grad((a_hat * losses_hat).sum(), list(trained.values()), create_graph=True)
    ahead = {**params, **{k: p - lr[id(p)] * g for (k, p), g in zip(trained.items(), grads)}}

    # 2. meta step of V on a balanced meta batch
    pick = torch.randperm(len(mwn.meta_labels), generator=generator, device=mwn.meta_labels.device)[:cfg.batch_size]
    images = pipeline.augment(mwn.meta_images[pick], cfg, generator)
    x_meta = pipeline.to_input(images, run.data.mean, run.data.std, run.memory_format)
    with run.autocast():
        logits_meta = functional_call(model, (ahead, buffers), (x_meta,))
    meta_loss = F.cross_entropy(logits_meta.float(), mwn.meta_labels[pick])
    v_grads = torch.autograd.grad(meta_loss, list(mwn.net.parameters()))
    for p, g in zip(mwn.net.parameters(), v_grads):
        p.grad = g
    mwn.optimizer.step()

    # 3. the network's step with the updated V
    with run.autocast():
        logits, features = run.forward(x)
    run.store_features(ids, features)
    losses = run.loss.sample_losses(logits.float(), y)
    with torch.no_grad():
        a = mwn.net(losses.detach()) * c[y]
    loss = (_normalised(a) * losses).sum()
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    return loss.detach(), logits.detach()
