"""Notebook 03's computation: DSB against the standard long-tailed baselines (PAPER.md §3, §4.3, §5).

    points = longtail.main_points(base, settings, methods, seeds)        # every method with and without DSB
    tables = results.collect(sweep.run(points, cache.runs_dir(), jobs=2, threads=1))
    longtail.main_table(tables.runs)         # last-epoch top-1 (and many/medium/few) mean ± std per method, in %
    longtail.dsb_effect(tables.runs)         # DSB − base, paired by seed, with a t-interval over the seeds
    longtail.gain_over(tables.runs, "CE")    # every other method − CE, paired by seed
    longtail.measure_drift(config, root)     # how far each sample's pooled feature moves between visits

Everything reported is the last epoch's test accuracy (never the best epoch). Method names follow
``methods.METHODS``: a method ``X`` is paired with ``X+DSB`` when both are in the table; a method without a DSB
partner in the table simply has no paired difference.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd

from .. import sweep
from ..config import TrainConfig
from ..methods import DSB_SUFFIX, base_method, dsb_pairs, with_dsb
from ..results import GROUP_KEYS, paired_differences, summarize
from .paper import PUBLISHED, STAND_IN

METRICS = ("top1", "balanced", "many", "medium", "few")

# ---------------------------------------------------------------------------------------------------------
# grids


def setting_name(fields: dict) -> str:
    """A short label of a training-subset setting, e.g. ``mnist IF 100`` or ``fashion-mnist m300``."""
    name = fields["dataset"]
    if fields.get("train_per_class") is not None:
        return f"{name} m{fields['train_per_class']}"
    if fields.get("imbalance", 1) not in (1, None):
        return f"{name} IF {fields['imbalance']:g}"
    return f"{name} full"


def main_points(base: dict, settings: list[dict], methods: Iterable[str], seeds: Iterable[int]) -> list[sweep.Point]:
    """Every setting × (method ± DSB) × seed, labelled ``setting``, ``method``, ``seed``."""
    return sweep.grid(base, setting={setting_name(s): dict(s) for s in settings}, method=with_dsb(methods),
                      seed=list(seeds))


def ablation_variants(reference: dict, stage_epochs=(), alphas=(), s_prime_alpha: float | None = None,
                      reductions=()) -> dict[str, dict]:
    """Named field sets for the DSB ablation around ``reference`` (the CE+DSB fields of the main grid).

    ``reference`` itself is ``"reference"``; each other value gives one variant, and a value equal to the
    reference's (n, α = 2 on long-tailed data when unset, the reduction) is not repeated. ``s_prime_alpha``: a
    huge α makes W = log2(α + W′) constant to ~1e-7 relative, so the weights 1/S become 1/S′ alone.
    """
    ref_n = reference.get("dsb_stage_epochs", 5)
    ref_alpha = reference.get("dsb_alpha") or 2.0
    ref_reduction = reference.get("reduction", "weighted_mean")
    out = {"reference": dict(reference)}
    for n in stage_epochs:
        if n != ref_n:
            out[f"n = {n}"] = {**reference, "dsb_stage_epochs": int(n)}
    for a in alphas:
        if float(a) != float(ref_alpha):
            out[f"α = {a:g}"] = {**reference, "dsb_alpha": float(a)}
    if s_prime_alpha is not None:
        out["S′ alone"] = {**reference, "dsb_alpha": float(s_prime_alpha)}
    for r in reductions:
        if r != ref_reduction:
            out[f"reduction {r}"] = {**reference, "reduction": r}
    return out


# ---------------------------------------------------------------------------------------------------------
# tables


def main_table(runs: pd.DataFrame, by: Iterable[str] = GROUP_KEYS, metrics: Iterable[str] = METRICS,
               method: str = "method") -> pd.DataFrame:
    """Per group and method: ``<metric>_pct_mean``, ``<metric>_pct_std`` (sample, over seeds), ``n``, the seeds.

    Metrics are last-epoch test accuracies in percent; config essentials (model, protocol, epochs, n) are kept.
    """
    by = list(by)
    frame = runs.copy()
    metrics = [m for m in metrics if m in frame.columns]
    for m in metrics:
        frame[f"{m}_pct"] = 100 * frame[m]
    keep = [c for c in ("model", "protocol", "epochs", "dsb_stage_epochs") if c in frame.columns]
    table = summarize(frame, by=by + [method] + keep, metrics=[f"{m}_pct" for m in metrics])
    seeds = frame.groupby(by + [method], sort=False)["seed"].apply(lambda s: " ".join(map(str, sorted(s))))
    table = table.merge(seeds.rename("seeds").reset_index(), on=by + [method])
    table.insert(len(by) + 1, "base_method", table[method].map(base_method))
    table.insert(len(by) + 2, "dsb", table[method].str.endswith(DSB_SUFFIX))
    return table


def with_published(table: pd.DataFrame, method: str = "method") -> pd.DataFrame:
    """``table`` with the published top-1 of PAPER.md §5 beside each row whose dataset has a stand-in benchmark.

    Our cifar10-jpeg75 stands beside official CIFAR-10-LT and tiny-imagenet beside official CIFAR-100-LT: other
    data (lossy JPEG; a different dataset), best-epoch peers against our last epoch, so only the ordering of the
    methods is comparable. Rows without a stand-in (MNIST, Fashion-MNIST) get NaN.
    """
    out = table.copy()
    dataset = out["dataset_variant"].str.extract(r"^(cifar10-jpeg75|tiny-imagenet)", expand=False)
    out["published_benchmark"] = dataset.map(STAND_IN)
    pub = PUBLISHED.assign(imbalance=PUBLISHED.imbalance.astype(float))
    out = out.assign(imbalance=out["imbalance"].astype(float)).merge(
        pub, how="left", left_on=[method, "published_benchmark", "imbalance"],
        right_on=["method", "published_benchmark", "imbalance"], suffixes=("", "_pub"))
    if method != "method" and "method_pub" in out.columns:
        out = out.drop(columns=["method_pub"])
    out["published_note"] = np.where(out["published_top1_pct"].notna(),
                                     "official CIFAR, other data and best epoch: compare the ordering only", "")
    return out


def dsb_effect(runs: pd.DataFrame, *, by: Iterable[str] = GROUP_KEYS, metrics: Iterable[str] = METRICS,
               method: str = "method", level: float = 0.95) -> pd.DataFrame:
    """DSB − base for every method X with an X+DSB partner in ``runs``, every group and metric (points, paired)."""
    metrics = [m for m in metrics if m in runs.columns]
    pairs = dsb_pairs(runs[method])
    return paired_differences(runs, pairs, metrics, by=by, method=method, level=level, names=("method", "with_dsb"))


def gain_over(runs: pd.DataFrame, reference: str = "CE", *, by: Iterable[str] = GROUP_KEYS, metric: str = "top1",
              method: str = "method", level: float = 0.95) -> pd.DataFrame:
    """``X − reference`` of ``metric`` for every other method X in ``runs``, paired by seed (points, t-interval).

    The same seed means the same subset and initialisation, and for a two-stage method (post-hoc LA, cRT, τ-norm,
    LWS) on the reference's config the very same first-stage network: its difference is what the second stage
    adds. Rows keep the order of first appearance of the methods.
    """
    pairs = [(reference, n) for n in dict.fromkeys(runs[method]) if n != reference]
    return paired_differences(runs, pairs, [metric], by=by, method=method, level=level, names=("reference", "method"))


def stages(epochs: int, stage_epochs: int) -> list[tuple[str, int, int]]:
    """DSB's stages as (name, first epoch, last epoch), 1-based and inclusive; empty stages left out."""
    spans = [("fill", 1, 1), ("refresh", 2, min(stage_epochs, epochs)), ("weight", stage_epochs + 1, epochs)]
    return [(name, a, b) for name, a, b in spans if a <= b]


