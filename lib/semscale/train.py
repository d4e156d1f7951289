"""The training engine: ``train`` (one run), ``run_seeds`` and the CLI ``python -m semscale.train``.

    python -m semscale.train --dataset mnist --imbalance 100 --model cnn --loss ce --dsb --epochs 2 --out runs/x
    python -m semscale.train --config exp.yaml --seeds 0 1 2 --out runs/y      # YAML values, flags override them
    python -m semscale.train ... --out runs/x --resume                          # continue from the checkpoint

The config (:mod:`semscale.config`) defaults to LDAM-DRW's CIFAR-LT protocol (PAPER.md §5); the data pipeline
(:mod:`semscale.pipeline`) keeps everything on the device; checkpoints and stop signals are
:mod:`semscale.checkpoint`'s. This module builds a run and trains it:

* Learning rate: a function of the epoch, set once at the start of each epoch (per-epoch granularity,
  exactly LDAM's ``adjust_learning_rate`` at 200 epochs; no scheduler state to save).
* DSB (PAPER.md §3, :mod:`semscale.pool`): the pool is kept for every run unless ``track_pool=False`` (one
  small scatter per iteration and one scale computation per epoch), so per_class.csv and pool_history.csv
  carry S′, W, S and weights for baselines too; only ``dsb=True`` weights the loss.
* CDB's difficulty is the per-class accuracy in eval mode on a balanced held-out split of unused training
  images after each epoch (PAPER.md §6); DRW gets ``set_epoch`` (0-based) before each epoch.
* No host sync inside an epoch: loss and per-class correct counts accumulate on the device and are read
  once per epoch. The progress bar counts images (rate = img/s).
* On CUDA: bf16 autocast and channels_last (``bf16``, ``channels_last``), optional ``torch.compile``; the
  classifier always runs in float32.
* Outputs under ``out_dir`` (atomic writes): run.json, epochs.csv, per_class.csv, pool_history.csv,
  model.pt (final weights); checkpoint.pt while the run is unfinished (every ``checkpoint_every`` epochs
  and on SIGINT/SIGTERM, which finish the current iteration, save and stop with exit status 128+signal).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import signal
import sys
import time
import typing
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import checkpoint, data, losses, metrics, models, pipeline, records
from .checkpoint import TrainingInterrupted
from .config import ConfigError, TrainConfig, build_parser, config_from_args, loss_params, protocol_overrides, warn_combinations
from .pipeline import TrainData
from .pool import FeaturePool, stage

__all__ = ["TrainConfig", "ConfigError", "TrainingInterrupted", "train", "run_seeds", "main", "learning_rate"]


# ---------------------------------------------------------------------------------------------------------
# learning rate


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def ldam_milestones(epochs: int) -> tuple[int, int, int]:
    """(warm-up epochs, first decay, second decay) of LDAM's 200-epoch schedule (5, 160, 180) scaled to ``epochs``."""
    return _round_half_up(5 * epochs / 200), _round_half_up(160 * epochs / 200), _round_half_up(180 * epochs / 200)


def learning_rate(config: TrainConfig, epoch: int) -> float:
    """The learning rate of 1-based ``epoch`` (constant within the epoch).

    ldam: lr·e/w for e <= w (linear warm-up), lr·1e-4 after the second and lr·1e-2 after the first milestone
    (LDAM-DRW's adjust_learning_rate); exponential: lr·decay^(e−1); cosine: lr·½(1 + cos(π(e−1)/E)).
    """
    lr, e = config.lr, epoch
    if config.schedule == "ldam":
        warmup, first, second = ldam_milestones(config.epochs)
        if e <= warmup:
            return lr * e / warmup
        if e > second:
            return lr * 1e-4
        if e > first:
            return lr * 1e-2
        return lr
    if config.schedule == "exponential":
        return lr * config.lr_decay ** (e - 1)
    return cosine_lr(lr, e, config.epochs)


def cosine_lr(lr: float, epoch: int, epochs: int) -> float:
    """Cosine from lr to 0 over ``epochs`` (1-based ``epoch``), constant within an epoch."""
    return lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / epochs))


# ---------------------------------------------------------------------------------------------------------
# the run


