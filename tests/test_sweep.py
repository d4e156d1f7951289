"""semscale.sweep: grids, one folder per config, the cache, resume, failure isolation, parallel and Slurm execution,
faults (a killed or interrupted sweep, two sweeps on one root, a damaged cache, a diverging run), and every method
of the catalogue through the sweep."""

import collections
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
from conftest import TINY, same_weights
from semscale import cache, progress, records, results, sweep
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


def test_an_empty_axis_is_an_error_not_an_empty_grid():
    with pytest.raises(ConfigError, match="axis 'seed' is empty"):
        sweep.grid(TINY, seed=[])
    with pytest.raises(ConfigError, match="axis 'method' is empty"):
        sweep.grid(TINY, method={})


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
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == sorted([done[0].name, done[2].name])  # no invalid-* folder


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
    assert process.returncode != 0 and "SweepInterrupted: sweep interrupted by SIGINT: 1 run(s) checkpointed" in err
    assert "KeyboardInterrupt" not in err
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


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_live_sweep_shows_one_bar_of_runs_with_each_runs_epoch(tmp_path, monkeypatch, capsys, jobs):
    """In a live notebook or on a terminal: one bar, runs trained of those to train (cached ones are not counted), the
    epoch of each run in training as postfix, the log lines written through the bar; headless: no bar at all."""
    points = sweep.grid(TINY, seed=[0, 1, 2])
    sweep.run(points[:1], tmp_path, jobs=1, log=lambda line: None)  # one is cached
    monkeypatch.setattr(progress, "show_progress", lambda: False)
    headless = sweep._Progress(3, print)
    assert headless.bar.disable and headless.log is print and headless._watcher is None
    headless.close()
    bars = []
    monkeypatch.setattr(progress, "show_progress", lambda: True)
    monkeypatch.setattr(sweep.progress, "bar", lambda *a, **k: bars.append(progress.tqdm(*a, **{**k, "disable": False})) or bars[-1])
    sweep.run(points, tmp_path, jobs=jobs, threads=1)
    (bar,) = bars
    assert (bar.n, bar.total, bar.desc) == (2, 2, "training runs")
    out, err = capsys.readouterr()
    assert "training runs" in err and out.count("top1") == 3  # every run's line, written through the bar (tqdm.write)
    live = sweep._Progress(1, print)
    live.started(sweep.cached(points[:1], tmp_path)[0])
    assert live.epochs() == f"{sweep.cached(points[:1], tmp_path)[0].name.rsplit('-', 1)[0]}: epoch 2/2"
    live.close()


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
    with pytest.raises(TrainingInterrupted, match=r"sweep interrupted by stop_after_epoch=1: 1 run\(s\) checkpointed"):
        sweep.run(points, tmp_path, jobs=2, threads=1, log=lines.append)
    first = tmp_path / cache.run_name(TrainConfig(**points[0]))
    assert (first / "checkpoint.pt").exists() and not (first / "run.json").exists()
    assert any(line.startswith(first.name) and "interrupted" in line for line in lines)  # runs not started are cancelled
    resumed = sweep.run([{**TINY, "epochs": 3}, *points[1:]], tmp_path, jobs=2, threads=1, log=lambda line: None)
    assert resumed[0].status == "resumed" and all(r.record for r in resumed)


# --- a diverging run, a damaged cache ------------------------------------------------------------------------------


def test_a_diverging_run_is_recorded_once_and_tried_again_only_when_asked(tmp_path, tiny):
    point = {**tiny, "protocol": "paper-sec3", "lr": 1e6, "epochs": 1}  # loss 1e20, S and the volumes NaN
    (first,) = sweep.run([point], tmp_path, log=lambda line: None)
    assert first.status == "failed" and "training diverged in epoch 1" in first.error and "not finite" in first.error
    failure = first.path / "failed.json"
    assert not cache.run_complete(first.path) and json.loads(failure.read_text())["retry"] is False
    written = failure.stat().st_mtime_ns
    lines = []
    (again,) = sweep.run([point], tmp_path, log=lines.append)
    assert again.status == "failed" and failure.stat().st_mtime_ns == written  # not trained again
    assert "training diverged" in lines[0] and "retry_failed=True" in lines[0]
    (retried,) = sweep.run([point], tmp_path, retry_failed=True, log=lambda line: None)
    assert retried.status == "failed" and "training diverged" in retried.error and failure.stat().st_mtime_ns != written