def pool_dynamics(pool: pd.DataFrame, per_class: pd.DataFrame) -> pd.DataFrame:
    """The pool table (per run, epoch and class) with each class's training count and shot group added."""
    counts = per_class[["run", "class", "train_count", "group"]].drop_duplicates()
    return pool.merge(counts, on=["run", "class"], how="left")


def cost_table(runs: pd.DataFrame, epochs: pd.DataFrame | None = None, *, by: Iterable[str] = GROUP_KEYS,
               method: str = "method") -> pd.DataFrame:
    """Speed of X+DSB over X, paired by seed: whole-run training img/s and, from ``epochs``, the weighting epochs only.

    ``speed_ratio`` = img/s with DSB / img/s without (the paper reports ≈ 0.9); ``weight_epoch_ratio`` = mean
    seconds of the baseline's epochs over the DSB run's epochs in DSB's weighting stage (same epochs). The
    baseline keeps the pool too (``track_pool``), so this is the cost of recomputing S every iteration.
    """
    by = list(by)
    rows = []
    for name, _ in dsb_pairs(runs[method]):
        part = runs[runs[method].isin([name, name + DSB_SUFFIX])]
        for key, group in part.groupby(by, sort=False):
            wide = group.pivot_table(index="seed", columns=method, values="img_per_s").dropna()
            if wide.shape[1] < 2 or wide.empty:
                continue
            ratio = wide[name + DSB_SUFFIX] / wide[name]
            row = {**dict(zip(by, key if isinstance(key, tuple) else (key,))), "method": name, "n_pairs": len(wide),
                   "base_img_per_s": float(wide[name].mean()), "dsb_img_per_s": float(wide[name + DSB_SUFFIX].mean()),
                   "speed_ratio_mean": float(ratio.mean()), "speed_ratio_std": float(ratio.std(ddof=1)) if len(ratio) > 1 else float("nan")}
            if epochs is not None and not epochs.empty:
                row["weight_epoch_ratio"] = _weight_epoch_ratio(epochs, group, name, method)
            rows.append(row)
    return pd.DataFrame(rows)


