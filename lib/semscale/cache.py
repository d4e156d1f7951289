"""The run cache: where a config's run lives and whether it is finished.

* :func:`run_name`: ``<dataset>_<subset>_<model>_<loss>[...]_s<seed>-<hash10>``, the hash taken over the canonical
  config (:func:`canonical`: every field but the execution-only ``config.RESUMABLE_FIELDS``; fields added later
  count only where set), so the same config lands in the same folder from any notebook, CLI call or sweep.
* :func:`inspect_run` / :func:`run_complete`: a folder holds a finished run only when its record files
  (``RECORD_FILES``) are all there and parse with the expected rows; anything else that claims to be a run (a
  run.json that does not parse, a truncated table, a checkpoint.pt that is no checkpoint) is damaged.
* :func:`set_aside_damage`: a damaged run's files move to ``<name>.damaged-<UTC time>`` beside it (nothing is
  deleted) so the run can be trained again; a checkpoint.pt left beside a complete run becomes
  ``checkpoint.pt.leftover-<time>``.
* :func:`run_lock`: one lock per run folder (its ``.lock`` file, a ``filelock.FileLock``: the OS releases it when
  its process dies, so a lock never outlives its holder).
* :func:`runs_dir`: the study's one cache for every notebook and profile (``$SEMSCALE_RUNS`` or ``runs/``).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import time
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import filelock

from .config import ADDED_FIELDS, REMOVED_FIELDS, RESUMABLE_FIELDS, TrainConfig, legacy_precision, resolved_precision
from .records import REPO


def runs_dir() -> Path:
    """Where the study's notebooks keep their runs: ``$SEMSCALE_RUNS`` or ``runs/`` in the repository (git-ignored).

    One folder for every notebook and profile, so a config trained by one notebook is read back by another."""
    return Path(os.environ.get("SEMSCALE_RUNS") or REPO / "runs")


def canonical(config: TrainConfig) -> dict[str, Any]:
    """The fields that define what a run computes (JSON-ready): all but ``RESUMABLE_FIELDS``, with the *resolved*
    precision (a bf16 run and an fp32 run are different runs).

    Fields added later count only where set, so older folders keep their names; a run in the earlier engine's
    precision (fp32 on the CPU, bf16 on CUDA) carries that engine's ``bf16: true`` in place of ``precision``."""
    values = json.loads(json.dumps(dataclasses.asdict(config)))
    values = {k: v for k, v in values.items()
              if k not in RESUMABLE_FIELDS and k != "precision" and not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])}
    precision = resolved_precision(config)
    values.update(REMOVED_FIELDS if precision == legacy_precision(config) else {"precision": precision})
    return values


def config_hash(config: TrainConfig) -> str:
    return hashlib.sha256(json.dumps(canonical(config), sort_keys=True).encode()).hexdigest()


def run_name(config: TrainConfig) -> str:
    """``<dataset>_<subset>_<model>_<loss>[-<reweight>][_cbs|_sqrts][_mwn][_dsb][_<second stage>]_s<seed>-<hash10>``."""
    c = config
    if c.train_counts is not None:
        subset = "counts" + hashlib.sha256(str(c.train_counts).encode()).hexdigest()[:4]
    elif c.train_per_class is not None:
        subset = f"m{c.train_per_class}"
    else:
        subset = f"lt{c.imbalance:g}" if c.imbalance != 1 else "full"
    loss = c.loss + (f"-{c.reweight}" if c.reweight != "none" else "")
    extra = ([{"class-balanced": "cbs", "sqrt": "sqrts"}[c.sampler]] if c.sampler != "none" else []) + (["mwn"] if c.mwn else [])
    stage2 = [c.second_stage] if c.second_stage != "none" else []
    parts = [c.dataset, subset, c.model, loss] + extra + (["dsb"] if c.dsb else []) + stage2 + [f"s{c.seed}"]
    return "_".join(parts) + "-" + config_hash(c)[:10]


# ---------------------------------------------------------------------------------------------------------
# complete, unfinished or damaged

RECORD_FILES = ("run.json", "per_class.csv", "epochs.csv", "pool_history.csv")
LOCK_FILE = ".lock"  # in the run's folder: see run_lock


class DamagedRun(RuntimeError):
    """A run folder's files cannot be read back (a truncated record, a checkpoint that is no checkpoint)."""


class RunState(NamedTuple):
    """What a run folder holds: ``complete`` with its ``record`` (run.json), or not; ``problem`` says why a folder
    that holds a run.json or a checkpoint.pt cannot be read back (None: complete, unfinished or empty)."""

    complete: bool
    record: dict | None = None
    problem: str | None = None


def inspect_run(folder) -> RunState:
    """Whether ``folder`` holds a finished run: run.json parses and says ``complete``, and per_class.csv, epochs.csv
    and pool_history.csv (and a one-stage drift run's drift_*.csv) are there and parse with the rows the record
    implies (one per class; one per epoch, plus the second stage's; one per epoch and class where the pool was kept).

    A checkpoint.pt beside a complete run does not make it unfinished (it is left over from the run's last moment);
    a checkpoint.pt without run.json must be a readable archive, or the folder is damaged."""
    folder = Path(folder)
    if not (folder / "run.json").exists():
        checkpoint = folder / "checkpoint.pt"
        if checkpoint.exists() and not _readable_archive(checkpoint):
            return RunState(False, None, "checkpoint.pt is no readable checkpoint (truncated or overwritten)")
        return RunState(False)
    try:
        record = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return RunState(False, None, f"run.json cannot be read ({type(e).__name__}: {e})")
    problem = _record_problem(folder, record)
    return RunState(problem is None, record if problem is None else None, problem)


