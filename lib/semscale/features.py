"""Features of a finished run: feature volumes of trained models next to sample volumes.

    scales = features.run_scales("runs/mnist_m500_cnn_ce_s0-...")             # per class, from per_class.csv
    feats = features.extract("runs/mnist_m500_cnn_ce_s0-...", split="test")   # .features (N, F), .pooled (N, 64)
    table = features.class_scales(feats.pooled, feats.labels, len(feats.classes), alpha=1.0)

Every run records, at its end, the semantic scale of its own penultimate features per class, on its training
subset and on the test set (:func:`scale_columns`, per_class.csv's ``feature_<split>_<name>`` columns), so the
notebooks need no weights after training and render where the records are (train there, render here).
:func:`run_scales` reads them; for a run recorded before those columns existed it computes them once from model.pt
and adds them to its per_class.csv. :func:`extract` rebuilds the run's data (run.json: subset, resize,
normalisation) and network with the final weights (model.pt). Features are float32 in eval mode, without
augmentation: ``train`` is the run's training subset in subset order, ``test`` the full test set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import pipeline, records, scale
from .build import build_network
from .config import TrainConfig, from_record
from .pool import pooled

SPLITS = ("train", "test")
#: per split, what per_class.csv records of the run's features (column ``feature_<split>_<name>``): the volume of
#: the pooled features (DSB's pool_dim-d space, PAPER.md §1), of the full penultimate features, the pooled class
#: centre's mean distance to the others (w of PAPER.md §2: with the volumes it gives S′, W and S at any α:
#: scale.imbalance_from_distances), and the shrinkage-corrected volume of the pooled features (PAPER.md §7)
SCALE_NAMES = ("volume", "volume_full", "center_distance", "volume_shrinkage")
#: the batch of the features' pass per split (eval mode: the batch changes no feature, only the kernels' blocking)
BATCH = {"train": 512, "test": 256}


@dataclass
class RunFeatures:
    features: torch.Tensor  # (N, F) float32 penultimate features (after global average pooling)
    pooled: torch.Tensor  # (N, pool_dim) float32: DSB's 1-D average pooled features
    labels: torch.Tensor  # (N,) int64
    classes: tuple[str, ...]
    split: str
    run: str


def _config_of(run_dir: Path, device: str) -> TrainConfig:
    path = run_dir / "run.json"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} holds no finished run (no run.json): train it first (sweep.run or semscale.train)")
    if not (run_dir / "model.pt").exists():
        raise FileNotFoundError(f"{run_dir}/model.pt is missing: the run's weights are needed for its features")
    fields = json.loads(path.read_text())["config"]
    return from_record({**fields, "device": device, "progress": False})


@torch.no_grad()
def features_of(model, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Penultimate float32 features of uint8 ``images`` under ``model`` (put it in eval mode first), batch by batch."""
    return torch.cat([model.features(pipeline.to_input(images[s:s + batch_size], mean, std)).float()
                      for s in range(0, len(images), batch_size)])


def _trained(run_dir: Path, device: str) -> tuple[TrainConfig, pipeline.TrainData, torch.nn.Module]:
    """A finished run's config, its data (run.json: subset, resize, normalisation) and its network with the final
    weights (model.pt), on ``device``."""
    config = _config_of(run_dir, device)
    dev = torch.device(device)
    data = pipeline.load_data(config, dev)
    model = build_network(config, data.num_classes, data.train_images.shape[1], dev)
    model.load_state_dict(torch.load(run_dir / "model.pt", map_location=dev, weights_only=True))
    return config, data, model


@torch.no_grad()
def extract(run_dir, split: str = "test", *, device: str = "cpu", batch_size: int = 512) -> RunFeatures:
    """The penultimate and pooled features of ``split`` ("train" or "test") under the run's final weights."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    run_dir = Path(run_dir)
    config, data, model = _trained(run_dir, device)
    images, labels = (data.train_images, data.train_labels) if split == "train" else (data.test_images, data.test_labels)
    model.eval()
    feats = features_of(model, images, data.mean, data.std, batch_size)
    return RunFeatures(feats, pooled(feats, config.pool_dim), labels, data.classes, split, run_dir.name)


def class_scales(features, labels, num_classes: int, alpha: float = 1.0, eps: float = 1.0) -> pd.DataFrame:
    """Per class: volume (bits), S′, W and S (PAPER.md §1–2) of ``features`` (N, d), as a tidy frame."""
    volume = scale.class_volumes(features, labels, num_classes, eps)
    centers = scale.class_centers(features, labels, num_classes)
    s_prime, w, s = scale.imbalance(volume, centers, alpha)
    return pd.DataFrame({"class": range(num_classes), "volume": volume.cpu().numpy(), "S_prime": s_prime.cpu().numpy(),
                         "W": w.cpu().numpy(), "S": s.cpu().numpy()})


def scale_columns(model, data: pipeline.TrainData, pool_dim: int) -> pd.DataFrame:
    """Per class: ``feature_<split>_<name>`` for every split and SCALE_NAMES, and the dimensions (``feature_pooled_dim``,
    ``feature_full_dim``), of ``model``'s features (put in eval mode here) of the training subset and the test set."""
    model.eval()
    C = data.num_classes
    frame = {"class": np.arange(C)}
    for split in SPLITS:
        images, labels = (data.train_images, data.train_labels) if split == "train" else (data.test_images, data.test_labels)
        full = features_of(model, images, data.mean, data.std, BATCH[split])
        small = pooled(full, pool_dim)
        values = {"volume": scale.class_volumes(small, labels, C), "volume_full": scale.class_volumes(full, labels, C),
                  "center_distance": scale.center_distances(scale.class_centers(small, labels, C)),
                  "volume_shrinkage": scale.shrinkage_volumes(small, labels, C)}
        frame.update({f"feature_{split}_{name}": values[name].cpu().numpy() for name in SCALE_NAMES})
    frame["feature_pooled_dim"], frame["feature_full_dim"] = small.shape[1], full.shape[1]
    return pd.DataFrame(frame)


SCALE_COLUMNS = [f"feature_{split}_{name}" for split in SPLITS for name in SCALE_NAMES] + ["feature_pooled_dim", "feature_full_dim"]


def run_scales(run_dir, *, device: str = "cpu") -> pd.DataFrame:
    """The run's per_class.csv with its feature scales (SCALE_COLUMNS). A run recorded before they existed gets them
    once from its weights (model.pt, on ``device``), written into its per_class.csv; without weights, a
    FileNotFoundError says what to do."""
    run_dir = Path(run_dir)
    per_class = pd.read_csv(run_dir / "per_class.csv")
    if all(c in per_class for c in SCALE_COLUMNS):
        return per_class
    if not (run_dir / "model.pt").exists():
        raise FileNotFoundError(f"{run_dir} was recorded before runs kept their feature scales and its weights "
                                f"(model.pt) are not here: bring model.pt beside it, or train the run again")
    config, data, model = _trained(run_dir, device)
    columns = scale_columns(model, data, config.pool_dim)
    per_class = per_class.drop(columns=[c for c in SCALE_COLUMNS if c in per_class]).merge(columns, on="class")
    records.write_csv_atomic(run_dir / "per_class.csv", per_class)
    return per_class
