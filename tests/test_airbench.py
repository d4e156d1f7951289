"""The CPU tier (issue 26): the airbench networks and protocols, decoupled groups, look-ahead, reflect crops,
alternating flips, label smoothing, and bf16 autocast on the CPU, through the whole engine."""

import dataclasses
import json
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from semscale import build, cache, cli, losses, methods, models, pipeline
from semscale.build import Hooks
from semscale.config import ConfigError, TrainConfig, resolved_precision
from semscale.train import TrainingInterrupted, train

# digits (8x8) resized to 16 px, the smallest input airbench's three halvings take; 539 images in the long-tailed subset
AIRBENCH = dict(dataset="digits", imbalance=10, resize=16, eval_every=0, model="airbench-small", protocol="airbench", batch_size=128,
                epochs=2, progress=False, device="cpu")


def _config(**kw):
    return TrainConfig(**{**AIRBENCH, **kw})


# --- names: earlier runs keep their folders --------------------------------------------------------------------------


@pytest.mark.parametrize("fields, name", [
    (dict(dataset="digits", imbalance=10, model="cnn", epochs=2, batch_size=64, lr=0.05), "digits_lt10_cnn_ce_s0-ca7c5df9a3"),
    (dict(dataset="cifar10-jpeg75", imbalance=100, model="resnet32", loss="ldam", reweight="drw"),
     "cifar10-jpeg75_lt100_resnet32_ldam-drw_s0-d948ba6c0b"),
    (dict(dataset="mnist", train_per_class=300, model="cnn", protocol="paper-sec3", epochs=3, dsb=True, sampler="sqrt"),
     "mnist_m300_cnn_ce_sqrts_dsb_s0-325c03e5f4"),
])
def test_configs_of_the_earlier_engine_keep_their_folder_names(fields, name):
    # the names the engine gave these configs before precision, label smoothing and airbench's fields existed
    assert cache.run_name(TrainConfig(progress=False, device="cpu", **fields)) == name


def test_the_resolved_precision_is_part_of_a_runs_identity(monkeypatch):
    fp32 = TrainConfig(dataset="digits", model="cnn", precision="fp32", device="cpu", progress=False)
    bf16 = dataclasses.replace(fp32, precision="bf16")
    assert cache.run_name(fp32) != cache.run_name(bf16)
    assert cache.canonical(bf16)["precision"] == "bf16" and "precision" not in cache.canonical(fp32)
    auto = dataclasses.replace(fp32, precision="auto")
    monkeypatch.setattr("semscale.config.cpu_has_native_bf16", lambda: True)
    assert resolved_precision(auto) == "bf16" and cache.run_name(auto) == cache.run_name(bf16)
    monkeypatch.setattr("semscale.config.cpu_has_native_bf16", lambda: False)
    assert resolved_precision(auto) == "fp32" and cache.run_name(auto) == cache.run_name(fp32)


def test_the_airbench_protocol_sets_its_recipe_and_explicit_fields_override_it():
    c = _config()
    assert (c.optimizer, c.nesterov, c.momentum, c.lr, c.weight_decay, c.schedule) == ("sgd", True, 0.85, 11.5, 0.0153, "airbench")
    assert (c.label_smoothing, c.decoupled_lr, c.bias_lr_scale, c.lookahead) == (0.2, True, 64.0, True)
    assert (c.crop_padding, c.pad_mode, c.flip_mode, c.precision) == (2, "reflect", "alternating", "auto")
    classic = TrainConfig(dataset="digits", progress=False)
    assert (classic.nesterov, classic.precision, classic.label_smoothing, classic.crop_padding) == (False, "fp32", 0.0, 4)
    with pytest.raises(ConfigError, match="decoupled_lr"):
        _config(optimizer="adam", nesterov=False)


# --- the pieces ---------------------------------------------------------------------------------------------------------


