"""Sweeps: a grid of training runs in one call, cached by config, resumable, in parallel or on Slurm.

    points = sweep.grid(base, method=methods.METHODS, imbalance=[100, 10], seed=[0, 1, 2])
    tables = results.collect(sweep.run(points, cache.runs_dir(), jobs=2))   # .runs, .per_class, .epochs, .pool
    results.summarize(tables.runs, by=["method", "imbalance"])              # mean, sample std, n of top1, ...

* ``run`` trains each config into ``root/<readable-name>-<hash>/`` (:mod:`semscale.cache`), so the same config
  lands in the same folder from any notebook; each run goes through :func:`semscale.cli.train_run`, as on the
  command line. A complete run is read back, an interrupted one resumes from its checkpoint, a damaged one
  (a record file missing or cut off, a checkpoint that is no checkpoint) is moved aside and trained again. A
  failing run (bad config, a loss or scale that is no longer finite, out of memory) is recorded in
  ``failed.json`` and the others go on. A run that failed by itself is not tried again on the next call
  (``retry_failed=True`` does, and so does a change of the code); one that failed for want of memory, disk or data,
  or whose worker was killed, is. One log line per run; in a live notebook or on a terminal also one ``tqdm.auto``
  bar for the sweep (runs done / to train, and the epoch each run in training has reached), none in headless logs.
* Each run is trained holding its folder's lock (:func:`semscale.cache.run_lock`), so sweeps on one root can run
  at once: a run that another process is training is left for last, then waited for and read back.
* ``jobs=K`` runs K configs at once in spawned worker processes (CUDA: K processes on one GPU). CPU kernels
  give bit-different results with different thread counts (measured: a CNN after 20 Adam steps differs
  between 1 and 2 threads), so each run's thread count is ``threads`` (default: the cores split between the
  jobs) and is recorded; with the same ``threads``, ``jobs=K`` equals ``jobs=1`` bit for bit.
* Stopping: Ctrl-C or SIGTERM starts no new run, lets every running run save its checkpoint (or finish, if it is
  writing its record) and raises :class:`SweepInterrupted`, whose one line says what was kept; calling ``run``
  again resumes. Workers die with
  the sweep's process (Linux's parent-death signal; elsewhere a thread that watches the parent), checkpointing
  first, so a killed sweep leaves no process behind.
* ``stack=K`` (or ``"auto"``: :func:`semscale.stack.auto_size`, 1 on the CPU) trains compatible points K at a time as
  one network (:mod:`semscale.stack`); each member lands in its own folder with the files of a separate run. A member
  whose training diverges leaves its stack (its failure recorded in its folder) and the others go on; a stack that
  fails otherwise (a config refused, out of memory, ...) is trained again member by member, each failure recorded in
  its own folder. Stacks need ``jobs=1`` and the local executor.
* ``executor="slurm"`` sends the runs to a Slurm cluster through submitit (``Slurm`` sets partition, GPUs,
  time and runs per job); ``Slurm(cluster="local")`` or ``"debug"`` uses submitit's local executors.
* ``SEMSCALE_RENDER_ONLY=1`` (``./run_all.sh --render-only``, always for the ``gpu`` profile): complete runs are read
  back and a run that would have to be trained raises :class:`RunsMissing` naming the command that trains it; the
  command line (``python -m semscale.sweep``: a notebook's grid under a profile, a deadline, pack and unpack) is
  :mod:`semscale.sweep_cli`'s.
* Every run.json records a sha256 of the ``semscale`` sources; a cached run made by other code is reported
  (``stale="warn"``) or moved aside and trained again (``stale="rerun"``).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import dataclasses
import hashlib
import itertools
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import filelock
import torch
from tqdm import tqdm

from . import cache, checkpoint, progress, records
from . import stack as stacking  # `stack` is run()'s argument
from .cache import run_name
from .checkpoint import StopRequest, TrainingInterrupted
from .cli import train_run
from .config import ConfigError, TrainConfig, first_stage
from .data import DatasetError

STATUSES = ("trained", "resumed", "cached", "failed", "submitted")
RENDER_ONLY = "SEMSCALE_RENDER_ONLY"  # set (runner --render-only): a sweep reads back what is cached and trains nothing
_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
# failures of the run's surroundings (memory, disk, files, the data), which may be gone on the next call: tried again
TRANSIENT = (MemoryError, torch.OutOfMemoryError, OSError, DatasetError)


# ---------------------------------------------------------------------------------------------------------
# grid


@dataclass(frozen=True)
class Point:
    """One config of a grid: the TrainConfig fields to set and the labels that name it (axis -> value or name)."""

    fields: dict[str, Any]
    labels: dict[str, Any] = field(default_factory=dict)

    def config(self) -> TrainConfig:
        return TrainConfig(**self.fields)


def explicit_fields(config: TrainConfig) -> dict[str, Any]:
    """The fields of ``config`` that differ from the defaults of its dataset and protocol (plus those two).

    Preset-resolved values are left out, so that a grid axis that changes the dataset or the protocol resolves
    them anew. ``progress`` (decided where the run executes) is left out too.
    """
    default = dataclasses.asdict(TrainConfig(dataset=config.dataset, protocol=config.protocol))
    values = dataclasses.asdict(config)
    keep = {k: v for k, v in values.items() if v != default[k] and k != "progress"}
    return {"dataset": config.dataset, "protocol": config.protocol, **keep}


def grid(base: TrainConfig | dict, **axes) -> list[Point]:
    """The cartesian product of ``axes`` over ``base`` (the last axis varies fastest).

    An axis is a list of values of the config field of that name (``imbalance=[100, 10]``) or a dict of named
    field sets (``method=METHODS``), whose names become the label. Later axes override earlier ones and the base.
    """
    fields = explicit_fields(base) if isinstance(base, TrainConfig) else dict(base)
    _check_names(fields, "base")
    options = []
    for axis, values in axes.items():
        if isinstance(values, (dict, list, tuple, range)) and not len(values):
            raise ConfigError(f"axis {axis!r} is empty: the grid would have no point (give it at least one value)")
        if isinstance(values, dict):
            for name, subset in values.items():
                if not isinstance(subset, dict):
                    raise ConfigError(f"axis {axis!r}: a named value must be a dict of config fields, got {name!r}: {subset!r}")
                _check_names(subset, f"axis {axis!r} value {name!r}")
            options.append([(name, dict(subset)) for name, subset in values.items()])
        else:
            if axis not in _FIELDS:
                raise ConfigError(f"axis {axis!r} is not a config field and not a dict of named field sets; "
                                  f"fields: {', '.join(_FIELDS)}")
            values = list(values) if isinstance(values, (list, tuple, range)) else [values]
            options.append([(v, {axis: v}) for v in values])
    points = []
    for combination in itertools.product(*options):
        merged, labels = dict(fields), {}
        for axis, (label, subset) in zip(axes, combination):
            merged.update(subset)
            labels[axis] = label
        points.append(Point(merged, labels))
    return points


def _check_names(fields: dict, where: str) -> None:
    unknown = sorted(set(fields) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"{where}: unknown config field(s) {unknown}; fields: {', '.join(_FIELDS)}")


# ---------------------------------------------------------------------------------------------------------
# run


@dataclass
class Result:
    """What happened to one point: ``status`` is one of STATUSES; ``record`` is run.json when complete."""

    name: str
    path: Path
    labels: dict[str, Any]
    config: TrainConfig | None
    status: str
    seconds: float = 0.0
    record: dict | None = None
    error: str | None = None

    @property
    def top1(self) -> float:
        return self.record["final"]["top1"] if self.record else float("nan")


@dataclass
class Slurm:
    """Where and how ``run(..., executor="slurm")`` submits (submitit parameters; ``extra`` adds any other)."""

    partition: str | None = None
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    timeout_min: int = 240
    runs_per_job: int = 1
    cluster: str | None = None  # None: Slurm; "local" or "debug": submitit's local executors
    wait: bool = True  # False: return at once with status "submitted"; collect(root) later
    extra: dict[str, Any] = field(default_factory=dict)


class _Progress:
    """The sweep's one bar (``progress.bar``: drawn only in a live notebook or on a terminal): runs trained of those to
    train, and as postfix the epoch each run in training has reached, read from its epochs.csv once a second by a
    thread (the runs train in worker processes). ``log`` writes through the bar, so lines and bar do not mix."""

    def __init__(self, total: int, log):
        self.bar = progress.bar(total=total, desc="training runs", unit="run")
        self.training: dict[str, Result] = {}
        self.log = (lambda line: self.bar.write(str(line))) if log is print and not self.bar.disable else log
        self._stop = threading.Event()
        self._watcher = None
        if not self.bar.disable and total:
            self._watcher = threading.Thread(target=self._watch, name="semscale-sweep-progress", daemon=True)
            self._watcher.start()

    def started(self, r: Result) -> None:
        self.training[r.name] = r

    def finished(self, r: Result) -> None:
        if self.training.pop(r.name, None) is not None:
            self.bar.update(1)

    def set_aside(self, r: Result) -> None:
        """``r`` left its worker unfinished (busy elsewhere, interrupted): no longer training, not done."""
        self.training.pop(r.name, None)

    def epochs(self) -> str:
        """'<run>: epoch k/E' for every run in training (k: the epochs its epochs.csv holds)."""
        parts = []
        for r in list(self.training.values()):
            what = "second stage" if r.config.second_stage != "none" else f"epoch {_epochs_done(r.path)}/{r.config.epochs}"
            parts.append(f"{r.name.rsplit('-', 1)[0]}: {what}")
        return "; ".join(parts)

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            self.bar.set_postfix_str(self.epochs())

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
        self.bar.close()


def _epochs_done(path: Path) -> int:
    """How many epochs the run in ``path`` has recorded (lines of its epochs.csv after the header)."""
    try:
        with open(path / "epochs.csv", "rb") as f:
            return max(0, sum(1 for _ in f) - 1)
    except OSError:
        return 0


class RunsMissing(RuntimeError):
    """A render-only sweep (``SEMSCALE_RENDER_ONLY=1``) found runs it would have to train."""


class SweepInterrupted(TrainingInterrupted):
    """The sweep stopped early (a signal, or a run's ``stop_after_epoch``); the message says what was kept."""


def run(points: Iterable[Point | TrainConfig | dict], root, *, jobs: int = 1, threads: int | None = None,
        executor: str = "local", slurm: Slurm | None = None, stale: str = "warn", retry_failed: bool = False,
        stack: int | str = 1, log=print) -> list[Result]:
    """Train every point into ``root`` (see the module docstring); returns one Result per point, in order.

    ``retry_failed``: train the runs that failed on an earlier call again (otherwise they are reported as failed).
    ``stack``: members per stacked network (an int, or "auto")."""
    if executor not in ("local", "slurm"):
        raise ValueError(f"executor must be 'local' or 'slurm', got {executor!r}")
    if stale not in ("warn", "rerun"):
        raise ValueError(f"stale must be 'warn' or 'rerun', got {stale!r}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if stack != "auto" and (not isinstance(stack, int) or stack < 1):
        raise ValueError(f"stack must be a number of members >= 1 or 'auto', got {stack!r}")
    if stack != 1 and (jobs != 1 or executor != "local"):
        raise ValueError(f"stack={stack!r} trains in this process: it needs jobs=1 and executor='local'")
    root = Path(root)
    start = time.perf_counter()
    results = [_prepare(p, root, retry_failed) for p in points]
    source, stale_names, rerun, todo = records.source_sha256(), [], set(), {}
    for r in results:
        if r.status == "cached" and (r.path / "checkpoint.pt").exists():
            _tidy(r.path, log)
        if r.status == "cached" and r.record.get("source_sha256") != source:
            if stale == "rerun":
                rerun.add(r.name)
                r.status, r.record = "trained", None
            else:
                stale_names.append(r.name)
        if r.status in ("trained", "resumed"):
            todo.setdefault(r.name, []).append(r)
        else:  # cached, or failed (an invalid config, or a failure recorded before)
            _log_result(r, log)
    if stale_names:
        warnings.warn(f"{len(stale_names)} cached run(s) were made by other semscale code (source sha256 differs), "
                      f"e.g. {stale_names[0]}; run(..., stale='rerun') trains them again", UserWarning, stacklevel=2)
    leaders = [group[0] for group in todo.values()]
    # two-stage configs (decoupling, post-hoc LA) go after every first stage: their first stages (the same configs
    # without the second stage) are trained with the one-stage runs, shared, and not returned unless asked for
    second = [r for r in leaders if r.config.second_stage != "none"]
    first = [r for r in leaders if r.config.second_stage == "none"]
    for r in second:
        hidden = _prepare(first_stage(r.config), root, retry_failed)  # where cli.first_stage_dir puts it
        if hidden.status in ("trained", "resumed") and hidden.name not in todo and all(h.name != hidden.name for h in first):
            first.append(hidden)
    if (first or second) and os.environ.get(RENDER_ONLY, "") not in ("", "0"):
        missing = first + second
        raise RunsMissing(f"{len(missing)} run(s) of this sweep are not in {root} (e.g. {missing[0].name}) and "
                          f"{RENDER_ONLY} forbids training here: train them where the accelerator is (python -m "
                          "semscale.sweep --profile P --notebook NN), bring them back (python -m semscale.sweep pack / "
                          "unpack), or render with training allowed")
    bar = _Progress(len(first) + len(second), log) if executor == "local" else None
    log = bar.log if bar else log
    try:
        for batch in (first, second):
            if executor == "slurm":
                if batch is second and not (slurm or Slurm()).wait:
                    for r in second:
                        _finish_result(r, Outcome("failed", error="second stage not run: its first stage was submitted "
                                                  "(wait=False); call run() again when the Slurm jobs have finished"), log)
                    continue
                _run_slurm(batch, root, slurm or Slurm(), threads, rerun, log)
            elif jobs == 1:
                size = stack if stack != "auto" else stacking.auto_size(batch[0].config.device) if batch else 1
                _run_here(batch, threads, rerun, log, bar, size)
            else:
                _run_workers(batch, jobs, threads or max(1, (os.cpu_count() or 1) // jobs), rerun, log, bar)
    except _Stopped as stop:
        raise SweepInterrupted(_interruption(stop.reason, results, root), root, stop.signum) from None
    finally:
        if bar:
            bar.close()
    for group in todo.values():  # the same config twice in the list: trained once
        for r in group[1:]:
            r.status, r.seconds, r.record, r.error = group[0].status, group[0].seconds, group[0].record, group[0].error
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    log(f"{len(results)} runs in {time.perf_counter() - start:.0f} s: "
        + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" -> {root}")
    return results


def cached(points: Iterable[Point | TrainConfig | dict], root) -> list[Result]:
    """The points whose run is finished in ``root``, read back (labels kept); nothing is trained."""
    return [r for r in (_prepare(p, Path(root)) for p in points) if r.status == "cached"]


def _prepare(point, root: Path, retry_failed: bool = False) -> Result:
    """A Result with the folder and what is to be done: cached (complete), resumed, trained, or failed (a bad config,
    which gets no folder, or a failure recorded before and not to be retried)."""
    if isinstance(point, Point):
        fields, labels = point.fields, dict(point.labels)
    elif isinstance(point, TrainConfig):
        fields, labels = point, {}
    else:
        fields, labels = dict(point), {}
    try:
        config = fields if isinstance(fields, TrainConfig) else TrainConfig(**fields)
    except (ConfigError, TypeError) as e:
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:10]
        return Result(f"invalid-{digest}", root / f"invalid-{digest}", labels, None, "failed", error=f"invalid config: {e}")
    name = run_name(config)
    path = root / name
    state = cache.inspect_run(path)
    if state.complete:
        return Result(name, path, labels, config, "cached", record=state.record)
    error = None if retry_failed or state.problem else _failed_before(path)
    if error:
        return Result(name, path, labels, config, "failed", error=f"{error} (failed before, see failed.json; "
                                                                  f"sweep.run(..., retry_failed=True) trains it again)")
    return Result(name, path, labels, config, "resumed" if (path / "checkpoint.pt").exists() else "trained")


def _failed_before(path: Path) -> str | None:
    """The last line of the error recorded in path/failed.json if the run is not to be tried again: it failed by
    itself (not for want of memory, disk or data: ``retry``) with the code that runs now (a change may fix it)."""
    try:
        failure = json.loads((path / "failed.json").read_text())
        if failure.get("retry", True) or failure.get("source_sha256") != records.source_sha256():
            return None
        return str(failure["error"]).strip().splitlines()[-1]
    except (OSError, ValueError, AttributeError, KeyError, IndexError):
        return None


def _tidy(path: Path, log) -> None:
    """Move a checkpoint left beside a complete run aside, unless the run's own process is about to delete it."""
    lock = cache.run_lock(path)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        return
    try:
        moved = cache.set_aside_damage(path)
    finally:
        lock.release()
    if moved:
        log(moved)


def _write_failure(path: Path, error: str, config: TrainConfig, retry: bool) -> None:
    records.write_json_atomic(path / "failed.json", {
        "error": error, "config": dataclasses.asdict(config), "retry": retry, "source_sha256": records.source_sha256(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def _log_result(r: Result, log) -> None:
    if r.status == "failed":
        log(f"{r.name}: FAILED {r.error.strip().splitlines()[-1] if r.error else ''}")
    else:
        seconds = r.seconds if r.status != "cached" else r.record.get("wall_seconds", float("nan"))
        log(f"{r.name}: top1 {r.top1:.4f}, {seconds:.0f} s, {r.status}")


@contextlib.contextmanager
def _torch_threads(threads: int | None):
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------------------
# one run, holding its folder's lock


@dataclass
class Outcome:
    """What :func:`train_one` did: ``status`` is trained, resumed, cached or failed; or busy (another process holds
    the folder's lock), interrupted (checkpointed: a signal or stop_after_epoch) or stopped (by a signal before or
    after its training loop). ``notes``: what was done to the folder first (a damaged run moved aside, ...)."""

    status: str
    record: dict | None = None
    error: str | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def train_one(config: TrainConfig, out: Path, *, wait: bool = True, rerun_stale: bool = False) -> Outcome:
    """Train, resume or read back one run in ``out`` holding the folder's lock (``wait=False``: status busy if
    another process holds it). Under the lock the folder is looked at anew: a complete run is read back (or, with
    ``rerun_stale`` and made by other code, moved aside), a damaged one moved aside. A failure is recorded in
    failed.json; TrainingInterrupted and KeyboardInterrupt propagate (the run keeps its checkpoint)."""
    start = time.perf_counter()
    lock = cache.run_lock(out)
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except filelock.Timeout:
        return Outcome("busy")
    try:
        with _holding_run():
            return _train_locked(config, out, rerun_stale, start)
    finally:
        lock.release()


def _tidy_folder(out: Path, rerun_stale: bool) -> list[str]:
    """Under the folder's lock: a stale complete run (with ``rerun_stale``) and a damaged one moved aside; the notes."""
    notes, state = [], cache.inspect_run(out)
    if state.complete and rerun_stale and state.record.get("source_sha256") != records.source_sha256():
        aside = cache.set_aside(out, f"stale-{str(state.record.get('source_sha256', 'unknown'))[:8]}")
        notes.append(f"{out.name} was made by other semscale code: moved aside to {aside.name}, trained again")
    moved = cache.set_aside_damage(out)
    if moved:
        notes.append(moved)
    return notes


def _train_locked(config: TrainConfig, out: Path, rerun_stale: bool, start: float) -> Outcome:
    """train_one's work once it holds the folder's lock."""
    notes = _tidy_folder(out, rerun_stale)
    state = cache.inspect_run(out)
    if state.complete:
        return Outcome("cached", state.record, notes=notes)
    resumed = (out / "checkpoint.pt").exists()
    try:
        record = train_run(config, out, resume=resumed)
    except (TrainingInterrupted, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - any failure of one run is recorded; the sweep goes on
        error = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
        _write_failure(out, error, config, retry=isinstance(e, TRANSIENT))
        return Outcome("failed", error=error, seconds=time.perf_counter() - start, notes=notes)
    (out / "failed.json").unlink(missing_ok=True)
    return Outcome("resumed" if resumed else "trained", record, seconds=time.perf_counter() - start, notes=notes)


def train_stacked(configs: list[TrainConfig], outs: list[Path], rerun_stale: list[bool]) -> list[Outcome]:
    """:func:`train_one` for the members of one stack (:func:`semscale.stack.train_stack`): each folder's lock is
    taken without waiting (busy ones are left out), complete runs are read back, the rest train as one stack. If the
    stack fails, its members train one by one, so that each failure is recorded in its own folder."""
    start, outcomes, locks, todo = time.perf_counter(), [None] * len(configs), [], []
    try:
        for i, out in enumerate(outs):
            lock = cache.run_lock(out)
            try:
                lock.acquire(timeout=0)
            except filelock.Timeout:
                outcomes[i] = Outcome("busy")
                continue
            locks.append(lock)
            notes = _tidy_folder(out, rerun_stale[i])
            state = cache.inspect_run(out)
            if state.complete:
                outcomes[i] = Outcome("cached", state.record, notes=notes)
            else:
                todo.append((i, notes, (out / "checkpoint.pt").exists()))
        with _holding_run():
            failed = []
            if len(todo) > 1:
                try:
                    members = stacking.train_stack([configs[i] for i, _, _ in todo], [outs[i] for i, _, _ in todo],
                                                   resume=[resumed for _, _, resumed in todo])
                except (TrainingInterrupted, KeyboardInterrupt):
                    raise
                except stacking.StackMembersFailed as e:  # some diverged (and left the stack), the others finished
                    _stack_outcomes(todo, outs, configs, e.records, e.errors, start, outcomes)
                    todo = []
                except Exception as e:  # noqa: BLE001 - the members go on alone, each failure recorded in its folder
                    last = str(e).strip().splitlines()[-1] if str(e).strip() else ""
                    failed = [f"its stack of {len(todo)} failed ({type(e).__name__}: {last}): trained alone"]
                else:
                    _stack_outcomes(todo, outs, configs, members, [None] * len(todo), start, outcomes)
                    todo = []
            for i, notes, _ in todo:  # the one member left to train, or the members of a stack that failed
                outcome = _train_locked(configs[i], outs[i], rerun_stale[i], time.perf_counter())
                outcome.notes[:0] = notes + failed
                outcomes[i] = outcome
    finally:
        for lock in locks:
            lock.release()
    return outcomes


def _stack_outcomes(todo: list, outs: list[Path], configs: list[TrainConfig], records: list, errors: list,
                    start: float, outcomes: list) -> None:
    """Each stacked member's Outcome: trained (or resumed), or failed by itself (recorded in its failed.json)."""
    seconds = time.perf_counter() - start
    for (i, notes, resumed), record, error in zip(todo, records, errors):
        if error is None:
            (outs[i] / "failed.json").unlink(missing_ok=True)
            outcomes[i] = Outcome("resumed" if resumed else "trained", record, seconds=seconds, notes=notes)
        else:
            text = "".join(traceback.format_exception(error))
            _write_failure(outs[i], text, configs[i], retry=isinstance(error, TRANSIENT))
            outcomes[i] = Outcome("failed", error=text, seconds=seconds, notes=notes)


def _finish_result(r: Result, outcome: Outcome, log) -> None:
    for note in outcome.notes:
        log(note)
    r.record, r.error, r.seconds = outcome.record, outcome.error, outcome.seconds
    r.status = outcome.status if outcome.record is not None else "failed"
    _log_result(r, log)


# ---------------------------------------------------------------------------------------------------------
# stopping: signals to the sweep, and workers that die with it


class _Stopped(BaseException):
    """The sweep (or a worker) was asked to stop; ``reason`` is the signal's name or the run's own reason."""

    def __init__(self, reason: str = "", signum: int | None = None):
        super().__init__(reason)
        self.reason, self.signum = reason, signum


class _StopSignals:
    """SIGINT and SIGTERM while a sweep runs (main thread only). The first is kept in ``signum``; later ones change
    nothing (``timeout`` sends its SIGTERM twice). The sweep's parent of workers only notes it. A process that
    trains (``trains=True``: a worker, or a sweep with jobs=1) stops where it is, unless it holds a run
    (:func:`_holding_run`): then the run's training loop gets the signal as soon as it runs, and saves a checkpoint,
    while a run past its loop (writing its record) finishes; the caller stops after the run."""

    active: _StopSignals | None = None  # the one installed in this process

    def __init__(self, trains: bool):
        self.trains, self.signum, self.holding_run, self.forwarding = trains, None, False, False

    def __call__(self, signum, frame):
        self.signum = self.signum or signum
        if not self.trains:
            return
        if not self.holding_run:
            raise self.stopped()
        if not self.forwarding:
            self.forwarding = True
            threading.Thread(target=self._forward, name="semscale-forward-stop", daemon=True).start()

    def _forward(self) -> None:
        """Send the signal once, when the run's training loop has its own handler in place (it checkpoints)."""
        while self.holding_run:
            if isinstance(signal.getsignal(signal.SIGTERM), StopRequest):
                os.kill(os.getpid(), self.signum)
                return
            time.sleep(0.05)

    def stopped(self) -> _Stopped:
        return _Stopped(signal.Signals(self.signum).name, self.signum)

    def __enter__(self):
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}
            _StopSignals.active = self
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        if _StopSignals.active is self:
            _StopSignals.active = None


@contextlib.contextmanager
def _holding_run():
    """While this process holds a run's folder (from its lock to its last file), a stop signal waits for the run's
    training loop instead of cutting the run off (a run stopped while it writes its record would lose its work)."""
    stop = _StopSignals.active
    if stop is None or not stop.trains:
        yield
        return
    stop.holding_run = True
    try:
        yield
    finally:
        stop.holding_run = False


def _interruption(reason: str, results: list[Result], root: Path) -> str:
    """The one line a stopped sweep leaves: what is complete, checkpointed, failed and not started; how to resume."""
    complete = [r for r in results if r.record is not None]
    failed = [r for r in results if r.record is None and r.status == "failed"]
    rest = [r for r in results if r.record is None and r.status != "failed"]
    checkpointed = [r for r in rest if (r.path / "checkpoint.pt").exists()]
    names = ", ".join(r.name for r in checkpointed[:3]) + (", ..." if len(checkpointed) > 3 else "")
    return (f"sweep interrupted by {reason}: {len(checkpointed)} run(s) checkpointed" + (f" ({names})" if names else "")
            + f", {len(complete)} complete, {len(failed)} failed, {len(rest) - len(checkpointed)} not started, in "
            f"{root}; run the same sweep again to resume (complete runs are read back, checkpointed ones continue)")


def _run_here(results: list[Result], threads: int | None, rerun: set[str], log, bar: _Progress, stack: int = 1) -> None:
    """Train one run (or one stack of up to ``stack`` runs) after the other in this process; a run another process is
    training is left for last. The sweep's bar stands for the run's own (the config's ``progress`` is turned off)."""
    groups = stacking.plan([r.config for r in results], stack)
    pending, waiting = collections.deque([results[i] for i in g] for g in groups), []
    with _torch_threads(threads), _StopSignals(trains=True) as signals:
        while pending or waiting:
            group = pending.popleft() if pending else None
            if group is not None and len(group) > 1:
                waiting += _run_stack(group, rerun, log, bar)
                if signals.signum:
                    raise signals.stopped()
                continue
            r, wait = (group[0], False) if group else (waiting.pop(0), True)
            if wait:
                log(f"{r.name}: waiting for the other process that is training it")
            bar.started(r)
            config = r.config if bar.bar.disable else dataclasses.replace(r.config, progress=False)
            try:
                outcome = train_one(config, r.path, wait=wait, rerun_stale=r.name in rerun)
            except TrainingInterrupted as e:
                log(f"{r.name}: interrupted: {str(e).split('. ')[0]}")
                raise _Stopped(str(e).split(":")[0], e.signum) from None
            if _settle(r, outcome, log, bar):
                waiting.append(r)
            if signals.signum:  # it came while the run wrote its record: the run is complete, the sweep stops
                raise signals.stopped()


def _run_stack(group: list[Result], rerun: set[str], log, bar: _Progress) -> list[Result]:
    """Train ``group`` as one stack (:func:`train_stacked`); returns the members another process is training."""
    for r in group:
        bar.started(r)
    configs = [r.config if bar.bar.disable else dataclasses.replace(r.config, progress=False) for r in group]
    try:
        outcomes = train_stacked(configs, [r.path for r in group], [r.name in rerun for r in group])
    except TrainingInterrupted as e:
        log(f"stack of {len(group)} ({group[0].name}, ...): interrupted: {str(e).split('. ')[0]}")
        raise _Stopped(str(e).split(":")[0], e.signum) from None
    return [r for r, outcome in zip(group, outcomes) if _settle(r, outcome, log, bar)]


def _settle(r: Result, outcome: Outcome, log, bar: _Progress) -> bool:
    """Log a run's outcome and count it on the bar; True when another process is training it (left for later)."""
    if outcome.status == "busy":
        bar.set_aside(r)
        return True
    _finish_result(r, outcome, log)
    bar.finished(r)
    return False


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent: int) -> None:
    """Make this worker get one SIGTERM when the sweep's process dies: Linux's parent-death signal, or where there is
    none, a thread that polls the parent's id (one signal only: a second one would stop the run's checkpointing). In
    its own process group, so that Ctrl-C reaches only the sweep, which stops its workers itself, once."""
    os.setpgrp()
    try:
        armed = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux
        armed = False

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    if not armed:
        threading.Thread(target=watch, name="semscale-watch-parent", daemon=True).start()
    elif os.getppid() != parent:  # it died before prctl
        os.kill(os.getpid(), signal.SIGTERM)


def _worker_main(connection, threads: int, parent: int) -> None:
    """A worker process: take a run from ``connection``, train it, send back its Outcome; None ends it. SIGTERM
    (from the sweep, or the parent-death signal) checkpoints a run in training and ends the worker."""
    _die_with_parent(parent)
    checkpoint.REPEAT_STOPS_NOW = False  # no one at the keyboard: a second signal must not cut off a checkpoint
    torch.set_num_threads(threads)
    tqdm.set_lock(threading.RLock())  # no bars here; tqdm's default lock is a semaphore, which os._exit would leak
    code = 1
    try:
        with _StopSignals(trains=True) as signals:
            _serve(connection, parent, signals)
        code = 0
    except Exception:  # noqa: BLE001 - a bug: show it before the quick exit below
        traceback.print_exc()
    finally:  # everything is on disk: skip the interpreter's teardown (seconds with torch loaded on a busy machine)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _serve(connection, parent: int, signals: _StopSignals) -> None:
    """Answer each run with (its Outcome, whether this worker ends now: it got a stop signal)."""
    with contextlib.suppress(_Stopped, EOFError, OSError):
        while (task := connection.recv()) is not None:
            fields, out, wait, rerun_stale = task
            try:
                outcome = train_one(TrainConfig(**fields), Path(out), wait=wait, rerun_stale=rerun_stale)
            except TrainingInterrupted as e:
                outcome = Outcome("interrupted", error=str(e))
            except _Stopped as e:
                outcome = Outcome("stopped", error=f"{e.reason}: stopped before its training loop")
            if os.getppid() != parent:  # the sweep is gone: nobody reads the outcome
                return
            connection.send((outcome, signals.signum is not None))
            if signals.signum:
                return


class _Worker:
    """A spawned worker process and the run it is training (``current``)."""

    def __init__(self, context, threads: int):
        self.connection, theirs = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(theirs, threads, os.getpid()), name="semscale-worker")
        self.process.start()
        theirs.close()
        self.current: Result | None = None

    def give(self, r: Result, wait: bool, rerun_stale: bool) -> None:
        self.current = r
        fields = dataclasses.asdict(dataclasses.replace(r.config, progress=False))
        self.connection.send((fields, str(r.path), wait, rerun_stale))

    def outcome(self) -> tuple[Outcome | None, bool]:
        """(the outcome it sent, whether it ends: it got a stop signal); (None, True) if it died without one. Call it
        when its connection or its sentinel is ready."""
        try:
            return self.connection.recv()
        except (EOFError, OSError):
            self.process.join(5)
            return None, True


def _run_workers(results: list[Result], jobs: int, threads: int, rerun: set[str], log, bar: _Progress) -> None:
    """Run in ``jobs`` spawned worker processes, one run at a time each (none waits in a queue). A run interrupted
    in a worker (a signal, stop_after_epoch) keeps its checkpoint and no new run starts; on SIGINT/SIGTERM the
    sweep sends each busy worker one SIGTERM, so that it checkpoints. _Stopped is raised once every worker is idle."""
    context = multiprocessing.get_context("spawn")  # CUDA and threads are safe only in fresh processes
    pending, waiting, workers = collections.deque(results), [], []
    stop: _Stopped | None = None
    with _StopSignals(trains=False) as signals:
        try:
            while True:
                if signals.signum and stop is None:
                    stop = signals.stopped()
                    for w in workers:
                        if w.current is not None:
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(w.process.pid, signal.SIGTERM)
                while stop is None and (pending or waiting):
                    idle = next((w for w in workers if w.current is None), None)
                    if idle is None and len(workers) < jobs:
                        idle = _Worker(context, threads)
                        workers.append(idle)
                    if idle is None:
                        break
                    r, wait = (pending.popleft(), False) if pending else (waiting.pop(0), True)
                    if wait:
                        log(f"{r.name}: waiting for the other process that is training it")
                    try:
                        idle.give(r, wait, r.name in rerun)
                        bar.started(r)
                    except OSError:  # it died idle: the run goes to the next worker
                        if wait:
                            waiting.insert(0, r)
                        else:
                            pending.appendleft(r)
                        workers.remove(idle)
                busy = [w for w in workers if w.current is not None]
                if not busy:
                    break
                ready = multiprocessing.connection.wait([w.connection for w in busy] + [w.process.sentinel for w in busy],
                                                        timeout=0.2)
                for w in [w for w in busy if w.connection in ready or w.process.sentinel in ready]:
                    r = w.current
                    stopped = _take_outcome(w, workers, waiting, stop is not None, log)
                    stop = stop or stopped  # the first reason holds
                    if r.record is not None or r.status == "failed":
                        bar.finished(r)
                    else:  # busy (waits its turn again), interrupted or stopped
                        bar.set_aside(r)
        finally:
            _shut_down(workers)
    if stop is not None:
        raise stop


def _take_outcome(w: _Worker, workers: list[_Worker], waiting: list[Result], stopping: bool, log) -> _Stopped | None:
    """Book what worker ``w`` did with its run (a worker that ends leaves ``workers``; a busy run joins ``waiting``);
    a _Stopped if that stops the sweep."""
    r, (outcome, ends) = w.current, w.outcome()
    w.current = None
    if ends:
        workers.remove(w)
        w.process.join(5)
        w.connection.close()
    if outcome is None:  # killed: out of memory, or a signal from outside
        if not stopping:
            code = w.process.exitcode
            error = (f"worker killed by {signal.Signals(-code).name} (out of memory?)" if code and code < 0
                     else f"worker died with exit code {code} (its error is on the sweep's stderr)")
            _write_failure(r.path, error, r.config, retry=True)
            _finish_result(r, Outcome("failed", error=error), log)
    elif outcome.status == "busy":
        waiting.append(r)
    elif outcome.status in ("interrupted", "stopped"):
        log(f"{r.name}: {outcome.status}: {outcome.error.split('. ')[0]}")
        return _Stopped(outcome.error.split(":")[0], None)
    else:
        _finish_result(r, outcome, log)
        if ends:  # a signal reached the worker (not through the sweep) while it wrote the run's record
            return _Stopped("a signal to a worker", None)
    return None


def _shut_down(workers: list[_Worker]) -> None:
    """End every worker: idle ones on request, busy ones (an error in the sweep) by SIGTERM, which checkpoints."""
    for w in workers:
        with contextlib.suppress(OSError, ValueError):
            if w.current is None:
                w.connection.send(None)
            else:
                os.kill(w.process.pid, signal.SIGTERM)
    for w in workers:
        w.process.join(timeout=60)
        if w.process.is_alive():
            w.process.kill()
            w.process.join()
        w.connection.close()


def _slurm_task(fields: dict, out: str, rerun_stale: bool) -> Outcome:
    try:
        return train_one(TrainConfig(**fields), Path(out), rerun_stale=rerun_stale)
    except TrainingInterrupted as e:
        return Outcome("failed", error=f"interrupted: {e}")


def _train_chunk(chunk: list[tuple[dict, str, bool]], threads: int | None) -> list[Outcome]:
    """A Slurm job's work: its runs one after the other."""
    with _torch_threads(threads):
        return [_slurm_task(*task) for task in chunk]


def _run_slurm(results: list[Result], root: Path, slurm: Slurm, threads: int | None, rerun: set[str], log) -> None:
    import submitit

    if not results:
        return
    executor = submitit.AutoExecutor(folder=root / ".submitit" / "%j", cluster=slurm.cluster)
    params = {"timeout_min": slurm.timeout_min, "gpus_per_node": slurm.gpus_per_node,
              "cpus_per_task": slurm.cpus_per_task, "name": "semscale", **slurm.extra}
    if slurm.partition:
        params["slurm_partition"] = slurm.partition
    executor.update_parameters(**params)
    size = max(1, slurm.runs_per_job)
    chunks = [results[i:i + size] for i in range(0, len(results), size)]
    payloads = [[(dataclasses.asdict(dataclasses.replace(r.config, progress=False)), str(r.path), r.name in rerun)
                 for r in chunk] for chunk in chunks]
    with executor.batch():
        jobs = [executor.submit(_train_chunk, payload, threads) for payload in payloads]
    for chunk, job in zip(chunks, jobs):
        if not slurm.wait:
            for r in chunk:
                r.status = "submitted"
                records.write_json_atomic(r.path / "submitted.json", {"job_id": str(job.job_id), "cluster": slurm.cluster or "slurm"})
                log(f"{r.name}: submitted as job {job.job_id}")
            continue
        try:
            outcomes = job.result()
        except Exception as e:  # noqa: BLE001 - the job itself failed (timeout, node failure)
            outcomes = [Outcome("failed", error=f"slurm job {job.job_id} failed: {e}")] * len(chunk)
        for r, outcome in zip(chunk, outcomes):
            _finish_result(r, outcome, log)


if __name__ == "__main__":  # python -m semscale.sweep: the command line is semscale.sweep_cli's
    from semscale.sweep_cli import main

    sys.exit(main())
