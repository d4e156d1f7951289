"""Benchmark: training speed of the reference LDAM-DRW pipeline against ``semscale.train``, side by side.

Same device, same data (cifar10-jpeg75, CIFAR-10-LT IF 100 exp, seed 0: 12,406 images), ResNet-32, batch 128,
CE, SGD (momentum 0.9, wd 2e-4, lr 0.1), RandomCrop(32, pad 4) + horizontal flip:

* reference: LDAM-DRW's ``cifar_train.py`` as peer code runs it: a Dataset of uint8 HWC arrays returning PIL
  images, torchvision PIL transforms in DataLoader workers (shuffle, pin_memory on CUDA), eager fp32
  ResNet-32, ``loss.item()`` and top-1 metering every step, ``cudnn.benchmark``, and a test-set evaluation
  (batch 100, workers) after every epoch;
* engine: ``semscale.train.train`` on the same protocol, without and with DSB, and on CUDA also with
  ``torch.compile``.

What is measured
* img/s: training images per second over the epochs after the first (warm-up) epoch; training only,
  evaluation excluded.
* 200 epochs, end to end: the wall time of the whole run (data to device, model build, compilation, training,
  the evaluation after every epoch that both pipelines run by default, the engine's per-epoch files and
  checkpoints). Measured when a pipeline runs 200 epochs (``--epochs 200``, ``--ref-epochs 200``); otherwise
  extrapolated as ``measured run + (200 − epochs run) × (steady train + eval + bookkeeping per epoch)`` and
  labelled "extrapolated" (the engine's checkpoint every 10 epochs is only in runs longer than 10 epochs).
  The engine's per-epoch bookkeeping is timed by a hook (``build.Hooks.before_epoch``) that reads the clock
  at each epoch start. The reference leaves out LDAM-DRW's per-epoch checkpoint and log files (in its
  favour); its end to end is also given with one final evaluation only.
* DSB overhead: steady-state seconds per epoch with DSB over without, minus 1. DSB's loss weighting starts
  after ``n`` stage epochs (PAPER.md §3); for runs shorter than the protocol the benchmark sets ``n = 1``
  so that every timed epoch weights the loss (the expensive stage); at ``--epochs 200`` it keeps ``n = 5``.

Prints a markdown table and writes the measurements (JSON with provenance, and a CSV beside it) atomically.
Not a test.

    python bench/bench_train.py                                   # CUDA if present, 3 engine / 2 reference epochs
    python bench/bench_train.py --device cpu --epochs 2 --ref-epochs 2
    python bench/bench_train.py --device cuda --epochs 200 --ref-epochs 3   # the H100 targets
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from semscale import data, methods, pipeline, records, subsets, sweep
from semscale.build import Hooks, build_run, learning_rate, memory_format, resolve
from semscale.train import new_epoch, train_epoch
from semscale.config import COMPILE_MODES
from semscale import train as engine
from semscale.models import build_model

DATASET = "cifar10-jpeg75"
IMBALANCE = 100
SUBSET_SEED = 0
BATCH_SIZE = 128
PROTOCOL_EPOCHS = 200
DSB_STAGE_EPOCHS = 5  # the paper's n
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # LDAM-DRW's constants
TARGETS = {"speedup": 10.0, "end_to_end_s": 60.0, "dsb_overhead_pct": 5.0}  # on one H100
DEFAULT_OUT = "results/bench/bench_train.json"


def now(device: torch.device) -> float:
    """Wall clock after the device has finished the queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


# ---------------------------------------------------------------------------------------------------------
# (a) the reference pipeline: LDAM-DRW's cifar_train.py


