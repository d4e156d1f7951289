"""semscale.study.longtail (notebook 03): the main table, DSB's paired effect, gains over CE, the published numbers
beside their stand-ins, the ablation grid, DSB's stages, the drift measurement."""

import dataclasses
import io
import itertools
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from conftest import paired_runs
from figure_checks import figure_words
from scipy import stats
from semscale import plots, sweep
from semscale import stats as stats_lib
from semscale.config import TrainConfig
from semscale.methods import METHODS
from semscale.study import longtail as lt


def test_dsb_effect_pairs_each_method_with_its_dsb_partner_only():
    runs = pd.concat([paired_runs([0.01, 0.01, 0.01]), paired_runs([-0.02, -0.02, -0.01], method="LDAM-DRW"),
                      paired_runs([0.0, 0.0, 0.0], method="Post-hoc LA").query("method == 'Post-hoc LA'")])
    eff = lt.dsb_effect(runs, metrics=["top1"])
    assert sorted(eff.method) == ["CE", "LDAM-DRW"]  # no +DSB partner: no row
    ce = eff.set_index("method").loc["CE"]
    assert ce.diff_mean == pytest.approx(1.0) and bool(ce.beyond_seed_spread)
    ldam = eff.set_index("method").loc["LDAM-DRW"]
    assert ldam.diff_mean == pytest.approx(-5 / 3) and bool(ldam.beyond_seed_spread)


@pytest.mark.parametrize("gains, verdict", [([0.01, 0.012, 0.015, 0.011, 0.013], "DSB helps"),
                                            ([-0.01, -0.012, -0.015, -0.011, -0.013], "DSB hurts"),
                                            ([0.002, -0.003, 0.001, 0.0, -0.002], "no gain of 1.5 points or more"),
                                            ([0.04, -0.03, 0.05, -0.02, 0.01], "inconclusive")])
def test_the_primary_test_states_its_power_and_one_verdict(gains, verdict):
    runs = paired_runs(gains, base_top1=(0.70, 0.80, 0.60, 0.65, 0.75))
    (row,) = lt.primary_test(runs, pilot_sd=0.83, effect=1.5).to_dict("records")
    assert row["n_pairs"] == 5 and row["verdict"] == verdict
    assert row["diff_mean"] == pytest.approx(100 * np.mean(gains))
    assert row["detectable_pilot"] == pytest.approx(stats_lib.detectable_effect(0.83, 5))
    assert row["detectable_observed"] == pytest.approx(stats_lib.detectable_effect(100 * np.std(gains, ddof=1), 5))
    assert lt.primary_test(runs.query("method == 'CE'"), pilot_sd=0.83, effect=1.5).empty


def test_gain_over_pairs_every_other_method_with_the_reference_by_seed():
    runs = pd.concat([paired_runs([0.01, 0.03, 0.02]), paired_runs([0.0, 0.0, 0.0], method="cRT").query("method == 'cRT'")])
    runs.loc[runs.method == "cRT", "top1"] = [0.74, 0.83, 0.65]  # CE + 4, + 3, + 5 points
    gain = lt.gain_over(runs, "CE").set_index("method")
    assert list(gain.index) == ["CE+DSB", "cRT"] and (gain.reference == "CE").all()
    d = np.array([4.0, 3.0, 5.0])
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    assert gain.loc["cRT", "diff_mean"] == pytest.approx(4.0)
    assert gain.loc["cRT", "ci_low"] == pytest.approx(4.0 - half) and bool(gain.loc["cRT", "beyond_seed_spread"])
    assert gain.loc["CE+DSB", "diff_mean"] == pytest.approx(2.0)
    assert lt.gain_over(runs[runs.method == "CE"], "CE").empty


