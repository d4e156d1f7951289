"""Stacked runs (semscale.stack): K runs as one network must be the K separate runs.

The members: seed 0 with CE, seed 1 with CE + DSB (weighting from epoch 2), seed 2 with Balanced Softmax: two seeds,
one with DSB, and a mixed-loss stack in one. Exactness is tested in float64, where a grouped convolution's other
summation order leaves differences of ~1e-16 per operation: over 2 epochs (18 steps) the members then match the
separate runs to the printed digit of every loss and accuracy, and the DSB pool's scales to 1e-10 (measured); the
tolerances below are 1e-9 and 1e-6. In float32, the engine's CPU precision, tolerances come from the spread of the
separate runs themselves between 1 and 2 threads (the same kernels, another summation order), measured on the tiny
CNN: losses 4.9e-4 relative, top-1 0.0044, per-class accuracy 0.045 (2 of 45 test images); the stack measured
1.0e-5, 0.0044 and 0.067. ResNet-32 from its kaiming start is ill-conditioned in float32 (its first gradient is
only ~1e-2 accurate against float64, separate and stacked alike, measured), so its trajectories are compared in
float64 only, and in float32 at the first step.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_config
from semscale import build, pipeline, stack, sweep, train
from semscale.config import ConfigError
from semscale.train import TrainingInterrupted

FILES = {"run.json", "epochs.csv", "per_class.csv", "pool_history.csv", "model.pt"}


CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the GPU host runs this"))


def _members(**fields):
    common = {"precision": "fp32", "dsb_stage_epochs": 1, "device": "cpu", **fields}
    return [tiny_config(**common, seed=0), tiny_config(**common, seed=1, dsb=True),
            tiny_config(**common, seed=2, loss="balanced-softmax")]


@pytest.fixture
def float64(monkeypatch):
    """Every network and its input in float64 (a numerical test of the engine, not one of its precisions)."""
    to_input, build_network = pipeline.to_input, build.build_network
    monkeypatch.setattr(pipeline, "to_input", lambda *a, **k: to_input(*a, **k).double())
    monkeypatch.setattr(build, "build_network", lambda *a, **k: build_network(*a, **k).double())


def _compare(separate, stacked, loss_rel, top1, per_class, scale_rel):
    for a, b in zip(separate, stacked):
        assert {p.name for p in b.iterdir()} == {p.name for p in a.iterdir()} == FILES
        ea, eb = pd.read_csv(a / "epochs.csv"), pd.read_csv(b / "epochs.csv")
        pa, pb = pd.read_csv(a / "per_class.csv"), pd.read_csv(b / "per_class.csv")
        assert list(ea.columns) == list(eb.columns) and list(pa.columns) == list(pb.columns)
        np.testing.assert_allclose(eb.train_loss, ea.train_loss, rtol=loss_rel)
        np.testing.assert_allclose(eb.top1, ea.top1, atol=top1)
        np.testing.assert_allclose(pb.accuracy, pa.accuracy, atol=per_class)
        np.testing.assert_allclose(pb.S, pa.S, rtol=scale_rel)


def _train_both(configs, tmp_path):
    separate = [tmp_path / f"separate{i}" for i in range(len(configs))]
    stacked = [tmp_path / f"stacked{i}" for i in range(len(configs))]
    for config, out in zip(configs, separate):
        train.train(config, out)
    records = stack.train_stack(configs, stacked)
    assert [r["stack"]["member"] for r in records] == list(range(len(configs)))
    assert all(json.loads((out / "run.json").read_text())["stack"]["members"] == len(configs) for out in stacked)
    return separate, stacked


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("model", ["cnn", "resnet32"])
def test_a_stack_of_three_is_the_three_separate_runs_in_float64(tmp_path, float64, model, device):
    configs = _members(model=model, device=device)
    _compare(*_train_both(configs, tmp_path), loss_rel=1e-9, top1=0, per_class=0, scale_rel=1e-6)


@pytest.mark.parametrize("device", [CUDA])
def test_a_stack_in_bf16_on_cuda_stays_within_bf16_noise(tmp_path, device):
    """bf16 keeps 8 bits of mantissa (4e-3 relative per rounding) and the grouped kernels round elsewhere: the losses
    of 2 epochs within 5 %, top-1 within 0.05 (22 of the 450 test images). Exactness is the float64 test's."""
    configs = _members(model="resnet32", device=device, precision="bf16", lr=0.01)
    _compare(*_train_both(configs, tmp_path), loss_rel=0.05, top1=0.05, per_class=1, scale_rel=1)


