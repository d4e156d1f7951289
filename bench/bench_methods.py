"""Benchmark: CPU cost per epoch of issue 11's methods relative to CE (MNIST-LT IF 100, small CNN). Not a test.

Every method is trained once (seed 0) through ``semscale.sweep.run`` (jobs=1, threads=1) into a fresh root: protocol
paper-sec3 (Adam, batch 64, no augmentation), ``--epochs`` epochs, DSB weighting from epoch 2, evaluation only at the
end. One-stage methods: the mean training seconds of epochs 2.. (epoch 1 is the samplers' permutation and the warm-up)
from epochs.csv, against CE's. Second stages: their whole wall time (feature extraction, τ search or training,
records) against one CE epoch. Prints a markdown table and writes results/bench/bench_methods.csv.

    python bench/bench_methods.py [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

import pandas as pd
import torch

from semscale import methods, records, sweep

ONE_STAGE = ("CE", "CE+DSB", "CB sampling", "Sqrt sampling", "GLA", "GCA", "MWN", "MWN+DSB")
TWO_STAGE = ("Post-hoc LA", "Post-hoc LA (τ held-out)", "τ-norm", "cRT", "LWS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    base = dict(dataset="mnist", imbalance=100, model="cnn", protocol="paper-sec3", epochs=args.epochs,
                dsb_stage_epochs=1, eval_every=0, progress=False)
    points = sweep.grid(base, method={m: methods.METHODS[m] for m in ONE_STAGE + TWO_STAGE})
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"commit {records.git_commit()}")
    with tempfile.TemporaryDirectory() as root:
        done = sweep.run(points, root, jobs=1, threads=1)
        rows = []
        for r in done:
            epochs = pd.read_csv(r.path / "epochs.csv")
            if r.config.second_stage == "none":
                seconds = epochs[epochs.epoch >= 2].seconds.mean()
                rows.append({"method": r.labels["method"], "kind": "s per epoch (epochs 2..)", "seconds": seconds,
                             "img_per_s": epochs[epochs.epoch >= 2].img_per_s.mean(), "top1": r.top1})
            else:
                rows.append({"method": r.labels["method"], "kind": "s per second stage (wall)",
                             "seconds": r.record["wall_seconds"], "img_per_s": float("nan"), "top1": r.top1})
    table = pd.DataFrame(rows)
    ce = table.set_index("method").loc["CE", "seconds"]
    table["relative_to_ce_epoch"] = table.seconds / ce
    out = Path("results/bench")
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "bench_methods.csv", index=False)
    print("| method | cost | seconds | × one CE epoch | top-1 (after the run) |\n|---|---|---|---|---|")
    for row in table.itertuples():
        print(f"| {row.method} | {row.kind} | {row.seconds:.2f} | {row.relative_to_ce_epoch:.2f} | {row.top1:.3f} |")


if __name__ == "__main__":
    main()