class PILImageDataset(Dataset):
    """uint8 images served as PIL images through a transform, as torchvision's CIFAR10 (and LDAM's IMBALANCECIFAR10) do."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.data = images.permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, C), CIFAR10.data's layout
        self.targets = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.data[index])), self.targets[index]


def reference_train_epoch(model, loader, criterion, optimizer, device) -> tuple[float, float]:
    """LDAM-DRW's train(): per step, inputs to the device, forward, loss, loss.item() and top-1 metering, SGD step.

    Returns the epoch's training loss and top-1."""
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for inputs, targets in loader:
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        output = model(inputs)
        loss = criterion(output, targets)
        loss_sum += loss.item() * inputs.size(0)  # AverageMeter.update(loss.item(), n): a host sync per step
        correct = correct + (output.argmax(1) == targets).sum()
        seen += inputs.size(0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss_sum / seen, float(correct) / seen


@torch.no_grad()
def reference_validate(model, loader, device) -> float:
    """LDAM-DRW's validate(): predictions gathered on the host; returns top-1."""
    model.eval()
    preds, labels = [], []
    for inputs, targets in loader:
        output = model(inputs.to(device, non_blocking=True))
        preds.append(output.argmax(1).cpu().numpy())
        labels.append(targets.numpy())
    return float((np.concatenate(preds) == np.concatenate(labels)).mean())


def run_reference(epochs: int, workers: int, device: torch.device) -> dict:
    """Train the reference pipeline for ``epochs`` epochs with a test evaluation after each (as LDAM-DRW does)."""
    benchmark_before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True  # cifar_train.py sets it
    try:
        start = now(device)
        train_split, test_split = data.load(DATASET, "train"), data.load(DATASET, "test")
        subset = subsets.long_tailed_indices(train_split.labels, IMBALANCE, seed=SUBSET_SEED)
        index = torch.from_numpy(subset.indices)
        normalize = transforms.Normalize(CIFAR_MEAN, CIFAR_STD)
        train_set = PILImageDataset(train_split.images[index], train_split.labels[index], transforms.Compose([
            transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize]))
        test_set = PILImageDataset(test_split.images, test_split.labels, transforms.Compose([transforms.ToTensor(), normalize]))
        pin = device.type == "cuda"
        train_loader = DataLoader(train_set, batch_size=BATCH_SIZE, shuffle=True, num_workers=workers, pin_memory=pin)
        test_loader = DataLoader(test_set, batch_size=100, shuffle=False, num_workers=workers, pin_memory=pin)
        torch.manual_seed(0)
        model = build_model("resnet32", 10).to(device)
        criterion = nn.CrossEntropyLoss().to(device)
        optimizer = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9, weight_decay=2e-4)
        setup = now(device) - start

        schedule = engine.TrainConfig(dataset=DATASET, epochs=PROTOCOL_EPOCHS)  # LDAM's 200-epoch schedule, lr 0.1
        rows = []
        for epoch in range(epochs):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(schedule, epoch + 1)
            t0 = now(device)
            train_loss, train_acc = reference_train_epoch(model, train_loader, criterion, optimizer, device)
            t1 = now(device)
            top1 = reference_validate(model, test_loader, device)
            t2 = now(device)
            rows.append({"epoch": epoch + 1, "start": t0 - start, "seconds": t1 - t0, "eval_seconds": t2 - t1, "top1": top1})
            print(f"  reference epoch {epoch + 1}/{epochs}: train {t1 - t0:.1f} s (loss {train_loss:.3f}, acc {train_acc:.3f}), "
                  f"eval {t2 - t1:.1f} s, test top-1 {top1:.3f}", flush=True)
        wall = now(device) - start
    finally:
        torch.backends.cudnn.benchmark = benchmark_before
    return {"name": "reference (LDAM-DRW cifar_train.py)", "pipeline": "reference", "compile": "none", "dsb": False,
            "track_pool": False, "precision": "fp32", "workers": workers, "train_size": len(train_set), "eval_batch_size": 100,
            "setup_seconds": setup, "wall_seconds": wall, "epochs_table": rows, "top1": rows[-1]["top1"]}


# ---------------------------------------------------------------------------------------------------------
# (b) the engine


