"""The run cache: where a config's run lives and whether it is finished.

* :func:`run_name`: ``<dataset>_<subset>_<model>_<loss>[...]_s<seed>-<hash10>``, the hash taken over the canonical
  config (:func:`canonical`: every field but the execution-only ``config.RESUMABLE_FIELDS``; fields added later
  count only where set), so the same config lands in the same folder from any notebook, CLI call or sweep.
* :func:`run_complete`: a folder holds a finished run.
* :func:`runs_dir`: the study's one cache for every notebook and profile (``$SEMSCALE_RUNS`` or ``runs/``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

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


def run_complete(folder) -> bool:
    """A finished run: its run.json is written and no checkpoint.pt is left (an interrupted run keeps one)."""
    folder = Path(folder)
    return (folder / "run.json").exists() and not (folder / "checkpoint.pt").exists()
