"""Sweeps: a grid of training runs in one call, cached by config, resumable, in parallel or on Slurm.

    points = sweep.grid(base, method=methods.METHODS, imbalance=[100, 10], seed=[0, 1, 2])
    tables = results.collect(sweep.run(points, cache.runs_dir(), jobs=2))   # .runs, .per_class, .epochs, .pool
    results.summarize(tables.runs, by=["method", "imbalance"])              # mean, sample std, n of top1, ...

* ``run`` trains each config into ``root/<readable-name>-<hash>/`` (:mod:`semscale.cache`), so the same config
  lands in the same folder from any notebook; each run goes through :func:`semscale.cli.train_run`, as on the
  command line. A complete run is read back, an interrupted one resumes from its checkpoint, a failing
  one (bad config, NaN loss, out of memory) is recorded in ``failed.json`` and the others go on (it is tried
  again on the next call). One log line per run; no progress bars from workers.
* ``jobs=K`` runs K configs at once in spawned worker processes (CUDA: K processes on one GPU). CPU kernels
  give bit-different results with different thread counts (measured: a CNN after 20 Adam steps differs
  between 1 and 2 threads), so each run's thread count is ``threads`` (default: the cores split between the
  jobs) and is recorded; with the same ``threads``, ``jobs=K`` equals ``jobs=1`` bit for bit.
* ``executor="slurm"`` sends the runs to a Slurm cluster through submitit (``Slurm`` sets partition, GPUs,
  time and runs per job); ``Slurm(cluster="local")`` or ``"debug"`` uses submitit's local executors.
* Every run.json records a sha256 of the ``semscale`` sources; a cached run made by other code is reported
  (``stale="warn"``) or moved aside and trained again (``stale="rerun"``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import itertools
import json
import multiprocessing
import os
import shutil
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch

from . import records
from .cache import run_complete, run_name
from .checkpoint import TrainingInterrupted
from .cli import train_run
from .config import ConfigError, TrainConfig, first_stage

STATUSES = ("trained", "resumed", "cached", "failed", "submitted")
_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))


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


def run(points: Iterable[Point | TrainConfig | dict], root, *, jobs: int = 1, threads: int | None = None,
        executor: str = "local", slurm: Slurm | None = None, stale: str = "warn", log=print) -> list[Result]:
    """Train every point into ``root`` (see the module docstring); returns one Result per point, in order."""
    if executor not in ("local", "slurm"):
        raise ValueError(f"executor must be 'local' or 'slurm', got {executor!r}")
    if stale not in ("warn", "rerun"):
        raise ValueError(f"stale must be 'warn' or 'rerun', got {stale!r}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    root = Path(root)
    start = time.perf_counter()
    results = [_prepare(p, root) for p in points]
    source, stale_names, todo = records.source_sha256(), [], {}
    for r in results:
        if r.status == "cached" and r.record.get("source_sha256") != source:
            if stale == "rerun":
                _move_aside(r.path, r.record)
                r.status, r.record = "trained", None
            else:
                stale_names.append(r.name)
        if r.status in ("trained", "resumed"):
            todo.setdefault(r.name, []).append(r)
        elif r.status == "cached":
            _log_result(r, log)
        elif r.status == "failed":  # an invalid config
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
        hidden = _prepare(first_stage(r.config), root)  # where cli.first_stage_dir puts it
        if hidden.status in ("trained", "resumed") and hidden.name not in todo and all(h.name != hidden.name for h in first):
            first.append(hidden)
    for batch in (first, second):
        if executor == "slurm":
            if batch is second and not (slurm or Slurm()).wait:
                for r in second:
                    _finish_result(r, None, "second stage not run: its first stage was submitted (wait=False); "
                                   "call run() again when the Slurm jobs have finished", 0.0, log)
                continue
            _run_slurm(batch, root, slurm or Slurm(), threads, log)
        elif jobs == 1:
            _run_here(batch, threads, log)
        else:
            _run_workers(batch, jobs, threads or max(1, (os.cpu_count() or 1) // jobs), log)
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


def _prepare(point, root: Path) -> Result:
    """A Result with the folder and what is to be done: cached (complete), resumed, trained or failed (bad config)."""
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
        path = root / f"invalid-{digest}"
        _write_failure(path, str(e), fields)
        return Result(path.name, path, labels, None, "failed", error=f"invalid config: {e}")
    name = run_name(config)
    path = root / name
    if run_complete(path):
        return Result(name, path, labels, config, "cached", record=json.loads((path / "run.json").read_text()))
    return Result(name, path, labels, config, "resumed" if (path / "checkpoint.pt").exists() else "trained")


def _move_aside(path: Path, record: dict) -> None:
    """Keep a stale run (nothing written is lost) under <name>.stale-<its source hash>."""
    aside = path.with_name(f"{path.name}.stale-{str(record.get('source_sha256', 'unknown'))[:8]}")
    if aside.exists():
        shutil.rmtree(aside)
    path.rename(aside)


def _write_failure(path: Path, error: str, config) -> None:
    fields = dataclasses.asdict(config) if isinstance(config, TrainConfig) else config
    records.write_json_atomic(path / "failed.json", {"error": error, "config": fields,
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


def train_one(config: TrainConfig, out: Path) -> tuple[dict | None, str | None]:
    """Train (or resume) one run into ``out`` (:func:`semscale.cli.train_run`): (record, None), or (None, error text)
    if it failed. TrainingInterrupted and KeyboardInterrupt propagate: an interrupted sweep stops, its checkpoints kept.
    """
    try:
        record = train_run(config, out, resume=(out / "checkpoint.pt").exists())
    except (TrainingInterrupted, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - any failure of one run is recorded; the sweep goes on
        error = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
        _write_failure(out, error, config)
        return None, error
    (out / "failed.json").unlink(missing_ok=True)
    return record, None


def _finish_result(r: Result, record: dict | None, error: str | None, seconds: float, log) -> None:
    r.record, r.error, r.seconds = record, error, seconds
    if record is None:
        r.status = "failed"
    _log_result(r, log)


def _run_here(results: list[Result], threads: int | None, log) -> None:
    with _torch_threads(threads):
        for r in results:
            start = time.perf_counter()
            record, error = train_one(r.config, r.path)
            _finish_result(r, record, error, time.perf_counter() - start, log)


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


_INTERRUPTED = "interrupted:"


def _worker(config_fields: dict, out: str) -> tuple[dict | None, str | None, float]:
    start = time.perf_counter()
    try:
        record, error = train_one(TrainConfig(**config_fields), Path(out))
    except TrainingInterrupted as e:
        record, error = None, f"{_INTERRUPTED} {e}"
    return record, error, time.perf_counter() - start


def _run_workers(results: list[Result], jobs: int, threads: int, log) -> None:
    """Run in ``jobs`` spawned processes. A run interrupted in a worker (a signal, stop_after_epoch) keeps its
    checkpoint, the runs not started are cancelled, and TrainingInterrupted is raised once the others stop, as with
    jobs=1; on Ctrl-C the workers (same process group) checkpoint their runs before the sweep stops."""
    context = multiprocessing.get_context("spawn")  # CUDA and threads are safe only in fresh processes
    pool = concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_init, initargs=(threads,))
    interrupted = []
    try:
        futures = {pool.submit(_worker, dataclasses.asdict(dataclasses.replace(r.config, progress=False)),
                               str(r.path)): r for r in results}
        for future in concurrent.futures.as_completed(futures):
            r = futures[future]
            if future.cancelled():
                continue
            try:
                record, error, seconds = future.result()
            except Exception as e:  # noqa: BLE001 - a worker that died (killed, out of memory)
                record, error, seconds = None, f"worker died: {type(e).__name__}: {e}", 0.0
                _write_failure(r.path, error, r.config)
            if error and error.startswith(_INTERRUPTED):
                interrupted.append(r)
                log(f"{r.name}: {error.splitlines()[0]}")
                for other in futures:
                    other.cancel()
                continue
            _finish_result(r, record, error, seconds, log)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if interrupted:
        raise TrainingInterrupted(f"sweep interrupted: {len(interrupted)} run(s) checkpointed ({interrupted[0].name}, ...); "
                                  f"run the sweep again to resume them", interrupted[0].path, None)


def _train_chunk(chunk: list[tuple[dict, str]], threads: int | None) -> list[tuple[dict | None, str | None, float]]:
    """A Slurm job's work: its runs one after the other."""
    with _torch_threads(threads):
        return [_worker(fields, out) for fields, out in chunk]


def _run_slurm(results: list[Result], root: Path, slurm: Slurm, threads: int | None, log) -> None:
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
    payloads = [[(dataclasses.asdict(dataclasses.replace(r.config, progress=False)), str(r.path)) for r in chunk]
                for chunk in chunks]
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
            outcomes = [(None, f"slurm job {job.job_id} failed: {e}", 0.0)] * len(chunk)
        for r, (record, error, seconds) in zip(chunk, outcomes):
            _finish_result(r, record, error, seconds, log)
