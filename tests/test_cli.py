"""semscale.cli: the command line, run_seeds, and train_run's one convention for a two-stage run's first stage."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config
from semscale import cache, cli, features, records, sweep
from semscale.config import ConfigError
from semscale.methods import METHODS
from semscale.train import train

MIRROR = os.environ.get("SEMSCALE_MIRROR")
EPOCH_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "top1", "balanced", "many", "medium", "few", "img_per_s", "seconds", "eval_seconds"]
PER_CLASS_COLUMNS = ["class", "name", "train_count", "test_count", "group", "accuracy", "train_accuracy", "S_prime", "W", "S", "weight", "volume"] + features.SCALE_COLUMNS
POOL_COLUMNS = ["epoch", "class", "S_prime", "W", "S", "weight", "volume"]


def test_seeds_write_a_summary(tmp_path):
    assert cli.main(["--dataset", "digits", "--model", "cnn", "--epochs", "1", "--batch-size", "128",
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
    args = cli.build_parser().parse_args(["--config", str(path), "--epochs", "2", "--dsb", "--out", "x"])
    config = cli.config_from_args(args)
    assert (config.epochs, config.lr, config.batch_size, config.dsb) == (2, 1e-3, 32, True)
    assert config.train_counts == (5,) * 10 and config.model == "resnet32"
    path.write_text("dataset: digits\nepoch: 3\n")
    with pytest.raises(ConfigError, match="unknown config field.*epoch.*valid: dataset"):
        cli.config_from_args(cli.build_parser().parse_args(["--config", str(path), "--out", "x"]))


@pytest.mark.parametrize("flag, value, valid", [("--dataset", "imagenet", "mnist"), ("--model", "vgg", "resnet32"),
                                                ("--loss", "hinge", "balanced-softmax")])
def test_cli_rejects_unknown_names_listing_the_choices(flag, value, valid, capsys):
    argv = ["--dataset", "digits", "--out", "x", flag, value]
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert value in err and valid in err


def test_cli_reports_bad_values_without_a_traceback(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--dataset", "digits", "--out", "x", "--dsb-alpha", "0.5"])
    assert exited.value.code == 2 and "dsb_alpha must be >= 1" in capsys.readouterr().err


def test_protocol_from_the_cli_and_in_the_record(tmp_path):
    args = cli.build_parser().parse_args(["--dataset", "digits", "--protocol", "paper-sec3", "--batch-size", "32", "--out", "x"])
    config = cli.config_from_args(args)
    assert (config.optimizer, config.batch_size) == ("adam", 32)
    record = train(tiny_config(protocol="paper-sec3", lr=None, batch_size=None, epochs=1), tmp_path)
    assert record["protocol"] == {"name": "paper-sec3", "overrides": {}}
    assert record["config"]["optimizer"] == "adam" and record["normalization"]["kind"] == "subset"
    assert len(record["source_sha256"]) == 64


def test_cli_trains_a_new_method(tmp_path, capsys):
    code = cli.main(["--dataset", "digits", "--imbalance", "10", "--model", "cnn", "--epochs", "1", "--loss", "gca",
                     "--sampler", "class-balanced", "--no-progress", "--out", str(tmp_path / "g")])
    assert code == 0 and (tmp_path / "g" / "run.json").exists()
    code = cli.main(["--dataset", "digits", "--imbalance", "10", "--model", "cnn", "--epochs", "1",
                     "--second-stage", "lws", "--stage2-epochs", "1", "--no-progress", "--out", str(tmp_path / "l")])
    assert code == 0 and json.loads((tmp_path / "l" / "run.json").read_text())["second_stage"]["epochs"] == 1


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


def test_the_first_stage_lives_in_the_sibling_folder_its_config_names(tmp_path):
    config = tiny_config(second_stage="lws", stage2_epochs=1)
    first = tmp_path / cache.run_name(tiny_config())
    assert cli.first_stage_dir(config, tmp_path / "x") == first
    record = cli.train_run(config, tmp_path / "x")
    assert cache.run_complete(first) and cache.run_complete(tmp_path / "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, "x"])
    assert record["second_stage"]["first_stage"]["run"] == first.name
    # a second stage of another kind on the same first stage trains it no more
    mtime = (first / "model.pt").stat().st_mtime_ns
    cli.train_run(tiny_config(second_stage="tau-norm"), tmp_path / "y")
    assert (first / "model.pt").stat().st_mtime_ns == mtime
    # a one-stage config is plain train
    assert cli.train_run(tiny_config(), tmp_path / "z")["final"] == json.loads((first / "run.json").read_text())["final"]


TINY_FLAGS = ["--dataset", "digits", "--imbalance", "10", "--model", "cnn", "--epochs", "2", "--batch-size", "64",
              "--lr", "0.05", "--no-progress"]


def test_the_cli_and_the_sweep_share_first_stages(tmp_path, tiny):
    # the CLI's τ-norm trains its CE first stage where the sweep keeps the CE run
    assert cli.main([*TINY_FLAGS, "--second-stage", "tau-norm", "--out", str(tmp_path / "tau-norm")]) == 0
    first = tmp_path / cache.run_name(tiny_config())
    assert cache.run_complete(first)
    mtime = (first / "model.pt").stat().st_mtime_ns
    done = sweep.run(sweep.grid(tiny, method={k: METHODS[k] for k in ("CE", "cRT")}), tmp_path, log=lambda line: None)
    assert [r.status for r in done] == ["cached", "trained"] and done[0].path == first
    assert done[1].record["second_stage"]["first_stage"]["run"] == first.name
    assert (first / "model.pt").stat().st_mtime_ns == mtime  # read back, not trained again
    # and the sweep's CE+DSB first stage (trained for Post-hoc LA+DSB) serves the CLI's cRT on it
    posthoc_dsb = {**METHODS["Post-hoc LA+DSB"], "dsb_stage_epochs": 1}
    (posthoc,) = sweep.run(sweep.grid(tiny, method={"Post-hoc LA+DSB": posthoc_dsb}), tmp_path, log=lambda line: None)
    dsb_first = tmp_path / cache.run_name(tiny_config(dsb=True, dsb_stage_epochs=1))
    assert posthoc.record["second_stage"]["first_stage"]["run"] == dsb_first.name
    mtime = (dsb_first / "model.pt").stat().st_mtime_ns
    crt_dsb = ["--dsb", "--dsb-stage-epochs", "1", "--second-stage", "crt", "--out", str(tmp_path / "crt-dsb")]
    assert cli.main([*TINY_FLAGS, *crt_dsb]) == 0
    assert (dsb_first / "model.pt").stat().st_mtime_ns == mtime
    record = json.loads((tmp_path / "crt-dsb" / "run.json").read_text())
    assert record["second_stage"]["first_stage"]["run"] == dsb_first.name


def test_an_interrupted_cli_run_says_how_to_resume(tmp_path, capsys):
    out = str(tmp_path / "x")
    assert cli.main([*TINY_FLAGS, "--stop-after-epoch", "1", "--out", out]) == 3
    err = capsys.readouterr().err
    assert "stop_after_epoch=1: stopped at the end of epoch 1" in err
    assert f"resume with: python -m semscale.train {' '.join(TINY_FLAGS)} --stop-after-epoch 1 --out {out} --resume" in err
    assert cli.main([*TINY_FLAGS, "--out", out, "--resume"]) == 0
    assert "digits-lt10 -> " in capsys.readouterr().out and cache.run_complete(tmp_path / "x")


# --- errors arrive as one clear message ---------------------------------------------------------------------------


def test_a_config_error_prints_one_usage_line_and_the_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--dataset", "digits", "--out", str(tmp_path / "x"), "--imbalance", "inf"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 2 and len(err) == 2
    assert err[0].startswith("usage: python -m semscale.train --dataset NAME") and "--help" in err[0]
    assert err[1] == "python -m semscale.train: error: imbalance must be a finite number, got inf"


def test_help_lists_every_field(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert exited.value.code == 0 and "--stage2-batch-size" in out and "23 % of the steps" in out


def test_an_imbalance_the_data_cannot_give_names_the_largest_they_allow(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main([*TINY_FLAGS, "--imbalance", "1000", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "without an image" in err and "the largest imbalance these data allow is 133" in err
    assert not (tmp_path / "x" / "run.json").exists()


def test_a_diverging_run_is_an_error_message_not_a_traceback_and_nothing_is_cached(tmp_path, capsys):
    code = cli.main([*TINY_FLAGS, "--protocol", "paper-sec3", "--lr", "1e6", "--epochs", "1", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("python -m semscale.train: error: training diverged in epoch 1")
    assert "Traceback" not in err and not cache.run_complete(tmp_path / "x")


def test_resume_moves_a_garbage_checkpoint_aside_and_trains_again(tmp_path, capsys):
    out = tmp_path / "x"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match=r"x was damaged \(checkpoint.pt is no readable checkpoint.*\): moved aside to x.damaged-"):
        assert cli.main([*TINY_FLAGS, "--out", str(out), "--resume"]) == 0
    assert cache.run_complete(out) and "weights_only" not in capsys.readouterr().err
    (aside,) = tmp_path.glob("x.damaged-*")
    assert (aside / "checkpoint.pt").read_bytes() == b"not a checkpoint"  # kept, not deleted


def test_a_full_disk_is_one_message_naming_the_place(tmp_path, capsys, monkeypatch):
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full (Linux)")

    def to_dev_full(dir, prefix, suffix):  # every result file lands on /dev/full, which answers ENOSPC
        tmp = tmp_path / f"{prefix}x{suffix}"
        tmp.touch()
        return os.open("/dev/full", os.O_WRONLY), str(tmp)

    monkeypatch.setattr(records.tempfile, "mkstemp", to_dev_full)
    assert cli.main([*TINY_FLAGS, "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert f"error: [Errno 28] disk full at {tmp_path / 'x'}" in err and "unexpected pos" not in err and "Traceback" not in err
