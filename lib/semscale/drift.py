"""The slow-drift premise of DSB (paper Sec 2), measured on a run: how far each sample's pooled feature moves
between two visits, and how much the classes' S and DSB weights change from one epoch to the next.

A run with ``record_drift=True`` carries a :class:`DriftRecorder` (a :class:`semscale.build.Hooks`) and writes

* ``drift_visits.csv``: one row per iteration (epoch, batch, the mean cosine distance between the batch's new
  pooled features and the ones they replace in the pool, written one epoch earlier, the number of samples
  compared, and the fraction of training done in epochs);
* ``drift_epochs.csv``: per epoch e ≥ 2, :func:`epoch_drift` between the pools at the ends of epochs e − 1 and e.

The recorder only reads; the run computes exactly what it computes without it. Its state lives in the run's
history, so it is checkpointed and resumes with the run.
"""

from __future__ import annotations

import pandas as pd
import torch

from . import scale
from .build import Hooks, Run
from .pool import pooled

VISIT_COLUMNS = ["epoch", "batch", "cos_mean", "samples"]
EPOCH_COLUMNS = ["epoch", "cos_mean", "cos_median", "cos_p90", "rel_mean", "S_max_rel_change", "weight_max_rel_change"]


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise 1 − cos(a_i, b_i) of two (N, d) tensors (float64); a zero row gives distance 1."""
    a, b = a.double(), b.double()
    num = (a * b).sum(1)
    den = a.norm(dim=1) * b.norm(dim=1)
    return 1 - torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))


def relative_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise ‖b_i − a_i‖ / ‖a_i‖ (float64; NaN for a zero row of ``a``)."""
    a, b = a.double(), b.double()
    return (b - a).norm(dim=1) / a.norm(dim=1).where(a.norm(dim=1) > 0, torch.full_like(a[:, 0], float("nan")))


def pool_scales(snapshot: torch.Tensor, labels: torch.Tensor, num_classes: int, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, DSB weights) of every class from a pool's features."""
    vol = scale.class_volumes(snapshot, labels, num_classes, validate=False)
    s = scale.imbalance(vol, scale.class_centers(snapshot, labels, num_classes, validate=False), alpha, validate=False)[2]
    return s, scale.dsb_weights(s, validate=False)


def epoch_drift(before: torch.Tensor, after: torch.Tensor, s_before, s_after, w_before, w_after) -> dict:
    """Between two pools: the mean, median and 90th percentile of each sample's cosine distance, the mean relative
    distance, and the largest relative change over classes of S and of the DSB weight."""
    d = cosine_distance(before, after)
    return {"cos_mean": float(d.mean()), "cos_median": float(d.median()), "cos_p90": float(torch.quantile(d, 0.9)),
            "rel_mean": float(relative_distance(before, after).nanmean()),
            "S_max_rel_change": float(((s_after - s_before).abs() / s_before).max()),
            "weight_max_rel_change": float(((w_after - w_before).abs() / w_before).max())}


def snapshot_drift(snapshots: list[torch.Tensor], labels: torch.Tensor, num_classes: int, alpha: float = 2.0) -> pd.DataFrame:
    """:func:`epoch_drift` of consecutive end-of-epoch ``snapshots`` (one (N, d) pool per epoch, from 1), per epoch ≥ 2."""
    rows, previous = [], None
    for e, snap in enumerate(snapshots, start=1):
        s, w = pool_scales(snap, labels, num_classes, alpha)
        if previous is not None:
            rows.append({"epoch": e, **epoch_drift(previous[0], snap, previous[1], s, previous[2], w)})
        previous = (snap, s, w)
    return pd.DataFrame(rows, columns=EPOCH_COLUMNS)


class DriftRecorder(Hooks):
    """Records drift into ``state`` (:meth:`new_state`; kept in the run's history)."""

    def __init__(self, state: dict):
        self.state = state

    @staticmethod
    def new_state() -> dict:
        return {"visits": [], "epochs": [], "epoch": 0, "batch": 0, "num_batches": 0, "previous": None}

    def before_epoch(self, run: Run, epoch: int) -> None:
        if self.state["epoch"] != epoch:  # a resumed epoch keeps its batch count
            self.state.update(epoch=epoch, batch=0)
        self.state["num_batches"] = run.num_batches

    def on_features(self, run: Run, ids: torch.Tensor, features: torch.Tensor) -> None:
        pool = run.pool
        old, filled = pool.features[ids], pool.filled[ids]
        if bool(filled.any()):
            d = cosine_distance(old[filled], pooled(features, pool.dim)[filled])
            self.state["visits"].append([self.state["epoch"], self.state["batch"], float(d.mean()), int(filled.sum())])
        self.state["batch"] += 1

    def after_epoch(self, run: Run, epoch: int, test: dict | None) -> None:
        snap = run.pool.features.detach().to("cpu", copy=True)  # on the CPU: the checkpoint holds it
        s, w = pool_scales(snap, run.pool.labels.cpu(), run.data.num_classes, run.config.dsb_alpha)
        if self.state["previous"] is not None:
            before, s_before, w_before = self.state["previous"]
            self.state["epochs"].append({"epoch": epoch, **epoch_drift(before, snap, s_before, s, w_before, w)})
        self.state["previous"] = [snap, s, w]

    @staticmethod
    def tables(state: dict) -> dict[str, pd.DataFrame]:
        """{"visits": per iteration, "epochs": per epoch} from a recorder's state."""
        visits = pd.DataFrame(state["visits"], columns=VISIT_COLUMNS)
        visits["progress_epochs"] = visits.epoch - 1 + (visits.batch + 1) / max(state["num_batches"], 1)
        return {"visits": visits, "epochs": pd.DataFrame(state["epochs"], columns=EPOCH_COLUMNS)}
