"""DSB's storage pool (PAPER.md §3): the newest 64-d feature of every training sample, on the training device.

The pool is indexed by sample id (the sample's position in the training subset). Every mini-batch writes its
detached penultimate features, 1-D average pooled to ``dim`` (64), into the rows of its samples; with one
reshuffle per epoch this is the paper's mini-batch FIFO. ``scales()`` recomputes the semantic scale of every
class from the whole pool in one batched call to :mod:`semscale.scale` and never reads back to the host, so
the trainer can call it every iteration.

Three stages with ``n`` stage epochs (1-based epochs; the paper's text and Fig. 16, not its Algorithm 2):

* epoch 1 ("fill"): the pool is filled, plain loss;
* epochs 2..n ("refresh"): the pool keeps being refreshed, plain loss;
* epochs n+1.. ("weight"): every iteration refreshes the pool, recomputes S and weights the loss by 1/S.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from . import scale

def stage(epoch: int, stage_epochs: int) -> str:
    """The DSB stage of a 1-based ``epoch`` with ``stage_epochs`` = n."""
    if epoch < 1 or stage_epochs < 1:
        raise ValueError(f"epoch and stage_epochs must be >= 1 (1-based), got epoch={epoch}, stage_epochs={stage_epochs}")
    if epoch == 1:
        return "fill"
    return "refresh" if epoch <= stage_epochs else "weight"


def pooled(features: torch.Tensor, dim: int = 64) -> torch.Tensor:
    """(N, F) features -> detached float32 (N, dim) by 1-D adaptive average pooling over the feature axis."""
    return F.adaptive_avg_pool1d(features.detach().float()[:, None, :], dim)[:, 0]


class PoolScales(NamedTuple):
    """Per-class semantic scales from the pool; each a (C,) float64 tensor on the pool's device."""

    volume: torch.Tensor
    S_prime: torch.Tensor
    W: torch.Tensor
    S: torch.Tensor
    weight: torch.Tensor


class FeaturePool:
    """One pooled feature and the label of each of N training samples.

    labels: (N,) int64 on the training device (the pool lives there). alpha and eps are the measure's
    parameters (PAPER.md §1–2). Reads the class sizes to the host once, here.
    """

    def __init__(self, labels: torch.Tensor, num_classes: int, *, dim: int = 64, alpha: float = 2.0, eps: float = 1.0):
        if labels.ndim != 1:
            raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
        self.labels = labels.long()
        self.num_classes = int(num_classes)
        self.dim = int(dim)
        self.alpha = float(alpha)
        self.eps = float(eps)
        counts = torch.bincount(self.labels, minlength=self.num_classes)
        self.max_count = int(counts.max())
        self.features = torch.zeros(labels.shape[0], self.dim, dtype=torch.float32, device=labels.device)
        self.filled = torch.zeros(labels.shape[0], dtype=torch.bool, device=labels.device)

    def update(self, ids: torch.Tensor, features: torch.Tensor, duplicates: bool = False) -> None:
        """Store the pooled, detached ``features`` (B, F) of samples ``ids`` (B,).

        ``duplicates``: ``ids`` may repeat (a re-sampled batch); then the last occurrence of each id is stored
        (an indexed write with repeated indices is undefined, and was measured to vary between runs on CPU)."""
        values = pooled(features, self.dim)
        if duplicates:
            position = torch.arange(len(ids), device=ids.device)
            last = torch.full((self.features.shape[0],), -1, dtype=torch.long, device=ids.device)
            last.scatter_reduce_(0, ids, position, reduce="amax")
            keep = last[ids] == position
            ids, values = ids[keep], values[keep]
        self.features[ids] = values
        self.filled[ids] = True

    def is_full(self) -> bool:
        """Every sample has a feature (reads to the host)."""
        return bool(self.filled.all())

    def scales(self) -> PoolScales:
        """Volumes, S′, W, S and DSB weights of every class from the whole pool, without a host sync."""
        volume = scale.class_volumes(self.features, self.labels, self.num_classes, self.eps,
                                     max_count=self.max_count, validate=False)
        centers = scale.class_centers(self.features, self.labels, self.num_classes, validate=False)
        s_prime, w, s = scale.imbalance(volume, centers, self.alpha, validate=False)
        return PoolScales(volume, s_prime, w, s, scale.dsb_weights(s, validate=False))

    def state_dict(self) -> dict:
        return {"features": self.features, "filled": self.filled}

    def load_state_dict(self, state: dict) -> None:
        if state["features"].shape != self.features.shape:
            raise ValueError(f"pool state has shape {tuple(state['features'].shape)}, this pool {tuple(self.features.shape)}")
        self.features.copy_(state["features"])
        self.filled.copy_(state["filled"])
