"""semscale.results: a sweep's runs as tidy tables (collect, summarize) and paired differences by seed."""

import math

import numpy as np
import pandas as pd
import pytest
from conftest import paired_runs
from scipy import stats
from semscale import results, sweep
from semscale.methods import METHODS


def test_paired_difference_matches_a_hand_computed_t_interval():
    diffs = [0.01, 0.03, -0.01]
    out = results.paired_difference(paired_runs(diffs), "CE", "CE+DSB")
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
    runs = paired_runs([0.02, 0.02, 0.02], base_top1=(0.5, 0.9, 0.7))
    shuffled = runs.sample(frac=1.0, random_state=3)  # a row order that mixes seeds
    row = results.paired_difference(shuffled, "CE", "CE+DSB").iloc[0]
    # the same +2 points in every seed: zero spread, although the base accuracies differ by 40 points
    assert row.diff_mean == pytest.approx(2.0)
    assert row.diff_std == pytest.approx(0.0, abs=1e-9)
    assert row.ci_low == pytest.approx(2.0) and row.ci_high == pytest.approx(2.0)


def test_a_missing_seed_drops_only_that_pair_and_one_pair_has_no_interval():
    runs = paired_runs([0.01, 0.02, 0.04])
    runs = runs[~((runs.method == "CE+DSB") & (runs.seed == 2))]
    row = results.paired_difference(runs, "CE", "CE+DSB").iloc[0]
    assert row.n_pairs == 2 and row.seeds == "0 1"
    assert row.diff_mean == pytest.approx(1.5)
    single = results.paired_difference(runs[runs.seed == 0], "CE", "CE+DSB").iloc[0]
    assert single.n_pairs == 1 and math.isnan(single.ci_low) and math.isnan(single.diff_std)


def test_collect_and_summarize_a_2x2x2_grid(tmp_path, tiny):
    methods = {k: METHODS[k] for k in ("CE", "CE+DSB")}
    points = sweep.grid({**tiny, "dsb_stage_epochs": 1}, method=methods, imbalance=[10, 5], seed=[0, 1])
    done = sweep.run(points, tmp_path, log=lambda line: None)
    tables = results.collect(done)
    assert len(tables.runs) == 8 and len(tables.per_class) == 80
    assert len(tables.epochs) == 16 and len(tables.pool) == 8 * 2 * 10
    assert {"run", "method", "imbalance", "seed", "top1", "dataset_variant", "subset_sha256", "git_commit",
            "source_sha256", "device"} <= set(tables.runs.columns)
    assert {"method", "imbalance", "seed", "accuracy", "train_count", "S"} <= set(tables.per_class.columns)
    summary = results.summarize(tables.runs, by=["method", "imbalance"], metrics=["top1"])
    assert len(summary) == 4 and summary.n.tolist() == [2] * 4
    row = summary[(summary.method == "CE+DSB") & (summary.imbalance == 5)].iloc[0]
    values = tables.runs[(tables.runs.method == "CE+DSB") & (tables.runs.imbalance == 5)].top1.to_numpy()
    assert row.top1_mean == pytest.approx(values.mean()) and row.top1_std == pytest.approx(values.std(ddof=1))
    from_root = results.collect(tmp_path)  # a root folder: the same runs, without labels
    assert sorted(from_root.runs.top1) == sorted(tables.runs.top1)
    with pytest.raises(KeyError, match="cannot group by"):
        results.summarize(tables.runs, by=["nope"])
    # the records a reference commits: every run once, its per-class accuracy, no machine path; intervals recompute
    records = results.run_records(tables, results.collect(done[:2]))
    assert len(records) == 8 and "path" not in records and records.run.is_unique
    per_class = tables.per_class.pivot_table(index="run", columns="class", values="accuracy")
    np.testing.assert_array_equal(records.set_index("run").loc[per_class.index, [f"acc_{c}" for c in range(10)]], per_class)
    again = results.paired_difference(records, "CE", "CE+DSB", by=["imbalance"])
    pd.testing.assert_frame_equal(again, results.paired_difference(tables.runs, "CE", "CE+DSB", by=["imbalance"]))
    assert results.run_records(results.collect([])).empty
