"""Features of a finished run, from its saved weights: feature volumes of trained models next to sample volumes.

    feats = features.extract("runs/mnist_m500_cnn_ce_s0-...", split="test")   # .features (N, F), .pooled (N, 64)
    table = features.class_scales(feats.pooled, feats.labels, len(feats.classes), alpha=1.0)

The run's config (run.json) rebuilds the same data (subset, resize, normalisation) and network; model.pt holds
the final weights. Features are computed in float32 in eval mode, without augmentation: ``train`` is the run's
training subset in subset order, ``test`` the full test set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from . import pipeline, scale
from .build import build_network
from .config import TrainConfig, from_record
from .pool import pooled

SPLITS = ("train", "test")


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


@torch.no_grad()
def extract(run_dir, split: str = "test", *, device: str = "cpu", batch_size: int = 512) -> RunFeatures:
    """The penultimate and pooled features of ``split`` ("train" or "test") under the run's final weights."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    run_dir = Path(run_dir)
    config = _config_of(run_dir, device)
    dev = torch.device(device)
    data = pipeline.load_data(config, dev)
    images, labels = (data.train_images, data.train_labels) if split == "train" else (data.test_images, data.test_labels)
    model = build_network(config, data.num_classes, images.shape[1], dev)
    model.load_state_dict(torch.load(run_dir / "model.pt", map_location=dev, weights_only=True))
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