def test_main_table_shape_and_columns():
    runs = pd.concat([paired_runs([0.01, 0.02, 0.03]), paired_runs([0.0, 0.01, 0.0], method="CDB-CE"),
                      paired_runs([0.01, 0.02, 0.03], dataset="fashion-mnist-lt100")])
    table = lt.main_table(runs)
    assert len(table) == 6  # 2 datasets x CE ± DSB + 1 dataset x CDB-CE ± DSB
    for col in ("dataset_variant", "imbalance", "method", "base_method", "dsb", "model", "protocol", "epochs",
                "top1_pct_mean", "top1_pct_std", "many_pct_mean", "medium_pct_mean", "few_pct_mean", "n", "seeds"):
        assert col in table.columns, col
    row = table[(table.dataset_variant == "mnist-lt100") & (table.method == "CE+DSB")].iloc[0]
    assert row.top1_pct_mean == pytest.approx(100 * np.mean([0.71, 0.82, 0.63]))
    assert row.top1_pct_std == pytest.approx(100 * np.std([0.71, 0.82, 0.63], ddof=1))
    assert row.n == 3 and row.seeds == "0 1 2" and row.base_method == "CE" and bool(row.dsb)


def test_published_numbers_only_beside_their_stand_in_benchmark():
    runs = pd.concat([paired_runs([0.01] * 3, dataset="cifar10-jpeg75-lt100"), paired_runs([0.01] * 3, dataset="mnist-lt100")])
    table = lt.with_published(lt.main_table(runs))
    cifar_ce = table[(table.dataset_variant == "cifar10-jpeg75-lt100") & (table.method == "CE")].iloc[0]
    assert cifar_ce.published_top1_pct == 70.4 and "official CIFAR" in cifar_ce.published_benchmark
    assert table[table.dataset_variant == "mnist-lt100"].published_top1_pct.isna().all()
    mwn = lt.with_published(lt.main_table(paired_runs([0.0] * 3, dataset="cifar10-jpeg75-lt100", method="MWN")))
    assert mwn.set_index("method").loc["MWN", "published_top1_pct"] == 75.21
    assert len(table) == 4  # the merge adds no rows


def test_published_numbers_add_no_rows_where_two_sources_publish_a_method():
    """CDB-CE on CIFAR-100-LT IF 100 is published twice (peers 42.6, the paper's Fig. 18 42.5): one row, both named."""
    table = lt.main_table(paired_runs([0.01] * 3, dataset="tiny-imagenet-lt100-32px", method="CDB-CE"))
    out = lt.with_published(table)
    assert len(out) == len(table)
    assert out.published_top1_pct.iloc[0] == 42.6
    assert "42.6" in out.published_source.iloc[0] and "42.5" in out.published_source.iloc[0]


def test_ablation_variants():
    ref = {**METHODS["CE+DSB"], "dsb_stage_epochs": 1}
    v = lt.ablation_variants(ref, stage_epochs=[1, 2], alphas=[1, 2], s_prime_alpha=1e6,
                             reductions=["weighted_mean", "mean"])
    assert list(v) == ["reference", "n = 2", "α = 1", "S′ alone", "reduction mean"]
    assert v["n = 2"]["dsb_stage_epochs"] == 2 and v["reduction mean"]["reduction"] == "mean"


def test_stages():
    assert lt.stages(4, 1) == [("fill", 1, 1), ("weight", 2, 4)]
    assert lt.stages(200, 5) == [("fill", 1, 1), ("refresh", 2, 5), ("weight", 6, 200)]
    assert lt.stages(2, 2) == [("fill", 1, 1), ("refresh", 2, 2)]


def test_measure_drift_trains_the_plain_runs_computation_through_the_sweep(tmp_path, tiny):
    """The drift run is the config with record_drift, cached like any run: it trains exactly the run the plain config
    trains (same threads), and a second call reads it back."""
    config = TrainConfig(**{**tiny, "epochs": 3, "dsb": True, "dsb_stage_epochs": 1, "eval_every": 0, "device": "cpu"})
    drift = lt.measure_drift(config, tmp_path / "drift", threads=1)
    record = sweep.run([config], tmp_path / "plain", jobs=1, threads=1, log=lambda *_: None)[0].record
    assert drift.top1 == record["final"]["top1"]
    assert drift.config == dataclasses.replace(config, record_drift=True)
    assert set(drift.visits.epoch) == {2, 3}  # epoch 1 only fills the pool
    assert (drift.visits.cos_mean >= 0).all() and list(drift.epochs.epoch) == [2, 3]
    (cached,) = sweep.cached([drift.config], tmp_path / "drift")
    again = lt.measure_drift(config, tmp_path / "drift", threads=1)
    assert cached.status == "cached" and again.top1 == drift.top1
    pd.testing.assert_frame_equal(again.visits, drift.visits)


