"""The training loop: one run of the engine, from a resolved config to its record files.

    record = train.train(config, "runs/x")                    # or: python -m semscale.train ... (semscale.cli)
    record = train.train(config, "runs/x", resume=True)       # continue from the checkpoint
    record = train.train(config, "runs/x", hooks=[MyHook()])  # observe it (build.Hooks)

A run is built by :mod:`semscale.build` (network, optimiser, loss, pool, schedule) on data that
:mod:`semscale.pipeline` keeps on the device; checkpoints and stop signals are :mod:`semscale.checkpoint`'s.
Two-stage configs (``second_stage``) go through :func:`semscale.cli.train_run`.

* DSB (PAPER.md §3, :mod:`semscale.pool`): the pool is kept for every run unless ``track_pool=False`` (one
  small scatter per iteration and one scale computation per epoch), so per_class.csv and pool_history.csv
  carry S′, W, S and weights for baselines too; only ``dsb=True`` weights the loss.
* CDB's difficulty is the per-class accuracy in eval mode on a balanced held-out split of unused training
  images after each epoch (PAPER.md §6); DRW gets ``set_epoch`` (0-based) before each epoch.
* No host sync inside an epoch: loss and per-class correct counts accumulate on the device and are read
  once per epoch. The progress bar counts images (rate = img/s).
* ``record_drift``: the run also measures how far each sample's pooled feature moves between visits
  (:mod:`semscale.drift`, drift_visits.csv and drift_epochs.csv).
* Outputs under ``out_dir`` (atomic writes): run.json, epochs.csv, per_class.csv (with the semantic scale of
  the final network's own features on its training subset and the test set: :func:`semscale.features.scale_columns`),
  pool_history.csv, model.pt (final weights); checkpoint.pt while the run is unfinished (every ``checkpoint_every`` epochs
  and on SIGINT/SIGTERM, which finish the current iteration, save and stop with exit status 128+signal; a signal
  that comes once the last epoch's iterations are done lets the run write its records instead).
"""

from __future__ import annotations

import math
import signal
import sys
import time
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import cache, checkpoint, features, metaweight, metrics, pipeline, records
from .build import PER_STEP_SCHEDULES, WHITEN_SAMPLE, Hooks, Run, build_run, learning_rate, resolve, resolve_device
from .checkpoint import TrainingInterrupted
from .config import ConfigError, TrainConfig, protocol_record, warn_combinations
from .drift import DriftRecorder
from .models import Airbench
from .pool import stage

__all__ = ["TrainConfig", "ConfigError", "TrainingInterrupted", "TrainingDiverged", "Hooks", "train"]


@dataclass
class EpochState:
    """An epoch in progress: what a mid-epoch checkpoint must hold besides the model."""

    epoch: int
    generator: torch.Generator
    order: torch.Tensor  # the epoch's permutation of sample ids
    loss_sum: torch.Tensor  # Σ batch loss × batch size (float64, device)
    correct: torch.Tensor  # running per-class correct counts (int64, device)
    flips: torch.Tensor | None = None  # alternating flip: which images this epoch flips (pipeline.epoch_flips)
    next_batch: int = 0
    seconds: float = 0.0


def new_epoch(run: Run, epoch: int) -> EpochState:
    generator = pipeline.epoch_generator(run.config.seed, epoch, run.device)
    order = pipeline.epoch_order(run.data, run.config, epoch, generator, pool_kept=run.pool is not None)
    return EpochState(epoch, generator, order, torch.zeros((), dtype=torch.float64, device=run.device),
                      torch.zeros(run.data.num_classes, dtype=torch.int64, device=run.device),
                      pipeline.epoch_flips(run.config, len(run.data.train_labels), epoch, run.device))


