"""semscale.config: validation with clear errors, the protocol presets, the warned combinations."""

import pytest
from conftest import tiny_config
from semscale import config
from semscale.config import ConfigError, TrainConfig
from semscale.train import train


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
        tiny_config(**kwargs)


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
    assert config.protocol_overrides(mixed) == {"lr": 0.1, "augment": True}
    assert config.protocol_overrides(sec3) == {}
    with pytest.raises(ConfigError, match="valid choices: ldam-cifar-lt, paper-sec3"):
        TrainConfig(dataset="mnist", protocol="sec3")


def test_stage_epochs_beyond_the_run_warn(tmp_path):
    with pytest.warns(UserWarning, match="never weighted"):
        train(tiny_config(epochs=1, dsb=True), tmp_path)


def test_first_stage_is_the_config_without_its_second_stage():
    two = tiny_config(second_stage="crt", stage2_epochs=3, stage2_lr=0.1)
    first = config.first_stage(two)
    assert first == tiny_config()  # every second-stage field back at its default
    assert config.first_stage(first) == first


FLOAT_FIELDS = [name for name, kind in config.field_types().items() if config.base_type(kind)[0] is float]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("name", FLOAT_FIELDS + ["cdb_tau", "stage2_tau"])
def test_every_numeric_field_must_be_finite(name, value):
    with pytest.raises(ConfigError, match=f"{name} must be a finite number"):
        tiny_config(**{name: value if name not in ("cdb_tau", "stage2_tau") else str(value)})


@pytest.mark.parametrize("kwargs, message", [
    (dict(imbalance=float("inf")), "imbalance must be a finite number"),
    (dict(imbalance=1, train_counts=[5, 5, 0, 5, 5, 5, 5, 5, 5, 5]), r"every class at least one image; class\(es\) \[2\]"),
    (dict(loss="focal", focal_gamma=-1), "focal_gamma must be >= 0"),
    (dict(loss="ldam", ldam_s=0), "ldam_s must be > 0"),
    (dict(reweight="cb", cb_beta=1.0), r"cb_beta must be in \[0, 1\)"),
    (dict(reweight="drw", drw_fraction=1.5), r"drw_fraction must be in \[0, 1\]"),
    (dict(loss="gla", gce_q=2), r"gce_q must be in \[-1, 1\]"),
    (dict(reweight="cdb", cdb_tau="-1"), "cdb_tau must be 'dynamic', 'dynamic-v1' or a number >= 0"),
    (dict(second_stage="posthoc-la", stage2_tau="-0.5"), r"stage2_tau must be a number or 'heldout' \(a number >= 0\), got '-0.5'"),
    (dict(subset_seed=2**32), r"subset_seed must be < 2\*\*32"),
])
def test_numeric_fields_are_checked_for_their_range(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(**kwargs)