# ---------------------------------------------------------------------------------------------------------
# figures and the explorer


@pytest.fixture
def two_methods():
    plots.set_style()
    yield pd.concat([paired_runs([0.01, 0.02, 0.0]), paired_runs([-0.01, 0.0, 0.01], method="LDAM-DRW")],
                    ignore_index=True)
    plt.close("all")


def test_grid_words_counts_in_words():
    assert lt.grid_words("airbench-lt", "airbench-small", 1, [0], 2) == "airbench-lt, airbench-small, 1 epoch, n = 2, seed 0"
    assert lt.grid_words("p", "m", 30, [0, 1, 2]) == "p, m, 30 epochs, seeds 0, 1, 2"


def test_main_table_and_gain_figures_draw_one_row_per_method(two_methods):
    table = lt.main_table(two_methods)
    fig = lt.plot_main_table(table, lt.dsb_effect(two_methods), ["CE", "LDAM-DRW"], lt.grid_words("p", "cnn", 4, [0, 1, 2], 1))
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["CE", "LDAM-DRW"]
    assert "without DSB (filled)" in figure_words(fig)
    order = ["CE+DSB", "LDAM-DRW", "LDAM-DRW+DSB"]
    fig = lt.plot_gain(lt.gain_over(two_methods, "CE"), order, "t")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == order
    figure_words(fig)


def test_shot_groups_name_dsb_in_words_and_share_one_scale(two_methods):
    groups = lt.shot_groups(lt.main_table(two_methods))
    assert set(groups.DSB) == {"with DSB", "without DSB"} and set(groups.group) == {"many", "medium"}  # few: all NaN
    fig = lt.plot_shot_groups(groups, ["CE", "LDAM-DRW"])
    assert {ax.get_ylim() for ax in fig.axes} == {(0.0, 100.0)}
    figure_words(fig)


def _per_class(variants=("mnist-lt100", "fashion-mnist-lt100"), methods=("CE", "CE+DSB", "cRT")):
    rng = np.random.default_rng(0)
    counts = [5923, 2500, 1000, 400, 59]
    rows = [{"dataset_variant": v, "method": m, "seed": s, "class": c, "name": f"{c} - digit", "train_count": n,
             "accuracy": rng.uniform(0.5, 1.0), "weight": rng.uniform(0.5, 2.0) if m.endswith("+DSB") else np.nan}
            for v in variants for m in methods for s in (0, 1) for c, n in enumerate(counts)]
    return pd.DataFrame(rows)


def test_per_class_explorer_over_every_setting_in_percent_with_named_classes():
    plots.set_style()
    per_class = _per_class()
    controls = lt.per_class_explorer_controls(per_class, ["CE", "cRT", "Post-hoc LA"])
    for variant, method in itertools.product(controls["variant"].options, controls["method"].options):
        fig = lt.per_class_explorer(per_class, variant, method)
        words = figure_words(fig)
        if method == "Post-hoc LA":
            assert "was not trained" in words
        else:
            bars = fig.axes[0]
            assert bars.get_ylim() == (0.0, 100.0) and "(%)" in bars.get_ylabel()
            assert [t.get_text() for t in bars.get_xticklabels()][-1] == "4 - digit\n(59)"
            heights = [p.get_height() for p in bars.patches if p.get_height() > 0]
            assert max(heights) > 1.0  # percent, not fractions
            assert ("was not trained" in words) == (method == "cRT")  # cRT has no +DSB run: its weight panel says so
        plt.close(fig)


