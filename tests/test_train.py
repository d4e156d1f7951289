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

from semscale import losses, pipeline
from semscale import train as engine
from semscale.train import ConfigError, TrainConfig, TrainingInterrupted

MIRROR = os.environ.get("SEMSCALE_MIRROR")
EPOCH_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "top1", "balanced", "many", "medium", "few", "img_per_s", "seconds", "eval_seconds"]
PER_CLASS_COLUMNS = ["class", "name", "train_count", "test_count", "group", "accuracy", "train_accuracy", "S_prime", "W", "S", "weight", "volume"]
POOL_COLUMNS = ["epoch", "class", "S_prime", "W", "S", "weight", "volume"]


def _config(**kw):
    base = dict(dataset="digits", imbalance=10, model="cnn", epochs=3, batch_size=64, lr=0.05, progress=False)
    return TrainConfig(**{**base, **kw})


# --- learning-rate schedules ------------------------------------------------------------------------------------


def test_ldam_schedule_at_200_epochs_is_ldams():
    c = TrainConfig(dataset="cifar10", epochs=200, lr=0.1)
    lr = {e: engine.learning_rate(c, e) for e in (1, 2, 5, 6, 160, 161, 180, 181, 200)}
    assert lr[1] == pytest.approx(0.02) and lr[2] == pytest.approx(0.04) and lr[5] == pytest.approx(0.1)
    assert lr[6] == lr[160] == 0.1
    assert lr[161] == lr[180] == pytest.approx(1e-3)
    assert lr[181] == lr[200] == pytest.approx(1e-5)


def test_ldam_schedule_scales_to_the_run_length():
    assert engine.ldam_milestones(200) == (5, 160, 180)
    assert engine.ldam_milestones(10) == (0, 8, 9)
    c = TrainConfig(dataset="cifar10", epochs=10, lr=0.1)
    assert [engine.learning_rate(c, e) for e in range(1, 11)] == pytest.approx([0.1] * 8 + [1e-3, 1e-5])
    c100 = TrainConfig(dataset="cifar10", epochs=100, lr=0.3)
    assert engine.ldam_milestones(100) == (3, 80, 90)
    assert engine.learning_rate(c100, 1) == pytest.approx(0.1) and engine.learning_rate(c100, 81) == pytest.approx(3e-3)


def test_exponential_and_cosine_schedules():
    exp = TrainConfig(dataset="cifar10", optimizer="adam", lr=0.01, schedule="exponential", epochs=50)
    assert engine.learning_rate(exp, 1) == 0.01
    assert engine.learning_rate(exp, 11) == pytest.approx(0.01 * 0.98 ** 10)
    cos = TrainConfig(dataset="cifar10", lr=0.2, schedule="cosine", epochs=10)
    assert engine.learning_rate(cos, 1) == pytest.approx(0.2)
    assert engine.learning_rate(cos, 6) == pytest.approx(0.1)
    assert 0 < engine.learning_rate(cos, 10) < 0.01


# --- data pipeline --------------------------------------------------------------------------------------------


