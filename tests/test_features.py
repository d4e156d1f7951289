"""semscale.features: the features of a finished run from its saved weights, and their class scales."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY
from semscale import features, scale, sweep
from semscale.build import build_network
from semscale.config import TrainConfig


def test_features_of_a_finished_run_reproduce_its_predictions(tmp_path):
    (result,) = sweep.run(sweep.grid(TINY, seed=[0]), tmp_path, log=lambda line: None)
    test = features.extract(result.path, split="test")
    assert test.features.shape == (450, 128) and test.pooled.shape == (450, 64)
    train = features.extract(result.path, split="train")
    assert len(train.labels) == result.record["subset"]["size"]
    config = TrainConfig(**{**result.record["config"], "device": "cpu"})
    model = build_network(config, 10, 1, torch.device("cpu"))
    model.load_state_dict(torch.load(result.path / "model.pt", weights_only=True))
    predictions = model.classifier(test.features).argmax(1)
    per_class = pd.read_csv(result.path / "per_class.csv")
    accuracy = [float((predictions[test.labels == c] == c).float().mean()) for c in range(10)]
    np.testing.assert_allclose(accuracy, per_class.accuracy, atol=1e-12)
    scales = features.class_scales(test.pooled, test.labels, 10)
    assert scales.S_prime.max() == pytest.approx(1.0) and (scales.volume > 0).all()
    with pytest.raises(FileNotFoundError, match="no finished run"):
        features.extract(tmp_path / "nothing")


def test_class_scales_are_the_scale_modules_measures():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(30)
    feats = torch.randn(90, 8, generator=g) * (1 + labels[:, None])  # class 2 spreads widest
    table = features.class_scales(feats, labels, 3, alpha=2.0)
    volume = scale.class_volumes(feats, labels, 3)
    s_prime, w, s = scale.imbalance(volume, scale.class_centers(feats, labels, 3), 2.0)
    np.testing.assert_allclose(table.volume, volume.numpy())
    np.testing.assert_allclose(table[["S_prime", "W", "S"]].to_numpy(), torch.stack([s_prime, w, s], 1).numpy())
    assert table.volume.is_monotonic_increasing and table.S_prime.iloc[-1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="split must be one of train, test"):
        features.extract("anywhere", split="val")


def test_a_run_records_its_own_feature_scales_and_an_older_run_gets_them_from_its_weights(tmp_path):
    (result,) = sweep.run(sweep.grid(TINY, seed=[0]), tmp_path, log=lambda line: None)
    recorded = pd.read_csv(result.path / "per_class.csv")
    for split in features.SPLITS:  # what the run wrote at its end is what its saved weights give now
        feats = features.extract(result.path, split=split)
        centers = scale.class_centers(feats.pooled, feats.labels, 10)
        np.testing.assert_array_equal(recorded[f"feature_{split}_volume"], scale.class_volumes(feats.pooled, feats.labels, 10))
        np.testing.assert_array_equal(recorded[f"feature_{split}_volume_full"], scale.class_volumes(feats.features, feats.labels, 10))
        np.testing.assert_array_equal(recorded[f"feature_{split}_center_distance"], scale.center_distances(centers))
        s_prime, w, s = scale.imbalance_from_distances(recorded[f"feature_{split}_volume"], recorded[f"feature_{split}_center_distance"], 2.0)
        np.testing.assert_allclose(s.numpy(), scale.imbalance(scale.class_volumes(feats.pooled, feats.labels, 10), centers, 2.0)[2])
    assert (recorded.feature_pooled_dim == 64).all() and (recorded.feature_full_dim == 128).all()
    older = recorded.drop(columns=features.SCALE_COLUMNS)  # a run recorded before the columns existed
    older.to_csv(result.path / "per_class.csv", index=False)
    pd.testing.assert_frame_equal(features.run_scales(result.path), recorded)
    pd.testing.assert_frame_equal(pd.read_csv(result.path / "per_class.csv"), recorded)  # written back, once
    older.to_csv(result.path / "per_class.csv", index=False)
    (result.path / "model.pt").unlink()
    with pytest.raises(FileNotFoundError, match="bring model.pt beside it, or train the run again"):
        features.run_scales(result.path)
