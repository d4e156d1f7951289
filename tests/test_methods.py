"""Issue 11's methods: re-sampling, post-hoc logit adjustment, decoupling (cRT, τ-norm, LWS), Meta-Weight-Net.

(GLA and GCA are in test_losses.py.) Each against a hand computation on a small batch, plus runs through the engine,
the CLI and the sweep on scikit-learn's digits (always available)."""

import copy
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from semscale import decoupling, metaweight, pipeline, sweep
from semscale import train as engine
from semscale.train import ConfigError, TrainConfig, TrainingInterrupted

BASE = dict(dataset="digits", imbalance=10, model="cnn", epochs=2, batch_size=64, lr=0.05, progress=False)


def _config(**kw):
    return TrainConfig(**{**BASE, **kw})


# --- re-sampling ---------------------------------------------------------------------------------------------------


def test_sampling_probabilities_by_hand():
    labels = torch.tensor([0, 0, 0, 1])
    cb = pipeline.sampling_probabilities(labels, [3, 1], "class-balanced")
    assert torch.allclose(cb, torch.tensor([1 / 6, 1 / 6, 1 / 6, 1 / 2], dtype=torch.float64))
    sq = pipeline.sampling_probabilities(labels, [3, 1], "sqrt")
    z = 3 / math.sqrt(3) + 1
    assert torch.allclose(sq, torch.tensor([1 / math.sqrt(3) / z] * 3 + [1 / z], dtype=torch.float64))
    # per class: uniform (class-balanced), ∝ √n_c (sqrt)
    assert sq[:3].sum() / sq[3] == pytest.approx(math.sqrt(3))


class _Data:
    def __init__(self, labels, counts):
        self.train_labels, self.train_counts = labels, np.asarray(counts)


def test_epoch_order_fills_the_pool_first_then_draws_from_the_epoch_generator():
    labels = torch.tensor([0] * 30 + [1] * 3)
    d, c = _Data(labels, [30, 3]), _config(sampler="class-balanced")
    g = pipeline.epoch_generator(0, 1, torch.device("cpu"))
    first = pipeline.epoch_order(d, c, 1, g, pool_kept=True)
    assert sorted(first.tolist()) == list(range(33))  # the plain permutation
    g1, g2 = (pipeline.epoch_generator(0, 2, torch.device("cpu")) for _ in range(2))
    drawn = pipeline.epoch_order(d, c, 2, g1, pool_kept=True)
    p = torch.tensor([1 / 60] * 30 + [1 / 6] * 3)
    assert torch.equal(drawn, torch.multinomial(p, 33, replacement=True, generator=g2))
    assert len(set(pipeline.epoch_order(d, c, 1, g, pool_kept=False).tolist())) < 33  # no pool: draws from epoch 1
    big = pipeline.epoch_order(_Data(labels, [30, 3]), c, 3, torch.Generator().manual_seed(0), pool_kept=True)
    assert len(big) == 33


def test_sampler_run_resumes_bit_identically_and_balances_the_draws(tmp_path):
    cfg = dict(sampler="sqrt", dsb=True, dsb_stage_epochs=1, epochs=3)
    straight = engine.train(_config(**cfg), tmp_path / "a")
    with pytest.raises(TrainingInterrupted):
        engine.train(_config(**cfg, stop_after_epoch=2), tmp_path / "b")
    resumed = engine.train(_config(**cfg), tmp_path / "b", resume=True)
    assert straight["final"] == resumed["final"]
    sa, sb = (torch.load(tmp_path / x / "model.pt") for x in "ab")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    per_class = pd.read_csv(tmp_path / "a" / "per_class.csv")
    assert (per_class.train_accuracy <= 1).all()  # over the epoch's draws, not the class sizes
    assert "sqrt" in straight["engine"]["sampler"]
    # the name says what it is; the default configs keep their hash (older folders keep their names)
    assert "_sqrts_dsb_" in sweep.run_name(_config(**cfg))
    assert sweep.canonical(_config()) == {k: v for k, v in sweep.canonical(_config()).items() if k not in ("sampler", "mwn")}
    assert "sampler" not in sweep.canonical(_config()) and "sampler" in sweep.canonical(_config(sampler="sqrt"))


