"""Benchmark: a 12-run MNIST-LT grid through ``semscale.sweep`` with jobs=1 and jobs=2, and a fully cached rerun.

The grid: MNIST-LT (IF 100), the small CNN, protocol paper-sec3 (Adam, batch 64, no augmentation), 2 epochs,
methods CE, CE+DSB (weighting from epoch 2), LDAM-DRW and Balanced Softmax, seeds 0-2. Each jobs setting trains
into a fresh root; the cached rerun is ``run`` + ``collect`` over the finished root. Prints a markdown table.
Not a test.

    python bench/bench_sweep.py [--epochs 2] [--jobs 1 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import torch

from semscale import methods, records, results, sweep

METHODS = ("CE", "CE+DSB", "LDAM-DRW", "Balanced Softmax")


def points(epochs: int):
    base = dict(dataset="mnist", imbalance=100, model="cnn", protocol="paper-sec3", epochs=epochs,
                dsb_stage_epochs=1, eval_every=0, progress=False)
    return sweep.grid(base, method={m: methods.METHODS[m] for m in METHODS}, seed=[0, 1, 2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    grid = points(args.epochs)
    cores = os.cpu_count() or 1
    print(f"{len(grid)} runs; {platform.processor() or platform.machine()}, {cores} cores, torch {torch.__version__}, "
          f"commit {records.git_commit()}")
    print("| jobs | threads per run | wall (s) | aggregate img/s | mean img/s per run | cached rerun + collect (s) |")
    print("|---|---|---|---|---|---|")
    top1 = {}
    for jobs in args.jobs:
        threads = max(1, cores // jobs)
        with tempfile.TemporaryDirectory(prefix="bench_sweep_") as root:
            start = time.perf_counter()
            done = sweep.run(grid, root, jobs=jobs, threads=threads, log=lambda line: None)
            wall = time.perf_counter() - start
            assert all(r.status == "trained" for r in done), [r.error for r in done if r.error]
            images = sum(r.record["subset"]["size"] * r.config.epochs for r in done)
            per_run = sum(r.record["img_per_s"] for r in done) / len(done)
            start = time.perf_counter()
            again = sweep.run(grid, root, jobs=jobs, log=lambda line: None)
            results.collect(again)
            cached = time.perf_counter() - start
            assert all(r.status == "cached" for r in again)
            top1[jobs] = [r.top1 for r in done]
        print(f"| {jobs} | {threads} | {wall:.1f} | {images / wall:.0f} | {per_run:.0f} | {cached:.2f} |")
    print("same top-1 across jobs settings:", len({tuple(v) for v in top1.values()}) == 1,
          "(expected only with equal threads per run)")


if __name__ == "__main__":
    main()
