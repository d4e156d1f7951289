"""Reading a sweep's runs back as tidy tables, and the comparisons every notebook makes from them.

    tables = results.collect(sweep.run(points, root))      # .runs, .per_class, .epochs, .pool
    results.summarize(tables.runs, by=["method"])           # mean, sample std, n of top1, ...
    results.paired_difference(tables.runs, "CE", "CE+DSB")  # paired by seed, with a t-interval

Every reported accuracy is the last epoch's (never the best epoch on the test set).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from .cache import inspect_run

FINAL_METRICS = ("top1", "balanced", "many", "medium", "few", "train_loss", "train_acc")
GROUP_KEYS = ("dataset_variant", "imbalance")


class Tables(NamedTuple):
    """Tidy frames of a sweep: one row per run, per (run, class), per (run, epoch) and per (run, epoch, class);
    ``skipped``: the folders (or Results) left out, each with the reason (damaged, failed, unfinished)."""

    runs: pd.DataFrame
    per_class: pd.DataFrame
    epochs: pd.DataFrame
    pool: pd.DataFrame
    skipped: dict[str, str] = {}


def _run_row(name: str, path: Path, labels: dict, record: dict) -> dict:
    row = {"run": name, **labels}
    row.update({k: v for k, v in record["config"].items() if k not in labels})
    row.update({k: record["final"][k] for k in FINAL_METRICS})
    row.update({
        "dataset_variant": record["dataset_variant"],
        "subset_sha256": record["subset"]["sha256"],
        "subset_size": record["subset"]["size"],
        "wall_seconds": record["wall_seconds"],
        "train_seconds": record["train_seconds"],
        "img_per_s": record["img_per_s"],
        "stack_members": record.get("stack", {}).get("members", 1),  # > 1: trained in a stack, timing shared
        "device": record["device"],
        "threads": record.get("threads"),
        "git_commit": record["git_commit"],
        "source_sha256": record.get("source_sha256"),
        "torch": record["packages"]["torch"],
        "finished": record["finished"],
        "path": str(path),
    })
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in row.items()}


def collect(source) -> Tables:
    """Tidy frames of the complete runs in ``source``: the Results of ``run`` (with their labels) or a root folder.

    Every frame carries the run's folder name (``run``), its labels and config fields, so it can be grouped and
    plotted without merging; ``runs`` adds the final metrics and provenance. A run is read only when complete
    (:func:`semscale.cache.inspect_run`); every folder of a root that holds something else is left out, named in
    ``Tables.skipped`` with the reason and in a warning (folders moved aside, ``*.damaged-*`` and ``*.stale-*``, and
    hidden ones are no runs). Results without a record (failed) are in ``skipped`` too, without a warning.
    """
    skipped, unread = {}, {}
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is not a folder of runs")
        complete = []
        for p in sorted(root.iterdir()):
            if not p.is_dir() or p.name.startswith(".") or ".damaged-" in p.name or ".stale-" in p.name:
                continue
            state = inspect_run(p)
            if state.complete:
                complete.append((p.name, p, {}, state.record))
            else:
                unread[p.name] = _why_not_complete(p, state.problem)
    else:
        seen, complete = set(), []
        for r in source:
            if r.record is None:
                skipped[r.name] = f"{r.status}: {r.error.strip().splitlines()[-1]}" if r.error else r.status
            elif (r.name, tuple(r.labels.items())) not in seen:
                seen.add((r.name, tuple(r.labels.items())))
                complete.append((r.name, r.path, r.labels, r.record))
    if unread:
        listed = "; ".join(f"{name} ({why})" for name, why in unread.items())
        warnings.warn(f"collect: {len(unread)} folder(s) of {source} hold no complete run and are left out (see "
                      f"Tables.skipped): {listed}", UserWarning, stacklevel=2)
    skipped.update(unread)
    runs = pd.DataFrame([_run_row(*c) for c in complete])
    if runs.empty:
        empty = pd.DataFrame()
        return Tables(runs, empty, empty, empty, skipped)
    keys = [c for c in runs.columns if c not in (*FINAL_METRICS, "wall_seconds", "train_seconds", "img_per_s", "finished")]
    tables = {}
    for table in ("per_class", "epochs", "pool_history"):
        parts = [pd.read_csv(path / f"{table}.csv").assign(run=name) for name, path, _, _ in complete]
        frame = pd.concat(parts, ignore_index=True)
        tables[table] = runs[keys].merge(frame, on="run", suffixes=("", f"_{table}"))
    return Tables(runs, tables["per_class"], tables["epochs"], tables["pool_history"], skipped)


def run_records(*collected: Tables) -> pd.DataFrame:
    """The per-run records a reference commits, so that every interval of its notebook can be recomputed: one row per
    run (the first of its appearances across ``collected``): its labels and config fields, seed, subset sha256,
    last-epoch metrics, img/s and provenance, and its per-class test accuracy as ``acc_<class>`` columns. The run's
    folder (``path``, a path on the machine that trained it) is left out."""
    frames = []
    for tables in collected:
        if tables.runs.empty:
            continue
        accuracy = tables.per_class.pivot_table(index="run", columns="class", values="accuracy")
        accuracy.columns = [f"acc_{c}" for c in accuracy.columns]
        frames.append(tables.runs.drop(columns=["path"]).merge(accuracy, left_on="run", right_index=True, how="left"))
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True).drop_duplicates("run").reset_index(drop=True)


def _why_not_complete(folder: Path, problem: str | None) -> str:
    if problem:
        return f"damaged: {problem}; sweep.run moves it aside and trains it again"
    if (folder / "failed.json").exists():
        try:
            error = str(json.loads((folder / "failed.json").read_text()).get("error", "")).strip().splitlines()[-1]
        except (OSError, ValueError, AttributeError, IndexError):
            error = "see failed.json"
        return f"failed: {error}"
    if (folder / "checkpoint.pt").exists():
        return "unfinished: a checkpoint and no record (being trained, or interrupted: sweep.run resumes it)"
    return "no record (being trained, submitted, or stopped before its first checkpoint)"


def summarize(frame: pd.DataFrame, by: list[str] | str, metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """Per group of ``by``: ``<metric>_mean``, ``<metric>_std`` (sample, ddof=1; NaN for one value) and ``n`` rows."""
    by = [by] if isinstance(by, str) else list(by)
    metrics = [m for m in (metrics or FINAL_METRICS) if m in frame.columns]
    missing = [c for c in by if c not in frame.columns]
    if missing:
        raise KeyError(f"cannot group by {missing}: not columns of the frame; columns: {', '.join(map(str, frame.columns))}")
    grouped = frame.groupby(by, sort=False, dropna=False)
    out = grouped[metrics].agg(["mean", "std"])
    out.columns = [f"{m}_{stat}" for m, stat in out.columns]
    out["n"] = grouped.size()
    return out.reset_index()


# ---------------------------------------------------------------------------------------------------------
# paired comparisons


def paired_difference(runs: pd.DataFrame, base: str, treated: str, *, by: Iterable[str] = GROUP_KEYS,
                      metric: str = "top1", label: str = "method", seed: str = "seed", level: float = 0.95,
                      scale_by: float = 100.0) -> pd.DataFrame:
    """``treated − base`` of ``metric`` paired by ``seed`` within each group of ``by``, with a t-interval.

    Per group: n_pairs, the two means, the mean difference, its sample std, the ``level`` interval
    mean ± t(n−1) · sd / √n (NaN for fewer than two pairs) and the two-sided paired t-test p-value. Values are
    multiplied by ``scale_by`` (100: points of accuracy).
    """
    by = list(by)
    rows = []
    part = runs[runs[label].isin([base, treated])]
    for key, group in part.groupby(by, sort=False, dropna=False) if by else [((), part)]:
        wide = group.pivot_table(index=seed, columns=label, values=metric, aggfunc="mean")
        if base not in wide or treated not in wide:
            continue
        wide = wide[[base, treated]].dropna() * scale_by
        d = (wide[treated] - wide[base]).to_numpy()
        n = len(d)
        mean = float(d.mean()) if n else float("nan")
        sd = float(d.std(ddof=1)) if n > 1 else float("nan")
        if n > 1:
            half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / np.sqrt(n)
            p = float(stats.ttest_rel(wide[treated], wide[base]).pvalue) if sd > 0 else (1.0 if mean == 0 else 0.0)
        else:
            half, p = float("nan"), float("nan")
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), "base": base, "treated": treated, "metric": metric, "n_pairs": n,
                     "seeds": " ".join(map(str, wide.index.tolist())),
                     "base_mean": float(wide[base].mean()) if n else float("nan"),
                     "treated_mean": float(wide[treated].mean()) if n else float("nan"),
                     "diff_mean": mean, "diff_std": sd, "ci_low": mean - half, "ci_high": mean + half,
                     "level": level, "p_value": p})
    return pd.DataFrame(rows)


def paired_differences(runs: pd.DataFrame, pairs: list[tuple[str, str]], metrics: Iterable[str], *, by, method,
                        level, names: tuple[str, str]) -> pd.DataFrame:
    """:func:`paired_difference` of every (base, treated) pair and metric, stacked; ``base``/``treated`` renamed to
    ``names``, with ``beyond_seed_spread`` (the interval excludes zero). Empty when no pair has runs."""
    parts = [paired_difference(runs, b, t, by=by, metric=m, label=method, level=level)
             for b, t in pairs for m in metrics]
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.DataFrame()
    out = pd.concat(parts, ignore_index=True).rename(columns=dict(zip(("base", "treated"), names)))
    out["beyond_seed_spread"] = (out.ci_low > 0) | (out.ci_high < 0)
    return out