# --- post-hoc logit adjustment and decoupling: the classifiers by hand -------------------------------------------


W = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
B = torch.tensor([0.5, -0.5, 0.0])


def test_posthoc_la_by_hand():
    w, b = decoupling.posthoc_la(W, B, [6, 3, 1], tau=2.0)
    assert torch.equal(w, W)
    assert torch.allclose(b, torch.tensor([0.5 - 2 * math.log(0.6), -0.5 - 2 * math.log(0.3), -2 * math.log(0.1)]))


def test_tau_norm_by_hand():
    w, b = decoupling.tau_norm(W, B, tau=1.0)
    assert torch.allclose(w, torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])) and torch.equal(b, torch.zeros(3))
    w, _ = decoupling.tau_norm(W, B, tau=0.5)
    assert torch.allclose(w[2], W[2] / math.sqrt(5.0))
    assert torch.equal(decoupling.tau_norm(W, B, 0.0)[0], W)


def test_lws_by_hand():
    w, b = decoupling.lws(W, B, torch.tensor([2.0, 1.0, 0.5]))
    f = torch.tensor([[1.0, 1.0]])
    assert torch.allclose(f @ w.t() + b, (f @ W.t() + B) * torch.tensor([2.0, 1.0, 0.5]))


def test_tau_is_chosen_on_the_given_split_smallest_among_ties():
    # one feature per class: class 2 (largest norm) wins until its weight is normalised
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    labels = torch.tensor([0, 1, 2])
    tau, scores = decoupling.choose_tau(lambda t: decoupling.tau_norm(W, B, t), f, labels, 3)
    assert scores[0.0] < 1.0 and tau == min(t for t, a in scores.items() if a == max(scores.values()))
    assert tau in decoupling.TAU_GRID and len(scores) == 21


def test_crt_learns_a_balanced_classifier_on_features():
    torch.manual_seed(0)
    counts = [200, 20]
    labels = torch.tensor([0] * 200 + [1] * 20)
    f = torch.randn(220, 2) + torch.tensor([[2.0, 0.0]]) * (1 - 2 * labels[:, None])
    w, b, rows = decoupling.train_classifier(f, labels, counts, torch.zeros(2, 2), torch.zeros(2), learn="all",
                                             epochs=3, lr=0.2, batch_size=64, seed=0)
    assert len(rows) == 3 and rows[0]["lr"] == 0.2 and rows[2]["lr"] == pytest.approx(0.2 * 0.25)
    pred = (f @ w.t() + b).argmax(1)
    assert (pred[labels == 1] == 1).float().mean() > 0.9
    # LWS learns only the scales: the direction of every class weight stays
    w2, b2, _ = decoupling.train_classifier(f, labels, counts, w, b, learn="scales", epochs=1, lr=0.2, batch_size=64, seed=0)
    assert torch.allclose(F.normalize(w2, dim=1), F.normalize(w, dim=1), atol=1e-6)


# --- second stages as runs: CLI form and sweep ---------------------------------------------------------------------


def test_two_stage_run_writes_the_record_files(tmp_path):
    record = engine.train(_config(second_stage="posthoc-la", stage2_tau="0"), tmp_path / "x")
    first = json.loads((tmp_path / "x" / "first_stage" / "run.json").read_text())
    # τ = 0 changes nothing: the first stage's test accuracy (eval mode, same weights)
    assert record["final"]["top1"] == pytest.approx(first["final"]["top1"])
    assert record["second_stage"]["first_stage"]["run"] == "first_stage"
    epochs = pd.read_csv(tmp_path / "x" / "epochs.csv")
    assert epochs.epoch.tolist() == [1, 2, 3] and epochs.top1.iloc[-1] == pytest.approx(record["final"]["top1"])
    per_class = pd.read_csv(tmp_path / "x" / "per_class.csv")
    assert per_class.accuracy.mean() == pytest.approx(record["final"]["balanced"])
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == [
        "epochs.csv", "first_stage", "model.pt", "per_class.csv", "pool_history.csv", "run.json"]
    # read back with resume, refused without
    assert engine.train(_config(second_stage="posthoc-la", stage2_tau="0"), tmp_path / "x", resume=True)["final"] == record["final"]
    with pytest.raises(FileExistsError):
        engine.train(_config(second_stage="posthoc-la", stage2_tau="0"), tmp_path / "x")


