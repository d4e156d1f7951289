"""Checkpoints and stop signals: a run stopped by SIGINT/SIGTERM (or ``stop_after_epoch``) continues bit-identically.

The first SIGINT/SIGTERM asks the training loop to stop after the current iteration; it then saves a
checkpoint and raises ``TrainingInterrupted``. A second signal stops at once (KeyboardInterrupt). The learning
rate is a function of the epoch, so no scheduler state is saved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import threading
from pathlib import Path

import torch

from . import records
from .config import ADDED_FIELDS, RESUMABLE_FIELDS, ConfigError, TrainConfig

CHECKPOINT_FORMAT = 2  # 2: configs carry `protocol` and `cdb_heldout`


class TrainingInterrupted(RuntimeError):
    """The run stopped early (signal or ``stop_after_epoch``) after saving a checkpoint."""

    def __init__(self, message: str, out_dir: Path, signum: int | None):
        super().__init__(message)
        self.out_dir = out_dir
        self.signum = signum


#: Whether a second stop signal stops a run at once (a user pressing Ctrl-C twice). A sweep's worker process sets it
#: False: nobody is at its keyboard, and a second signal (the sweep's own SIGTERM, then the parent-death signal) must
#: not cut off the checkpoint the first one asked for.
REPEAT_STOPS_NOW = True


class StopRequest:
    """Signal handler: the first SIGINT/SIGTERM asks to stop after the current iteration, a second one stops now
    (``REPEAT_STOPS_NOW``), except while a checkpoint is written (``saving``): then it waits for the file."""

    def __init__(self):
        self.signum: int | None = None
        self.saving, self.pending = False, False

    def __call__(self, signum, frame):
        if self.signum is None:
            self.signum = signum
        elif self.saving:
            self.pending = True
        elif REPEAT_STOPS_NOW:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def writing(self):
        """While the block writes a checkpoint, a second signal waits for it (and then stops at once)."""
        self.saving = True
        try:
            yield
        finally:
            self.saving = False
        if self.pending and REPEAT_STOPS_NOW:
            raise KeyboardInterrupt

    @property
    def requested(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def stop_signals():
    """A ``StopRequest`` installed for SIGINT and SIGTERM while the block runs (main thread only)."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():  # signal handlers only work there
        yield stop
        return
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def save(path: Path, run, next_epoch: int, state, history: dict) -> None:
    """Everything needed to continue exactly (``run``: a build.Run; ``state``: the train.EpochState or None)."""
    obj = {
        "format": CHECKPOINT_FORMAT,
        "config": dataclasses.asdict(run.config),
        "next_epoch": next_epoch,
        "epoch_state": None if state is None else {
            "generator": state.generator.get_state(),
            "loss_sum": state.loss_sum,
            "correct": state.correct,
            "next_batch": state.next_batch,
            "seconds": state.seconds,
        },
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "loss": run.loss.state_dict(),
        "pool": None if run.pool is None else run.pool.state_dict(),
        "mwn": None if run.mwn is None else run.mwn.state_dict(),
        "lookahead": None if run.lookahead is None else run.lookahead.state_dict(),
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        "history": history,
    }
    records.save_torch_atomic(path, obj)


def read(path: Path) -> dict:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path} has checkpoint format {checkpoint.get('format')}, this code reads {CHECKPOINT_FORMAT}: "
                          f"delete it to train the run again")
    return checkpoint


def restore(run, checkpoint: dict, new_epoch) -> tuple[int, object]:
    """Load the checkpoint into ``run`` (a build.Run); returns (next epoch, the EpochState to continue or None).
    The run's history is ``checkpoint["history"]``.

    ``new_epoch(run, epoch)`` rebuilds an epoch's permutation, whose generator is then set where it stopped.
    """
    run.model.load_state_dict(checkpoint["model"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    for group in run.optimizer.param_groups:  # a checkpoint of the earlier engine: one group at the schedule's rate
        group.setdefault("lr_scale", 1.0)
    run.loss.load_state_dict(checkpoint["loss"])
    if run.pool is not None:
        run.pool.load_state_dict(checkpoint["pool"])
    if run.mwn is not None:
        run.mwn.load_state_dict(checkpoint["mwn"])
    if run.lookahead is not None:
        run.lookahead.load_state_dict(checkpoint["lookahead"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    if checkpoint["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
    epoch, saved = checkpoint["next_epoch"], checkpoint["epoch_state"]
    state = None
    if saved is not None:
        state = new_epoch(run, epoch)
        state.generator.set_state(saved["generator"])
        state.loss_sum.copy_(saved["loss_sum"])
        state.correct.copy_(saved["correct"])
        state.next_batch, state.seconds = saved["next_batch"], saved["seconds"]
    return epoch, state


def check_same_config(saved: dict, config: TrainConfig) -> None:
    """ConfigError unless ``config`` equals the ``saved`` one in every field outside RESUMABLE_FIELDS."""
    saved, now = (json.loads(json.dumps(d)) for d in (saved, dataclasses.asdict(config)))  # tuples vs JSON lists
    saved = {**ADDED_FIELDS, **saved}  # written before those fields existed: their defaults
    differ = [f"{k}: checkpoint {saved.get(k)!r}, now {now[k]!r}" for k in now
              if k not in RESUMABLE_FIELDS and saved.get(k) != now[k]]
    if differ:
        raise ConfigError("cannot resume with a different config (only " + ", ".join(RESUMABLE_FIELDS)
                          + " may change):\n  " + "\n  ".join(differ))