def test_per_class_explorer_draws_the_same_picture_for_the_same_setting():
    plots.set_style()
    per_class = _per_class()
    pictures = []
    for _ in range(2):
        fig = lt.per_class_explorer(per_class, "mnist-lt100", "CE")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=40)
        pictures.append(buffer.getvalue())
        plt.close(fig)
    assert pictures[0] == pictures[1]


def test_drift_and_cost_figures_read_in_words(tmp_path):
    plots.set_style()
    visits = pd.DataFrame({"progress_epochs": np.linspace(1, 3, 20), "cos_mean": np.geomspace(0.3, 0.05, 20)})
    epochs = pd.DataFrame({"epoch": [2, 3], "S_max_rel_change": [0.09, 0.05], "weight_max_rel_change": [0.1, 0.04]})
    drift = lt.Drift(visits, epochs, 0.9, TrainConfig(dataset="digits"), 3.0)
    fig = lt.plot_drift(drift, "mnist IF 100, CE")
    assert all(float(t.get_text().replace("−", "-") or 1).is_integer() for t in fig.axes[1].get_xticklabels()
               if t.get_text())
    figure_words(fig)
    cost = pd.DataFrame({"method": ["CE", "LDAM-DRW"], "weight_epoch_ratio": [0.6, 0.7], "dataset_variant": "mnist-lt100"})
    figure_words(lt.plot_cost(cost, "AMD EPYC", 128))
    plt.close("all")


def test_selection_rules_put_the_last_the_held_out_chosen_and_the_best_test_epoch_side_by_side():
    rows = []
    for seed, (top1, held) in enumerate([([0.50, 0.70, 0.60], [0.4, 0.8, 0.8]), ([0.55, 0.65, 0.62], [0.9, 0.5, 0.6])]):
        rows += [{"run": f"r{seed}", "dataset_variant": "v", "method": "CE", "seed": seed, "epoch": e + 1, "top1": t,
                  "heldout_top1": h} for e, (t, h) in enumerate(zip(top1, held))]
    table = lt.selection_rules(pd.DataFrame(rows)).iloc[0]
    assert table.runs == 2
    assert table.last_mean == pytest.approx(61.0)  # 60, 62
    assert table.heldout_chosen_mean == pytest.approx((60 + 55) / 2)  # ties go to the later epoch (3), then epoch 1
    assert table.best_on_test_mean == pytest.approx((70 + 65) / 2)
    assert table.optimism_mean == pytest.approx(((70 - 60) + (65 - 62)) / 2)
    assert table.evaluated_epochs == 3
    view = lt.selection_view(lt.selection_rules(pd.DataFrame(rows))).loc[("v", "CE")]
    assert view["last epoch"] == "61.00 ± 1.41" and view["optimism of best on test"] == "6.50 ± 4.95"
    no_heldout = lt.selection_rules(pd.DataFrame(rows).drop(columns="heldout_top1")).iloc[0]
    assert math.isnan(no_heldout.heldout_chosen_mean) and no_heldout.best_on_test_mean == table.best_on_test_mean


def test_the_cost_of_dsb_leaves_stacked_runs_out_whose_time_is_shared():
    runs = pd.DataFrame([{"dataset_variant": "v", "imbalance": 100.0, "method": m, "seed": s, "img_per_s": r,
                          "stack_members": k} for m, r in (("CE", 1000.0), ("CE+DSB", 900.0)) for s in (0, 1)
                         for k in [1 if s == 0 else 4]])
    cost = lt.cost_table(runs)
    assert cost.n_pairs.tolist() == [1] and cost.speed_ratio_mean.tolist() == [pytest.approx(0.9)]
    stacked = lt.cost_table(runs.assign(stack_members=4))
    assert stacked.empty
    plots.set_style()
    assert "every pair trained in a stack" in figure_words(lt.plot_cost(stacked, "H200", 128))
    plt.close("all")