def engine_config(epochs: int, device: torch.device, *, dsb: bool, track_pool: bool, compile_mode: str) -> engine.TrainConfig:
    """The same protocol in semscale.train; short runs start DSB's weighting at epoch 2 so every timed epoch pays for it."""
    return engine.TrainConfig(dataset=DATASET, imbalance=IMBALANCE, subset_seed=SUBSET_SEED, model="resnet32", loss="ce",
                              batch_size=BATCH_SIZE, epochs=epochs, normalization="fixed", augment=True,
                              dsb=dsb, track_pool=track_pool,
                              dsb_stage_epochs=DSB_STAGE_EPOCHS if epochs >= PROTOCOL_EPOCHS else 1,
                              compile=compile_mode, device=str(device), seed=0, progress=False)


class EpochStarts(Hooks):
    """Clock readings at the start of every engine epoch.

    The intervals between epoch starts hold what epochs.csv does not time: the per-epoch bookkeeping after the
    evaluation (pool table, history files, checkpoints), which a 200-epoch extrapolation must include."""

    def __init__(self, device: torch.device):
        self.device, self.starts = device, []

    def before_epoch(self, run, epoch: int) -> None:
        self.starts.append(now(self.device))


def run_engine(name: str, config: engine.TrainConfig, device: torch.device) -> dict:
    """One run of semscale.train; the wall time is taken around the whole call."""
    clock = EpochStarts(device)
    starts = clock.starts
    with tempfile.TemporaryDirectory(prefix="bench_train_") as out:
        start = now(device)
        record = engine.train(config, out, hooks=[clock])
        wall = now(device) - start
        epochs = pd.read_csv(Path(out) / "epochs.csv")
    rows = epochs[["epoch", "seconds", "eval_seconds", "top1"]].to_dict("records")
    setup = float("nan")
    if len(starts) == len(rows):
        setup = starts[0] - start
        for row, t in zip(rows, starts):
            row["start"] = t - start
    else:
        print(f"  warning: saw {len(starts)} epoch starts for {len(rows)} epochs (semscale.train changed?): "
              "per-epoch bookkeeping is left out of the extrapolation", flush=True)
    for row in rows:
        print(f"  {name} epoch {row['epoch']}/{config.epochs}: train {row['seconds']:.1f} s, eval {row['eval_seconds']:.1f} s", flush=True)
    return {"name": name, "pipeline": "engine", "compile": config.compile, "dsb": config.dsb, "track_pool": config.track_pool,
            "precision": record["engine"]["amp"] if record["engine"]["amp"] != "none" else "fp32", "workers": 0,
            "train_size": record["subset"]["size"], "setup_seconds": setup, "wall_seconds": wall,
            "epochs_table": rows, "top1": record["final"]["top1"], "dsb_stage_epochs": config.dsb_stage_epochs,
            "eval_batch_size": config.eval_batch_size}


# ---------------------------------------------------------------------------------------------------------
# (c) the CPU tier: the engine's step against a minimal loop of the same network, in fp32 and bf16


class StepClock(Hooks):
    """The clock after every step (the engine's own loop, pool tracked, no DSB weighting)."""

    def __init__(self, device: torch.device):
        self.device, self.times = device, []

    def after_step(self, run, ids, class_weights) -> None:
        self.times.append(now(self.device))


def tier_config(model: str, precision: str, device: torch.device, batch_size: int) -> engine.TrainConfig:
    """The CPU tier's protocol for airbench models (LDAM-DRW's for ResNet-32), pool tracked, DSB off."""
    protocol = "airbench" if model.startswith("airbench") else "ldam-cifar-lt"
    return engine.TrainConfig(dataset=DATASET, imbalance=IMBALANCE, subset_seed=SUBSET_SEED, model=model, protocol=protocol,
                              batch_size=batch_size, epochs=1, precision=precision, device=str(device), progress=False)