def _cut(path, fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def test_a_damaged_cache_is_named_moved_aside_and_trained_again(tmp_path, tiny):
    points = sweep.grid(tiny, seed=[0, 1, 2, 3, 4])
    done = sweep.run(points, tmp_path, threads=1, log=lambda line: None)
    names, finals = [r.name for r in done], [r.record["final"] for r in done]
    _cut(done[0].path / "run.json")
    (done[1].path / "per_class.csv").unlink()
    rows = (done[2].path / "per_class.csv").read_text().splitlines(keepends=True)
    (done[2].path / "per_class.csv").write_text("".join(rows[:4]))  # 3 of 10 classes
    (done[3].path / "checkpoint.pt").write_bytes(b"garbage beside a complete run")
    (done[4].path / "run.json").unlink()
    (done[4].path / "checkpoint.pt").write_bytes(b"garbage alone")
    with pytest.warns(UserWarning, match=r"4 folder\(s\) of .* hold no complete run") as caught:
        tables = results.collect(tmp_path)
    assert all(names[i] in str(caught[0].message) for i in (0, 1, 2, 4))
    assert set(tables.skipped) == {names[i] for i in (0, 1, 2, 4)} and tables.runs.run.tolist() == [names[3]]
    assert "run.json cannot be read" in tables.skipped[names[0]] and "per_class.csv is missing" in tables.skipped[names[1]]
    assert "per_class.csv has 3 rows, expected 10" in tables.skipped[names[2]]
    assert "no readable checkpoint" in tables.skipped[names[4]]

    lines = []
    again = sweep.run(points, tmp_path, threads=1, log=lines.append)
    assert [r.status for r in again] == ["trained", "trained", "trained", "cached", "trained"]
    assert [r.record["final"] for r in again] == finals  # the same runs again, bit for bit
    for i in (0, 1, 2, 4):
        (aside,) = tmp_path.glob(f"{names[i]}.damaged-*")
        assert any(line.startswith(f"{names[i]} was damaged") and aside.name in line for line in lines)
    assert list(done[3].path.glob("checkpoint.pt.leftover-*")) and not (done[3].path / "checkpoint.pt").exists()
    assert not any("weights_only" in line for line in lines)
    assert len(results.collect(tmp_path).runs) == 5  # no warning: the folders moved aside are no runs


# --- faults: a killed or interrupted parallel sweep, two sweeps on one root -----------------------------------------


def test_ctrl_c_while_a_run_writes_its_record_lets_the_run_finish_then_stops(tmp_path, tiny, monkeypatch):
    write = records.write_json_atomic

    def ctrl_c_first(path, obj):  # Ctrl-C at the moment a run, past its training loop, writes run.json
        if Path(path).name == "run.json":
            os.kill(os.getpid(), signal.SIGINT)
        return write(path, obj)

    monkeypatch.setattr(records, "write_json_atomic", ctrl_c_first)
    points = sweep.grid(tiny, seed=[0, 1])
    with pytest.raises(sweep.SweepInterrupted, match=r"by SIGINT: 0 run\(s\) checkpointed, 1 complete, 0 failed, 1 not started"):
        sweep.run(points, tmp_path, threads=1, log=lambda line: None)
    first, second = (tmp_path / cache.run_name(p.config()) for p in points)
    assert cache.run_complete(first) and not second.exists()  # its work kept; nothing new started


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc (Linux)")
FAULT = {**TINY, "epochs": 10, "batch_size": 16, "checkpoint_every": 0}  # each run some seconds, no checkpoint of its own


def _children() -> dict[int, list[int]]:
    children = collections.defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children[parent].append(int(stat.parent.name))
    return children


def _descendants(pid: int) -> set[int]:
    children, found, todo = _children(), set(), [pid]
    while todo:
        for child in children[todo.pop()]:
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _gone(pids, seconds=60) -> list[int]:
    """The pids still alive after up to ``seconds``; any left are killed (the test must leave none behind)."""
    deadline = time.time() + seconds
    while any(_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.2)
    left = [p for p in pids if _alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    return left


def _start_sweep(root, **popen):
    """The 4-run jobs=2 sweep in a process of its own, its output in root's sibling sweep.log (a file, not a pipe:
    the pipes of a killed process stay open as long as a worker of it lives, and reading them would wait as long)."""
    script = (f"from semscale import sweep\n"
              f"sweep.run(sweep.grid({FAULT!r}, seed=[0, 1, 2, 3]), {str(root)!r}, jobs=2, threads=1)\n")
    with open(root.parent / "sweep.log", "w") as log:
        return subprocess.Popen([sys.executable, "-c", script], stdout=log, stderr=subprocess.STDOUT, **popen)


def _two_runs_training(root, process) -> list[Path]:
    """Wait until two runs have finished an epoch (both workers mid-run); their folders."""
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        started = [f for f in root.glob("digits_*") if (f / "epochs.csv").exists()]
        if len(started) >= 2:
            return started
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"the sweep did not get two runs going: {(root.parent / 'sweep.log').read_text()[-3000:]}")


def _complete_or_resumable(folder) -> bool:
    return cache.run_complete(folder) or cache.inspect_run(folder).problem is None and (folder / "checkpoint.pt").exists()


@needs_proc
def test_killing_a_parallel_sweep_leaves_no_process_and_every_run_complete_or_resumable(tmp_path):
    root = tmp_path / "root"
    process = _start_sweep(root)
    started = _two_runs_training(root, process)
    tree = _descendants(process.pid)
    assert len(tree) >= 2, tree  # two workers (and multiprocessing's resource tracker)
    process.kill()  # SIGKILL, as the OOM killer sends: the sweep gets no chance to stop its workers
    process.wait()
    assert _gone(tree) == [], "processes of the killed sweep are still running"
    for folder in root.glob("digits_*"):
        assert _complete_or_resumable(folder) or (folder / "failed.json").exists(), sorted(os.listdir(folder))
    checkpointed = {f.name for f in started if (f / "checkpoint.pt").exists()}
    assert checkpointed, "the workers did not checkpoint their runs before dying"
    done = sweep.run(sweep.grid(FAULT, seed=[0, 1, 2, 3]), root, jobs=2, threads=1, log=lambda line: None)
    assert all(r.record for r in done) and {r.name for r in done if r.status == "resumed"} == checkpointed


@needs_proc
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_stops_a_parallel_sweep_at_once_saying_what_was_kept(tmp_path, how):
    root = tmp_path / "root"
    process = _start_sweep(root, start_new_session=True)  # its own process group, as a terminal's foreground job
    started = _two_runs_training(root, process)
    tree, before = _descendants(process.pid), sorted(p.name for p in root.glob("digits_*"))
    sent = time.time()
    if how == "ctrl-c":
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground process group
    else:
        process.send_signal(signal.SIGTERM)  # what `timeout` or a scheduler sends
    try:
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        left = _gone(tree, seconds=30)
    err = (tmp_path / "sweep.log").read_text()
    name = "SIGINT" if how == "ctrl-c" else "SIGTERM"
    assert time.time() - sent < 60 and left == []
    assert f"SweepInterrupted: sweep interrupted by {name}" in (err.strip().splitlines() or [""])[-1], err[-3000:]
    assert "KeyboardInterrupt" not in err and "run the same sweep again to resume" in err
    assert sorted(p.name for p in root.glob("digits_*")) == before  # no run started after the signal
    assert all(_complete_or_resumable(f) for f in started)
    assert any((f / "checkpoint.pt").exists() for f in started)


WORKER = """
import os, signal, sys, time
from semscale import sweep
if sys.argv[1] == "watch":
    sweep.PR_SET_PDEATHSIG = 0x5EED  # no such prctl option: as where there is no parent-death signal
sweep._die_with_parent(os.getppid())
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
print("ready", flush=True)
time.sleep(120)
"""
PARENT = """
import subprocess, sys
worker = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
assert worker.stdout.readline().strip() == "ready"
print(worker.pid, flush=True)  # and the parent dies
"""


@needs_proc
@pytest.mark.parametrize("how", ["prctl", "watch"])
def test_a_worker_gets_sigterm_when_its_parent_dies(how):
    parent = subprocess.run([sys.executable, "-c", PARENT, WORKER, how], capture_output=True, text=True, timeout=120)
    worker = int(parent.stdout.split()[-1])
    assert _gone([worker], seconds=10) == [], f"the worker outlived its parent ({how})"


@needs_proc
def test_two_sweeps_on_one_root_train_each_config_once(tmp_path):
    root = tmp_path / "root"
    config = {**TINY, "epochs": 6, "batch_size": 16, "checkpoint_every": 0}
    scripts = [f"from semscale import sweep\nsweep.run(sweep.grid({config!r}, seed={seeds!r}), {str(root)!r}, threads=1)\n"
               for seeds in ([0, 1, 2], [2, 1, 3])]  # overlapping, in a staggered order
    processes = [subprocess.Popen([sys.executable, "-c", s], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for s in scripts]
    outputs = [p.communicate(timeout=600) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err[-2000:] for _, err in outputs]
    lines = [line for out, _ in outputs for line in out.splitlines()]
    trained = collections.Counter(line.split(": ")[0] for line in lines if line.endswith(("trained", "resumed")))
    assert len(trained) == 4 and set(trained.values()) == {1}, lines  # each config trained once, by one of them
    assert not any("FAILED" in line for line in lines) and not list(root.glob("*/failed.json"))
    assert all(cache.run_complete(f) for f in root.glob("digits_*")) and len(list(root.glob("digits_*"))) == 4


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
