"""semscale.study.marginal (notebook 01): saturation fits, nested subsets, step schedule, correlations and claims."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from semscale import config, pipeline, scale, subsets
from semscale.study import marginal

M = np.array([10, 20, 30, 50, 100, 200, 300, 400, 500, 800, 1000, 2000, 3000, 5000], float)


@pytest.mark.parametrize("model, params", [("exponential", (300.0, 250.0)), ("hyperbolic", (180.0, 120.0)),
                                           ("logarithmic", (40.0, 30.0))])
def test_fit_recovers_known_parameters_and_aic_picks_the_true_model(model, params):
    rng = np.random.default_rng(0)
    v = marginal.CURVES[model].f(M, *params) * (1 + 0.005 * rng.standard_normal(M.size))
    fits = {name: marginal.fit_curve(M, v, name) for name in marginal.CURVES}
    assert fits[model].ok
    np.testing.assert_allclose(fits[model].params, params, rtol=0.03)
    assert min(fits, key=lambda n: fits[n].aic) == model


def test_m90_is_where_the_fitted_curve_reaches_90_percent():
    for name in ("exponential", "hyperbolic"):
        spec = marginal.CURVES[name]
        m90 = spec.m90(200.0, 77.0)
        assert spec.f(np.array([m90]), 200.0, 77.0)[0] == pytest.approx(180.0)
    assert marginal.CURVES["logarithmic"].m90(1.0, 1.0) == math.inf


def test_fit_saturation_table_and_claim_a_on_synthetic_classes():
    rows = []
    for c, (v_inf, tau) in enumerate([(300, 100), (200, 150), (250, 80)]):
        for seed in range(3):
            noise = np.random.default_rng(seed + 10 * c).normal(0, 0.5, M.size)
            rows += [{"dataset": "toy", "class": c, "class_name": f"c{c}", "subset_seed": seed, "m": m, "volume": v}
                     for m, v in zip(M, marginal.CURVES["exponential"].f(M, v_inf, tau) + noise)]
    curves = pd.DataFrame(rows)
    fits = marginal.fit_saturation(curves)
    assert len(fits) == 3 * len(marginal.CURVES) and fits.groupby("class").best.sum().eq(1).all()
    best = fits[fits.best].set_index("class")
    assert (best.model == "exponential").all()
    np.testing.assert_allclose(best.V_inf, [300, 200, 250], rtol=0.01)
    np.testing.assert_allclose(best.m90, np.array([100, 150, 80]) * math.log(10), rtol=0.03)
    assert marginal.claim_saturation(fits, "toy")["holds"]
    levels = marginal.claim_levels(curves, "toy")
    assert levels["holds"] and levels["value"] < 1e-6
    # a log curve that never saturates: claim (a) must fail
    log_curves = curves.assign(volume=marginal.CURVES["logarithmic"].f(curves.m.to_numpy(float), 40.0, 20.0))
    assert not marginal.claim_saturation(marginal.fit_saturation(log_curves), "toy")["holds"]


def test_claim_levels_does_not_hold_for_identical_classes():
    rng = np.random.default_rng(1)
    curves = pd.DataFrame([{"dataset": "toy", "class": c, "subset_seed": s, "m": 100, "volume": 100 + rng.normal()}
                           for c in range(5) for s in range(4)])
    assert not marginal.claim_levels(curves, "toy")["holds"]
    # at a larger m every seed holds the whole class (no spread): the test uses the largest m that still varies
    full = pd.DataFrame([{"dataset": "toy", "class": c, "subset_seed": s, "m": 500, "volume": 100 + c} for c in range(5) for s in range(4)])
    result = marginal.claim_levels(pd.concat([curves, full]), "toy")
    assert "m = 100" in result["decided_by"] and not result["holds"]


def test_nested_subsets_are_nested_balanced_and_the_trainers():
    labels = np.random.default_rng(3).integers(0, 4, 600)
    sizes = [5, 20, 60, 100]
    nested = marginal.nested_subsets(labels, sizes, seeds=[0, 1])
    for seed in (0, 1):
        for small, large in zip(sizes, sizes[1:]):
            assert set(nested[(seed, small)]) < set(nested[(seed, large)])
        for m in sizes:
            assert np.bincount(labels[nested[(seed, m)]], minlength=4).tolist() == [m] * 4
            cfg = config.TrainConfig(dataset="mnist", train_per_class=m, subset_seed=seed)
            trainer, _, _ = pipeline.select_subset(cfg, torch.as_tensor(labels))
            assert np.array_equal(np.sort(trainer.indices), np.sort(nested[(seed, m)]))
    assert set(nested[(0, 20)]) != set(nested[(1, 20)])


def test_sample_volume_curves_match_scale_sample_volume():
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (90, 1, 20, 20), dtype=np.uint8)
    labels = np.repeat(np.arange(3), 30)
    curves = marginal.sample_volume_curves(images, labels, ["a", "b", "c"], [5, 25], [0, 2], dataset="toy", class_chunk=2)
    assert len(curves) == 2 * 2 * 3
    idx = subsets.nested_balanced_indices(labels, [25], seed=2)[25].indices
    expected = scale.sample_volume(images[idx], labels[idx], 3).numpy()
    got = curves[(curves.subset_seed == 2) & (curves.m == 25)].sort_values("class").volume.to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    s = marginal.summed_volume(curves)
    assert s.loc[(s.subset_seed == 2) & (s.m == 25), "summed_volume"].item() == pytest.approx(expected.sum())


def test_step_schedule_equalises_steps_and_the_lr_curve():
    anchor = 3000
    for m in (10, 30, 100, 300, 1000, 3000):
        b = marginal.batches_per_epoch(m, 10)
        s = marginal.step_schedule(m, 10, 1500, anchor, decay_epochs=100)
        assert s["steps"] == s["epochs"] * b and abs(s["steps"] - 1500) <= b / 2 + 1
        # every run ends at the protocol's decay over 100 epochs, whatever its own epoch count
        assert s["lr_decay"] ** s["epochs"] == pytest.approx(0.98 ** 100)
        # without decay_epochs the anchor follows the protocol: x0.98 per epoch
        s = marginal.step_schedule(m, 10, 1500, anchor)
        assert s["lr_decay"] ** s["epochs"] == pytest.approx(0.98 ** 3)
    assert marginal.step_schedule(3000, 10, 1500, anchor)["lr_decay"] == pytest.approx(0.98)
    assert marginal.step_schedule(10, 10, 1500, anchor)["epochs"] == 750
    assert marginal.step_schedule(3000, 10, 100, anchor)["epochs"] == 1  # at least one epoch
    points = marginal.training_points({"mnist": [10, 3000]}, [0, 1], ["cnn"], 500, {"mnist": 10}, decay_epochs=100)
    assert len(points) == 4 and all(p.fields["seed"] == p.fields["subset_seed"] for p in points)
    assert all(p.config().optimizer == "adam" and p.config().batch_size == 64 for p in points)
    assert {p.labels["m"]: p.fields["epochs"] for p in points} == {10: 250, 3000: 1}


def _toy_runs(noise_seed=0):
    """Accuracy a exact linear function of one predictor ("good") plus seed noise; "bad" is unrelated."""
    rng = np.random.default_rng(noise_seed)
    rows = []
    for seed in range(3):
        for i, m in enumerate([10, 30, 100, 300, 1000, 3000]):
            good = 100 + 50 * np.log(m) + rng.normal(0, 1)
            rows.append({"dataset": "toy", "model": "cnn", "seed": seed, "m": m, "good": good,
                         "bad": rng.normal(), "log_m": np.log(m), "top1": 0.001 * good})
    return pd.DataFrame(rows)


def test_correlations_on_constructed_data():
    frame = _toy_runs()
    corr = marginal.correlations(frame, ["good", "bad", "m"])
    assert len(corr) == 3 * 3
    good = corr[corr.predictor == "good"]
    np.testing.assert_allclose(good.pearson, 1.0)
    np.testing.assert_allclose(good.spearman, 1.0)
    assert corr[corr.predictor == "m"].spearman.eq(1.0).all()  # m and accuracy are monotone here
    assert corr[corr.predictor == "m"].pearson.lt(0.95).all()  # but not linear in m
    assert corr[corr.predictor == "bad"].pearson.abs().mean() < 0.8


def test_bootstrap_correlations_and_claim_c():
    frame = _toy_runs()
    boot = marginal.bootstrap_correlations(frame, ["good", "log_m", "bad", "m"], reference="bad", n_boot=300)
    b = boot.set_index("predictor")
    assert b.loc["good", "r_lo95"] == pytest.approx(1.0)
    assert b.loc["bad", "r_lo95"] < 0 < b.loc["bad", "r_hi95"]
    assert b.loc["good", "diff_lo95"] > 0 and b.loc["good", "share_better"] > 0.95
    rows = marginal.claim_together(boot, "toy", "cnn", predictor="good")  # against the bootstrap's reference, "bad"
    assert rows[0]["holds"] and rows[1]["holds"] and "better than bad" in rows[1]["claim"]
    rows = marginal.claim_together(boot, "toy", "cnn", predictor="bad")
    assert not rows[0]["holds"] and not rows[1]["holds"]


def test_the_count_only_null_takes_the_credit_a_count_shaped_curve_deserves():
    """Accuracy = 1 − m^(−1/2) plus seed noise: the count-only curve finds b ≈ 1/2 from m alone, and log m (a
    saturating-looking predictor that is no better than the count) does not beat it under claim (c′)."""
    rng = np.random.default_rng(1)
    rows = [{"dataset": "toy", "model": "cnn", "seed": seed, "m": m, "top1": 1 - m**-0.5 + rng.normal(0, 0.005)}
            for seed in range(3) for m in [10, 30, 100, 300, 1000, 3000]]
    frame = marginal.with_count_curve(pd.DataFrame(rows))
    assert frame.count_curve_b.nunique() == 1 and frame.count_curve_b[0] == pytest.approx(0.5, rel=0.15)
    np.testing.assert_allclose(frame.count_curve, 1 - frame.m ** -frame.count_curve_b)
    frame["log_m"] = np.log(frame.m)
    boot = marginal.bootstrap_correlations(frame, ["log_m", "count_curve"], reference="count_curve", n_boot=300)
    (_, better) = marginal.claim_together(boot, "toy", "cnn", predictor="log_m")
    assert not better["holds"] and "best count-only curve" in better["claim"] and better["value"] < 0


def test_training_points_under_a_per_step_protocol_count_its_batches_and_set_no_epoch_decay():
    """airbench-lt trains with batch 128 and an lr schedule over the run's steps: the epochs give about ``steps``
    batches of 128 and no per-epoch lr_decay is set (the preset's stays, so the run's identity is the protocol's)."""
    points = marginal.training_points({"cifar10-jpeg75": [100, 1000]}, [0], ["airbench-small"], 400,
                                      {"cifar10-jpeg75": 10}, protocol="airbench-lt")
    assert {p.labels["m"]: p.fields["epochs"] for p in points} == {100: 50, 1000: 5}  # 8 and 79 batches of 128
    assert all("lr_decay" not in p.fields and p.config().batch_size == 128 for p in points)
    table = marginal.schedule_table(points)
    assert list(table.epochs) == [50, 5] and "final_lr" not in table
