"""The closing note's CPU comparison of issue 11: every method ± DSB, 3 seeds, one ``sweep.run`` call. Not a test.

MNIST-LT (IF 100, exp profile, subset seed 0), small CNN, protocol paper-sec3 (Adam lr 0.01 ×0.98 per epoch, batch
64, no augmentation), ``--epochs`` epochs, DSB stages n = 2 (fill 1, refresh 2, weight 3..), evaluation at the end,
last-epoch top-1 on the full test set. jobs=2, threads=1. Writes a tidy CSV (one row per method: mean and sample
std of top-1, balanced, many, medium, few over the seeds, plus the per-seed top-1).

    python bench/compare_methods.py [--epochs 6] [--root runs/issue11-comparison] [--out reference/issue11_cpu_comparison.csv] [--collect-only]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from semscale import methods, records, results, sweep

METHODS = ("CE", "CB sampling", "Sqrt sampling", "Post-hoc LA", "Post-hoc LA (τ held-out)", "cRT", "τ-norm", "LWS",
           "GLA", "GCA", "MWN")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--root", default="runs/issue11-comparison")
    parser.add_argument("--out", default="reference/issue11_cpu_comparison.csv")
    parser.add_argument("--collect-only", action="store_true", help="write the table of the finished runs, train nothing")
    args = parser.parse_args()
    base = dict(dataset="mnist", imbalance=100, model="cnn", protocol="paper-sec3", epochs=args.epochs,
                dsb_stage_epochs=2, eval_every=0, progress=False, device="cpu")
    names = [m for name in METHODS for m in (name, f"{name}+DSB")]
    points = sweep.grid(base, method={m: methods.METHODS[m] for m in names}, seed=[0, 1, 2])
    if args.collect_only:  # what is finished, without training (n < 3 where runs are missing)
        done = sweep.cached(points, args.root)
    else:
        done = sweep.run(points, args.root, jobs=2, threads=1)
    runs = results.collect(done).runs
    table = results.summarize(runs, by=["method"], metrics=["top1", "balanced", "many", "medium", "few"])
    per_seed = runs.pivot_table(index="method", columns="seed", values="top1")
    per_seed.columns = [f"top1_seed{s}" for s in per_seed.columns]
    table = table.merge(per_seed.reset_index(), on="method")
    table.insert(1, "dsb", table.method.str.endswith("+DSB"))
    table["dataset_variant"] = runs.dataset_variant.iloc[0]
    table["epochs"] = args.epochs
    table["device"] = runs.device.iloc[0]
    table["threads"] = 1
    table["git_commit"] = records.git_commit()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    records.write_csv_atomic(args.out, table)
    print(table[["method", "top1_mean", "top1_std", "balanced_mean", "few_mean", "n"]].to_string(index=False))


if __name__ == "__main__":
    main()