def _weight_epoch_ratio(epochs: pd.DataFrame, group: pd.DataFrame, name: str, method: str) -> float:
    dsb_runs = group[group[method] == name + DSB_SUFFIX]
    ratios = []
    for r in dsb_runs.itertuples():
        weighting = [e for s, a, b in stages(int(r.epochs), int(r.dsb_stage_epochs)) if s == "weight" for e in range(a, b + 1)]
        base = group[(group[method] == name) & (group.seed == r.seed)]
        if not weighting or base.empty:
            continue
        e_dsb = epochs[(epochs.run == r.run) & epochs.epoch.isin(weighting)].seconds.mean()
        e_base = epochs[(epochs.run == base.run.iloc[0]) & epochs.epoch.isin(weighting)].seconds.mean()
        ratios.append(e_base / e_dsb)
    return float(np.mean(ratios)) if ratios else float("nan")


# ---------------------------------------------------------------------------------------------------------
# slow drift (paper Sec 2)


@dataclass
class Drift:
    """``visits``: one row per iteration (epoch, batch, fraction of training done, mean cosine distance of the
    batch's samples to their previous pooled feature); ``epochs``: per epoch, :func:`semscale.drift.epoch_drift`;
    the run's last-epoch top-1 and its config (with ``record_drift``)."""

    visits: pd.DataFrame
    epochs: pd.DataFrame
    top1: float
    config: TrainConfig
    seconds: float


def measure_drift(config: TrainConfig, root, *, threads: int | None = 1) -> Drift:
    """Train ``config`` with ``record_drift`` through the sweep into ``root`` (or read it back) and return its drift.

    The drift recorder only reads (:mod:`semscale.drift`), so the run computes what the plain config computes: its
    top-1 equals that of the same config without ``record_drift`` run with the same thread count.
    """
    config = dataclasses.replace(config, record_drift=True)
    (result,) = sweep.run([config], root, threads=threads)
    if result.record is None:
        raise RuntimeError(f"the drift run failed: {result.error}")
    read = {name: pd.read_csv(result.path / f"drift_{name}.csv", float_precision="round_trip") for name in ("visits", "epochs")}
    return Drift(read["visits"], read["epochs"], result.top1, result.config, result.record["wall_seconds"])