def run_complete(folder) -> bool:
    """A finished run whose record files all read back (:func:`inspect_run`)."""
    return inspect_run(folder).complete


def _readable_archive(path: Path) -> bool:
    """torch.save writes a zip archive: one that opens and whose members pass their CRC check can be loaded."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False


def _record_problem(folder: Path, record) -> str | None:
    if not isinstance(record, dict) or record.get("status") != "complete":
        return "run.json does not record a complete run"
    try:
        classes, config = len(record["classes"]), record["config"]
        first_epochs = int(config["epochs"])
        second = record.get("second_stage")
        epochs = first_epochs + (int(second.get("epochs", 1)) if second else 0)  # posthoc-la, tau-norm: one row
        pool = record.get("engine", {}).get("pool")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        return f"run.json lacks what a record holds ({type(e).__name__}: {e})"
    pool_rows = {"tracked": [first_epochs * classes], "off": [0]}.get(pool, [0, first_epochs * classes])
    expected = {"per_class.csv": ("class", list(range(classes)), "one per class"),
                "epochs.csv": ("epoch", list(range(1, epochs + 1)), "one per epoch")}
    for name, (column, values, what) in expected.items():
        problem = _table_problem(folder / name, column, [len(values)], what, values)
        if problem:
            return problem
    problem = _table_problem(folder / "pool_history.csv", "epoch", pool_rows, "one per epoch and class")
    if problem:
        return problem
    if config.get("record_drift") and not second:
        for name in ("drift_visits.csv", "drift_epochs.csv"):
            problem = _table_problem(folder / name, "epoch", None, "")
            if problem:
                return problem
    return None


def _table_problem(path: Path, column: str, rows: list[int] | None, what: str, values: list | None = None) -> str | None:
    """Why the CSV table at ``path`` is not what a finished run writes: missing, cut off (a record file always ends
    with a newline and every row has the header's fields), without ``column``, or with a row count not in ``rows``
    (or ``column`` not equal to ``values``)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return f"{path.name} is missing"
    except (OSError, ValueError) as e:
        return f"{path.name} cannot be read ({type(e).__name__}: {e})"
    table = list(csv.reader(io.StringIO(text)))
    if not text.endswith("\n") or not table:
        return f"{path.name} is cut off (truncated)"
    header, body = table[0], table[1:]
    if column not in header:
        return f"{path.name} has no {column!r} column"
    short = [i for i, row in enumerate(body, 1) if len(row) != len(header)]
    if short:
        return f"{path.name}: row {short[0]} has {len(body[short[0] - 1])} of {len(header)} fields (truncated)"
    if rows is not None and len(body) not in rows:
        return f"{path.name} has {len(body)} rows, expected {' or '.join(map(str, rows))} ({what})"
    index = header.index(column)
    if values is not None and [row[index] for row in body] != [str(v) for v in values]:
        return f"{path.name}: its {column!r} column is not {values[0]}..{values[-1]}"
    return None


def set_aside(path, label: str) -> Path:
    """Move ``path`` to ``<name>.<label>`` beside it (``-2``, ``-3``, ... if taken) and return where it went. A run
    folder's files move into that new folder, all but its lock file: the folder and its lock stay where they are."""
    path = Path(path)
    aside = path.with_name(f"{path.name}.{label}")
    n = 2
    while aside.exists():
        aside, n = path.with_name(f"{path.name}.{label}-{n}"), n + 1
    if not path.is_dir():
        path.rename(aside)
        return aside
    aside.mkdir()
    for entry in path.iterdir():
        if entry.name != LOCK_FILE:
            entry.rename(aside / entry.name)
    return aside


def set_aside_damage(folder) -> str | None:
    """Make ``folder`` ready to train: a damaged run's files move to ``<name>.damaged-<UTC time>`` and a checkpoint.pt
    left beside a complete run to ``checkpoint.pt.leftover-<UTC time>`` (nothing is deleted). Returns a sentence
    saying what was moved and why, or None. Call it holding the folder's :func:`run_lock`."""
    folder = Path(folder)
    state, stamp = inspect_run(folder), time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    if state.problem:
        aside = set_aside(folder, f"damaged-{stamp}")
        return f"{folder.name} was damaged ({state.problem}): moved aside to {aside.name}, to be trained again"
    if state.complete and (folder / "checkpoint.pt").exists():
        aside = set_aside(folder / "checkpoint.pt", f"leftover-{stamp}")
        return f"{folder.name}: the checkpoint.pt left beside its complete record was moved aside to {aside.name}"
    return None


def run_lock(folder) -> filelock.FileLock:
    """The lock of the run folder ``folder`` (its file ``.lock``, made with the folder; :func:`set_aside` never moves
    it). One object per path in a process, so holding it is reentrant."""
    folder = Path(folder).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    return filelock.FileLock(folder / LOCK_FILE, is_singleton=True)