def test_bad_second_stage_configs_are_refused():
    with pytest.raises(ConfigError, match="linear classifier"):
        _config(loss="ldam", second_stage="crt")
    with pytest.raises(ConfigError, match="only with a second_stage"):
        _config(stage2_lr=0.1)
    with pytest.raises(ConfigError, match="stage2_tau applies"):
        _config(second_stage="crt", stage2_tau="1")
    with pytest.raises(ConfigError, match="number or 'heldout'"):
        _config(second_stage="tau-norm", stage2_tau="best")


def test_sweep_shares_the_first_stage_and_collects_second_stages(tmp_path):
    methods = {k: sweep.METHODS[k] for k in ("Post-hoc LA (τ held-out)", "cRT", "τ-norm", "LWS")}
    lines = []
    results = sweep.run(sweep.grid(BASE, method=methods), tmp_path, log=lines.append)
    assert [r.status for r in results] == ["trained"] * 4
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert len(folders) == 5 and sum(f.startswith("digits_lt10_cnn_ce_s0-") for f in folders) == 1  # one CE run, shared
    tables = sweep.collect(results)
    assert len(tables.runs) == 4 and set(tables.runs.second_stage) == {"posthoc-la", "crt", "tau-norm", "lws"}
    assert len(tables.per_class) == 40 and sorted(tables.epochs.groupby("run").size()) == [3, 3, 7, 12]  # 2 + (1, 1, 5, 10)
    crt = results[1].record["second_stage"]
    assert crt["epochs"] == 10 and crt["features"].startswith("penultimate features")
    tau = results[2].record["second_stage"]
    assert tau["tau_setting"] == "heldout" and tau["tau"] in decoupling.TAU_GRID
    # the plain CE run asked for later is read back, and so are the second stages
    again = sweep.run(sweep.grid(BASE, method={"CE": sweep.METHODS["CE"], **methods}), tmp_path, log=lambda _: None)
    assert [r.status for r in again] == ["cached"] * 5


# --- Meta-Weight-Net -----------------------------------------------------------------------------------------------


def test_mwn_meta_gradient_and_step_by_hand(tmp_path):
    """V's gradient through the one-step look-ahead, computed independently from per-sample gradients:
    θ' = θ − lr Σ_i ã_i g_i with ã = V(L)·c / Σ V(L)·c and g_i = ∇L_i(θ), so
    ∂meta/∂φ = Σ_i (∂ã_i/∂φ) · (−lr ⟨∇meta(θ'), g_i⟩)."""
    config = engine.resolve(_config(mwn=True, batch_size=8, mwn_meta_per_class=2), np.array([133, 102, 79, 61, 47, 37, 28, 22, 17, 13]))
    data = pipeline.load_run_data(config, torch.device("cpu"))
    run = engine.build_run(config, data, torch.device("cpu"))
    assert run.mwn.meta_labels.bincount().tolist() == [2] * 10
    for group in run.optimizer.param_groups:
        group["lr"] = 0.05
    g = pipeline.epoch_generator(0, 1, torch.device("cpu"))
    ids = torch.arange(8) * 50
    x = pipeline.to_input(data.train_images[ids], data.mean, data.std)
    y = data.train_labels[ids]
    extra = torch.linspace(0.5, 2.0, 10)
    before, v_before, g_state = copy.deepcopy(run.model), copy.deepcopy(run.mwn.net), g.get_state()

    loss, _ = metaweight.train_step(run, ids, x, y, extra, g)

    # by hand: per-sample gradients of the batch loss under the current network (train mode, batch statistics)
    model = copy.deepcopy(before)
    params = list(model.parameters())
    losses = F.cross_entropy(model(x), y, reduction="none")
    grads = [torch.autograd.grad(losses[i], params, retain_graph=True) for i in range(8)]
    a = v_before(losses.detach()) * extra[y]
    a_tilde = a / a.sum()
    ahead = copy.deepcopy(before)
    with torch.no_grad():
        for k, p in enumerate(ahead.parameters()):
            p -= 0.05 * sum(a_tilde[i].detach() * grads[i][k] for i in range(8))
    g2 = torch.Generator()
    g2.set_state(g_state)
    pick = torch.randperm(20, generator=g2)[:8]
    x_meta = pipeline.to_input(pipeline.augment(run.mwn.meta_images[pick], config, g2), data.mean, data.std)
    meta = F.cross_entropy(ahead(x_meta), run.mwn.meta_labels[pick])
    meta_grads = torch.autograd.grad(meta, list(ahead.parameters()))
    s = torch.stack([-0.05 * sum((mg * gi).sum() for mg, gi in zip(meta_grads, grads[i])) for i in range(8)])
    expected = torch.autograd.grad((a_tilde * s).sum(), list(v_before.parameters()))
    for p, e in zip(run.mwn.net.parameters(), expected):
        assert torch.allclose(p.grad, e, rtol=1e-3, atol=1e-9)
    # the network's loss: Σ a L / Σ a with V after its step
    with torch.no_grad():
        l2 = F.cross_entropy(before(x), y, reduction="none")
        a2 = run.mwn.net(l2) * extra[y]
    assert loss.item() == pytest.approx(((a2 / a2.sum()) * l2).sum().item(), rel=1e-5)
    # V moved by its own optimiser (SGD 1e-5, Nesterov): a tiny step
    assert not torch.equal(run.mwn.net.linear2.bias, v_before.linear2.bias)


