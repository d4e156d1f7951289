"""semscale.second_stage: post-hoc logit adjustment, τ-norm, LWS and cRT by hand; two-stage runs and their records."""

import json
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from semscale import cache, cli, results, second_stage, sweep
from semscale.config import ConfigError, first_stage
from semscale.methods import METHODS
from semscale.train import train

# --- the classifiers by hand ---------------------------------------------------------------------------------------


W = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
B = torch.tensor([0.5, -0.5, 0.0])


def test_posthoc_la_by_hand():
    w, b = second_stage.posthoc_la(W, B, [6, 3, 1], tau=2.0)
    assert torch.equal(w, W)
    assert torch.allclose(b, torch.tensor([0.5 - 2 * math.log(0.6), -0.5 - 2 * math.log(0.3), -2 * math.log(0.1)]))


def test_tau_norm_by_hand():
    w, b = second_stage.tau_norm(W, B, tau=1.0)
    assert torch.allclose(w, torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])) and torch.equal(b, torch.zeros(3))
    w, _ = second_stage.tau_norm(W, B, tau=0.5)
    assert torch.allclose(w[2], W[2] / math.sqrt(5.0))
    assert torch.equal(second_stage.tau_norm(W, B, 0.0)[0], W)


def test_lws_by_hand():
    w, b = second_stage.lws(W, B, torch.tensor([2.0, 1.0, 0.5]))
    f = torch.tensor([[1.0, 1.0]])
    assert torch.allclose(f @ w.t() + b, (f @ W.t() + B) * torch.tensor([2.0, 1.0, 0.5]))


def test_tau_is_chosen_on_the_given_split_smallest_among_ties():
    # one feature per class: class 2 (largest norm) wins until its weight is normalised
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    labels = torch.tensor([0, 1, 2])
    tau, scores = second_stage.choose_tau(lambda t: second_stage.tau_norm(W, B, t), f, labels, 3)
    assert scores[0.0] < 1.0 and tau == min(t for t, a in scores.items() if a == max(scores.values()))
    assert tau in second_stage.TAU_GRID and len(scores) == 21


def test_crt_learns_a_balanced_classifier_on_features():
    torch.manual_seed(0)
    counts = [200, 20]
    labels = torch.tensor([0] * 200 + [1] * 20)
    f = torch.randn(220, 2) + torch.tensor([[2.0, 0.0]]) * (1 - 2 * labels[:, None])
    w, b, rows = second_stage.train_classifier(f, labels, counts, torch.zeros(2, 2), torch.zeros(2), learn="all",
                                             epochs=3, lr=0.2, batch_size=64, seed=0)
    assert len(rows) == 3 and rows[0]["lr"] == 0.2 and rows[2]["lr"] == pytest.approx(0.2 * 0.25)
    pred = (f @ w.t() + b).argmax(1)
    assert (pred[labels == 1] == 1).float().mean() > 0.9
    # classifier-balancing's epoch: int(N / batch) batches, its cosine stepped at each epoch's start (last epoch: lr 0)
    _, _, ref = second_stage.train_classifier(f, labels, counts, torch.zeros(2, 2), torch.zeros(2), learn="all",
                                              epochs=3, lr=0.2, batch_size=64, seed=0, steps="reference")
    assert [r["lr"] for r in ref] == pytest.approx([0.2 * 0.75, 0.2 * 0.25, 0.0])
    assert rows[0]["img_per_s"] > 0 and second_stage.epoch_plan("reference", 1, 3, 0.2, 220, counts, 64)[1] == 192
    assert second_stage.epoch_plan("n_max", 1, 3, 0.2, 220, counts, 64) == (0.2, 400)  # n_max * C draws
    # LWS learns only the scales: the direction of every class weight stays
    w2, b2, _ = second_stage.train_classifier(f, labels, counts, w, b, learn="scales", epochs=1, lr=0.2, batch_size=64, seed=0)
    assert torch.allclose(F.normalize(w2, dim=1), F.normalize(w, dim=1), atol=1e-6)


# --- second stages as runs -----------------------------------------------------------------------------------------


