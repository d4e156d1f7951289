"""Notebook 03's computation: DSB against the standard long-tailed baselines (PAPER.md §3, §4.3, §5).

    points = longtail.main_points(base, settings, methods, seeds)        # every method with and without DSB
    tables = sweep.collect(sweep.run(points, sweep.runs_dir(), jobs=2, threads=1))
    longtail.main_table(tables.runs)         # last-epoch top-1 (and many/medium/few) mean ± std per method, in %
    longtail.dsb_effect(tables.runs)         # DSB − base, paired by seed, with a t-interval over the seeds
    longtail.gain_over(tables.runs, "CE")    # every other method − CE, paired by seed
    longtail.measure_drift(config)           # how far each sample's pooled feature moves between visits

Everything reported is the last epoch's test accuracy (never the best epoch). Method names follow
``sweep.METHODS``: a method ``X`` is paired with ``X+DSB`` when both are in the table; a method without a DSB
partner in the table simply has no paired difference.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd
import torch
from scipy import stats

from . import scale, sweep
from .config import TrainConfig
from .pool import pooled

DSB_SUFFIX = "+DSB"
METRICS = ("top1", "balanced", "many", "medium", "few")
GROUP_KEYS = ("dataset_variant", "imbalance")

# PAPER.md §5: published top-1 (%) on the *official* CIFAR-LT sets under LDAM-DRW's protocol (best epoch in the
# peers' code), and the paper's own DSB-CE / CDB-CE numbers of its Fig. 18 (CIFAR-100-LT, the paper's protocol).
_C10 = "CIFAR-10-LT (official CIFAR)"
_C100 = "CIFAR-100-LT (official CIFAR)"
_PEERS = "peers, LDAM-DRW protocol (PAPER.md §5)"
_FIG18 = "Ma et al. Fig. 18, own protocol (PAPER.md §4.3)"
PUBLISHED = pd.DataFrame(
    [(m, _C10, imb, v, _PEERS) for m, vals in {
        "CE": (70.4, 74.8, 86.4), "Focal": (70.4, 76.7, 86.7), "CB-Focal": (74.6, 79.3, 87.5),
        "LDAM-DRW": (77.0, None, 88.2), "Logit-adjusted": (77.9, None, None)}.items()
     for imb, v in zip((100, 50, 10), vals) if v is not None]
    + [(m, _C100, imb, v, _PEERS) for m, vals in {
        "CE": (38.3, 43.9, 55.7), "Focal": (38.4, 44.3, 55.8), "CB-Focal": (39.6, 45.3, 58.0),
        "LDAM-DRW": (42.0, None, 58.7), "CDB-CE": (42.6, None, 58.7), "Logit-adjusted": (44.1, None, None)}.items()
       for imb, v in zip((100, 50, 10), vals) if v is not None]
    + [("CE+DSB", _C100, imb, v, _FIG18) for imb, v in zip((200, 100, 50, 10), (41.2, 45.5, 49.4, 60.2))]
    + [("CDB-CE", _C100, imb, v, _FIG18) for imb, v in zip((200, 100, 50, 10), (37.4, 42.5, 46.7, 58.7))]
    # Meta-Weight-Net's own CIFAR-10-LT IF 100 number (Shu et al. 2019, Table 1, ResNet-32; quoted by issue 11)
    + [("MWN", _C10, 100, 75.21, "Shu et al. 2019, Table 1")],
    columns=["method", "published_benchmark", "imbalance", "published_top1_pct", "published_source"])
# which published benchmark stands beside which of our dataset variants (only the ordering is comparable)
STAND_IN = {"cifar10-jpeg75": _C10, "tiny-imagenet": _C100}
# the paper's own DSB gains (points of top-1), PAPER.md §4.3
PAPER_GAINS = pd.DataFrame([
    ("CE", "ImageNet-LT, ResNeXt-50", 4.8), ("Focal", "ImageNet-LT, ResNeXt-50", 3.4),
    ("LDAM", "ImageNet-LT, ResNeXt-50", 1.2), ("Balanced Softmax", "ImageNet-LT, ResNeXt-50", 1.6),
    ("CE", "iNaturalist 2018, ResNet-50", 2.6), ("CE", "balanced CIFAR-100 (Table 3), 8 networks", 1.2),
    ("CDB-CE", "CIFAR-100-LT IF 100 (Fig. 18: DSB-CE − CDB-CE)", 3.0),
], columns=["method", "paper_setting", "paper_gain_points"])


# ---------------------------------------------------------------------------------------------------------
# grids


def with_dsb(methods: Iterable[str], catalogue: dict | None = None) -> dict[str, dict]:
    """``{X: fields, X+DSB: fields}`` for each name (a name already ending in +DSB is taken as is)."""
    catalogue = sweep.METHODS if catalogue is None else catalogue
    out = {}
    for name in methods:
        for n in ([name] if name.endswith(DSB_SUFFIX) else [name, name + DSB_SUFFIX]):
            if n not in catalogue:
                raise KeyError(f"unknown method {n!r}; known: {', '.join(catalogue)}")
            out[n] = dict(catalogue[n])
    return out


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


def base_method(name: str) -> str:
    return name[: -len(DSB_SUFFIX)] if name.endswith(DSB_SUFFIX) else name


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
    table = sweep.summarize(frame, by=by + [method] + keep, metrics=[f"{m}_pct" for m in metrics])
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


def _dsb_pairs(method_names: Iterable[str]) -> list[tuple[str, str]]:
    """(X, X+DSB) for every method X whose +DSB partner is among ``method_names``, in order of first appearance."""
    names = list(dict.fromkeys(method_names))
    return [(n, n + DSB_SUFFIX) for n in names if not n.endswith(DSB_SUFFIX) and n + DSB_SUFFIX in names]


def _paired_differences(runs: pd.DataFrame, pairs: list[tuple[str, str]], metrics: Iterable[str], *, by, method,
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


def dsb_effect(runs: pd.DataFrame, *, by: Iterable[str] = GROUP_KEYS, metrics: Iterable[str] = METRICS,
               method: str = "method", level: float = 0.95) -> pd.DataFrame:
    """DSB − base for every method X with an X+DSB partner in ``runs``, every group and metric (points, paired)."""
    metrics = [m for m in metrics if m in runs.columns]
    pairs = _dsb_pairs(runs[method])
    return _paired_differences(runs, pairs, metrics, by=by, method=method, level=level, names=("method", "with_dsb"))


def gain_over(runs: pd.DataFrame, reference: str = "CE", *, by: Iterable[str] = GROUP_KEYS, metric: str = "top1",
              method: str = "method", level: float = 0.95) -> pd.DataFrame:
    """``X − reference`` of ``metric`` for every other method X in ``runs``, paired by seed (points, t-interval).

    The same seed means the same subset and initialisation, and for a two-stage method (post-hoc LA, cRT, τ-norm,
    LWS) on the reference's config the very same first-stage network: its difference is what the second stage
    adds. Rows keep the order of first appearance of the methods.
    """
    pairs = [(reference, n) for n in dict.fromkeys(runs[method]) if n != reference]
    return _paired_differences(runs, pairs, [metric], by=by, method=method, level=level, names=("reference", "method"))


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
    for name, _ in _dsb_pairs(runs[method]):
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


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise 1 − cos(a_i, b_i) of two (N, d) tensors (float64); a zero row gives distance 1."""
    a, b = a.double(), b.double()
    num = (a * b).sum(1)
    den = a.norm(dim=1) * b.norm(dim=1)
    return 1 - torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))


