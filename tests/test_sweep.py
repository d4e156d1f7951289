"""semscale.sweep: grids, one folder per config, the cache, resume, failure isolation, parallel and Slurm execution,
and every method of the catalogue through the sweep."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY, same_weights
from semscale import cache, records, results, sweep
from semscale.config import ConfigError, TrainConfig
from semscale.methods import METHODS
from semscale.train import TrainingInterrupted

# --- grid and names -----------------------------------------------------------------------------------------------


def test_grid_is_the_cartesian_product_with_labels():
    methods = {k: METHODS[k] for k in ("CE", "LDAM-DRW+DSB")}
    points = sweep.grid(TINY, method=methods, imbalance=[10, 5], seed=[0, 1])
    assert len(points) == 8
    assert [p.labels for p in points[:3]] == [{"method": "CE", "imbalance": 10, "seed": 0},
                                             {"method": "CE", "imbalance": 10, "seed": 1},
                                             {"method": "CE", "imbalance": 5, "seed": 0}]
    last = points[-1].config()
    assert (last.loss, last.reweight, last.dsb, last.imbalance, last.seed) == ("ldam", "drw", True, 5.0, 1)
    assert points[0].config().epochs == 2  # the base holds
    with pytest.raises(ConfigError, match="unknown config field.*'epoch'"):
        sweep.grid({**TINY, "epoch": 3})
    with pytest.raises(ConfigError, match="axis 'lr_rate' is not a config field"):
        sweep.grid(TINY, lr_rate=[0.1])


# --- run: cache, resume, failures ---------------------------------------------------------------------------------


def test_a_cached_run_is_read_back_not_retrained(tmp_path):
    points = sweep.grid(TINY, seed=[0, 1])
    first = sweep.run(points, tmp_path, log=lambda line: None)
    assert [r.status for r in first] == ["trained", "trained"]

    def files(result):  # every file of the run's folder with its modification time
        return {p.name: p.stat().st_mtime_ns for p in result.path.iterdir()}

    before = [files(r) for r in first]
    lines = []
    again = sweep.run(points, tmp_path, log=lines.append)
    assert [r.status for r in again] == ["cached", "cached"]
    assert [r.top1 for r in again] == [r.top1 for r in first]
    assert [files(r) for r in again] == before  # nothing written, nothing trained: not a file touched
    assert lines[0].startswith(first[0].name) and "cached" in lines[0] and "2 cached" in lines[-1]


def test_a_failing_config_is_isolated(tmp_path):
    points = [*sweep.grid(TINY, seed=[0]),
              {**TINY, "loss": "hinge"},  # invalid
              {**TINY, "imbalance": 100, "dsb": True, "dsb_stage_epochs": 1}]  # fails in training: a 1-image class
    done = sweep.run(points, tmp_path, log=lambda line: None)
    assert [r.status for r in done] == ["trained", "failed", "failed"]
    assert "unknown loss 'hinge'" in done[1].error
    assert "DSB needs at least 2 training images" in done[2].error
    failure = json.loads((done[2].path / "failed.json").read_text())
    assert "DSB needs" in failure["error"] and failure["config"]["imbalance"] == 100
    assert (done[0].path / "run.json").exists() and not (done[0].path / "failed.json").exists()


RESUMABLE = {**TINY, "epochs": 6, "batch_size": 16, "checkpoint_every": 0}


def test_a_run_killed_mid_epoch_resumes(tmp_path):
    root = tmp_path / "root"
    script = (f"from semscale import sweep\n"
              f"sweep.run([{RESUMABLE!r}], {str(root)!r}, threads=1)\n")
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    name = cache.run_name(TrainConfig(**RESUMABLE))
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
    assert same_weights(resumed.path, straight.path)


def test_two_jobs_give_the_results_of_one(tmp_path):
    points = sweep.grid(TINY, loss=["ce", "focal"], seed=[0, 1])
    one = sweep.run(points, tmp_path / "one", jobs=1, threads=1, log=lambda line: None)
    two = sweep.run(points, tmp_path / "two", jobs=2, threads=1, log=lambda line: None)
    assert [r.name for r in one] == [r.name for r in two]  # results in the order of the points
    assert all(r.status == "trained" for r in one + two)
    for a, b in zip(one, two):
        assert a.record["final"] == b.record["final"] and b.record["threads"] == 1
        assert same_weights(a.path, b.path)


def test_slurm_path_through_submitits_local_executor(tmp_path):
    points = sweep.grid(TINY, seed=[0, 1])
    here = sweep.run(points, tmp_path / "here", threads=1, log=lambda line: None)
    slurm = sweep.run(points, tmp_path / "slurm", executor="slurm", threads=1, log=lambda line: None,
                      slurm=sweep.Slurm(cluster="local", runs_per_job=2, timeout_min=5))
    assert [r.status for r in slurm] == ["trained", "trained"]
    assert [r.record["final"] for r in slurm] == [r.record["final"] for r in here]
    assert list((tmp_path / "slurm" / ".submitit").iterdir())  # submitit's job folder
    assert [r.status for r in sweep.run(points, tmp_path / "slurm", executor="slurm", log=lambda line: None)] == ["cached"] * 2


def test_slurm_without_waiting_returns_submitted_runs_that_collect_reads_later(tmp_path):
    points = sweep.grid(TINY, seed=[0])
    (submitted,) = sweep.run(points, tmp_path, executor="slurm", threads=1, log=lambda line: None,
                             slurm=sweep.Slurm(cluster="local", wait=False, timeout_min=5))
    assert submitted.status == "submitted" and submitted.record is None
    assert json.loads((submitted.path / "submitted.json").read_text())["job_id"]
    deadline = time.time() + 120
    while not (submitted.path / "run.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    (row,) = results.collect(tmp_path).runs.itertuples()
    assert row.run == submitted.name and 0 <= row.top1 <= 1


def test_stale_runs_are_reported_or_retrained(tmp_path, monkeypatch):
    points = sweep.grid(TINY, seed=[0])
    (first,) = sweep.run(points, tmp_path, log=lambda line: None)
    monkeypatch.setattr(records, "source_sha256", lambda: "0" * 64)
    with pytest.warns(UserWarning, match="made by other semscale code"):
        (cached,) = sweep.run(points, tmp_path, log=lambda line: None)
    assert cached.status == "cached"
    (rerun,) = sweep.run(points, tmp_path, stale="rerun", log=lambda line: None)
    assert rerun.status == "trained" and rerun.record["source_sha256"] == "0" * 64
    aside = tmp_path / f"{first.name}.stale-{first.record['source_sha256'][:8]}"
    assert json.loads((aside / "run.json").read_text())["final"] == first.record["final"]  # nothing lost


def test_a_run_interrupted_in_a_worker_stops_the_sweep_and_resumes_later(tmp_path):
    points = [{**TINY, "epochs": 3, "stop_after_epoch": 1}, *sweep.grid(TINY, seed=[1, 2, 3, 4, 5])]
    lines = []
    with pytest.raises(TrainingInterrupted, match="sweep interrupted: 1 run"):
        sweep.run(points, tmp_path, jobs=2, threads=1, log=lines.append)
    first = tmp_path / cache.run_name(TrainConfig(**points[0]))
    assert (first / "checkpoint.pt").exists() and not (first / "run.json").exists()
    assert any(line.startswith(first.name) and "interrupted" in line for line in lines)  # runs not started are cancelled
    resumed = sweep.run([{**TINY, "epochs": 3}, *points[1:]], tmp_path, jobs=2, threads=1, log=lambda line: None)
    assert resumed[0].status == "resumed" and all(r.record for r in resumed)


# --- every method, on every device this machine has ----------------------------------------------------------------


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device: the GPU host runs this"))])
def test_every_method_trains_through_the_sweep_on_the_device(tmp_path, device):
    """All of METHODS (± DSB, with DSB weighting in epoch 2) through one engine on ``device``."""
    base = {**TINY, "dsb_stage_epochs": 1, "device": device}
    lines = []
    done = sweep.run(sweep.grid(base, method=METHODS), tmp_path, threads=1, log=lines.append)
    assert [r.status for r in done] == ["trained"] * len(METHODS), lines
    runs = results.collect(done).runs.set_index("method")
    assert runs.device.str.startswith("cpu").all() == (device == "cpu")  # a CUDA record names the card
    assert np.isfinite(runs.train_loss.astype(float)).all() and runs.top1.between(0, 1).all()
    one_stage = runs[runs.second_stage == "none"]
    # DSB weighted in epoch 2, so each +DSB run differs from its base (same seed, same batches until then)
    for name in [n for n in one_stage.index if not n.endswith("+DSB")]:
        assert one_stage.loc[name, "train_loss"] != one_stage.loc[name + "+DSB", "train_loss"], name