def test_random_crop_takes_a_window_of_the_zero_padded_image():
    images = torch.randint(1, 256, (64, 3, 6, 5), dtype=torch.uint8)
    out = pipeline.random_crop(images, 2, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    offsets = set()
    for i in range(len(images)):
        found = [(dy, dx) for dy in range(5) for dx in range(5) if torch.equal(out[i], padded[i, :, dy:dy + 6, dx:dx + 5])]
        assert found, f"image {i} is not a window of its padded image"
        offsets.add(found[0])
    assert len(offsets) > 10  # offsets differ between images
    again = pipeline.random_crop(images, 2, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_random_flip_flips_about_half():
    images = torch.randint(0, 256, (200, 1, 4, 4), dtype=torch.uint8)
    out = pipeline.random_flip(images, torch.Generator().manual_seed(0))
    same = [torch.equal(o, x) for o, x in zip(out, images)]
    flipped = [torch.equal(o, x.flip(2)) for o, x in zip(out, images)]
    assert all(s or f for s, f in zip(same, flipped))
    assert 70 < sum(flipped) < 130


def test_epoch_generator_depends_on_seed_and_epoch_only():
    cpu = torch.device("cpu")

    def perm(seed, epoch):
        return torch.randperm(100, generator=pipeline.epoch_generator(seed, epoch, cpu))

    assert torch.equal(perm(0, 3), perm(0, 3))
    assert not torch.equal(perm(0, 3), perm(0, 4)) and not torch.equal(perm(0, 3), perm(1, 3))


# --- one run: outputs, resume, interruption --------------------------------------------------------------------


def test_run_writes_records(tmp_path):
    record = engine.train(_config(epochs=2, eval_every=0), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epochs.csv", "model.pt", "per_class.csv", "pool_history.csv", "run.json"]
    assert json.loads((tmp_path / "run.json").read_text()) == json.loads(json.dumps(record))
    assert record["subset"]["class_counts"] == [133, 102, 79, 61, 47, 37, 28, 22, 17, 13]
    assert record["dataset_variant"] == "digits-lt10" and len(record["subset"]["sha256"]) == 64
    assert record["config"]["dsb_alpha"] == 2.0 and record["config"]["normed_classifier"] is False
    epochs = pd.read_csv(tmp_path / "epochs.csv")
    assert list(epochs.columns) == EPOCH_COLUMNS
    assert epochs.top1.isna().tolist() == [True, False]  # eval_every=0: only at the end
    per_class = pd.read_csv(tmp_path / "per_class.csv")
    assert list(per_class.columns) == PER_CLASS_COLUMNS
    assert per_class.train_count.tolist() == record["subset"]["class_counts"]
    assert per_class.accuracy.mean() == pytest.approx(record["final"]["balanced"])
    assert per_class.group.tolist() == ["many"] * 2 + ["medium"] * 6 + ["few"] * 2
    assert record["final"]["few"] == pytest.approx(per_class.accuracy[-2:].mean())


def test_without_pool_the_scale_columns_are_nan(tmp_path):
    engine.train(_config(epochs=1, track_pool=False), tmp_path)
    per_class = pd.read_csv(tmp_path / "per_class.csv")
    assert per_class[["S_prime", "W", "S", "weight", "volume"]].isna().all().all()
    assert pd.read_csv(tmp_path / "pool_history.csv").empty


def _assert_same_results(a: Path, b: Path):
    sa, sb = torch.load(a / "model.pt"), torch.load(b / "model.pt")
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    pd.testing.assert_frame_equal(pd.read_csv(a / "per_class.csv"), pd.read_csv(b / "per_class.csv"), check_exact=True)
    pd.testing.assert_frame_equal(pd.read_csv(a / "pool_history.csv"), pd.read_csv(b / "pool_history.csv"), check_exact=True)
    timing = ["img_per_s", "seconds", "eval_seconds"]
    pd.testing.assert_frame_equal(pd.read_csv(a / "epochs.csv").drop(columns=timing),
                                  pd.read_csv(b / "epochs.csv").drop(columns=timing), check_exact=True)


# DSB weighting from epoch 2, CDB (depends on the previous epochs' accuracy) and augmentation all in play
RESUME_CONFIG = dict(dsb=True, dsb_stage_epochs=1, reweight="cdb")


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    engine.train(_config(**RESUME_CONFIG), out)
    return out


def test_resume_after_stop_is_bit_identical(tmp_path, straight_run):
    with pytest.raises(TrainingInterrupted, match="end of epoch 2") as stopped:
        engine.train(_config(**RESUME_CONFIG, stop_after_epoch=2), tmp_path)
    assert stopped.value.signum is None
    assert (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "run.json").exists()
    assert len(pd.read_csv(tmp_path / "epochs.csv")) == 2
    record = engine.train(_config(**RESUME_CONFIG), tmp_path, resume=True)
    assert record["status"] == "complete" and not (tmp_path / "checkpoint.pt").exists()
    _assert_same_results(straight_run, tmp_path)


def test_sigint_mid_epoch_checkpoints_and_resumes_bit_identically(tmp_path, straight_run, monkeypatch):
    calls = {"n": 0}
    real_augment = pipeline.augment

    def augment_then_interrupt(*args):
        calls["n"] += 1
        if calls["n"] == 12:  # epoch 2 (9 iterations per epoch), iteration 3
            os.kill(os.getpid(), signal.SIGINT)
        return real_augment(*args)

    monkeypatch.setattr(pipeline, "augment", augment_then_interrupt)
    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN in a background job, default_int_handler otherwise
    with pytest.raises(TrainingInterrupted, match="epoch 2, iteration 3/9") as interrupted:
        engine.train(_config(**RESUME_CONFIG), tmp_path)
    assert interrupted.value.signum == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is handler_before  # handler restored
    monkeypatch.setattr(pipeline, "augment", real_augment)
    engine.train(_config(**RESUME_CONFIG), tmp_path, resume=True)
    _assert_same_results(straight_run, tmp_path)


def test_resume_with_a_different_config_is_refused(tmp_path):
    with pytest.raises(TrainingInterrupted):
        engine.train(_config(epochs=2, stop_after_epoch=1), tmp_path)
    with pytest.raises(ConfigError, match=r"lr: checkpoint 0.05, now 0.1"):
        engine.train(_config(epochs=2, lr=0.1), tmp_path, resume=True)
    with pytest.raises(FileExistsError, match="resume"):
        engine.train(_config(epochs=2), tmp_path)


def test_resume_of_a_finished_run_returns_its_record(tmp_path):
    record = engine.train(_config(epochs=1), tmp_path)
    assert engine.train(_config(epochs=1, progress=True), tmp_path, resume=True) == json.loads(json.dumps(record))


def test_drw_gets_zero_based_epochs(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(losses.ClassWeightedLoss, "set_epoch", lambda self, e, total: seen.append((e, total)))
    engine.train(_config(reweight="drw"), tmp_path)
    assert seen == [(0, 3), (1, 3), (2, 3)]


def test_heldout_split_is_balanced_and_outside_the_subset_where_it_can_be():
    labels = np.repeat(np.arange(3), [10, 40, 40])
    subset = np.concatenate([np.arange(10), np.arange(10, 20), np.arange(50, 55)])  # class 0 fully used
    index, from_subset = pipeline.heldout_indices(labels, subset, per_class=8, seed=0)
    assert np.bincount(labels[index], minlength=3).tolist() == [8, 8, 8]
    assert from_subset == [8, 0, 0]
    assert not set(index[labels[index] > 0]) & set(subset)
    again, _ = pipeline.heldout_indices(labels, subset, per_class=8, seed=0)
    np.testing.assert_array_equal(index, again)


def test_cdb_difficulty_is_eval_mode_accuracy_on_the_heldout_split(tmp_path, monkeypatch):
    seen = []
    real_update = losses.ClassWeightedLoss.update_class_accuracy

    def spy(self, acc):
        seen.append(acc.clone())
        real_update(self, acc)

    monkeypatch.setattr(losses.ClassWeightedLoss, "update_class_accuracy", spy)
    record = engine.train(_config(reweight="cdb", cdb_heldout=5), tmp_path)
    assert len(seen) == 3 and record["engine"]["cdb"]["tau"] == "dynamic-v1"
    # the last update is the final model's accuracy in eval mode on 5 unused training images per class
    config = engine.resolve(_config(reweight="cdb", cdb_heldout=5, device="cpu"), np.asarray(record["subset"]["class_counts"]))
    train_data = pipeline.load_data(config, torch.device("cpu"), heldout=True)
    assert np.bincount(train_data.heldout_labels.numpy()).tolist() == [5] * 10
    # digits-lt10 uses every image of class 0 (n_max), so its 5 come from the subset
    assert record["engine"]["cdb"]["heldout_from_subset"] == train_data.heldout_from_subset == [5] + [0] * 9
    model = engine.build_model(config, 10, 1, torch.device("cpu"))
    model.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    model.eval()
    x = pipeline.to_input(train_data.heldout_images, train_data.mean, train_data.std)
    with torch.no_grad():
        correct = (model(x).argmax(1) == train_data.heldout_labels).float()
    expected = torch.zeros(10).index_add_(0, train_data.heldout_labels, correct) / 5
    np.testing.assert_allclose(seen[-1].numpy(), expected.numpy())


def test_seeds_write_a_summary(tmp_path):
    assert engine.main(["--dataset", "digits", "--model", "cnn", "--epochs", "1", "--batch-size", "128",
                        "--no-progress", "--seeds", "0", "1", "--out", str(tmp_path)]) == 0
    finals = [json.loads((tmp_path / f"seed_{s}" / "run.json").read_text())["final"] for s in (0, 1)]
    assert finals[0]["top1"] != finals[1]["top1"]
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("metric")
    top1 = [f["top1"] for f in finals]
    assert summary.loc["top1", "mean"] == pytest.approx(np.mean(top1))
    assert summary.loc["top1", "std"] == pytest.approx(np.std(top1, ddof=1))
    assert summary.loc["top1", "seed_1"] == pytest.approx(top1[1])
    assert summary.loc["few", "n"] == 0  # digits is balanced: no few-shot class
    assert json.loads((tmp_path / "summary.json").read_text())["metrics"]["top1"]["mean"] == pytest.approx(np.mean(top1))


def test_yaml_values_are_overridden_by_explicit_flags(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("dataset: digits\nepochs: 7\nlr: 1e-3\nbatch-size: 32\ntrain_counts: [5, 5, 5, 5, 5, 5, 5, 5, 5, 5]\n")
    args = engine.build_parser().parse_args(["--config", str(path), "--epochs", "2", "--dsb", "--out", "x"])
    config = engine.config_from_args(args)
    assert (config.epochs, config.lr, config.batch_size, config.dsb) == (2, 1e-3, 32, True)
    assert config.train_counts == (5,) * 10 and config.model == "resnet32"
    path.write_text("dataset: digits\nepoch: 3\n")
    with pytest.raises(ConfigError, match="unknown config field.*epoch.*valid: dataset"):
        engine.config_from_args(engine.build_parser().parse_args(["--config", str(path), "--out", "x"]))


# --- bad input ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag, value, valid", [("--dataset", "imagenet", "mnist"), ("--model", "vgg", "resnet32"),
                                                ("--loss", "hinge", "balanced-softmax")])
def test_cli_rejects_unknown_names_listing_the_choices(flag, value, valid, capsys):
    argv = ["--dataset", "digits", "--out", "x", flag, value]
    with pytest.raises(SystemExit) as exited:
        engine.main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert value in err and valid in err


@pytest.mark.parametrize("kwargs, message", [
    (dict(dataset="imagenet"), "valid choices: mnist"),
    (dict(loss="hinge"), "valid choices: ce, focal"),
    (dict(dsb_alpha=0.5), "dsb_alpha must be >= 1"),
    (dict(epochs=-1), "epochs must be >= 1"),
    (dict(epochs=2.5), "epochs must be a int"),
    (dict(train_counts=[5] * 10), "choose one way"),
    (dict(focal_gamma=2.0), "focal_gamma does not apply to loss 'ce'"),
    (dict(nesterov=True, optimizer="adam"), "nesterov needs optimizer=sgd"),
    (dict(dsb=True, track_pool=False), "dsb needs the feature pool"),
    (dict(normalization="fixed"), "no fixed normalisation constants for 'digits'"),
    (dict(device="gpu"), "invalid device"),
])
def test_bad_config_is_a_clear_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        _config(**kwargs)


def test_cli_reports_bad_values_without_a_traceback(capsys):
    with pytest.raises(SystemExit) as exited:
        engine.main(["--dataset", "digits", "--out", "x", "--dsb-alpha", "0.5"])
    assert exited.value.code == 2 and "dsb_alpha must be >= 1" in capsys.readouterr().err


def test_dsb_with_a_single_image_class_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="at least 2 training images per class"):
        engine.train(_config(imbalance=100, dsb=True, dsb_stage_epochs=1), tmp_path)


def test_stage_epochs_beyond_the_run_warn(tmp_path):
    with pytest.warns(UserWarning, match="never weighted"):
        engine.train(_config(epochs=1, dsb=True), tmp_path)


# --- the CLI on MNIST-LT --------------------------------------------------------------------------------------


@pytest.mark.skipif(not MIRROR, reason="needs SEMSCALE_MIRROR (MNIST)")
def test_cli_smoke_run_on_mnist_lt(tmp_path):
    out = tmp_path / "tmp"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "semscale.train", "--dataset", "mnist", "--imbalance", "100", "--model", "cnn",
                           "--loss", "ce", "--dsb", "--epochs", "2", "--out", str(out)], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"2-epoch MNIST-LT CLI run: {seconds:.1f} s")
    record = json.loads((out / "run.json").read_text())
    assert record["dataset_variant"] == "mnist-lt100"
    assert record["subset"]["class_counts"][0] == 5923 and record["subset"]["class_counts"][-1] == 59
    assert record["config"]["dsb"] is True and record["final"]["top1"] > 0.2
    assert list(pd.read_csv(out / "epochs.csv").columns) == EPOCH_COLUMNS
    assert list(pd.read_csv(out / "per_class.csv").columns) == PER_CLASS_COLUMNS
    history = pd.read_csv(out / "pool_history.csv")
    assert list(history.columns) == POOL_COLUMNS and len(history) == 20
    assert np.isfinite(history[["S_prime", "W", "S", "weight", "volume"]].to_numpy()).all()


