"""Notebook 03's computation: paired DSB differences and their intervals, the main table, the drift measure."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from semscale import longtail, sweep


def _runs(diffs, base_top1=(0.70, 0.80, 0.60), dataset="mnist-lt100", method="CE"):
    """A constructed runs table: base accuracies per seed and DSB = base + diff (fractions)."""
    rows = []
    for seed, (b, d) in enumerate(zip(base_top1, diffs)):
        for name, v in ((method, b), (method + "+DSB", b + d)):
            rows.append({"dataset_variant": dataset, "imbalance": 100.0, "method": name, "seed": seed, "top1": v,
                         "balanced": v, "many": v + 0.1, "medium": v - 0.1, "few": float("nan"),
                         "model": "cnn", "protocol": "ldam-cifar-lt", "epochs": 4, "dsb_stage_epochs": 1})
    return pd.DataFrame(rows)


def test_paired_difference_matches_a_hand_computed_t_interval():
    diffs = [0.01, 0.03, -0.01]
    out = longtail.paired_difference(_runs(diffs), "CE", "CE+DSB")
    assert len(out) == 1
    row = out.iloc[0]
    d = 100 * np.array(diffs)
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    assert row.n_pairs == 3
    assert row.diff_mean == pytest.approx(d.mean())
    assert row.diff_std == pytest.approx(d.std(ddof=1))
    assert row.ci_low == pytest.approx(d.mean() - half)
    assert row.ci_high == pytest.approx(d.mean() + half)
    assert row.base_mean == pytest.approx(70.0)


def test_pairing_is_by_seed_not_by_order():
    runs = _runs([0.02, 0.02, 0.02], base_top1=(0.5, 0.9, 0.7))
    shuffled = runs.sample(frac=1.0, random_state=3)  # a row order that mixes seeds
    row = longtail.paired_difference(shuffled, "CE", "CE+DSB").iloc[0]
    # the same +2 points in every seed: zero spread, although the base accuracies differ by 40 points
    assert row.diff_mean == pytest.approx(2.0)
    assert row.diff_std == pytest.approx(0.0, abs=1e-9)
    assert row.ci_low == pytest.approx(2.0) and row.ci_high == pytest.approx(2.0)


def test_a_missing_seed_drops_only_that_pair_and_one_pair_has_no_interval():
    runs = _runs([0.01, 0.02, 0.04])
    runs = runs[~((runs.method == "CE+DSB") & (runs.seed == 2))]
    row = longtail.paired_difference(runs, "CE", "CE+DSB").iloc[0]
    assert row.n_pairs == 2 and row.seeds == "0 1"
    assert row.diff_mean == pytest.approx(1.5)
    single = longtail.paired_difference(runs[runs.seed == 0], "CE", "CE+DSB").iloc[0]
    assert single.n_pairs == 1 and math.isnan(single.ci_low) and math.isnan(single.diff_std)


def test_dsb_effect_pairs_each_method_with_its_dsb_partner_only():
    runs = pd.concat([_runs([0.01, 0.01, 0.01]), _runs([-0.02, -0.02, -0.01], method="LDAM-DRW"),
                      _runs([0.0, 0.0, 0.0], method="Post-hoc LA").query("method == 'Post-hoc LA'")])
    eff = longtail.dsb_effect(runs, metrics=["top1"])
    assert sorted(eff.method) == ["CE", "LDAM-DRW"]  # no +DSB partner: no row
    ce = eff.set_index("method").loc["CE"]
    assert ce.diff_mean == pytest.approx(1.0) and bool(ce.beyond_seed_spread)
    ldam = eff.set_index("method").loc["LDAM-DRW"]
    assert ldam.diff_mean == pytest.approx(-5 / 3) and bool(ldam.beyond_seed_spread)


def test_gain_over_pairs_every_other_method_with_the_reference_by_seed():
    runs = pd.concat([_runs([0.01, 0.03, 0.02]), _runs([0.0, 0.0, 0.0], method="cRT").query("method == 'cRT'")])
    runs.loc[runs.method == "cRT", "top1"] = [0.74, 0.83, 0.65]  # CE + 4, + 3, + 5 points
    gain = longtail.gain_over(runs, "CE").set_index("method")
    assert list(gain.index) == ["CE+DSB", "cRT"] and (gain.reference == "CE").all()
    d = np.array([4.0, 3.0, 5.0])
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    assert gain.loc["cRT", "diff_mean"] == pytest.approx(4.0)
    assert gain.loc["cRT", "ci_low"] == pytest.approx(4.0 - half) and bool(gain.loc["cRT", "beyond_seed_spread"])
    assert gain.loc["CE+DSB", "diff_mean"] == pytest.approx(2.0)
    assert longtail.gain_over(runs[runs.method == "CE"], "CE").empty


def test_main_table_shape_and_columns():
    runs = pd.concat([_runs([0.01, 0.02, 0.03]), _runs([0.0, 0.01, 0.0], method="CDB-CE"),
                      _runs([0.01, 0.02, 0.03], dataset="fashion-mnist-lt100")])
    table = longtail.main_table(runs)
    assert len(table) == 6  # 2 datasets x CE ± DSB + 1 dataset x CDB-CE ± DSB
    for col in ("dataset_variant", "imbalance", "method", "base_method", "dsb", "model", "protocol", "epochs",
                "top1_pct_mean", "top1_pct_std", "many_pct_mean", "medium_pct_mean", "few_pct_mean", "n", "seeds"):
        assert col in table.columns, col
    row = table[(table.dataset_variant == "mnist-lt100") & (table.method == "CE+DSB")].iloc[0]
    assert row.top1_pct_mean == pytest.approx(100 * np.mean([0.71, 0.82, 0.63]))
    assert row.top1_pct_std == pytest.approx(100 * np.std([0.71, 0.82, 0.63], ddof=1))
    assert row.n == 3 and row.seeds == "0 1 2" and row.base_method == "CE" and bool(row.dsb)


def test_published_numbers_only_beside_their_stand_in_benchmark():
    runs = pd.concat([_runs([0.01] * 3, dataset="cifar10-jpeg75-lt100"), _runs([0.01] * 3, dataset="mnist-lt100")])
    table = longtail.with_published(longtail.main_table(runs))
    cifar_ce = table[(table.dataset_variant == "cifar10-jpeg75-lt100") & (table.method == "CE")].iloc[0]
    assert cifar_ce.published_top1_pct == 70.4 and "official CIFAR" in cifar_ce.published_benchmark
    assert table[table.dataset_variant == "mnist-lt100"].published_top1_pct.isna().all()
    mwn = longtail.with_published(longtail.main_table(_runs([0.0] * 3, dataset="cifar10-jpeg75-lt100", method="MWN")))
    assert mwn.set_index("method").loc["MWN", "published_top1_pct"] == 75.21
    assert len(table) == 4  # the merge adds no rows


def test_with_dsb_and_ablation_variants():
    methods = longtail.with_dsb(["CE", "CDB-CE"])
    assert list(methods) == ["CE", "CE+DSB", "CDB-CE", "CDB-CE+DSB"]
    assert methods["CDB-CE+DSB"] == sweep.METHODS["CDB-CE+DSB"]
    with pytest.raises(KeyError):
        longtail.with_dsb(["No such method"])
    ref = {**sweep.METHODS["CE+DSB"], "dsb_stage_epochs": 1}
    v = longtail.ablation_variants(ref, stage_epochs=[1, 2], alphas=[1, 2], s_prime_alpha=1e6,
                                   reductions=["weighted_mean", "mean"])
    assert list(v) == ["reference", "n = 2", "α = 1", "S′ alone", "reduction mean"]
    assert v["n = 2"]["dsb_stage_epochs"] == 2 and v["reduction mean"]["reduction"] == "mean"


def test_stages():
    assert longtail.stages(4, 1) == [("fill", 1, 1), ("weight", 2, 4)]
    assert longtail.stages(200, 5) == [("fill", 1, 1), ("refresh", 2, 5), ("weight", 6, 200)]
    assert longtail.stages(2, 2) == [("fill", 1, 1), ("refresh", 2, 2)]


def test_cosine_distance_on_rotated_features():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 2, generator=g)
    theta = 0.3
    rot = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    d = longtail.cosine_distance(a, a @ rot.T)
    assert torch.allclose(d, torch.full_like(d, 1 - math.cos(theta)), atol=1e-12)
    assert torch.allclose(longtail.cosine_distance(a, 3 * a), torch.zeros(500, dtype=torch.float64), atol=1e-12)


def test_snapshot_drift_measures_the_known_movement_and_zero_when_still():
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(3).repeat_interleave(40)
    first = torch.randn(120, 8, generator=g) + 3 * torch.nn.functional.one_hot(labels, 8).float()
    noise = torch.randn(120, 8, generator=g)
    moved = first + 0.5 * noise
    table = longtail.snapshot_drift([first, first.clone(), moved], labels, 3)
    assert list(table.epoch) == [2, 3]
    still, step = table.iloc[0], table.iloc[1]
    assert still.cos_mean == pytest.approx(0.0, abs=1e-12) and still.S_max_rel_change == pytest.approx(0.0, abs=1e-12)
    expected = longtail.cosine_distance(first, moved)
    assert step.cos_mean == pytest.approx(float(expected.mean()))
    assert step.cos_mean > 0.01 and step.rel_mean == pytest.approx(
        float(((moved - first).norm(dim=1) / first.norm(dim=1)).mean()), rel=1e-6)


def test_measure_drift_reproduces_the_engine_run(tmp_path):
    """The epoch-by-epoch measurement trains exactly the run the engine trains (same config, same threads)."""
    config = sweep.TrainConfig(dataset="digits", imbalance=10, model="cnn", epochs=3, batch_size=64, lr=0.05,
                               dsb=True, dsb_stage_epochs=1, eval_every=0, progress=False, device="cpu")
    drift = longtail.measure_drift(config, threads=1)
    record = sweep.run([config], tmp_path, jobs=1, threads=1, log=lambda *_: None)[0].record
    assert drift.top1 == record["final"]["top1"]
    assert set(drift.visits.epoch) == {2, 3}  # epoch 1 only fills the pool
    assert (drift.visits.cos_mean >= 0).all() and list(drift.epochs.epoch) == [2, 3]