@dataclass
class EpochState:
    """An epoch in progress: what a mid-epoch checkpoint must hold besides the model."""

    epoch: int
    generator: torch.Generator
    order: torch.Tensor  # the epoch's permutation of sample ids
    loss_sum: torch.Tensor  # Σ batch loss × batch size (float64, device)
    correct: torch.Tensor  # running per-class correct counts (int64, device)
    next_batch: int = 0
    seconds: float = 0.0


@dataclass
class Run:
    config: TrainConfig
    device: torch.device
    data: TrainData
    model: models.FeatureModel
    forward: typing.Callable  # model.forward_with_features, compiled or not
    optimizer: torch.optim.Optimizer
    loss: losses.ClassWeightedLoss
    pool: FeaturePool | None
    bf16: bool
    memory_format: torch.memory_format
    mwn: typing.Any = None  # metaweight.MetaWeight with config.mwn

    @property
    def num_batches(self) -> int:
        return pipeline.num_batches(len(self.data.train_labels), self.config.batch_size)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked but CUDA is not available; use --device cpu or auto")
    return device


def resolve(config: TrainConfig, train_counts: np.ndarray) -> TrainConfig:
    """Fill the data-dependent defaults (normed classifier, DSB alpha) and check the subset fits the method."""
    normed = config.normed_classifier
    if normed is None:
        normed = config.loss == "ldam"
    alpha = config.dsb_alpha
    if alpha is None:
        alpha = 1.0 if len(set(train_counts.tolist())) == 1 else 2.0
    if config.dsb and train_counts.min() < 2:
        small = np.flatnonzero(train_counts < 2).tolist()
        raise ConfigError(f"DSB needs at least 2 training images per class (a class with one has volume 0 and infinite "
                          f"weight); class(es) {small} have fewer: lower the imbalance or use a larger dataset")
    return dataclasses.replace(config, normed_classifier=normed, dsb_alpha=alpha)


def memory_format(config: TrainConfig, device: torch.device) -> torch.memory_format:
    return torch.channels_last if device.type == "cuda" and config.channels_last else torch.contiguous_format


def build_model(config: TrainConfig, num_classes: int, in_channels: int, device: torch.device) -> models.FeatureModel:
    """The run's network, initialised from ``config.seed``, on ``device``."""
    torch.manual_seed(config.seed)
    model = models.build_model(config.model, num_classes, in_channels, config.normed_classifier)
    return model.to(device=device, memory_format=memory_format(config, device))


def build_run(config: TrainConfig, train_data: TrainData, device: torch.device) -> Run:
    """Model (seeded by config.seed), optimiser, loss and pool for a resolved config."""
    cuda = device.type == "cuda"
    model = build_model(config, train_data.num_classes, train_data.train_images.shape[1], device)
    forward = model.forward_with_features
    if config.compile != "none":
        forward = torch.compile(forward, mode=None if config.compile == "default" else config.compile)
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                    nesterov=config.nesterov, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    try:
        loss = losses.build_loss(config.loss, train_data.train_counts, reweight=config.reweight,
                                 reduction=config.reduction, **loss_params(config)).to(device)
    except ValueError as e:
        raise ConfigError(f"cannot build loss {config.loss!r} with reweight {config.reweight!r}: {e}") from e
    pool = None
    if config.track_pool:
        pool = FeaturePool(train_data.train_labels, train_data.num_classes, dim=config.pool_dim,
                           alpha=config.dsb_alpha, eps=config.dsb_eps)
    mwn = None
    if config.mwn:
        from .metaweight import MetaWeight

        mwn = MetaWeight.for_run(config, train_data, device)
    return Run(config, device, train_data, model, forward, optimizer, loss, pool, cuda and config.bf16,
               memory_format(config, device), mwn)


def new_epoch(run: Run, epoch: int) -> EpochState:
    generator = pipeline.epoch_generator(run.config.seed, epoch, run.device)
    order = pipeline.epoch_order(run.data, run.config, epoch, generator, pool_kept=run.pool is not None)
    return EpochState(epoch, generator, order, torch.zeros((), dtype=torch.float64, device=run.device),
                      torch.zeros(run.data.num_classes, dtype=torch.int64, device=run.device))