# --- protocol presets -------------------------------------------------------------------------------------------


def test_protocol_presets_set_several_fields_and_explicit_fields_win():
    sec3 = TrainConfig(dataset="mnist", protocol="paper-sec3")
    assert (sec3.optimizer, sec3.lr, sec3.batch_size, sec3.weight_decay, sec3.schedule, sec3.lr_decay, sec3.augment) == \
        ("adam", 0.01, 64, 0.0, "exponential", 0.98, False)
    ldam = TrainConfig(dataset="cifar10-jpeg75")
    assert (ldam.protocol, ldam.optimizer, ldam.lr, ldam.momentum, ldam.weight_decay, ldam.batch_size, ldam.schedule,
            ldam.augment, ldam.crop_padding, ldam.flip) == ("ldam-cifar-lt", "sgd", 0.1, 0.9, 2e-4, 128, "ldam", True, 4, True)
    assert ldam.normalization == "fixed" and TrainConfig(dataset="digits").normalization == "subset"
    # an explicit value wins even where it equals another protocol's default
    mixed = TrainConfig(dataset="mnist", protocol="paper-sec3", lr=0.1, augment=True)
    assert mixed.lr == 0.1 and mixed.augment is True and mixed.optimizer == "adam"
    assert engine.protocol_overrides(mixed) == {"lr": 0.1, "augment": True}
    assert engine.protocol_overrides(sec3) == {}
    with pytest.raises(ConfigError, match="valid choices: ldam-cifar-lt, paper-sec3"):
        TrainConfig(dataset="mnist", protocol="sec3")


def test_protocol_from_the_cli_and_in_the_record(tmp_path):
    args = engine.build_parser().parse_args(["--dataset", "digits", "--protocol", "paper-sec3", "--batch-size", "32", "--out", "x"])
    config = engine.config_from_args(args)
    assert (config.optimizer, config.batch_size) == ("adam", 32)
    record = engine.train(_config(protocol="paper-sec3", lr=None, batch_size=None, epochs=1), tmp_path)
    assert record["protocol"] == {"name": "paper-sec3", "overrides": {}}
    assert record["config"]["optimizer"] == "adam" and record["normalization"]["kind"] == "subset"
    assert len(record["source_sha256"]) == 64