def test_a_stack_in_float32_stays_within_the_separate_runs_own_spread(tmp_path):
    _compare(*_train_both(_members(), tmp_path), loss_rel=1e-3, top1=0.01, per_class=0.1, scale_rel=0.05)


@pytest.mark.parametrize("model", ["cnn", "resnet32"])
def test_members_start_from_the_separate_runs_weights_and_take_the_same_first_step(tmp_path, model):
    configs = _members(model=model)
    separate = [train._start(c, tmp_path / f"a{i}", False, [])[0] for i, c in enumerate(configs)]
    members = [train._start(c, tmp_path / f"b{i}", False, [])[0] for i, c in enumerate(configs)]
    net = stack.StackedNetwork(members)
    for k, run in enumerate(separate):
        for name, p in run.model.named_parameters():
            assert torch.equal(net.params["model." + name][k], p)
    states = [train.new_epoch(run, 1) for run in separate + members]
    for run, state in zip(separate + members, states):
        train.begin_epoch(run, state)
    first = [next(pipeline.batches(r.data, r.config, s.order, s.generator, 0, flips=s.flips))
             for r, s in zip(separate + members, states)]
    alone = [float(train.train_step(r, *b, weighting=False)[0]) for r, b in zip(separate, first[:3])]
    together = [float(loss) for loss, _ in stack.stacked_step(net, first[3:], [False] * 3)]
    np.testing.assert_allclose(together, alone, rtol=1e-6)


def test_an_interrupted_stack_resumes_and_its_checkpoints_are_a_separate_runs(tmp_path):
    configs = _members(epochs=3)
    straight = stack.train_stack(configs, [tmp_path / f"straight{i}" for i in range(3)])
    outs = [tmp_path / f"stopped{i}" for i in range(3)]
    with pytest.raises(TrainingInterrupted, match="end of epoch 1"):
        stack.train_stack([dataclasses.replace(c, stop_after_epoch=1) for c in configs], outs)
    assert all((out / "checkpoint.pt").exists() and not (out / "run.json").exists() for out in outs)
    shutil.copytree(outs[2], tmp_path / "alone")
    resumed = stack.train_stack(configs, outs, resume=True)
    assert [r["final"] for r in resumed] == [r["final"] for r in straight]  # the same stack: bit for bit
    alone = train.train(configs[2], tmp_path / "alone", resume=True)  # a member's checkpoint resumes alone too
    assert "stack" not in alone and abs(alone["final"]["top1"] - straight[2]["final"]["top1"]) <= 0.01


def test_plan_groups_what_can_share_a_network():
    ce = tiny_config(seed=0)
    configs = [ce, tiny_config(seed=1, dsb=True), tiny_config(seed=0, loss="ldam"), tiny_config(seed=2),
               tiny_config(seed=0, mwn=True), tiny_config(seed=3, loss="balanced-softmax", reweight="cdb"),
               tiny_config(seed=0, lr=0.1)]
    assert stack.plan(configs, 8) == [[0, 1, 3, 5], [2], [4], [6]]  # LDAM's cosine classifier; MWN; another lr
    assert stack.plan(configs, 2) == [[0, 1], [2], [3, 5], [4], [6]]
    assert stack.plan(configs, 1) == [[i] for i in range(7)]
    assert stack.not_stackable(tiny_config(model="airbench-small", dataset="cifar10-jpeg75"))
    with pytest.raises(ConfigError, match="differ outside MEMBER_FIELDS"):
        stack.train_stack([ce, configs[2]], ["a", "b"])