def engine_steps(config: engine.TrainConfig, device: torch.device, steps: int, warmup: int) -> float:
    """img/s of the engine's own training loop (train.train_epoch: augmentation on the device, the pool's update, the
    loss, the optimiser and the lookahead) over ``steps`` steps after ``warmup``."""
    train_data = pipeline.load_run_data(config, device)
    config = resolve(config, train_data.train_counts)
    clock = StepClock(device)
    run = build_run(config, train_data, device, [clock])
    state = new_epoch(run, 1)
    train_epoch(run, state, should_stop=lambda: len(clock.times) >= warmup + steps)
    times = clock.times[warmup - 1:]
    return config.batch_size * (len(times) - 1) / (times[-1] - times[0])


def minimal_steps(config: engine.TrainConfig, device: torch.device, steps: int, warmup: int) -> float:
    """img/s of a minimal loop of the same network in the same precision and memory layout: forward, loss, backward,
    optimiser step on batches prepared beforehand (no augmentation, no pool, no schedule)."""
    train_data = pipeline.load_run_data(config, device)
    config = resolve(config, train_data.train_counts)
    run = build_run(config, train_data, device)
    model, optimizer = run.model, run.optimizer
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(8):
        ids = torch.randint(0, len(train_data.train_labels), (config.batch_size,), generator=generator)
        x = pipeline.to_input(train_data.train_images[ids], train_data.mean, train_data.std, run.memory_format)
        batches.append((x, train_data.train_labels[ids]))
    model.train()
    times = []
    for i in range(warmup + steps):
        x, y = batches[i % len(batches)]
        with run.autocast():
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(now(device))
    times = times[warmup - 1:]
    return config.batch_size * (len(times) - 1) / (times[-1] - times[0])


def step_table(models_: list[str], device: torch.device, batch_size: int, steps: int, warmup: int) -> list[dict]:
    rows = []
    for model in models_:
        for precision in ("fp32", "bf16"):
            config = tier_config(model, precision, device, batch_size)
            minimal = minimal_steps(config, device, steps, warmup)
            engine_rate = engine_steps(config, device, steps, warmup)
            rows.append({"model": model, "precision": precision, "batch_size": batch_size,
                         "channels_last": memory_format(config, device) == torch.channels_last,
                         "minimal_img_per_s": minimal, "engine_img_per_s": engine_rate,
                         "engine_slower_pct": 100.0 * (minimal / engine_rate - 1.0)})
            print(f"  {model} {precision}: minimal loop {minimal:,.0f} img/s, engine {engine_rate:,.0f} img/s "
                  f"({rows[-1]['engine_slower_pct']:+.1f} %)", flush=True)
    return rows


def tier_runs(device: torch.device, epochs_balanced: int, epochs_lt: int, lt_methods: list[str], root: Path) -> list[dict]:
    """Whole training runs of the CPU tier through the sweep (cached in ``root``): airbench94 on balanced
    cifar10-jpeg75 with airbench's own recipe, and the study's long-tailed protocol (``airbench-lt``: airbench-small,
    batch 128, no label smoothing, no bias lr scaler) on IF 100 with notebook 03's fields, so that with ``root`` its run
    cache the long-tailed runs are read back; last-epoch top-1 without TTA, and the minutes each run took."""
    on = {} if device.type == "cpu" else {"device": str(device)}  # on the CPU: the very configs of notebook 03's grid
    balanced = {"dataset": DATASET, "model": "airbench94", "protocol": "airbench", "epochs": epochs_balanced,
                "eval_every": 0, **on}
    lt = {"dataset": DATASET, "imbalance": IMBALANCE, "model": "airbench-small", "protocol": "airbench-lt",
          "epochs": epochs_lt, "dsb_stage_epochs": 2, "crop_padding": 2, "flip": True, "eval_every": 0, **on}
    points = ((sweep.grid(balanced, method={"CE (airbench94 recipe)": {}}) if epochs_balanced else [])
              + (sweep.grid(lt, method={m: methods.METHODS[m] for m in lt_methods}) if epochs_lt else []))
    done = sweep.run(points, root, jobs=1)
    rows = []
    for r in done:
        if r.record is None:
            print(f"  {r.name}: FAILED {r.error}", flush=True)
            continue
        rec = r.record
        rows.append({"method": r.labels["method"], "model": rec["config"]["model"], "variant": rec["dataset_variant"],
                     "epochs": rec["config"]["epochs"], "batch_size": rec["config"]["batch_size"],
                     "precision": rec["engine"]["precision"], "top1": rec["final"]["top1"],
                     "per_class": pd.read_csv(r.path / "per_class.csv").accuracy.round(3).tolist(),
                     "minutes": rec["wall_seconds"] / 60, "img_per_s": rec["img_per_s"], "status": r.status})
    return rows