def test_airbench_schedule_by_hand():
    total = 100
    assert build.airbench_factor(0, total) == pytest.approx(0.2)
    assert build.airbench_factor(23, total) == pytest.approx(1.0)  # int(100 * 0.23) warm-up steps
    assert build.airbench_factor(99, total) == pytest.approx(1.0 + (0.07 - 1.0) * 76 / 77)
    assert build.airbench_factor(11, total) == pytest.approx(0.2 + 0.8 * 11 / 23)


def test_decoupled_groups_give_airbenchs_per_example_step_and_equal_decay():
    c = _config(batch_size=256)
    model = models.build_model("airbench-small", 10)
    groups = build.optimizer_groups(c, model)
    k = 1024 * (1 + 1 / (1 - 0.85))
    biases, others = groups
    assert biases["lr_scale"] == pytest.approx(256 / k * 64) and others["lr_scale"] == pytest.approx(256 / k)
    # absolute decay per step at full rate: lr·lr_scale·weight_decay = wd·B/k in both groups
    for g in groups:
        assert c.lr * g["lr_scale"] * g["weight_decay"] == pytest.approx(c.weight_decay * 256 / k)
    frozen = {id(model.whiten.weight)} | {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert not frozen & {id(p) for g in groups for p in g["params"]}
    assert all(id(p) in {id(m.bias) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} for p in biases["params"])


def test_lookahead_update_by_hand():
    model = torch.nn.Linear(2, 1)
    la = build.Lookahead(model)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    la.step(5, 10)  # decay 0.95^5 (5/10)^3
    decay = 0.95**5 * 0.5**3
    expected = start["weight"] * decay + (start["weight"] + 1.0) * (1 - decay)
    torch.testing.assert_close(model.weight.detach(), expected)
    torch.testing.assert_close(la.ema["weight"], expected)
    with torch.no_grad():
        model.weight.add_(1.0)
    la.step(10, 10)  # due (10 % 5 == 0), then the final copy: the model becomes the EMA
    torch.testing.assert_close(model.weight.detach(), la.ema["weight"])


def test_reflect_translation_equals_a_crop_of_the_reflect_padded_image():
    images = torch.arange(4 * 3 * 8 * 8).reshape(4, 3, 8, 8).to(torch.uint8)
    out = pipeline.random_crop(images, 2, torch.Generator().manual_seed(1), "reflect")
    offsets = torch.randint(0, 5, (2, 4), generator=torch.Generator().manual_seed(1))
    padded = F.pad(images.float(), (2,) * 4, mode="reflect").to(torch.uint8)
    expected = torch.stack([padded[i, :, offsets[0, i]:offsets[0, i] + 8, offsets[1, i]:offsets[1, i] + 8] for i in range(4)])
    assert torch.equal(out, expected)


def test_alternating_flip_flips_each_image_in_exactly_one_of_two_consecutive_epochs():
    c = _config()
    odd, even = (pipeline.epoch_flips(c, 1000, e, torch.device("cpu")) for e in (3, 4))
    assert torch.equal(odd, ~even) and 400 < int(odd.sum()) < 600
    assert torch.equal(odd, pipeline.epoch_flips(c, 1000, 1, torch.device("cpu")))
    assert pipeline.epoch_flips(_config(flip_mode="random"), 1000, 1, torch.device("cpu")) is None


@pytest.mark.parametrize("name", losses.LOSSES)
def test_label_smoothing_is_the_loss_of_the_smoothed_target(name):
    counts = [50, 20, 5]
    z, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    plain = losses.build_loss(name, counts)
    smooth = losses.build_loss(name, counts, label_smoothing=0.3)
    every = torch.stack([plain.per_sample(z, torch.full_like(y, c)) for c in range(3)]).mean(0)
    torch.testing.assert_close(smooth.sample_losses(z, y), 0.7 * plain.per_sample(z, y) + 0.3 * every)
    if name == "ce":
        torch.testing.assert_close(smooth.sample_losses(z, y), F.cross_entropy(z, y, label_smoothing=0.3, reduction="none"))


def test_airbench_network_whitens_its_input_and_its_head_folds_the_scale():
    torch.manual_seed(0)
    model = models.build_model("airbench94", 10)
    x = torch.randn(64, 3, 16, 16) * torch.tensor([1.0, 3.0, 0.2]).view(1, 3, 1, 1)
    model.init_whitening(x)
    out = model.whiten(x)[:, :12] - model.whiten.bias[:12].view(1, -1, 1, 1)  # the 12 eigen-directions (the rest: negated)
    cov = torch.cov(out.permute(1, 0, 2, 3).reshape(12, -1))
    torch.testing.assert_close(torch.diagonal(cov), torch.ones(12), atol=0.05, rtol=0.05)  # unit variance (eps aside)
    W, b = models.linear_head(model.classifier)
    f = torch.randn(5, 256)
    torch.testing.assert_close(model.classifier(f), f @ W.T + b)
    state = model.state_dict()
    models.set_linear_head(state, model.classifier, 2 * W, b + 1)
    model.load_state_dict(state)
    torch.testing.assert_close(model.classifier(f), f @ (2 * W).T + b + 1)


# --- training under the protocol ----------------------------------------------------------------------------------


class Dtypes(Hooks):
    def __init__(self):
        self.seen = []

    def on_features(self, run, ids, features):
        self.seen.append(features.dtype)


ONE_STAGE = [m for m, f in methods.METHODS.items() if f.get("second_stage", "none") == "none"]


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
@pytest.mark.parametrize("method", ONE_STAGE)
def test_every_method_trains_under_the_airbench_protocol_in_both_precisions(tmp_path, method, precision, dtype):
    config = TrainConfig(**{**AIRBENCH, **methods.METHODS[method], "precision": precision, "dsb_stage_epochs": 1,
                            "batch_size": 256})
    seen = Dtypes()
    record = train(config, tmp_path / "run", hooks=[seen])
    assert seen.seen and set(seen.seen) == {dtype}  # the network computes in the precision asked for
    assert record["engine"]["precision"] == precision and math.isfinite(record["final"]["train_loss"])


def test_two_stage_methods_work_on_an_airbench_network(tmp_path):
    for method in ("Post-hoc LA", "cRT", "τ-norm", "LWS"):
        record = cli.train_run(TrainConfig(**{**AIRBENCH, **methods.METHODS[method], "batch_size": 256}), tmp_path / method)
        assert record["second_stage"]["kind"] == methods.METHODS[method]["second_stage"]


def test_an_interrupted_airbench_run_resumes_bit_identically(tmp_path):
    config = _config(epochs=3, batch_size=64, dsb=True, dsb_stage_epochs=1, checkpoint_every=0)
    straight = train(config, tmp_path / "straight")
    with pytest.raises(TrainingInterrupted):
        train(dataclasses.replace(config, stop_after_epoch=1), tmp_path / "resumed")
    resumed = train(config, tmp_path / "resumed", resume=True)
    assert resumed["final"] == straight["final"]
    a = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "straight" / "per_class.csv"), pd.read_csv(tmp_path / "resumed" / "per_class.csv"))


def test_the_cli_trains_the_documented_command_and_records_precision_and_cpu(tmp_path, capsys):
    assert cli.main(["--dataset", "digits", "--resize", "32", "--imbalance", "10", "--model", "airbench-small",
                     "--protocol", "airbench", "--dsb", "--dsb-stage-epochs", "2", "--epochs", "3", "--batch-size", "128",
                     "--device", "cpu", "--out", str(tmp_path / "x")]) == 0
    record = json.loads((tmp_path / "x" / "run.json").read_text())
    assert record["engine"]["precision"] in ("bf16", "fp32") and record["cpu_model"]
    assert record["engine"]["lr_granularity"] == "step"