def test_the_sweep_puts_each_member_in_its_own_folder_and_reads_them_back(tmp_path, tiny):
    points = sweep.grid({**tiny, "epochs": 1}, seed=[0, 1], dsb=[False, True])
    stacked = sweep.run(points, tmp_path / "stacked", stack=4, log=lambda line: None)
    separate = sweep.run(points, tmp_path / "separate", stack="auto", log=lambda line: None)  # the CPU: one at a time
    assert [r.name for r in stacked] == [r.name for r in separate] and {r.status for r in stacked} == {"trained"}
    assert all(r.record["stack"] == {"members": 4, "member": k, "network": "torch.func.vmap (grouped)"}
               for k, r in enumerate(stacked))
    assert all("stack" not in r.record for r in separate)
    again = sweep.run(points, tmp_path / "stacked", stack=4, log=lambda line: None)
    assert {r.status for r in again} == {"cached"}
    with pytest.raises(ValueError, match="jobs=1"):
        sweep.run(points, tmp_path / "x", stack=2, jobs=2)


def test_a_failing_stack_trains_its_members_alone_each_failure_in_its_own_folder(tmp_path, tiny):
    counts = (60, 40, 30, 20, 15, 10, 8, 6, 5, 1)  # DSB refuses a class of one image
    points = sweep.grid({**tiny, "imbalance": 1, "train_counts": counts, "epochs": 1}, seed=[0, 1], dsb=[False, True])
    lines = []
    results = sweep.run(points, tmp_path, stack=4, log=lines.append)
    assert [r.status for r in results] == ["trained", "failed", "trained", "failed"]
    assert any("its stack of 4 failed (ConfigError" in line for line in lines)
    assert all("stack" not in r.record for r in results if r.record)
    assert all((r.path / "failed.json").exists() for r in results if r.status == "failed")


def test_a_member_that_diverges_leaves_the_stack_and_the_others_finish(tmp_path):
    configs = _members()[:2] + [tiny_config(precision="fp32", device="cpu", seed=2, loss="logit-adjusted", logit_tau=1e39)]
    outs = [tmp_path / f"m{i}" for i in range(3)]
    with pytest.raises(stack.StackMembersFailed, match=r"1 stacked run\(s\) failed \(configs \[2\]\)") as failed:
        stack.train_stack(configs, outs)
    records, errors = failed.value.records, failed.value.errors
    assert isinstance(errors[2], train.TrainingDiverged) and records[2] is None and errors[:2] == [None, None]
    assert [r["stack"]["member"] for r in records[:2]] == [0, 1] and not (outs[2] / "run.json").exists()
    lines = []  # through the sweep: the diverged run's failure is recorded in its own folder, the others trained
    done = sweep.run(configs, tmp_path / "sweep", stack=3, log=lines.append)
    assert [r.status for r in done] == ["trained", "trained", "failed"] and "TrainingDiverged" in done[2].error
    assert (done[2].path / "failed.json").exists() and not any("trained alone" in line for line in lines)


def test_a_stop_that_comes_after_the_last_epochs_steps_lets_the_runs_finish(tmp_path, monkeypatch):
    end_epoch, sent = train.end_epoch, []

    def stop_in_the_last(run, state, history):  # one Ctrl-C while the last epoch is evaluated
        if state.epoch == run.config.epochs and not sent:
            sent.append(os.kill(os.getpid(), signal.SIGINT))
        return end_epoch(run, state, history)

    monkeypatch.setattr(train, "end_epoch", stop_in_the_last)
    records = stack.train_stack(_members(), [tmp_path / f"s{i}" for i in range(3)])
    sent.clear()
    alone = train.train(_members()[0], tmp_path / "alone")
    assert sent  # the signal came in both
    assert all(r["status"] == "complete" for r in [*records, alone])
    assert not list(tmp_path.glob("*/checkpoint.pt"))
