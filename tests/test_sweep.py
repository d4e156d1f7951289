"""Sweeps: grids, one folder per config, the cache, resume, failure isolation, parallel and Slurm execution, tables."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from semscale import features, records, sweep
from semscale.train import ConfigError, TrainConfig

BASE = dict(dataset="digits", imbalance=10, model="cnn", epochs=2, batch_size=64, lr=0.05, progress=False)


def _state(path):
    return torch.load(Path(path) / "model.pt", weights_only=True)


def _same_weights(a, b):
    sa, sb = _state(a), _state(b)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- grid and names -----------------------------------------------------------------------------------------------


def test_grid_is_the_cartesian_product_with_labels():
    methods = {k: sweep.METHODS[k] for k in ("CE", "LDAM-DRW+DSB")}
    points = sweep.grid(BASE, method=methods, imbalance=[10, 5], seed=[0, 1])
    assert len(points) == 8
    assert [p.labels for p in points[:3]] == [{"method": "CE", "imbalance": 10, "seed": 0},
                                             {"method": "CE", "imbalance": 10, "seed": 1},
                                             {"method": "CE", "imbalance": 5, "seed": 0}]
    last = points[-1].config()
    assert (last.loss, last.reweight, last.dsb, last.imbalance, last.seed) == ("ldam", "drw", True, 5.0, 1)
    assert points[0].config().epochs == 2  # the base holds
    with pytest.raises(ConfigError, match="unknown config field.*'epoch'"):
        sweep.grid({**BASE, "epoch": 3})
    with pytest.raises(ConfigError, match="axis 'lr_rate' is not a config field"):
        sweep.grid(BASE, lr_rate=[0.1])


def test_methods_name_what_they_are():
    assert len(sweep.METHODS) == 2 * (len(sweep.BASE_METHODS) + len(sweep.OTHER_METHODS)) == 18 + 20
    assert sweep.METHODS["LDAM-DRW+DSB"] == {"loss": "ldam", "reweight": "drw", "dsb": True}
    assert sweep.METHODS["CB-Focal"]["reduction"] == "mean" and sweep.METHODS["CDB-CE"]["reduction"] == "mean"
    assert "reduction" not in sweep.METHODS["CE-DRW"]  # LDAM-DRW's weighted mean, the default
    for name, fields in sweep.METHODS.items():
        TrainConfig(dataset="digits", **fields)  # every recipe is a valid config


def test_the_same_config_lands_in_the_same_folder():
    config = TrainConfig(**BASE)
    from_dict = sweep.grid(BASE, seed=[0])[0].config()
    from_config = sweep.grid(config, seed=[0])[0].config()
    assert sweep.run_name(config) == sweep.run_name(from_dict) == sweep.run_name(from_config)
    # how a run executes does not change what it computes
    assert sweep.run_name(TrainConfig(**{**BASE, "progress": True, "device": "cpu", "eval_batch_size": 7})) == sweep.run_name(config)
    name = sweep.run_name(config)
    assert name.startswith("digits_lt10_cnn_ce_s0-") and len(name.split("-")[-1]) == 10
    assert sweep.run_name(TrainConfig(**{**BASE, "lr": 0.04})) != name
    # a base TrainConfig's preset values are re-resolved when an axis changes the protocol
    sec3 = sweep.grid(TrainConfig(dataset="digits"), protocol=["paper-sec3"])[0].config()
    assert (sec3.optimizer, sec3.batch_size) == ("adam", 64)


# --- run: cache, resume, failures ---------------------------------------------------------------------------------


def test_a_cached_run_is_read_back_not_retrained(tmp_path, monkeypatch):
    points = sweep.grid(BASE, seed=[0, 1])
    first = sweep.run(points, tmp_path, log=lambda line: None)
    assert [r.status for r in first] == ["trained", "trained"]
    mtimes = [(r.path / "run.json").stat().st_mtime_ns for r in first]

    def no_training(*args, **kwargs):
        raise AssertionError("a cached run was trained again")

    monkeypatch.setattr("semscale.train.train", no_training)
    lines = []
    again = sweep.run(points, tmp_path, log=lines.append)
    assert [r.status for r in again] == ["cached", "cached"]
    assert [r.top1 for r in again] == [r.top1 for r in first]
    assert [(r.path / "run.json").stat().st_mtime_ns for r in again] == mtimes
    assert lines[0].startswith(first[0].name) and "cached" in lines[0] and "2 cached" in lines[-1]


def test_a_failing_config_is_isolated(tmp_path):
    points = [*sweep.grid(BASE, seed=[0]),
              {**BASE, "loss": "hinge"},  # invalid
              {**BASE, "imbalance": 100, "dsb": True, "dsb_stage_epochs": 1}]  # fails in training: a 1-image class
    results = sweep.run(points, tmp_path, log=lambda line: None)
    assert [r.status for r in results] == ["trained", "failed", "failed"]
    assert "unknown loss 'hinge'" in results[1].error
    assert "DSB needs at least 2 training images" in results[2].error
    failure = json.loads((results[2].path / "failed.json").read_text())
    assert "DSB needs" in failure["error"] and failure["config"]["imbalance"] == 100
    assert (results[0].path / "run.json").exists() and not (results[0].path / "failed.json").exists()


RESUMABLE = {**BASE, "epochs": 6, "batch_size": 16, "checkpoint_every": 0}


def test_a_run_killed_mid_epoch_resumes(tmp_path):
    root = tmp_path / "root"
    script = (f"from semscale import sweep\n"
              f"sweep.run([{RESUMABLE!r}], {str(root)!r}, threads=1)\n")
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    name = sweep.run_name(TrainConfig(**RESUMABLE))
    epochs_csv = root / name / "epochs.csv"
    deadline = time.time() + 120
    while not (epochs_csv.exists() and len(pd.read_csv(epochs_csv)) >= 2) and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, f"the run ended before it could be interrupted: {process.communicate()}"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode != 0 and "TrainingInterrupted" in err
    assert (root / name / "checkpoint.pt").exists() and not (root / name / "run.json").exists()

    (resumed,) = sweep.run([RESUMABLE], root, threads=1, log=lambda line: None)
    (straight,) = sweep.run([RESUMABLE], tmp_path / "straight", threads=1, log=lambda line: None)
    assert (resumed.status, straight.status) == ("resumed", "trained")
    assert resumed.record["final"] == straight.record["final"]
    assert _same_weights(resumed.path, straight.path)


def test_two_jobs_give_the_results_of_one(tmp_path):
    points = sweep.grid(BASE, loss=["ce", "focal"], seed=[0, 1])
    one = sweep.run(points, tmp_path / "one", jobs=1, threads=1, log=lambda line: None)
    two = sweep.run(points, tmp_path / "two", jobs=2, threads=1, log=lambda line: None)
    assert [r.name for r in one] == [r.name for r in two]  # results in the order of the points
    assert all(r.status == "trained" for r in one + two)
    for a, b in zip(one, two):
        assert a.record["final"] == b.record["final"] and b.record["threads"] == 1
        assert _same_weights(a.path, b.path)


def test_slurm_path_through_submitits_local_executor(tmp_path):
    points = sweep.grid(BASE, seed=[0, 1])
    here = sweep.run(points, tmp_path / "here", threads=1, log=lambda line: None)
    slurm = sweep.run(points, tmp_path / "slurm", executor="slurm", threads=1, log=lambda line: None,
                      slurm=sweep.Slurm(cluster="local", runs_per_job=2, timeout_min=5))
    assert [r.status for r in slurm] == ["trained", "trained"]
    assert [r.record["final"] for r in slurm] == [r.record["final"] for r in here]
    assert list((tmp_path / "slurm" / ".submitit").iterdir())  # submitit's job folder
    assert [r.status for r in sweep.run(points, tmp_path / "slurm", executor="slurm", log=lambda line: None)] == ["cached"] * 2


def test_slurm_without_waiting_returns_submitted_runs_that_collect_reads_later(tmp_path):
    points = sweep.grid(BASE, seed=[0])
    (submitted,) = sweep.run(points, tmp_path, executor="slurm", threads=1, log=lambda line: None,
                             slurm=sweep.Slurm(cluster="local", wait=False, timeout_min=5))
    assert submitted.status == "submitted" and submitted.record is None
    assert json.loads((submitted.path / "submitted.json").read_text())["job_id"]
    deadline = time.time() + 120
    while not (submitted.path / "run.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    (row,) = sweep.collect(tmp_path).runs.itertuples()
    assert row.run == submitted.name and 0 <= row.top1 <= 1


def test_stale_runs_are_reported_or_retrained(tmp_path, monkeypatch):
    points = sweep.grid(BASE, seed=[0])
    (first,) = sweep.run(points, tmp_path, log=lambda line: None)
    monkeypatch.setattr(records, "source_sha256", lambda: "0" * 64)
    with pytest.warns(UserWarning, match="made by other semscale code"):
        (cached,) = sweep.run(points, tmp_path, log=lambda line: None)
    assert cached.status == "cached"
    (rerun,) = sweep.run(points, tmp_path, stale="rerun", log=lambda line: None)
    assert rerun.status == "trained" and rerun.record["source_sha256"] == "0" * 64
    aside = tmp_path / f"{first.name}.stale-{first.record['source_sha256'][:8]}"
    assert json.loads((aside / "run.json").read_text())["final"] == first.record["final"]  # nothing lost


# --- tables -------------------------------------------------------------------------------------------------------


def test_collect_and_summarize_a_2x2x2_grid(tmp_path):
    methods = {k: sweep.METHODS[k] for k in ("CE", "CE+DSB")}
    points = sweep.grid({**BASE, "dsb_stage_epochs": 1}, method=methods, imbalance=[10, 5], seed=[0, 1])
    results = sweep.run(points, tmp_path, log=lambda line: None)
    tables = sweep.collect(results)
    assert len(tables.runs) == 8 and len(tables.per_class) == 80
    assert len(tables.epochs) == 16 and len(tables.pool) == 8 * 2 * 10
    assert {"run", "method", "imbalance", "seed", "top1", "dataset_variant", "subset_sha256", "git_commit",
            "source_sha256", "device"} <= set(tables.runs.columns)
    assert {"method", "imbalance", "seed", "accuracy", "train_count", "S"} <= set(tables.per_class.columns)
    summary = sweep.summarize(tables.runs, by=["method", "imbalance"], metrics=["top1"])
    assert len(summary) == 4 and summary.n.tolist() == [2] * 4
    row = summary[(summary.method == "CE+DSB") & (summary.imbalance == 5)].iloc[0]
    values = tables.runs[(tables.runs.method == "CE+DSB") & (tables.runs.imbalance == 5)].top1.to_numpy()
    assert row.top1_mean == pytest.approx(values.mean()) and row.top1_std == pytest.approx(values.std(ddof=1))
    from_root = sweep.collect(tmp_path)  # a root folder: the same runs, without labels
    assert sorted(from_root.runs.top1) == sorted(tables.runs.top1)
    with pytest.raises(KeyError, match="cannot group by"):
        sweep.summarize(tables.runs, by=["nope"])


def test_features_of_a_finished_run_reproduce_its_predictions(tmp_path):
    (result,) = sweep.run(sweep.grid(BASE, seed=[0]), tmp_path, log=lambda line: None)
    test = features.extract(result.path, split="test")
    assert test.features.shape == (450, 128) and test.pooled.shape == (450, 64)
    train = features.extract(result.path, split="train")
    assert len(train.labels) == result.record["subset"]["size"]
    from semscale.train import build_model
    config = TrainConfig(**{**result.record["config"], "device": "cpu"})
    model = build_model(config, 10, 1, torch.device("cpu"))
    model.load_state_dict(torch.load(result.path / "model.pt", weights_only=True))
    predictions = model.classifier(test.features).argmax(1)
    per_class = pd.read_csv(result.path / "per_class.csv")
    accuracy = [float((predictions[test.labels == c] == c).float().mean()) for c in range(10)]
    np.testing.assert_allclose(accuracy, per_class.accuracy, atol=1e-12)
    scales = features.class_scales(test.pooled, test.labels, 10)
    assert scales.S_prime.max() == pytest.approx(1.0) and (scales.volume > 0).all()
    with pytest.raises(FileNotFoundError, match="no finished run"):
        features.extract(tmp_path / "nothing")


def test_a_run_interrupted_in_a_worker_stops_the_sweep_and_resumes_later(tmp_path):
    points = [{**BASE, "epochs": 3, "stop_after_epoch": 1}, *sweep.grid(BASE, seed=[1, 2, 3, 4, 5])]
    lines = []
    with pytest.raises(sweep.TrainingInterrupted, match="sweep interrupted: 1 run"):
        sweep.run(points, tmp_path, jobs=2, threads=1, log=lines.append)
    first = tmp_path / sweep.run_name(TrainConfig(**points[0]))
    assert (first / "checkpoint.pt").exists() and not (first / "run.json").exists()
    assert any(line.startswith(first.name) and "interrupted" in line for line in lines)  # runs not started are cancelled
    resumed = sweep.run([{**BASE, "epochs": 3}, *points[1:]], tmp_path, jobs=2, threads=1, log=lambda line: None)
    assert resumed[0].status == "resumed" and all(r.record for r in resumed)
