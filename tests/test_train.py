"""semscale.train, the loop: the record files of a run, resume after a stop or a signal, DRW's and CDB's per-epoch
updates, observed through build.Hooks."""

import json
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import RESUME_FIELDS, TINY_COUNTS, InterruptAt, tiny_config
from semscale import build, features, losses, pipeline
from semscale import train as engine
from semscale.build import Hooks
from semscale.config import ConfigError
from semscale.train import TrainingInterrupted

EPOCH_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "top1", "balanced", "many", "medium", "few", "img_per_s", "seconds", "eval_seconds"]
PER_CLASS_COLUMNS = ["class", "name", "train_count", "test_count", "group", "accuracy", "train_accuracy", "S_prime", "W", "S", "weight", "volume"] + features.SCALE_COLUMNS


def _config(**kw):
    """The tiny config over three epochs."""
    return tiny_config(**{"epochs": 3, **kw})


# --- one run: outputs --------------------------------------------------------------------------------------------


def test_run_writes_records(tmp_path):
    record = engine.train(_config(epochs=2, eval_every=0), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epochs.csv", "model.pt", "per_class.csv", "pool_history.csv", "run.json"]
    assert json.loads((tmp_path / "run.json").read_text()) == json.loads(json.dumps(record))
    assert record["subset"]["class_counts"] == TINY_COUNTS
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


def test_a_two_stage_config_is_the_clis_job(tmp_path):
    with pytest.raises(ConfigError, match="semscale.cli.train_run"):
        engine.train(_config(second_stage="posthoc-la"), tmp_path)
    assert not list(tmp_path.iterdir())


# --- resume and interruption ----------------------------------------------------------------------------------------


def _assert_same_results(a: Path, b: Path):
    sa, sb = torch.load(a / "model.pt"), torch.load(b / "model.pt")
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    pd.testing.assert_frame_equal(pd.read_csv(a / "per_class.csv"), pd.read_csv(b / "per_class.csv"), check_exact=True)
    pd.testing.assert_frame_equal(pd.read_csv(a / "pool_history.csv"), pd.read_csv(b / "pool_history.csv"), check_exact=True)
    timing = ["img_per_s", "seconds", "eval_seconds"]
    pd.testing.assert_frame_equal(pd.read_csv(a / "epochs.csv").drop(columns=timing),
                                  pd.read_csv(b / "epochs.csv").drop(columns=timing), check_exact=True)


def test_resume_after_stop_is_bit_identical(tmp_path, straight_run):
    with pytest.raises(TrainingInterrupted, match="end of epoch 2") as stopped:
        engine.train(_config(**RESUME_FIELDS, stop_after_epoch=2), tmp_path)
    assert stopped.value.signum is None
    assert (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "run.json").exists()
    assert len(pd.read_csv(tmp_path / "epochs.csv")) == 2
    record = engine.train(_config(**RESUME_FIELDS), tmp_path, resume=True)
    assert record["status"] == "complete" and not (tmp_path / "checkpoint.pt").exists()
    _assert_same_results(straight_run, tmp_path)


def test_sigint_mid_epoch_checkpoints_and_resumes_bit_identically(tmp_path, straight_run):
    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN in a background job, default_int_handler otherwise
    with pytest.raises(TrainingInterrupted, match="epoch 2, iteration 3/9") as interrupted:
        # the 12th step: epoch 2 (9 iterations per epoch), iteration 3
        engine.train(_config(**RESUME_FIELDS), tmp_path, hooks=[InterruptAt(12)])
    assert interrupted.value.signum == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is handler_before  # handler restored
    engine.train(_config(**RESUME_FIELDS), tmp_path, resume=True)
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


# --- the loss's per-epoch updates, seen by hooks --------------------------------------------------------------------


class LossWeights(Hooks):
    """The loss's class reweighting ``r`` as the epoch starts, and after the epoch's bookkeeping."""

    def __init__(self):
        self.before, self.after = [], []

    def before_epoch(self, run, epoch):
        self.before.append((epoch, run.loss.weights))

    def after_epoch(self, run, epoch, test):
        self.after.append((epoch, run.loss.weights))


def test_drw_gets_zero_based_epochs(tmp_path):
    """DRW switches at 0-based epoch round(0.8 * 3) = 2, the third epoch; 1-based counting would switch an epoch early."""
    seen = LossWeights()
    engine.train(_config(reweight="drw"), tmp_path, hooks=[seen])
    assert [e for e, _ in seen.before] == [1, 2, 3]
    uniform, cb = torch.ones(10), losses.cb_weights(TINY_COUNTS, 0.9999).float()
    assert torch.equal(seen.before[0][1], uniform) and torch.equal(seen.before[1][1], uniform)
    assert torch.equal(seen.before[2][1], cb) and not torch.equal(cb, uniform)


class HeldoutAccuracy(LossWeights):
    """Also the eval-mode accuracy on CDB's held-out split that the epoch ends with (read only: eval mode, no grad)."""

    def __init__(self):
        super().__init__()
        self.accuracy = []

    def after_epoch(self, run, epoch, test):
        super().after_epoch(run, epoch, test)
        self.accuracy.append(engine.heldout_accuracy(run))


def test_cdb_difficulty_is_eval_mode_accuracy_on_the_heldout_split(tmp_path):
    seen = HeldoutAccuracy()
    record = engine.train(_config(reweight="cdb", cdb_heldout=5), tmp_path, hooks=[seen])
    assert len(seen.after) == 3 and record["engine"]["cdb"]["tau"] == "dynamic-v1"
    # every epoch ends with CDB's weights from that epoch's held-out accuracy
    for (_, weights), accuracy in zip(seen.after, seen.accuracy):
        torch.testing.assert_close(weights, losses.cdb_weights(torch.from_numpy(accuracy), "dynamic-v1").float())
    assert not torch.equal(seen.after[0][1], torch.ones(10))
    # the last update is the final model's accuracy in eval mode on 5 unused training images per class
    config = build.resolve(_config(reweight="cdb", cdb_heldout=5, device="cpu"), np.asarray(record["subset"]["class_counts"]))
    train_data = pipeline.load_data(config, torch.device("cpu"), heldout=True)
    assert np.bincount(train_data.heldout_labels.numpy()).tolist() == [5] * 10
    # digits-lt10 uses every image of class 0 (n_max), so its 5 come from the subset
    assert record["engine"]["cdb"]["heldout_from_subset"] == train_data.heldout_from_subset == [5] + [0] * 9
    model = build.build_network(config, 10, 1, torch.device("cpu"))
    model.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    model.eval()
    x = pipeline.to_input(train_data.heldout_images, train_data.mean, train_data.std)
    with torch.no_grad():
        correct = (model(x).argmax(1) == train_data.heldout_labels).float()
    expected = torch.zeros(10).index_add_(0, train_data.heldout_labels, correct) / 5
    np.testing.assert_allclose(seen.accuracy[-1], expected.numpy())
    torch.testing.assert_close(seen.after[-1][1], losses.cdb_weights(expected.double(), "dynamic-v1").float())


def test_hooks_see_every_step_and_epoch_and_change_nothing(tmp_path, straight_run):
    class Count(Hooks):
        def __init__(self):
            self.calls = []

        def before_epoch(self, run, epoch):
            self.calls.append(("before", epoch))

        def on_features(self, run, ids, features):
            assert features.shape == (len(ids), 128)  # the CNN's penultimate features, before pooling to 64
            self.calls.append(("features", len(ids)))

        def after_step(self, run, ids, class_weights):
            self.calls.append(("step", class_weights is not None))

        def after_epoch(self, run, epoch, test):
            self.calls.append(("after", epoch, test is not None))  # eval_every=1 (the default): tested every epoch

    seen = Count()
    engine.train(_config(**RESUME_FIELDS), tmp_path, hooks=[seen])
    epoch = [("before", 1)] + [("features", 64), ("step", False)] * 8 + [("features", 27), ("step", False)] + [("after", 1, True)]
    weighted = [("features", 64), ("step", True)] * 8 + [("features", 27), ("step", True)]
    assert seen.calls == (epoch + [("before", 2)] + weighted + [("after", 2, True), ("before", 3)] + weighted
                          + [("after", 3, True)])
    _assert_same_results(straight_run, tmp_path)


def test_eval_heldout_records_the_held_out_accuracy_and_changes_no_training(tmp_path):
    """With eval_heldout every evaluation also scores the balanced held-out split of unused training images
    (epochs.csv heldout_top1); the training itself is the plain run's, weight for weight."""
    from conftest import same_weights
    from semscale import second_stage

    plain = engine.train(tiny_config(eval_every=1), tmp_path / "plain")
    watched = engine.train(tiny_config(eval_every=1, eval_heldout=True), tmp_path / "watched")
    assert watched["final"] == plain["final"] and same_weights(tmp_path / "plain", tmp_path / "watched")
    epochs = pd.read_csv(tmp_path / "watched" / "epochs.csv")
    assert epochs.heldout_top1.between(0, 1).all() and len(epochs) == 2
    assert "heldout_top1" not in pd.read_csv(tmp_path / "plain" / "epochs.csv")
    # a second stage on such a run keeps its epochs.csv columns
    config = tiny_config(eval_every=1, eval_heldout=True, second_stage="crt", stage2_epochs=1)
    second_stage.train_second_stage(config, tmp_path / "crt", tmp_path / "watched")
    assert list(pd.read_csv(tmp_path / "crt" / "epochs.csv").columns) == list(epochs.columns)


def test_eval_heldout_beside_cdb_scores_the_split_cdb_measures_and_changes_no_training(tmp_path):
    """CDB measures its difficulty on the same held-out split: the selection column is its mean accuracy, and the run
    trains as CDB alone does."""
    from conftest import same_weights

    plain = engine.train(tiny_config(eval_every=1, reweight="cdb"), tmp_path / "plain")
    watched = engine.train(tiny_config(eval_every=1, reweight="cdb", eval_heldout=True), tmp_path / "watched")
    assert watched["final"] == plain["final"] and same_weights(tmp_path / "plain", tmp_path / "watched")
    epochs = pd.read_csv(tmp_path / "watched" / "epochs.csv")
    assert epochs.heldout_top1.between(0, 1).all() and epochs.heldout_top1.notna().all()