def test_two_stage_run_writes_the_record_files(tmp_path):
    config = tiny_config(second_stage="posthoc-la", stage2_tau="0")
    record = cli.train_run(config, tmp_path / "x")
    first_dir = tmp_path / cache.run_name(first_stage(config))  # the sibling folder the first stage's config names
    first = json.loads((first_dir / "run.json").read_text())
    # τ = 0 changes nothing: the first stage's test accuracy (eval mode, same weights)
    assert record["final"]["top1"] == pytest.approx(first["final"]["top1"])
    assert record["second_stage"]["first_stage"]["run"] == first_dir.name
    assert record["second_stage"]["first_stage"]["final"] == first["final"]
    epochs = pd.read_csv(tmp_path / "x" / "epochs.csv")
    assert epochs.epoch.tolist() == [1, 2, 3] and epochs.top1.iloc[-1] == pytest.approx(record["final"]["top1"])
    per_class = pd.read_csv(tmp_path / "x" / "per_class.csv")
    assert per_class.accuracy.mean() == pytest.approx(record["final"]["balanced"])
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == [
        "epochs.csv", "model.pt", "per_class.csv", "pool_history.csv", "run.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first_dir.name, "x"])
    # the record describes the data and network of its first stage, with the second stage's config
    assert record["config"]["second_stage"] == "posthoc-la" and record["subset"] == first["subset"]
    assert (tmp_path / "x" / "pool_history.csv").read_bytes() == (first_dir / "pool_history.csv").read_bytes()
    # read back with resume, refused without
    assert cli.train_run(config, tmp_path / "x", resume=True)["final"] == record["final"]
    with pytest.raises(FileExistsError):
        cli.train_run(config, tmp_path / "x")


def test_a_second_stage_needs_its_finished_first_stage(tmp_path):
    config = tiny_config(second_stage="posthoc-la")
    with pytest.raises(FileNotFoundError, match="first stage of this two-stage run is not finished"):
        second_stage.train_second_stage(config, tmp_path / "x", tmp_path / "nothing")
    other = tmp_path / "other"
    train(tiny_config(lr=0.04), other)  # a finished run of another config
    with pytest.raises(ConfigError, match="lr: checkpoint 0.04, now 0.05"):
        second_stage.train_second_stage(config, tmp_path / "x", other)
    assert not (tmp_path / "x").exists()


def test_bad_second_stage_configs_are_refused():
    with pytest.raises(ConfigError, match="linear classifier"):
        tiny_config(loss="ldam", second_stage="crt")
    with pytest.raises(ConfigError, match="only with a second_stage"):
        tiny_config(stage2_lr=0.1)
    with pytest.raises(ConfigError, match="stage2_tau applies"):
        tiny_config(second_stage="crt", stage2_tau="1")
    with pytest.raises(ConfigError, match="stage2_steps applies to crt and lws"):
        tiny_config(second_stage="posthoc-la", stage2_steps="reference")
    with pytest.raises(ConfigError, match="stage2_steps must be one of"):
        tiny_config(second_stage="crt", stage2_steps="all")
    with pytest.raises(ConfigError, match="number or 'heldout'"):
        tiny_config(second_stage="tau-norm", stage2_tau="best")


def test_sweep_shares_the_first_stage_and_collects_second_stages(tmp_path, tiny):
    methods = {k: METHODS[k] for k in ("Post-hoc LA (τ held-out)", "cRT", "τ-norm", "LWS")}
    lines = []
    done = sweep.run(sweep.grid(tiny, method=methods), tmp_path, log=lines.append)
    assert [r.status for r in done] == ["trained"] * 4
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert len(folders) == 5 and sum(f.startswith("digits_lt10_cnn_ce_s0-") for f in folders) == 1  # one CE run, shared
    tables = results.collect(done)
    assert len(tables.runs) == 4 and set(tables.runs.second_stage) == {"posthoc-la", "crt", "tau-norm", "lws"}
    assert len(tables.per_class) == 40 and sorted(tables.epochs.groupby("run").size()) == [3, 3, 7, 12]  # 2 + (1, 1, 5, 10)
    crt = done[1].record["second_stage"]
    assert crt["epochs"] == 10 and crt["features"].startswith("penultimate features")
    assert crt["steps"] == "reference" and "int(N / batch)" in crt["sampling"]  # the catalogue's cRT is the reference's
    tau = done[2].record["second_stage"]
    assert tau["tau_setting"] == "heldout" and tau["tau"] in second_stage.TAU_GRID
    # the plain CE run asked for later is read back, and so are the second stages
    again = sweep.run(sweep.grid(tiny, method={"CE": METHODS["CE"], **methods}), tmp_path, log=lambda _: None)
    assert [r.status for r in again] == ["cached"] * 5