def relative_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise ‖b_i − a_i‖ / ‖a_i‖ (float64; NaN for a zero row of ``a``)."""
    a, b = a.double(), b.double()
    return (b - a).norm(dim=1) / a.norm(dim=1).where(a.norm(dim=1) > 0, torch.full_like(a[:, 0], float("nan")))


def snapshot_drift(snapshots: list[torch.Tensor], labels: torch.Tensor, num_classes: int, alpha: float = 2.0) -> pd.DataFrame:
    """Epoch-to-epoch drift of the pool from its end-of-epoch ``snapshots`` (one (N, d) tensor per epoch, from 1).

    Per epoch e ≥ 2: the mean, median and 90th percentile of each sample's cosine distance between the pool at
    the end of epoch e − 1 and at the end of epoch e, the mean relative distance, and the largest relative
    change over classes of S and of the DSB weight computed from the two pools.
    """
    rows = []
    prev_s = prev_w = None
    for e, snap in enumerate(snapshots, start=1):
        vol = scale.class_volumes(snap, labels, num_classes, validate=False)
        s = scale.imbalance(vol, scale.class_centers(snap, labels, num_classes, validate=False), alpha, validate=False)[2]
        w = scale.dsb_weights(s, validate=False)
        if e >= 2:
            d = cosine_distance(snapshots[e - 2], snap)
            rows.append({"epoch": e, "cos_mean": float(d.mean()), "cos_median": float(d.median()),
                         "cos_p90": float(torch.quantile(d, 0.9)),
                         "rel_mean": float(relative_distance(snapshots[e - 2], snap).nanmean()),
                         "S_max_rel_change": float(((s - prev_s).abs() / prev_s).max()),
                         "weight_max_rel_change": float(((w - prev_w).abs() / prev_w).max())})
        prev_s, prev_w = s, w
    return pd.DataFrame(rows)


@dataclass
class Drift:
    """``visits``: one row per iteration (epoch, batch, fraction of training done, mean cosine distance of the
    batch's samples to their previous pooled feature); ``epochs``: :func:`snapshot_drift`; the final record."""

    visits: pd.DataFrame
    epochs: pd.DataFrame
    top1: float
    config: TrainConfig
    seconds: float


def measure_drift(config: TrainConfig, *, threads: int | None = 1) -> Drift:
    """Train ``config`` epoch by epoch with the engine's own pieces and measure how far pooled features move.

    Uses semscale.train's ``build_run``/``new_epoch``/``train_epoch``/``end_epoch`` exactly as ``train`` does (so
    the run is the one the sweep trains, for the same thread count), and wraps the pool's ``update`` of this run
    only: before each write it records the cosine distance between every sample's new pooled feature and the one
    it replaces (written one epoch earlier). The engine is not changed; nothing is written to disk.
    """
    from . import pipeline
    from . import train as engine

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        config = dataclasses.replace(config, progress=False)
        device = engine.resolve_device(config.device)
        data = pipeline.load_run_data(config, device)
        config = engine.resolve(config, data.train_counts)
        run = engine.build_run(config, data, device)
        pool, visits, where = run.pool, [], {"epoch": 0, "batch": 0}
        update = pool.update

        def recording_update(ids, features, **options):
            old, filled = pool.features[ids], pool.filled[ids]
            if bool(filled.any()):
                d = cosine_distance(old[filled], pooled(features, pool.dim)[filled])
                visits.append((where["epoch"], where["batch"], float(d.mean()), int(filled.sum())))
            where["batch"] += 1
            update(ids, features, **options)

        pool.update = recording_update
        history = {"epochs": [], "pool": [], "train_seconds": 0.0}
        snapshots, test = [], None
        for epoch in range(1, config.epochs + 1):
            where.update(epoch=epoch, batch=0)
            state = engine.new_epoch(run, epoch)
            engine.train_epoch(run, state)
            test = engine.end_epoch(run, state, history)
            snapshots.append(pool.features.clone())
    finally:
        torch.set_num_threads(before)
    nb = run.num_batches
    table = pd.DataFrame(visits, columns=["epoch", "batch", "cos_mean", "samples"])
    table["progress_epochs"] = table.epoch - 1 + (table.batch + 1) / nb
    epochs = snapshot_drift(snapshots, pool.labels, data.num_classes, config.dsb_alpha)
    return Drift(table, epochs, float(test["top1"]), config, time.perf_counter() - start)
