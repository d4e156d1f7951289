"""Benchmark: K runs as one stacked network (semscale.stack) against one run at a time, img/s side by side.

Each row times the engine's own training step on real data for a number of steps after a warm-up: K = 1 is
``semscale.train.train_step`` (a separate run); K > 1 is ``semscale.stack.stacked_step`` over K members (seeds
0..K−1). Every run is the engine's default baseline, CE with the DSB pool kept (one scatter per step) and the loss
unweighted, so that K = 1 and every member do the same work. The aggregate rate counts every member's images.
Evaluation, per-epoch files and data loading are not timed.

* the small CNN on MNIST-LT IF 100 (14,694 images), the paper's §3 protocol at batch 64;
* ResNet-32 on cifar10-jpeg75 CIFAR-10-LT IF 100 (12,406 images), LDAM-DRW's protocol at batch 128, crop + flip.

On the CPU: K = 1, 2, 4, 8 in fp32 and in bf16 autocast (the protocols' fp32; the CPU tier's bf16).
Timed steps: 60 for the CNN, 8 for ResNet-32 (about 4 s of one run's steps each), after 3 warm-up steps.
On CUDA (``--device cuda``), ResNet-32 only, side by side in one run: eager K = 1; ``torch.compile`` of the
forward (mode default, and reduce-overhead, which captures CUDA graphs); stacked K = 4, 8, 16, 32; and K = 4, 8
separate runs as ``jobs=K`` processes sharing the GPU (each times its own steps; aggregate = K·B·steps / the
slowest process's seconds).

    python bench/bench_stack.py                      # the CPU table of BENCHMARKS.md ("Stacked runs")
    python bench/bench_stack.py --device cuda        # the GPU lease (bench/gpu_lease.sh)

Prints a markdown table; writes JSON (with provenance) and CSV atomically. Not a test.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from semscale import pipeline, records, stack, train
from semscale.config import TrainConfig

SETTINGS = {
    "cnn": dict(dataset="mnist", imbalance=100, model="cnn", protocol="paper-sec3", batch_size=64),
    "resnet32": dict(dataset="cifar10-jpeg75", imbalance=100, model="resnet32", protocol="ldam-cifar-lt",
                     batch_size=128, crop_padding=4, flip=True),
}
DEFAULT_OUT = "results/bench/bench_stack.json"


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _runs(model: str, k: int, device: str, root: Path, **fields) -> list:
    """K engine runs (seeds 0..K−1), ready to step."""
    return [train._start(TrainConfig(**SETTINGS[model], seed=seed, epochs=10, device=device, progress=False, **fields),
                         root / f"{model}-{k}-{seed}", False, [])[0] for seed in range(k)]


def _batches(runs: list) -> list:
    """Each run's batch iterator of its epoch 1 (the engine's augmentation on the device)."""
    states = [train.new_epoch(run, 1) for run in runs]
    for run, state in zip(runs, states):
        train.begin_epoch(run, state)
    return [pipeline.batches(r.data, r.config, s.order, s.generator, 0, r.memory_format if len(runs) == 1
                             else torch.contiguous_format, s.flips) for r, s in zip(runs, states)]


def time_steps(model: str, k: int, device: str, warmup: int, steps: int, root: Path, **fields) -> dict:
    """img/s of ``steps`` training steps of K runs (one network when K > 1) after ``warmup`` steps."""
    runs = _runs(model, k, device, root, **fields)
    streams = _batches(runs)
    net = stack.StackedNetwork(runs) if k > 1 else None
    dev = runs[0].device
    for i, batches in enumerate(zip(*streams)):
        if i == warmup:
            start = _now(dev)
        if i == warmup + steps:
            break
        if net is None:
            train.train_step(runs[0], *batches[0], weighting=False)
        else:
            stack.stacked_step(net, list(batches), [False] * k)
    seconds = _now(dev) - start
    batch = runs[0].config.batch_size
    return {"model": model, "members": k, "precision": runs[0].precision, "compile": runs[0].config.compile,
            "batch_size": batch, "steps": steps, "seconds": seconds, "img_per_s": k * batch * steps / seconds,
            "img_per_s_per_run": batch * steps / seconds}


def _process(args: tuple) -> tuple[float, str]:
    """One of the ``jobs=K`` processes: seconds of its timed steps (after a barrier, so all run at once), precision."""
    model, device, warmup, steps, root, barrier = args
    runs = _runs(model, 1, device, Path(root))
    streams = _batches(runs)
    dev = runs[0].device
    for i, (batch,) in enumerate(zip(*streams)):
        if i == warmup:
            barrier.wait()
            start = _now(dev)
        if i == warmup + steps:
            break
        train.train_step(runs[0], *batch, weighting=False)
    return _now(dev) - start, runs[0].precision


def time_jobs(model: str, jobs: int, device: str, warmup: int, steps: int, root: Path) -> dict:
    """Aggregate img/s of ``jobs`` separate runs in as many processes on one device."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        barrier = manager.Barrier(jobs)
        with context.Pool(jobs) as pool:
            timed = pool.map(_process, [(model, device, warmup, steps, str(root / f"job{j}"), barrier) for j in range(jobs)])
    seconds, batch = max(t for t, _ in timed), SETTINGS[model]["batch_size"]
    return {"model": model, "members": jobs, "precision": timed[0][1], "compile": "none", "batch_size": batch,
            "steps": steps, "seconds": seconds, "img_per_s": jobs * batch * steps / seconds,
            "img_per_s_per_run": batch * steps / seconds, "how": f"jobs={jobs} processes"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=None, help="default: cnn resnet32 (CPU), resnet32 (CUDA)")
    parser.add_argument("--sizes", nargs="+", type=int, default=None, help="stack sizes (default: 1 2 4 8 on the CPU)")
    parser.add_argument("--precisions", nargs="+", default=None, help="default: fp32 bf16 (CPU), auto (CUDA: bf16)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps (default on the CPU: 60 for the CNN, 8 for ResNet-32; 50 on CUDA)")
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    models = args.models or (["resnet32"] if cuda else ["cnn", "resnet32"])
    sizes = args.sizes or ([1, 4, 8, 16, 32] if cuda else [1, 2, 4, 8])
    cpu_steps = {"cnn": 60, "resnet32": 8}  # about 4 s of the one-run step each: the CNN's 8 steps were 0.2 s, too noisy
    precisions = args.precisions or (["auto"] if cuda else ["fp32", "bf16"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for model in models:
            steps = args.steps or (50 if cuda else cpu_steps[model])
            for precision in precisions:
                for k in sizes:
                    rows.append({**time_steps(model, k, args.device, args.warmup, steps, root, precision=precision),
                                 "how": "one run" if k == 1 else "stacked"})
                    print(f"{model} {precision} K={k}: {rows[-1]['img_per_s']:,.0f} img/s", flush=True)
            if cuda:  # each of these may fail on a host (a compiler missing, memory): the row says so, the rest go on
                extras = [(f"one run, torch.compile {m}", lambda m=m: time_steps(
                    model, 1, args.device, args.warmup + 5, steps, root, compile=m)) for m in ("default", "reduce-overhead")]
                extras += [(f"jobs={j} processes", lambda j=j: time_jobs(model, j, args.device, args.warmup, steps, root))
                           for j in (4, 8)]
                for how, measure in extras:
                    try:
                        rows.append({**measure(), "how": how})
                    except Exception as e:  # noqa: BLE001 - a benchmark row, not the run
                        print(f"{model} {how}: failed ({type(e).__name__}: {e})", flush=True)
    table = pd.DataFrame(rows)
    for _, group in table.groupby(["model", "precision"], sort=False):
        one = group[(group.members == 1) & (group.how == "one run")].img_per_s
        table.loc[group.index, "vs_one_run"] = group.img_per_s / float(one.iloc[0]) if len(one) else float("nan")
    device = torch.device(args.device)
    lines = [f"Stacked runs, {records.device_name(device)} ({records.cpu_model()}), timed after {args.warmup} warm-up steps:",
             "", "| model | how | members | precision | steps | aggregate img/s | img/s per run | × one run |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.model} | {r.how} | {r.members} | {r.precision} | {r.steps} | {r.img_per_s:,.0f} | "
              f"{r.img_per_s_per_run:,.0f} | {r.vs_one_run:.2f} |" for r in table.itertuples()]
    print("\n" + "\n".join(lines))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    records.write_csv_atomic(out.with_suffix(".csv"), table)
    records.write_json_atomic(out, {"benchmark": "stacked runs vs one run at a time (semscale.stack)",
                                    "settings": SETTINGS, "rows": rows, "report": lines, **records.provenance(device)})
    print(f"\nwrote {out} and {out.with_suffix('.csv')}")


if __name__ == "__main__":
    main()