def train_step(run: Run, ids: torch.Tensor, x: torch.Tensor, y: torch.Tensor, weighting: bool,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step: forward, pool update, (DSB-weighted) loss, backward, optimiser step. Returns (loss, logits).

    With Meta-Weight-Net (``run.mwn``) the step is :func:`semscale.metaweight.weighted_step`, which draws its meta
    batch from ``generator`` (the epoch's) and takes DSB's weights from the pool before this batch enters it."""
    if run.mwn is not None:
        class_weights = run.dsb_weights(weighting)
        loss, logits = metaweight.weighted_step(run, ids, x, y, class_weights, generator)
    else:
        with run.autocast():
            logits, features = run.forward(x)
        run.store_features(ids, features)
        class_weights = run.dsb_weights(weighting)
        loss = run.loss(logits, y, class_weights=class_weights)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        loss, logits = loss.detach(), logits.detach()
    for hook in run.hooks:
        hook.after_step(run, ids, class_weights)
    return loss, logits


def begin_epoch(run: Run, state: EpochState) -> bool:
    """Before an epoch's first batch (or its resumed one): the epoch's learning rate (per-epoch schedules), the
    loss's epoch, airbench's whitening bias, the hooks' ``before_epoch``. Returns whether DSB weights the loss."""
    cfg = run.config
    if cfg.schedule not in PER_STEP_SCHEDULES:
        run.set_learning_rate(learning_rate(cfg, state.epoch))
    run.loss.set_epoch(state.epoch - 1, cfg.epochs)  # losses count epochs from 0
    if isinstance(run.model, Airbench):  # its whitening bias trains for the first epochs only (airbench94.py line 410)
        run.model.whiten.bias.requires_grad_(state.epoch <= cfg.whiten_bias_epochs)
    for hook in run.hooks:
        hook.before_epoch(run, state.epoch)
    run.model.train()
    return cfg.dsb and stage(state.epoch, cfg.dsb_stage_epochs) == "weight"


def next_step(run: Run, state: EpochState) -> int:
    """The 0-based index, over the whole run, of the epoch's next step."""
    return (state.epoch - 1) * run.num_batches + state.next_batch


def step_learning_rate(run: Run, state: EpochState) -> float | None:
    """The learning rate of the epoch's next step under a per-step schedule (airbench), None under a per-epoch one."""
    if run.config.schedule not in PER_STEP_SCHEDULES:
        return None
    return learning_rate(run.config, state.epoch, next_step(run, state), run.total_steps)


def count_batch(state: EpochState, y: torch.Tensor, loss: torch.Tensor, logits: torch.Tensor) -> None:
    """Add a trained batch to the epoch's running loss and per-class correct counts (on the device)."""
    state.loss_sum += loss.double() * len(y)
    state.correct.index_add_(0, y, (logits.argmax(1) == y).long())
    state.next_batch += 1


def train_epoch(run: Run, state: EpochState, should_stop: typing.Callable[[], bool] = lambda: False, bar=None) -> None:
    """Train from ``state.next_batch`` to the end of the epoch, or until ``should_stop()`` after an iteration."""
    weighting = begin_epoch(run, state)
    start = time.perf_counter()
    for ids, x, y in pipeline.batches(run.data, run.config, state.order, state.generator, state.next_batch,
                                      run.memory_format, state.flips):
        lr = step_learning_rate(run, state)
        if lr is not None:
            run.set_learning_rate(lr)
        loss, logits = train_step(run, ids, x, y, weighting, state.generator)
        if run.lookahead is not None:
            run.lookahead.step(next_step(run, state) + 1, run.total_steps)
        count_batch(state, y, loss, logits)
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
    """Test-set metrics (semscale.metrics.accuracy_summary) of the current model."""
    return metrics.accuracy_summary(*predict_counts(run, run.data.test_images, run.data.test_labels), run.data.train_counts)


def heldout_accuracy(run: Run) -> np.ndarray:
    """Per-class accuracy on CDB's balanced held-out split (eval mode)."""
    correct, total = predict_counts(run, run.data.heldout_images, run.data.heldout_labels)
    return metrics.per_class_accuracy(correct.cpu().numpy(), total.cpu().numpy())


POOL_COLUMNS = ("S_prime", "W", "S", "weight", "volume")


def pool_table(run: Run, epoch: int | None = None) -> pd.DataFrame:
    """Per-class volume, S′, W, S and DSB weight from the pool (NaN without a pool)."""
    if run.pool is None:
        values = {k: np.full(run.data.num_classes, np.nan) for k in POOL_COLUMNS}
    else:
        values = {k: v.cpu().numpy() for k, v in run.pool.scales()._asdict().items()}
    table = pd.DataFrame({"class": np.arange(run.data.num_classes), **{k: values[k] for k in POOL_COLUMNS}})
    if epoch is not None:
        table.insert(0, "epoch", epoch)
    return table


def train_class_accuracy(run: Run, state: EpochState) -> np.ndarray:
    """Per-class accuracy of the epoch's running training counts (augmented batches, train mode), over the epoch's
    draws of each class (the class sizes, unless a sampler drew them)."""
    drawn = torch.bincount(run.data.train_labels[state.order], minlength=run.data.num_classes).cpu().numpy()
    return state.correct.cpu().numpy() / np.maximum(drawn, 1)


class TrainingDiverged(FloatingPointError):
    """The run's loss, weights or semantic scales stopped being finite numbers: its results would be garbage."""


def check_finite(run: Run, epoch: int, pool: pd.DataFrame | None) -> None:
    """TrainingDiverged unless the network's parameters and the epoch's ``pool`` table (S′, W, S and the volumes;
    DSB's weights when it weights) are finite. A class of one image has a finite S of 0 and, outside DSB, an
    undefined weight, which is no divergence."""
    c = run.config
    broken = [name for name, p in run.model.named_parameters() if not torch.isfinite(p).all()]
    what = f"the network's {', '.join(broken[:3])}{', ...' if len(broken) > 3 else ''}" if broken else None
    if what is None and pool is not None:
        columns = ["S_prime", "W", "S", "volume"] + (["weight"] if c.dsb else [])
        bad = [k for k in columns if not np.isfinite(pool[k].to_numpy()).all()]
        if bad:
            classes = pool["class"][~np.isfinite(pool[bad[0]].to_numpy())].tolist()
            what = f"the feature pool's {', '.join(bad)} (classes {classes[:10]}{' ...' if len(classes) > 10 else ''})"
    if what:
        raise TrainingDiverged(f"training diverged in epoch {epoch}: {what} are not finite (learning rate {c.lr:g}: "
                               f"try a lower one); nothing was recorded as complete")


def end_epoch(run: Run, state: EpochState, history: dict) -> dict | None:
    """After a complete epoch: CDB update, pool and epoch rows, evaluation when due, the hooks' ``after_epoch``.
    Returns the test metrics or None."""
    c, n = run.config, len(run.data.train_labels)
    train_loss = float(state.loss_sum) / n  # the epoch's one host read of the running sums
    if not math.isfinite(train_loss):
        raise TrainingDiverged(f"training diverged in epoch {state.epoch}: the training loss is {train_loss} "
                               f"(learning rate {c.lr:g}: try a lower one); nothing was recorded as complete")
    heldout = heldout_accuracy(run) if c.reweight == "cdb" else None  # CDB's difficulty; eval_heldout reuses it
    if heldout is not None:
        run.loss.update_class_accuracy(torch.from_numpy(heldout))
    pool = pool_table(run, state.epoch) if run.pool is not None else None
    check_finite(run, state.epoch, pool)
    if pool is not None:
        history["pool"] += pool.to_dict("records")
    start = time.perf_counter()
    test = evaluate(run) if state.epoch == c.epochs or (c.eval_every and state.epoch % c.eval_every == 0) else None
    selection = {}
    if c.eval_heldout:  # selecting an epoch on unused training images, never on the test set
        if test and heldout is None:
            heldout = heldout_accuracy(run)
        selection = {"heldout_top1": float(np.mean(heldout)) if test else float("nan")}
    history["train_seconds"] += state.seconds
    history["epochs"].append({
        "epoch": state.epoch,
        "lr": learning_rate(c, state.epoch, (state.epoch - 1) * run.num_batches, run.total_steps),  # at its first step
        "train_loss": train_loss,
        "train_acc": float(state.correct.sum()) / n,
        **{k: (test[k] if test else float("nan")) for k in ("top1", "balanced", "many", "medium", "few")}, **selection,
        "img_per_s": n / state.seconds,
        "seconds": state.seconds,
        "eval_seconds": time.perf_counter() - start if test else 0.0,
    })
    for hook in run.hooks:
        hook.after_epoch(run, state.epoch, test)
    return test


def _write_history(out: Path, history: dict) -> None:
    records.write_csv_atomic(out / "epochs.csv", pd.DataFrame(history["epochs"]))
    records.write_csv_atomic(out / "pool_history.csv", pd.DataFrame(history["pool"], columns=["epoch", "class", *POOL_COLUMNS]))
    if "drift" in history:
        for name, table in DriftRecorder.tables(history["drift"]).items():
            records.write_csv_atomic(out / f"drift_{name}.csv", table)


# ---------------------------------------------------------------------------------------------------------
# train


def _start(config: TrainConfig, out: Path, resume: bool, hooks, train_data: pipeline.TrainData | None = None):
    """(run, next epoch, epoch state, history) of a new or resumed run, or the finished run's record. ``train_data``:
    the run's data when it is already loaded (the members of a stack share theirs, :mod:`semscale.stack`)."""
    checkpoint_path, run_path = out / "checkpoint.pt", out / "run.json"
    if not resume and (checkpoint_path.exists() or run_path.exists()):
        raise FileExistsError(f"{out} already holds a run: resume it (--resume) or choose another --out")
    moved = cache.set_aside_damage(out) if resume else None
    if moved:
        warnings.warn(moved, UserWarning, stacklevel=3)
    if resume:
        state = cache.inspect_run(out)
        if state.complete:
            counts = np.asarray(state.record["subset"]["class_counts"])
            checkpoint.check_same_config(state.record["config"], resolve(config, counts))
            return state.record
    saved = _read_checkpoint(checkpoint_path) if resume and checkpoint_path.exists() else None
    warn_combinations(config)
    device = resolve_device(config.device)
    train_data = pipeline.load_run_data(config, device) if train_data is None else train_data
    config = resolve(config, train_data.train_counts)
    if saved is not None:
        checkpoint.check_same_config(saved["config"], config)
    if saved is not None:
        history = saved["history"]
    else:
        if resume and not moved:
            warnings.warn(f"no checkpoint in {out}: starting a new run", UserWarning, stacklevel=3)
        history = {"epochs": [], "pool": [], "train_seconds": 0.0, "wall_seconds": 0.0, "started": records.now()}
    hooks = list(hooks)
    if config.record_drift:
        hooks.append(DriftRecorder(history.setdefault("drift", DriftRecorder.new_state())))
    run = build_run(config, train_data, device, hooks)
    if saved is not None:
        next_epoch, state = checkpoint.restore(run, saved, new_epoch)
        return run, next_epoch, state, history
    return run, 1, None, history


def _read_checkpoint(path: Path) -> dict:
    try:
        return checkpoint.read(path)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever torch.load says of a broken file, the file is broken
        raise cache.DamagedRun(f"{path} cannot be read as a checkpoint ({type(e).__name__}); move it aside (or delete "
                               f"it) to train the run again from the start") from None


def train(config: TrainConfig, out_dir, resume: bool = False, hooks: typing.Iterable[Hooks] = ()) -> dict:
    """Train one run into ``out_dir`` and return its record (also written to out_dir/run.json).

    ``resume``: continue from out_dir/checkpoint.pt (the config must match, see RESUMABLE_FIELDS); a finished
    run returns its record; an empty out_dir starts a new run; a damaged one is moved aside first
    (:func:`semscale.cache.set_aside_damage`). Without ``resume`` an out_dir that already holds a run is an error.
    Raises TrainingInterrupted after saving a checkpoint on SIGINT/SIGTERM or ``stop_after_epoch``, and
    TrainingDiverged when the loss, the network or the pool's scales stop being finite (nothing is recorded as
    complete). ``hooks`` observe the run (:class:`semscale.build.Hooks`).
    """
    if config.second_stage != "none":
        raise ConfigError(f"second_stage {config.second_stage!r} is a two-stage run: train it with "
                          f"semscale.cli.train_run (python -m semscale.train), which trains its first stage too")
    out, wall_start = Path(out_dir), time.perf_counter()
    started = _start(config, out, resume, hooks)
    if isinstance(started, dict):
        return started
    run, next_epoch, state, history = started
    config, checkpoint_path, n = run.config, out / "checkpoint.pt", len(run.data.train_labels)
    out.mkdir(parents=True, exist_ok=True)

    def save(next_epoch: int, current: EpochState | None) -> None:
        nonlocal wall_start
        history["wall_seconds"] += time.perf_counter() - wall_start
        wall_start = time.perf_counter()
        with stop.writing():  # a further stop signal waits for the file
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
            if stop.requested and epoch < config.epochs:  # after the last epoch the run finishes: only its records are left
                stop_here(epoch, None, signal.Signals(stop.signum).name, stop.signum)
            if epoch < config.epochs and epoch == config.stop_after_epoch:
                stop_here(epoch, None, f"stop_after_epoch={epoch}", None)
            if config.checkpoint_every and epoch % config.checkpoint_every == 0 and epoch < config.epochs:
                save(epoch + 1, None)

    history["wall_seconds"] += time.perf_counter() - wall_start
    return _finish(run, out, history, test, state)


def describe(run: Run) -> dict:
    """run.json's description of what a run trained on and with: seed, data, subset, loss, network, engine."""
    c, d = run.config, run.data
    cdb = None
    if c.reweight == "cdb":
        cdb = {"difficulty": "eval-mode accuracy on a balanced held-out split of unused training images, after each epoch",
               "heldout_per_class": c.cdb_heldout, "heldout_from_subset": d.heldout_from_subset,
               "tau": run.loss.params["cdb_tau"]}
    return {
        "seed": c.seed,
        "dataset": c.dataset,
        "dataset_variant": d.variant,
        "subset": {"sha256": d.subset.sha256, "size": int(len(d.train_labels)), "class_counts": d.train_counts.tolist(),
                   "subset_seed": c.subset_seed, "n_max": d.n_max},
        "classes": list(d.classes),
        "normalization": {"kind": c.normalization, "mean": d.mean.flatten().tolist(), "std": d.std.flatten().tolist()},
        "loss": run.loss.config,
        "parameters": sum(p.numel() for p in run.model.parameters()),
        "engine": {"partial_batch": "kept", "lr_granularity": "step" if c.schedule in PER_STEP_SCHEDULES else "epoch",
                   "cdb": cdb, "logits": "float32",
                   "pool": "tracked" if run.pool is not None else "off",
                   "amp": "bf16" if run.precision == "bf16" else "none", "precision": run.precision,
                   "channels_last": run.memory_format == torch.channels_last,
                   **({"lookahead": f"every {run.lookahead.EVERY} steps, decay 0.95^5 (t/T)^3"} if run.lookahead else {}),
                   **({"whitening": f"2x2, initialised from {min(WHITEN_SAMPLE, len(d.train_labels))} training images "
                                    f"(seeded draw), bias frozen after epoch {c.whiten_bias_epochs}"}
                      if isinstance(run.model, Airbench) else {}),
                   **({"sampler": f"{c.sampler}: N draws with replacement per epoch"
                                  + ("; epoch 1 the plain permutation (pool fill)" if run.pool is not None else "")}
                      if c.sampler != "none" else {}),
                   **({"mwn": {"meta_per_class": c.mwn_meta_per_class, "lr": c.mwn_lr, "meta_set": "unused training images"}}
                      if c.mwn else {})},
    }


def _finish(run: Run, out: Path, history: dict, test: dict, state: EpochState, stack: dict | None = None) -> dict:
    """Write per_class.csv, model.pt and run.json (with ``stack``: how the run was stacked); drop the checkpoint."""
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
    }).merge(pool_table(run), on="class").merge(features.scale_columns(run.model, d, c.pool_dim), on="class")
    records.write_csv_atomic(out / "per_class.csv", per_class)
    records.save_torch_atomic(out / "model.pt", run.model.state_dict())
    last = history["epochs"][-1]
    record = records.run_record(
        c, protocol_record(c), describe(run), run.device, started=history["started"],
        wall_seconds=history["wall_seconds"], train_seconds=history["train_seconds"],
        img_per_s=c.epochs * len(d.train_labels) / history["train_seconds"],
        final={**{k: test[k] for k in ("top1", "balanced", "many", "medium", "few")},
               "train_loss": last["train_loss"], "train_acc": last["train_acc"]})
    if stack is not None:
        record["stack"] = stack
    records.write_json_atomic(out / "run.json", record)
    (out / "checkpoint.pt").unlink(missing_ok=True)
    return record


if __name__ == "__main__":  # python -m semscale.train: the command line lives in semscale.cli
    from semscale.cli import main

    sys.exit(main())
