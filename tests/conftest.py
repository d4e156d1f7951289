"""What the tests share: the tiny config every training test starts from, and the runs several files read.

The tiny config trains a small CNN on scikit-learn's digits (8x8 images, always available, no mirror needed) with
imbalance 10: 539 training images in 9 batches of 64, one epoch in well under a second on two cores.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch
from semscale import plots
from semscale.build import Hooks
from semscale.config import TrainConfig
from semscale.train import train

#: digits, imbalance 10, the small CNN, batch 64, lr 0.05, two epochs, no progress bars
TINY = dict(dataset="digits", imbalance=10, model="cnn", epochs=2, batch_size=64, lr=0.05, progress=False)
#: the class sizes of the tiny config's training subset (digits-lt10)
TINY_COUNTS = [133, 102, 79, 61, 47, 37, 28, 22, 17, 13]
#: DSB weighting from epoch 2, CDB (which depends on the previous epochs' accuracy) and augmentation all in play
RESUME_FIELDS = dict(epochs=3, dsb=True, dsb_stage_epochs=1, reweight="cdb")


def tiny_config(**fields) -> TrainConfig:
    """The tiny config with ``fields`` set over it."""
    return TrainConfig(**{**TINY, **fields})


@pytest.fixture
def tiny():
    """A fresh copy of the tiny config's fields (for sweep grids, which take dicts)."""
    return dict(TINY)


@pytest.fixture(scope="session")
def straight_run(tmp_path_factory) -> Path:
    """The RESUME_FIELDS run trained in one go: what a stopped, interrupted or observed run must reproduce."""
    out = tmp_path_factory.mktemp("straight")
    train(tiny_config(**RESUME_FIELDS), out)
    return out


class InterruptAt(Hooks):
    """Sends this process a SIGINT after the ``step``-th optimiser step of the run (1-based), as Ctrl-C would."""

    def __init__(self, step: int):
        self.step, self.steps = step, 0

    def after_step(self, run, ids, class_weights):
        self.steps += 1
        if self.steps == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def same_weights(a, b) -> bool:
    """The two run folders' model.pt hold identical tensors."""
    sa, sb = (torch.load(Path(p) / "model.pt", weights_only=True) for p in (a, b))
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def paired_runs(diffs, base_top1=(0.70, 0.80, 0.60), dataset="mnist-lt100", method="CE") -> pd.DataFrame:
    """A constructed runs table (results.collect's columns): base accuracies per seed and DSB = base + diff (fractions)."""
    rows = []
    for seed, (b, d) in enumerate(zip(base_top1, diffs)):
        for name, v in ((method, b), (method + "+DSB", b + d)):
            rows.append({"dataset_variant": dataset, "imbalance": 100.0, "method": name, "seed": seed, "top1": v,
                         "balanced": v, "many": v + 0.1, "medium": v - 0.1, "few": float("nan"),
                         "model": "cnn", "protocol": "ldam-cifar-lt", "epochs": 4, "dsb_stage_epochs": 1})
    return pd.DataFrame(rows)


@pytest.fixture
def styled_figures():
    """The study's figure style for the test, and every figure closed after it."""

    plots.set_style()
    yield
    plt.close("all")