# ---------------------------------------------------------------------------------------------------------
# measurements


def timings(run: dict) -> dict:
    """Throughput after the warm-up epoch and the 200-epoch end to end (measured or extrapolated) of one run."""
    table = pd.DataFrame(run["epochs_table"])
    timed = table[table.epoch >= 2]
    steady_train, steady_eval = timed.seconds.mean(), timed.eval_seconds.mean()
    # per epoch, what happens between the end of its evaluation and the start of the next epoch
    other = (table.start.shift(-1) - table.start - table.seconds - table.eval_seconds) if "start" in table else pd.Series([0.0])
    steady_other = float(other.mean()) if other.notna().any() else 0.0
    extra = PROTOCOL_EPOCHS - len(table)  # epochs still to run for the protocol; each costs a steady epoch
    out = {
        "epochs_run": len(table),
        "first_epoch_seconds": float(table.seconds.iloc[0]),
        "train_seconds_per_epoch": float(steady_train),
        "eval_seconds_per_epoch": float(steady_eval),
        "other_seconds_per_epoch": steady_other,
        "img_per_s": float(run["train_size"] * len(timed) / timed.seconds.sum()),
        "end_to_end_200_s": float(run["wall_seconds"] + extra * (steady_train + steady_eval + steady_other)),
        "end_to_end_200": "measured" if extra == 0 else "extrapolated",
    }
    if run["pipeline"] == "reference":  # the same run evaluating once, at the end
        out["end_to_end_200_final_eval_only_s"] = float(
            run["wall_seconds"] - table.eval_seconds.iloc[:-1].sum() + extra * (steady_train + steady_other))
    return out


def dsb_overhead(dsb_run: dict, base_run: dict) -> float:
    """Training seconds per epoch of the DSB run over the base run, minus 1, in %, over DSB's weighting epochs."""
    first = dsb_run["dsb_stage_epochs"] + 1
    seconds = []
    for run in (dsb_run, base_run):
        table = pd.DataFrame(run["epochs_table"])
        seconds.append(table.seconds[table.epoch >= first].sum())
    return 100.0 * (seconds[0] / seconds[1] - 1.0)