def train_step(run: Run, ids: torch.Tensor, x: torch.Tensor, y: torch.Tensor, weighting: bool,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step: forward, pool update, (DSB-weighted) loss, backward, optimiser step. Returns (loss, logits).

    With Meta-Weight-Net (``run.mwn``) the step is :func:`semscale.metaweight.train_step`, which draws its meta
    batch from ``generator`` (the epoch's)."""
    if run.mwn is not None:
        from .metaweight import train_step as mwn_step

        return mwn_step(run, ids, x, y, run.pool.scales().weight if weighting else None, generator)
    with run.autocast():
        logits, features = run.forward(x)
    if run.pool is not None:
        run.pool.update(ids, features, duplicates=run.config.sampler != "none")
    loss = run.loss(logits, y, class_weights=run.pool.scales().weight if weighting else None)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    return loss.detach(), logits.detach()


def train_epoch(run: Run, state: EpochState, should_stop: typing.Callable[[], bool] = lambda: False, bar=None) -> None:
    """Train from ``state.next_batch`` to the end of the epoch, or until ``should_stop()`` after an iteration."""
    cfg = run.config
    for group in run.optimizer.param_groups:
        group["lr"] = learning_rate(cfg, state.epoch)
    run.loss.set_epoch(state.epoch - 1, cfg.epochs)  # losses count epochs from 0
    weighting = cfg.dsb and stage(state.epoch, cfg.dsb_stage_epochs) == "weight"
    run.model.train()
    start = time.perf_counter()
    for ids, x, y in pipeline.batches(run.data, cfg, state.order, state.generator, state.next_batch, run.memory_format):
        loss, logits = train_step(run, ids, x, y, weighting, state.generator)
        state.loss_sum += loss.double() * len(ids)
        state.correct.index_add_(0, y, (logits.argmax(1) == y).long())
        state.next_batch += 1
        if bar is not None:
            bar.update(len(ids))
        if should_stop():
            break
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    state.seconds += time.perf_counter() - start


@torch.no_grad()
def predict_counts(run: Run, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class (correct, total) of the current model in eval mode on uint8 ``images``."""
    run.model.eval()
    correct = torch.zeros(run.data.num_classes, dtype=torch.int64, device=run.device)
    total = torch.zeros_like(correct)
    step = run.config.eval_batch_size
    for s in range(0, len(labels), step):
        x = pipeline.to_input(images[s:s + step], run.data.mean, run.data.std, run.memory_format)
        with run.autocast():
            logits, _ = run.forward(x)
        c, t = metrics.class_counts(logits.argmax(1), labels[s:s + step], run.data.num_classes)
        correct += c
        total += t
    run.model.train()
    return correct, total


def evaluate(run: Run) -> dict:
    """Test-set metrics (semscale.metrics.summarize) of the current model."""
    return metrics.summarize(*predict_counts(run, run.data.test_images, run.data.test_labels), run.data.train_counts)


def heldout_accuracy(run: Run) -> np.ndarray:
    """Per-class accuracy on CDB's balanced held-out split (eval mode)."""
    correct, total = predict_counts(run, run.data.heldout_images, run.data.heldout_labels)
    return metrics.per_class_accuracy(correct.cpu().numpy(), total.cpu().numpy())


def pool_table(run: Run, epoch: int | None = None) -> pd.DataFrame:
    """Per-class volume, S′, W, S and DSB weight from the pool (NaN without a pool)."""
    columns = ("S_prime", "W", "S", "weight", "volume")
    if run.pool is None:
        values = {k: np.full(run.data.num_classes, np.nan) for k in columns}
    else:
        values = {k: v.cpu().numpy() for k, v in run.pool.scales()._asdict().items()}
    table = pd.DataFrame({"class": np.arange(run.data.num_classes), **{k: values[k] for k in columns}})
    if epoch is not None:
        table.insert(0, "epoch", epoch)
    return table


def train_class_accuracy(run: Run, state: EpochState) -> np.ndarray:
    """Per-class accuracy of the epoch's running training counts (augmented batches, train mode), over the epoch's
    draws of each class (the class sizes, unless a sampler drew them)."""
    drawn = torch.bincount(run.data.train_labels[state.order], minlength=run.data.num_classes).cpu().numpy()
    return state.correct.cpu().numpy() / np.maximum(drawn, 1)


def end_epoch(run: Run, state: EpochState, history: dict) -> dict | None:
    """After a complete epoch: CDB update, pool and epoch rows, evaluation when due. Returns the test metrics or None."""
    c, n = run.config, len(run.data.train_labels)
    train_loss = float(state.loss_sum) / n  # the epoch's one host read of the running sums
    if not math.isfinite(train_loss):
        raise FloatingPointError(f"training loss is {train_loss} in epoch {state.epoch}: lower the learning rate?")
    if c.reweight == "cdb":
        run.loss.update_class_accuracy(torch.from_numpy(heldout_accuracy(run)))
    if run.pool is not None:
        history["pool"] += pool_table(run, state.epoch).to_dict("records")
    start = time.perf_counter()
    test = evaluate(run) if state.epoch == c.epochs or (c.eval_every and state.epoch % c.eval_every == 0) else None
    history["train_seconds"] += state.seconds
    history["epochs"].append({
        "epoch": state.epoch,
        "lr": learning_rate(c, state.epoch),
        "train_loss": train_loss,
        "train_acc": float(state.correct.sum()) / n,
        **{k: (test[k] if test else float("nan")) for k in ("top1", "balanced", "many", "medium", "few")},
        "img_per_s": n / state.seconds,
        "seconds": state.seconds,
        "eval_seconds": time.perf_counter() - start if test else 0.0,
    })
    return test


def _write_history(out: Path, history: dict) -> None:
    records.write_csv_atomic(out / "epochs.csv", pd.DataFrame(history["epochs"]))
    records.write_csv_atomic(out / "pool_history.csv", pd.DataFrame(
        history["pool"], columns=["epoch", "class", "S_prime", "W", "S", "weight", "volume"]))


# ---------------------------------------------------------------------------------------------------------
# train


def _start(config: TrainConfig, out: Path, resume: bool):
    """(run, next epoch, epoch state, history) of a new or resumed run, or the finished run's record."""
    checkpoint_path, run_path = out / "checkpoint.pt", out / "run.json"
    if not resume and (checkpoint_path.exists() or run_path.exists()):
        raise FileExistsError(f"{out} already holds a run: resume it (--resume) or choose another --out")
    if resume and records.run_complete(out):
        record = json.loads(run_path.read_text())
        checkpoint.check_same_config(record["config"], resolve(config, np.asarray(record["subset"]["class_counts"])))
        return record
    saved = checkpoint.load(checkpoint_path) if resume and checkpoint_path.exists() else None
    warn_combinations(config)
    device = resolve_device(config.device)
    train_data = pipeline.load_run_data(config, device)
    config = resolve(config, train_data.train_counts)
    if saved is not None:
        checkpoint.check_same_config(saved["config"], config)
    run = build_run(config, train_data, device)
    if saved is not None:
        return run, *checkpoint.restore(run, saved, new_epoch)
    if resume:
        warnings.warn(f"no checkpoint in {out}: starting a new run", UserWarning, stacklevel=3)
    history = {"epochs": [], "pool": [], "train_seconds": 0.0, "wall_seconds": 0.0,
               "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return run, 1, None, history


def train(config: TrainConfig, out_dir, resume: bool = False) -> dict:
    """Train one run into ``out_dir`` and return its record (also written to out_dir/run.json).

    ``resume``: continue from out_dir/checkpoint.pt (the config must match, see RESUMABLE_FIELDS); a finished
    run returns its record; an empty out_dir starts a new run. Without ``resume`` an out_dir that already
    holds a run is an error. Raises TrainingInterrupted after saving a checkpoint on SIGINT/SIGTERM or
    ``stop_after_epoch``. A config with a ``second_stage`` trains (or reads back) its first stage into
    out_dir/first_stage and runs the second stage into out_dir (:mod:`semscale.decoupling`).
    """
    if config.second_stage != "none":  # a two-stage run: the first stage into out_dir/first_stage, then the second
        from .decoupling import FIRST_STAGE_DIR, train_second_stage

        return train_second_stage(config, out_dir, Path(out_dir) / FIRST_STAGE_DIR, resume=resume)
    out, wall_start = Path(out_dir), time.perf_counter()
    started = _start(config, out, resume)
    if isinstance(started, dict):
        return started
    run, next_epoch, state, history = started
    config, checkpoint_path, n = run.config, out / "checkpoint.pt", len(run.data.train_labels)
    out.mkdir(parents=True, exist_ok=True)

    def save(next_epoch: int, current: EpochState | None) -> None:
        nonlocal wall_start
        history["wall_seconds"] += time.perf_counter() - wall_start
        wall_start = time.perf_counter()
        checkpoint.save(checkpoint_path, run, next_epoch, current, history)

    def stop_here(epoch: int, current: EpochState | None, reason: str, signum: int | None):
        save(epoch if current is not None else epoch + 1, current)
        where = f"epoch {epoch}, iteration {current.next_batch}/{run.num_batches}" if current else f"the end of epoch {epoch}"
        raise TrainingInterrupted(f"{reason}: stopped at {where}; checkpoint saved to {checkpoint_path}. Continue with the "
                                  f"same options plus --resume (python -m semscale.train ... --out {out} --resume) "
                                  f"or train(config, {str(out)!r}, resume=True)", out, signum)

    done = (next_epoch - 1) * n + (state.next_batch * config.batch_size if state else 0)
    bar = tqdm(total=config.epochs * n, initial=min(done, config.epochs * n), unit="img", unit_scale=True,
               disable=not config.progress, dynamic_ncols=True)
    test = None
    with checkpoint.stop_signals() as stop, bar:
        for epoch in range(next_epoch, config.epochs + 1):
            bar.set_description(f"epoch {epoch}/{config.epochs}")
            if state is None or state.epoch != epoch:
                state = new_epoch(run, epoch)
            train_epoch(run, state, lambda: stop.requested, bar)
            if state.next_batch < run.num_batches:
                stop_here(epoch, state, signal.Signals(stop.signum).name, stop.signum)
            test = end_epoch(run, state, history)
            row = history["epochs"][-1]
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", acc=f"{row['train_acc']:.3f}",
                            **({"test": f"{test['top1']:.3f}"} if test else {}))
            _write_history(out, history)
            if stop.requested:
                stop_here(epoch, None, signal.Signals(stop.signum).name, stop.signum)
            if epoch < config.epochs and epoch == config.stop_after_epoch:
                stop_here(epoch, None, f"stop_after_epoch={epoch}", None)
            if config.checkpoint_every and epoch % config.checkpoint_every == 0 and epoch < config.epochs:
                save(epoch + 1, None)

    history["wall_seconds"] += time.perf_counter() - wall_start
    return _finish(run, out, history, test, state)


def _finish(run: Run, out: Path, history: dict, test: dict, state: EpochState) -> dict:
    """Write per_class.csv, model.pt and run.json; drop the checkpoint."""
    c, d = run.config, run.data
    test_total = np.bincount(d.test_labels.cpu().numpy(), minlength=d.num_classes)
    per_class = pd.DataFrame({
        "class": np.arange(d.num_classes),
        "name": d.classes,
        "train_count": d.train_counts,
        "test_count": test_total,
        "group": metrics.shot_groups(d.train_counts),
        "accuracy": test["per_class"],
        "train_accuracy": train_class_accuracy(run, state),
    }).merge(pool_table(run), on="class")
    records.write_csv_atomic(out / "per_class.csv", per_class)
    records.save_torch_atomic(out / "model.pt", run.model.state_dict())
    last = history["epochs"][-1]
    images = c.epochs * len(d.train_labels)
    cdb = None
    if c.reweight == "cdb":
        cdb = {"difficulty": "eval-mode accuracy on a balanced held-out split of unused training images, after each epoch",
               "heldout_per_class": c.cdb_heldout, "heldout_from_subset": d.heldout_from_subset,
               "tau": run.loss.params["cdb_tau"]}
    record = {
        "status": "complete",
        "config": dataclasses.asdict(c),
        "protocol": {"name": c.protocol, "overrides": protocol_overrides(c)},
        "seed": c.seed,
        "dataset": c.dataset,
        "dataset_variant": d.variant,
        "subset": {"sha256": d.subset.sha256, "size": int(len(d.train_labels)), "class_counts": d.train_counts.tolist(),
                   "subset_seed": c.subset_seed, "n_max": d.n_max},
        "classes": list(d.classes),
        "normalization": {"kind": c.normalization, "mean": d.mean.flatten().tolist(), "std": d.std.flatten().tolist()},
        "loss": run.loss.config,
        "parameters": sum(p.numel() for p in run.model.parameters()),
        "engine": {"partial_batch": "kept", "lr_granularity": "epoch", "cdb": cdb, "logits": "float32",
                   "pool": "tracked" if run.pool is not None else "off",
                   "amp": "bf16" if run.bf16 else "none", "channels_last": run.memory_format == torch.channels_last,
                   **({"sampler": f"{c.sampler}: N draws with replacement per epoch"
                                  + ("; epoch 1 the plain permutation (pool fill)" if run.pool is not None else "")}
                      if c.sampler != "none" else {}),
                   **({"mwn": {"meta_per_class": c.mwn_meta_per_class, "lr": c.mwn_lr, "meta_set": "unused training images"}}
                      if c.mwn else {})},
        **records.provenance(run.device),
        "device_type": run.device.type,
        "threads": torch.get_num_threads(),
        "started": history["started"],
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": history["wall_seconds"],
        "train_seconds": history["train_seconds"],
        "img_per_s": images / history["train_seconds"],
        "final": {**{k: test[k] for k in ("top1", "balanced", "many", "medium", "few")},
                  "train_loss": last["train_loss"], "train_acc": last["train_acc"]},
    }
    records.write_json_atomic(out / "run.json", record)
    (out / "checkpoint.pt").unlink(missing_ok=True)
    return record


# ---------------------------------------------------------------------------------------------------------
# several seeds


SUMMARY_METRICS = ("top1", "balanced", "many", "medium", "few", "train_loss", "train_acc")


def run_seeds(config: TrainConfig, seeds, out_dir, resume: bool = False) -> dict:
    """Train ``config`` once per seed into out_dir/seed_<k>/; write summary.csv and summary.json (mean ± sample std)."""
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct and at least one, got {seeds}")
    out = Path(out_dir)
    finals = {s: train(dataclasses.replace(config, seed=s), out / f"seed_{s}", resume)["final"] for s in seeds}
    table = pd.DataFrame.from_dict(finals, orient="index")[list(SUMMARY_METRICS)]
    summary = pd.DataFrame({
        "metric": SUMMARY_METRICS,
        "mean": table.mean().to_numpy(),
        "std": table.std(ddof=1).to_numpy(),
        "n": table.count().to_numpy(),
        **{f"seed_{s}": table.loc[s].to_numpy() for s in seeds},
    })
    records.write_csv_atomic(out / "summary.csv", summary)
    result = {"config": {**dataclasses.asdict(config), "seed": None}, "seeds": seeds, "std": "sample (ddof=1)",
              "metrics": {m: {"mean": r["mean"], "std": r["std"], "n": int(r["n"]), "values": {str(s): r[f"seed_{s}"] for s in seeds}}
                          for m, r in summary.set_index("metric").iterrows()}}
    records.write_json_atomic(out / "summary.json", result)
    return result


# ---------------------------------------------------------------------------------------------------------
# CLI


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    resume = getattr(args, "resume", False)
    try:
        config = config_from_args(args)
        if getattr(args, "seeds", None) is not None:
            result = run_seeds(config, args.seeds, args.out, resume)
            lines = [f"{m}: {v['mean']:.4f} ± {v['std']:.4f} (n={v['n']})" for m, v in result["metrics"].items()]
            print(f"{len(result['seeds'])} seeds -> {args.out}/summary.csv\n" + "\n".join(lines))
        else:
            record = train(config, args.out, resume)
            final = record["final"]
            print(f"{record['dataset_variant']} -> {args.out}: " + ", ".join(f"{k} {v:.4f}" for k, v in final.items())
                  + f"; {record['img_per_s']:.0f} img/s, {record['wall_seconds']:.1f} s")
    except (ConfigError, FileExistsError, data.DatasetError) as e:
        parser.error(str(e))
    except TrainingInterrupted as e:
        command = " ".join(shlex.quote(a) for a in ["python", "-m", "semscale.train", *argv] if a != "--resume")
        print(f"{e}\nresume with: {command} --resume", file=sys.stderr)
        return 128 + e.signum if e.signum else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
