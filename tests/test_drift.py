"""semscale.drift: the distances, the drift between pools, and a run that records its drift (``record_drift``)."""

import math
import signal

import pandas as pd
import pytest
import torch
from conftest import RESUME_FIELDS, InterruptAt, same_weights, tiny_config
from semscale import drift
from semscale.config import ConfigError
from semscale.train import TrainingInterrupted, train

DRIFT_TABLES = ("drift_visits.csv", "drift_epochs.csv")


def test_cosine_distance_on_rotated_features():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 2, generator=g)
    theta = 0.3
    rot = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    d = drift.cosine_distance(a, a @ rot.T)
    assert torch.allclose(d, torch.full_like(d, 1 - math.cos(theta)), atol=1e-12)
    assert torch.allclose(drift.cosine_distance(a, 3 * a), torch.zeros(500, dtype=torch.float64), atol=1e-12)


def test_snapshot_drift_measures_the_known_movement_and_zero_when_still():
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(3).repeat_interleave(40)
    first = torch.randn(120, 8, generator=g) + 3 * torch.nn.functional.one_hot(labels, 8).float()
    noise = torch.randn(120, 8, generator=g)
    moved = first + 0.5 * noise
    table = drift.snapshot_drift([first, first.clone(), moved], labels, 3)
    assert list(table.epoch) == [2, 3]
    still, step = table.iloc[0], table.iloc[1]
    assert still.cos_mean == pytest.approx(0.0, abs=1e-12) and still.S_max_rel_change == pytest.approx(0.0, abs=1e-12)
    expected = drift.cosine_distance(first, moved)
    assert step.cos_mean == pytest.approx(float(expected.mean()))
    assert step.cos_mean > 0.01 and step.rel_mean == pytest.approx(
        float(((moved - first).norm(dim=1) / first.norm(dim=1)).mean()), rel=1e-6)


# --- a run with record_drift (the RESUME_FIELDS run: DSB weighting from epoch 2, CDB, augmentation) ---------------


@pytest.fixture(scope="module")
def drift_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("drift")
    train(tiny_config(**RESUME_FIELDS, record_drift=True), out)
    return out


def _tables(folder):
    return [pd.read_csv(folder / name) for name in DRIFT_TABLES]


def test_recording_drift_changes_nothing_the_run_computes(drift_run, straight_run):
    plain, observed = (pd.read_csv(p / "per_class.csv") for p in (straight_run, drift_run))
    pd.testing.assert_series_equal(observed.accuracy, plain.accuracy, check_exact=True)
    pd.testing.assert_frame_equal(observed, plain, check_exact=True)  # and the pool's S columns too
    records = [pd.read_json(p / "run.json", typ="series") for p in (straight_run, drift_run)]
    assert records[1]["final"]["top1"] == records[0]["final"]["top1"]
    assert same_weights(straight_run, drift_run)
    assert all((drift_run / name).exists() and not (straight_run / name).exists() for name in DRIFT_TABLES)


def test_the_drift_tables_hold_every_weighted_iteration_and_epoch(drift_run):
    visits, epochs = _tables(drift_run)
    assert list(visits.columns) == [*drift.VISIT_COLUMNS, "progress_epochs"]
    assert list(epochs.columns) == drift.EPOCH_COLUMNS
    # epoch 1 fills the pool (nothing to compare with); every later batch of 64 revisits 64 pooled samples
    assert visits.groupby("epoch").size().to_dict() == {2: 9, 3: 9} and visits.batch.tolist() == list(range(9)) * 2
    assert visits.samples.tolist() == [64] * 8 + [27] + [64] * 8 + [27]  # 539 = 8 * 64 + 27
    assert visits.progress_epochs.iloc[0] == pytest.approx(1 + 1 / 9) and visits.progress_epochs.iloc[-1] == 3
    assert (visits.cos_mean > 0).all() and (visits.cos_mean < 1).all()
    assert epochs.epoch.tolist() == [2, 3] and (epochs.cos_mean > 0).all() and (epochs.cos_p90 >= epochs.cos_median).all()


def test_a_drift_run_stopped_at_an_epoch_end_resumes_to_the_same_tables(tmp_path, drift_run):
    with pytest.raises(TrainingInterrupted, match="end of epoch 2"):
        train(tiny_config(**RESUME_FIELDS, record_drift=True, stop_after_epoch=2), tmp_path)
    assert all((tmp_path / name).exists() for name in DRIFT_TABLES)  # written epoch by epoch
    assert _tables(tmp_path)[1].epoch.tolist() == [2]
    train(tiny_config(**RESUME_FIELDS, record_drift=True), tmp_path, resume=True)
    for resumed, straight in zip(_tables(tmp_path), _tables(drift_run)):
        pd.testing.assert_frame_equal(resumed, straight, check_exact=True)
    assert same_weights(tmp_path, drift_run)


def test_a_drift_run_interrupted_mid_epoch_resumes_to_the_same_tables(tmp_path, drift_run):
    with pytest.raises(TrainingInterrupted, match="epoch 2, iteration 3/9") as interrupted:
        train(tiny_config(**RESUME_FIELDS, record_drift=True), tmp_path, hooks=[InterruptAt(12)])
    assert interrupted.value.signum == signal.SIGINT
    train(tiny_config(**RESUME_FIELDS, record_drift=True), tmp_path, resume=True)
    for resumed, straight in zip(_tables(tmp_path), _tables(drift_run)):
        pd.testing.assert_frame_equal(resumed, straight, check_exact=True)


def test_recording_drift_needs_the_pool():
    with pytest.raises(ConfigError, match="record_drift measures the feature pool"):
        tiny_config(record_drift=True, track_pool=False)