def fmt_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "–"
    return f"{s:.3g} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def markdown_table(runs: list[dict], reference: dict | None) -> list[str]:
    lines = [
        "| pipeline | torch.compile | precision | train img/s | train s/epoch | eval s/epoch | 200 epochs end to end | "
        "speed-up (img/s) | speed-up (end to end) | test top-1 after run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        t = r["timings"]
        speed = end = "–"
        if reference is not None and r is not reference:
            speed = f"{t['img_per_s'] / reference['timings']['img_per_s']:.1f}×"
            end = f"{reference['timings']['end_to_end_200_s'] / t['end_to_end_200_s']:.1f}×"
        lines.append(
            f"| {r['name']} | {r['compile']} | {r['precision']} | {t['img_per_s']:,.0f} | {fmt_seconds(t['train_seconds_per_epoch'])} "
            f"| {fmt_seconds(t['eval_seconds_per_epoch'])} | {fmt_seconds(t['end_to_end_200_s'])} ({t['end_to_end_200']}) "
            f"| {speed} | {end} | {r['top1']:.3f} ({t['epochs_run']} ep.) |")
    return lines


# ---------------------------------------------------------------------------------------------------------


ENGINE_VARIANTS = {  # name -> (label, dsb, track_pool)
    "plain": ("engine", False, False),
    "pool": ("engine, pool tracked (default baseline)", False, True),
    "dsb": ("engine + DSB", True, True),
}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:N (default: cuda if available)")
    p.add_argument("--epochs", type=int, default=3,
                   help=f"epochs of each engine run, the first a warm-up (2..{PROTOCOL_EPOCHS}; {PROTOCOL_EPOCHS} measures the protocol end to end)")
    p.add_argument("--ref-epochs", type=int, default=2, help="epochs of the reference run, the first a warm-up (0 skips it; else 2..200)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="reference DataLoader workers (default: min(4, cores))")
    p.add_argument("--variants", default="plain,pool,dsb",
                   help="engine runs, comma-separated: plain (no pool), pool (the default baseline: pool tracked, no DSB), dsb")
    p.add_argument("--compile-mode", default="default", choices=[m for m in COMPILE_MODES if m != "none"],
                   help="torch.compile mode of the compiled engine runs (CUDA only)")
    p.add_argument("--compile", default="auto", choices=("auto", "off", "only"),
                   help="engine runs with torch.compile: auto = eager and compiled on CUDA, eager on CPU; off = eager only; "
                        "only = compiled only (split long GPU sessions)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"results JSON; a CSV with the same stem is written beside it (default {DEFAULT_OUT})")
    p.add_argument("--tier", action="store_true",
                   help="also the CPU tier: the engine's step against a minimal loop (fp32 and bf16) and whole runs of the "
                        "airbench models (balanced and long-tailed cifar10-jpeg75), beside ResNet-32 and the reference")
    p.add_argument("--tier-models", default="resnet32,airbench-small,airbench94", help="models of the step comparison")
    p.add_argument("--tier-steps", type=int, default=20, help="timed steps of each step comparison (after 3 warm-up steps)")
    p.add_argument("--tier-batch", type=int, default=256, help="batch size of the step comparison")
    p.add_argument("--balanced-epochs", type=int, default=10, help="epochs of airbench94 on balanced cifar10-jpeg75 (0: skip)")
    p.add_argument("--lt-epochs", type=int, default=30, help="epochs of the long-tailed runs (0: skip)")
    p.add_argument("--lt-methods", default="CE,LDAM-DRW,Balanced Softmax,CDB-CE", help="methods of the long-tailed runs")
    p.add_argument("--tier-root", default="results/bench/tier_runs", help="run cache of the tier's whole runs (finished runs are read back)")
    args = p.parse_args(argv)
    if not 2 <= args.epochs <= PROTOCOL_EPOCHS:
        p.error(f"--epochs must be in 2..{PROTOCOL_EPOCHS} (one warm-up epoch, then timed ones), got {args.epochs}")
    if args.ref_epochs != 0 and not 2 <= args.ref_epochs <= PROTOCOL_EPOCHS:
        p.error(f"--ref-epochs must be 0 (skip) or in 2..{PROTOCOL_EPOCHS}, got {args.ref_epochs}")
    if args.workers < 0:
        p.error(f"--workers must be >= 0, got {args.workers}")
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    args.tier_models = [m.strip() for m in args.tier_models.split(",") if m.strip()]
    args.lt_methods = [m.strip() for m in args.lt_methods.split(",") if m.strip()]
    unknown = set(args.variants) - set(ENGINE_VARIANTS)
    if unknown or not args.variants:
        p.error(f"--variants takes a comma-separated subset of {', '.join(ENGINE_VARIANTS)}, got {sorted(unknown) or 'nothing'}")
    try:
        args.device = torch.device(args.device)
    except RuntimeError:
        p.error(f"invalid --device {args.device!r}; use cpu, cuda or cuda:N")
    if args.device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda asked but CUDA is not available; use --device cpu")
    if args.device.type not in ("cpu", "cuda"):
        p.error(f"--device must be cpu or cuda, got {args.device}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    device = args.device
    print(f"device: {records.device_name(device)}; torch {torch.__version__}", flush=True)
    for split in ("train", "test"):
        data.load(DATASET, split)  # decode once into the cache, so that no run pays for it

    runs = []
    reference = None
    if args.ref_epochs:
        print(f"reference pipeline, {args.ref_epochs} epochs, {args.workers} workers", flush=True)
        reference = run_reference(args.ref_epochs, args.workers, device)
        runs.append(reference)
    compile_modes = {"auto": ["none"] + ([args.compile_mode] if device.type == "cuda" else []),
                     "off": ["none"], "only": [args.compile_mode]}[args.compile]
    engine_runs = {}
    for mode in compile_modes:
        for variant in args.variants:
            label, dsb, track_pool = ENGINE_VARIANTS[variant]
            name = label + (", compiled" if mode != "none" else "")
            print(f"{name}, {args.epochs} epochs", flush=True)
            config = engine_config(args.epochs, device, dsb=dsb, track_pool=track_pool, compile_mode=mode)
            torch.compiler.reset()  # a fresh compilation cache per run: no run inherits, or exhausts, another's
            engine_runs[mode, variant] = run_engine(name, config, device)
            runs.append(engine_runs[mode, variant])
            if device.type == "cuda":
                torch.cuda.empty_cache()
    for r in runs:
        r["timings"] = timings(r)

    overheads = {}
    for mode in compile_modes:
        for base in ("plain", "pool"):
            if (mode, "dsb") in engine_runs and (mode, base) in engine_runs:
                overheads[f"{mode}, vs {base}"] = dsb_overhead(engine_runs[mode, "dsb"], engine_runs[mode, base])

    steps, tier = [], []
    if args.tier:
        print(f"CPU tier: engine step against a minimal loop, batch {args.tier_batch}", flush=True)
        steps = step_table(args.tier_models, device, args.tier_batch, args.tier_steps, 3)
        print("CPU tier: whole runs", flush=True)
        tier = tier_runs(device, args.balanced_epochs, args.lt_epochs, args.lt_methods, Path(args.tier_root))

    lines = [
        f"device: {records.device_name(device)}; torch {torch.__version__}"
        + (f" (CUDA {torch.version.cuda}); host {os.cpu_count()} cores" if device.type == "cuda" else ""),
        f"command: python {' '.join(sys.argv)}",
        f"data: {DATASET}, CIFAR-10-LT IF {IMBALANCE} (exp, seed {SUBSET_SEED}), "
        f"{runs[0]['train_size']:,} training images; ResNet-32, batch {BATCH_SIZE}, CE, SGD, crop+flip",
        "",
        *markdown_table(runs, reference),
        "",
        "- train img/s and s/epoch: epochs 2.. (epoch 1 is the warm-up), training only; eval s/epoch: one pass over the "
        "10,000 test images, which both pipelines run after every epoch (batch size: "
        + ", ".join(f"{k} {v}" for k, v in {r["pipeline"]: r["eval_batch_size"] for r in runs}.items()) + ").",
        "- 200 epochs end to end: the whole run's wall time including data to device, setup, compilation, training and "
        "every evaluation; 'extrapolated' = measured run + (200 − epochs run) × (steady train + eval + bookkeeping per epoch).",
    ]
    if reference is not None:
        t = reference["timings"]
        lines.append(f"- the reference with one evaluation at the end instead of every epoch: "
                     f"{fmt_seconds(t['end_to_end_200_final_eval_only_s'])} for 200 epochs ({t['end_to_end_200']}).")
    for key, value in overheads.items():
        lines.append(f"- DSB overhead (training s/epoch over the weighting epochs, compile {key}): {value:+.1f} %")
    engine_plain = [r for (mode, variant), r in engine_runs.items() if variant != "dsb"]
    if engine_plain:
        best = min(engine_plain, key=lambda r: r["timings"]["end_to_end_200_s"])
        ratio = f"{reference['timings']['end_to_end_200_s'] / best['timings']['end_to_end_200_s']:.1f}× the reference" if reference else "no reference run"
        worst = f"largest DSB overhead {max(overheads.values()):+.1f} %" if overheads else "no DSB comparison run"
        lines.append(
            f"- targets (one H100: ≥{TARGETS['speedup']:.0f}× the reference end to end, 200 epochs ≤ {TARGETS['end_to_end_s']:.0f} s, "
            f"DSB overhead ≤ {TARGETS['dsb_overhead_pct']:.0f} %): fastest engine run without DSB ({best['name']}) {ratio}, "
            f"{fmt_seconds(best['timings']['end_to_end_200_s'])} for 200 epochs; {worst}"
            + ("" if device.type == "cuda" else " — measured on CPU, not a check of the H100 targets"))
    if steps:
        lines += ["", f"CPU tier, one training step at batch {args.tier_batch} (img/s; the engine's step: augmentation on the "
                  "device, the pool's update, the loss, the optimiser, the lookahead; DSB's weighting off):", "",
                  "| model | precision | channels_last | minimal loop | engine | engine slower by |", "|---|---|---|---|---|---|"]
        lines += [f"| {s['model']} | {s['precision']} | {s['channels_last']} | {s['minimal_img_per_s']:,.0f} | "
                  f"{s['engine_img_per_s']:,.0f} | {s['engine_slower_pct']:+.1f} % |" for s in steps]
    if tier:
        lines += ["", "CPU tier, whole runs (last-epoch top-1, no TTA):", "",
                  "| run | model | data | epochs | batch | precision | top-1 | minutes | img/s |", "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {t['method']} | {t['model']} | {t['variant']} | {t['epochs']} | {t['batch_size']} | {t['precision']} | "
                  f"{100 * t['top1']:.2f} % | {t['minutes']:.1f} | {t['img_per_s']:,.0f} |" for t in tier]
    print("\n" + "\n".join(lines))

    table = pd.DataFrame([{k: v for k, v in r.items() if k not in ("epochs_table", "timings")} | r["timings"] for r in runs])
    table.insert(0, "device", records.device_name(device))
    out = Path(args.out)
    records.write_csv_atomic(out.with_suffix(".csv"), table)
    records.write_json_atomic(out, {
        "benchmark": "training speed, reference LDAM-DRW pipeline vs semscale.train",
        "protocol": {"dataset": DATASET, "imbalance": IMBALANCE, "profile": "exp", "subset_seed": SUBSET_SEED,
                     "model": "resnet32", "batch_size": BATCH_SIZE, "loss": "ce", "optimizer": "sgd 0.1, momentum 0.9, wd 2e-4",
                     "augmentation": "random crop 32 pad 4, horizontal flip"},
        "arguments": {"device": str(device), "epochs": args.epochs, "ref_epochs": args.ref_epochs, "workers": args.workers,
                      "variants": args.variants, "compile_modes": compile_modes},
        "definitions": {
            "img_per_s": "training images per second over epochs 2.. (epoch 1 is the warm-up); evaluation excluded",
            "end_to_end_200_s": "wall time of a 200-epoch run including data to device, setup, compilation, training and "
                                "the evaluation after every epoch; extrapolated = measured run + (200 - epochs run) x "
                                "(steady training + evaluation + bookkeeping per epoch)",
            "dsb_overhead_pct": "training seconds of the DSB run over the run without DSB, minus 1, over DSB's weighting epochs",
        },
        "runs": runs,
        "dsb_overhead_pct": overheads,
        "tier_steps": steps,
        "tier_runs": tier,
        "targets_h100": TARGETS,
        "report": lines,
        **records.provenance(device),
    })
    print(f"\nwrote {out} and {out.with_suffix('.csv')}")


if __name__ == "__main__":
    main()