def test_mwn_with_dsb_resumes_bit_identically(tmp_path):
    cfg = dict(mwn=True, dsb=True, dsb_stage_epochs=1, epochs=2)
    straight = engine.train(_config(**cfg), tmp_path / "a")
    with pytest.raises(TrainingInterrupted):
        engine.train(_config(**cfg, stop_after_epoch=1), tmp_path / "b")
    resumed = engine.train(_config(**cfg), tmp_path / "b", resume=True)
    assert straight["final"] == resumed["final"] and straight["engine"]["mwn"]["meta_per_class"] == 10
    sa, sb = (torch.load(tmp_path / x / "model.pt") for x in "ab")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_every_new_method_is_a_valid_config_with_and_without_dsb():
    for name, fields in sweep.OTHER_METHODS.items():
        assert sweep.METHODS[f"{name}+DSB"] == {**fields, "dsb": True}
        TrainConfig(dataset="digits", **fields)
        TrainConfig(dataset="digits", **fields, dsb=True)


def test_cli_trains_a_new_method(tmp_path, capsys):
    code = engine.main(["--dataset", "digits", "--imbalance", "10", "--model", "cnn", "--epochs", "1", "--loss", "gca",
                        "--sampler", "class-balanced", "--no-progress", "--out", str(tmp_path / "g")])
    assert code == 0 and (tmp_path / "g" / "run.json").exists()
    code = engine.main(["--dataset", "digits", "--imbalance", "10", "--model", "cnn", "--epochs", "1",
                        "--second-stage", "lws", "--stage2-epochs", "1", "--no-progress", "--out", str(tmp_path / "l")])
    assert code == 0 and json.loads((tmp_path / "l" / "run.json").read_text())["second_stage"]["epochs"] == 1


# --- every method, on every device this machine has ----------------------------------------------------------------


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device: the GPU host runs this"))])
def test_every_method_trains_through_the_sweep_on_the_device(tmp_path, device):
    """All of sweep.METHODS (± DSB, with DSB weighting in epoch 2) through one engine on ``device``."""
    base = {**BASE, "dsb_stage_epochs": 1, "device": device}
    lines = []
    results = sweep.run(sweep.grid(base, method=sweep.METHODS), tmp_path, threads=1, log=lines.append)
    assert [r.status for r in results] == ["trained"] * len(sweep.METHODS), lines
    runs = sweep.collect(results).runs.set_index("method")
    assert runs.device.str.startswith("cpu").all() == (device == "cpu")  # a CUDA record names the card
    assert np.isfinite(runs.train_loss.astype(float)).all() and runs.top1.between(0, 1).all()
    one_stage = runs[runs.second_stage == "none"]
    # DSB weighted in epoch 2, so each +DSB run differs from its base (same seed, same batches until then)
    for name in [n for n in one_stage.index if not n.endswith("+DSB")]:
        assert one_stage.loc[name, "train_loss"] != one_stage.loc[name + "+DSB", "train_loss"], name
