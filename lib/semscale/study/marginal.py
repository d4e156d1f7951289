"""The marginal effect of semantic scale (paper Sec 3.3, Fig. 2; notebook 01).

On nested, sample-balanced subsets (m images per class, each subset inside the larger ones):

* ``sample_volume_curves``: every class's sample volume (PAPER.md §1) at every m and subset seed;
* ``fit_saturation``: saturation models fitted per class with ``scipy.optimize.curve_fit`` and compared by AIC
  (``CURVES``: exponential and hyperbolic saturation against an unbounded logarithm);
* ``training_points``: one network per (dataset, m, model, seed) for ``sweep.run``, with a fixed number of
  optimisation steps for every m (``step_schedule``);
* ``feature_volume_curves``: the feature volume of the trained networks on the test split;
* ``correlations`` / ``bootstrap_correlations``: across m, how well summed volume, m and log m track accuracy;
* ``claim_*`` / ``claims_table``: the paper's qualitative claims (a), (b), (c), each decided by a stated number;
* the notebook's tables (``model_comparison``, ``saturation_params``, ``accuracy_and_volume``, ...), a sentence on
  what the run at hand shows (``describe_trends``), its figures (``figure_*``) and its explorer (``ClassExplorer``,
  whose ``show`` is the widget's callback).
"""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter
from scipy import optimize
from scipy import stats as scipy_stats

from .. import data, features, progress, scale, stats, subsets, sweep
from ..config import PROTOCOLS
from ..plots import count, message_figure

# The paper's grids (PAPER.md §4.1): CIFAR-10, and CIFAR-100 / Mini-ImageNet (here: Tiny-ImageNet-200).
CIFAR10_GRID = (50, 100, 200, 300, 400, 500, 600, 800, 1000, 2000, 3000, 4000, 5000)
SMALL_GRID = (10, 20, 30, 50, 100, 200, 300, 400, 500)


# ---------------------------------------------------------------------------------------------------------
# sample volumes over nested subsets


def nested_subsets(labels, sizes: Iterable[int], seeds: Iterable[int]) -> dict[tuple[int, int], np.ndarray]:
    """``{(subset_seed, m): indices}``: the trainer's nested balanced subsets (``subsets.nested_balanced_indices``)."""
    out = {}
    for seed in seeds:
        for m, subset in subsets.nested_balanced_indices(labels, sizes, seed=seed).items():
            out[(int(seed), m)] = subset.indices
    return out


def sample_volume_curves(images, labels, classes: Sequence[str], sizes: Iterable[int], seeds: Iterable[int], *,
                         dataset: str = "", pixel_scale: float = 1.0, size: int = 16,
                         class_chunk: int = 50) -> pd.DataFrame:
    """Sample volume (bits, d = 3·size², grey repeated to three channels) of every class at every m and seed.

    The pixel features of all images are computed once; each subset's classes then go through
    ``scale.class_volumes`` in chunks of ``class_chunk`` classes (bounded memory for 200 classes).
    Tidy frame: dataset, subset_seed, m, class, class_name, volume, pixel_scale, d.
    """
    feats = scale.sample_features(torch.as_tensor(np.asarray(images)), size, pixel_scale=pixel_scale, dtype=torch.float64)
    labels = np.asarray(labels)
    C = len(classes)
    rows = []
    for (seed, m), idx in nested_subsets(labels, sizes, seeds).items():
        lab = labels[idx]
        for lo in range(0, C, class_chunk):
            keep = (lab >= lo) & (lab < lo + class_chunk)
            vol = scale.class_volumes(feats[idx[keep]], torch.as_tensor(lab[keep] - lo), min(class_chunk, C - lo))
            for c, v in enumerate(vol.tolist(), start=lo):
                rows.append({"dataset": dataset, "subset_seed": seed, "m": m, "class": c, "class_name": classes[c],
                             "volume": v, "pixel_scale": pixel_scale, "d": feats.shape[1]})
    return pd.DataFrame(rows).sort_values(["subset_seed", "m", "class"], ignore_index=True)


def summed_volume(curves: pd.DataFrame, value: str = "volume", by: Sequence[str] = ("dataset", "subset_seed", "m")) -> pd.DataFrame:
    """The sum of ``value`` over classes per (dataset, seed, m), with the number of classes summed."""
    g = curves.groupby(list(by), as_index=False)[value]
    return g.sum().rename(columns={value: f"summed_{value}"}).merge(g.size().rename(columns={"size": "classes"}), on=list(by))


# ---------------------------------------------------------------------------------------------------------
# saturation models


@dataclass(frozen=True)
class Curve:
    """A two-parameter curve V(m; V, s) with a starting guess, whether it saturates, and where it reaches 90 %."""

    name: str
    formula: str
    f: Callable
    saturating: bool
    m90: Callable[[float, float], float]  # (V, s) -> m at 90 % of the plateau (inf when it never saturates)


def _exponential(m, v_inf, tau):
    return v_inf * -np.expm1(-m / tau)


def _hyperbolic(m, v_inf, k):
    return v_inf * m / (k + m)


def _logarithmic(m, a, b):
    return a * np.log1p(m / b)


CURVES: dict[str, Curve] = {
    "exponential": Curve("exponential", "V∞·(1 − exp(−m/τ))", _exponential, True, lambda v, s: s * math.log(10)),
    "hyperbolic": Curve("hyperbolic", "V∞·m/(K + m)", _hyperbolic, True, lambda v, s: 9 * s),
    "logarithmic": Curve("logarithmic", "a·log(1 + m/b) (no plateau)", _logarithmic, False, lambda v, s: math.inf),
}


@dataclass
class Fit:
    model: str
    params: tuple[float, float]  # (V∞ or a, τ or K or b)
    rss: float
    n: int
    aic: float
    ok: bool


def aic(rss: float, n: int, k: int) -> float:
    """Akaike's criterion of a least-squares fit with k curve parameters (+1 for the noise variance)."""
    return n * math.log(max(rss, 1e-300) / n) + 2 * (k + 1)


def fit_curve(m, v, model: str) -> Fit:
    """Least-squares fit of ``CURVES[model]`` to the points (m, v); positive parameters, several starting guesses."""
    spec = CURVES[model]
    m, v = np.asarray(m, float), np.asarray(v, float)
    top, mid = float(np.max(v)), float(np.median(m))
    best = None
    for scale_guess in (mid / 4, mid, 4 * mid):
        p0 = (top, scale_guess) if spec.saturating else (top / math.log1p(m.max() / scale_guess), scale_guess)
        try:
            with warnings.catch_warnings():  # the covariance is not used; with two points it cannot be estimated
                warnings.simplefilter("ignore", optimize.OptimizeWarning)
                params, _ = optimize.curve_fit(spec.f, m, v, p0=p0, bounds=([0, 1e-9], [np.inf, np.inf]), maxfev=20000)
        except (RuntimeError, ValueError):
            continue
        rss = float(np.sum((v - spec.f(m, *params)) ** 2))
        if best is None or rss < best[1]:
            best = (params, rss)
    if best is None:
        return Fit(model, (math.nan, math.nan), math.nan, len(m), math.nan, False)
    return Fit(model, (float(best[0][0]), float(best[0][1])), best[1], len(m), aic(best[1], len(m), 2), True)


def fit_saturation(curves: pd.DataFrame, models: Iterable[str] = tuple(CURVES), value: str = "volume",
                   by: Sequence[str] = ("dataset", "class", "class_name")) -> pd.DataFrame:
    """Every model fitted per class to all (m, volume) points of all subset seeds.

    One row per (class, model): V_inf (the plateau; for the logarithm its scale a), s (τ, K or b), m90 (where
    90 % of the plateau is reached), V_at_m_max (measured, mean over seeds), fraction_at_m_max = V(m_max)/V∞,
    rss, aic, delta_aic (to the class's best model) and best (lowest AIC).
    """
    rows = []
    for key, part in curves.groupby(list(by), sort=False):
        key = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        m_max = part.m.max()
        v_max = part.loc[part.m == m_max, value].mean()
        for name in models:
            fit = fit_curve(part.m, part[value], name)
            spec = CURVES[name]
            v_inf = fit.params[0] if spec.saturating else math.nan
            rows.append({**key, "model": name, "formula": spec.formula, "saturating": spec.saturating,
                         "V_inf": v_inf, "s": fit.params[1], "param_a": fit.params[0],
                         "m90": spec.m90(*fit.params) if fit.ok else math.nan,
                         "V_at_m_max": v_max, "m_max": m_max, "fraction_at_m_max": v_max / v_inf if spec.saturating else math.nan,
                         "rss": fit.rss, "n_points": fit.n, "aic": fit.aic, "fit_ok": fit.ok})
    out = pd.DataFrame(rows)
    group = out.groupby(list(by), sort=False).aic
    out["delta_aic"] = out.aic - group.transform("min")
    out["best"] = out.delta_aic == 0
    return out


def predict(fits: pd.DataFrame, m) -> np.ndarray:
    """The fitted curve of one row of ``fit_saturation`` at m."""
    row = fits if isinstance(fits, pd.Series) else fits.iloc[0]
    return CURVES[row.model].f(np.asarray(m, float), row.param_a, row.s)


# ---------------------------------------------------------------------------------------------------------
# training: a fixed number of steps for every m


def batches_per_epoch(m: int, num_classes: int, batch_size: int = 64) -> int:
    return math.ceil(m * num_classes / batch_size)


def step_schedule(m: int, num_classes: int, steps: int, anchor_m: int, batch_size: int = 64, decay: float = 0.98,
                  decay_epochs: float | None = None) -> dict:
    """Epochs and per-epoch lr decay that give every m about ``steps`` steps and the same lr curve against steps.

    epochs = max(1, round(steps / B_m)) with B_m the batches of one epoch of m images per class. The protocol decays
    the lr by ``decay`` per epoch; a run covers ``decay_epochs`` such epochs, compressed into its own epochs:
    lr_decay = decay^(decay_epochs / epochs), so every run ends at decay^decay_epochs of its initial lr and, since
    all runs have about the same number of steps, follows one curve lr(step). ``decay_epochs=None`` takes the
    epochs of the anchor subset (``anchor_m``, the largest trained), which then follows the protocol exactly.
    """
    b, b_anchor = batches_per_epoch(m, num_classes, batch_size), batches_per_epoch(anchor_m, num_classes, batch_size)
    epochs = max(1, round(steps / b))
    if decay_epochs is None:
        decay_epochs = max(1, round(steps / b_anchor))
    return {"epochs": epochs, "lr_decay": float(decay ** (decay_epochs / epochs)), "steps": epochs * b,
            "decay_epochs": decay_epochs}


def training_points(grids: dict[str, Sequence[int]], seeds: Sequence[int], models: Sequence[str], steps: int,
                    num_classes: dict[str, int], base: dict | None = None, resize: dict | None = None,
                    decay_epochs: float | None = None, protocol: str = "paper-sec3") -> list[sweep.Point]:
    """One ``sweep.Point`` per (dataset, m, model, seed) under ``protocol``, network seed = subset seed.

    Epochs come from :func:`step_schedule` at the protocol's batch size; the per-epoch ``lr_decay`` only where the
    protocol's schedule is exponential (a per-step schedule such as airbench's already spans the run's steps).
    Labels: dataset, m, model, seed, steps (the run's actual optimisation steps)."""
    preset = PROTOCOLS[protocol]
    batch_size = (base or {}).get("batch_size", preset["batch_size"])
    points = []
    for dataset, grid in grids.items():
        anchor = max(grid)
        for m in grid:
            sched = step_schedule(m, num_classes[dataset], steps, anchor, batch_size=batch_size, decay_epochs=decay_epochs)
            decay = {"lr_decay": sched["lr_decay"]} if preset["schedule"] == "exponential" else {}
            for model in models:
                for seed in seeds:
                    fields = {"dataset": dataset, "protocol": protocol, "model": model, "train_per_class": m,
                              "subset_seed": seed, "seed": seed, "epochs": sched["epochs"], **decay,
                              "eval_every": 0, "checkpoint_every": 0, **(base or {})}
                    if resize and dataset in resize:
                        fields["resize"] = resize[dataset]
                    points.append(sweep.Point(fields, {"dataset": dataset, "m": m, "model": model, "seed": seed,
                                                       "steps": sched["steps"]}))
    return points


def grids(params) -> dict[str, list[sweep.Point]]:
    """Every run notebook 01 trains (``train``: :func:`training_points` over ``train_grids``), from the notebook's
    parameters by name (its globals, or :func:`semscale.profiles.parameters`): the notebook and
    ``python -m semscale.sweep --notebook 01`` build the very same points."""
    num_classes = {name: len(data.load(name, "test").classes) for name in params["train_grids"]}
    return {"train": training_points(params["train_grids"], params["subset_seeds"], params["models"], params["steps"],
                                     num_classes, resize=params["resize"], decay_epochs=params["decay_epochs"],
                                     protocol=params["protocol"])}


# ---------------------------------------------------------------------------------------------------------
# feature volumes of the trained networks


def _feature_volumes_of_run(run_dir: str, threads: int) -> list[dict]:
    torch.set_num_threads(threads)
    per_class = features.run_scales(run_dir, device="cuda" if torch.cuda.is_available() else "cpu")
    return [{"class": int(row["class"]), "feature_volume_pooled": float(row["feature_test_volume"]),
             "feature_volume_full": float(row["feature_test_volume_full"]), "pooled_dim": int(row["feature_pooled_dim"]),
             "full_dim": int(row["feature_full_dim"])} for _, row in per_class.iterrows()]


def feature_volume_curves(runs: pd.DataFrame, jobs: int = 1, threads: int = 1) -> pd.DataFrame:
    """Per run (rows of ``sweep.collect(...).runs``) and class: the volume of its test-split features under the final
    weights, 64-d pooled (DSB's) and full penultimate, as the run recorded them (:func:`semscale.features.run_scales`:
    a run recorded before that gets them from its weights once, in ``jobs`` spawned processes)."""
    keys = ["run", "dataset", "m", "model", "seed", "subset_seed"]
    paths = list(runs.path)
    if jobs > 1:
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(progress.bar(pool.map(_feature_volumes_of_run, paths, [threads] * len(paths)), total=len(paths),
                                        desc="feature volumes", unit="run"))
    else:
        results = list(progress.bar((_feature_volumes_of_run(p, threads) for p in paths), total=len(paths), desc="feature volumes",
                                    unit="run"))
    rows = [{**{k: row[k] for k in keys if k in row}, **r} for (_, row), res in zip(runs.iterrows(), results) for r in res]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------
# accuracy against volume, m and log m


def _pearson(x, y) -> float:
    return math.nan if len(x) < 3 else stats.corr(x, y, "pearson")


def _spearman(x, y) -> float:
    return math.nan if len(x) < 3 else stats.corr(x, y, "spearman")


def correlations(frame: pd.DataFrame, predictors: Sequence[str], target: str = "top1",
                 by: Sequence[str] = ("dataset", "model"), seed: str = "seed") -> pd.DataFrame:
    """Per group and seed, across m: Pearson and Spearman correlation of ``target`` with each predictor."""
    rows = []
    for key, part in frame.groupby([*by, seed], sort=False):
        key = dict(zip([*by, seed], key))
        for p in predictors:
            rows.append({**key, "predictor": p, "pearson": _pearson(part[p], part[target]),
                         "spearman": _spearman(part[p], part[target]), "n_m": part[p].size})
    return pd.DataFrame(rows)


def bootstrap_correlations(frame: pd.DataFrame, predictors: Sequence[str], target: str = "top1",
                           by: Sequence[str] = ("dataset", "model"), seed: str = "seed", m: str = "m",
                           n_boot: int = 2000, reference: str | None = None, rng_seed: int = 0) -> pd.DataFrame:
    """Pearson r across m with its uncertainty over seeds, by a bootstrap.

    Each replicate draws, for every m independently, one seed's row (target and predictors together, so each point
    stays a real run) and correlates across m. Returns per group and predictor: r of the seed-mean curve, the
    bootstrap mean and 2.5/97.5 % percentiles; with ``reference`` (e.g. "log_m") also r − r_reference per
    replicate (percentiles, the share of replicates where the predictor wins, and the smallest true difference the
    design detects with 80 % power, ``stats.detectable_from_interval``).
    """
    rng = np.random.default_rng(rng_seed)
    rows = []
    for key, part in frame.groupby(list(by), sort=False):
        key = dict(zip(by, key))
        ms = np.sort(part[m].unique())
        cols = [target, *predictors]
        stacks = [part[part[m] == v][cols].to_numpy(float) for v in ms]  # per m: (seeds, 1 + P)
        mean_curve = np.stack([s.mean(0) for s in stacks])
        draws = np.empty((n_boot, len(predictors)))
        for b in range(n_boot):
            pts = np.stack([s[rng.integers(len(s))] for s in stacks])
            draws[b] = [_pearson(pts[:, 1 + j], pts[:, 0]) for j in range(len(predictors))]
        for j, p in enumerate(predictors):
            row = {**key, "predictor": p, "r_mean_curve": _pearson(mean_curve[:, 1 + j], mean_curve[:, 0]),
                   "r_boot_mean": float(np.nanmean(draws[:, j])), "r_lo95": float(np.nanpercentile(draws[:, j], 2.5)),
                   "r_hi95": float(np.nanpercentile(draws[:, j], 97.5)), "n_m": len(ms),
                   "seeds_per_m": int(min(len(s) for s in stacks)), "n_boot": n_boot}
            if reference is not None and reference in predictors:
                diff = draws[:, j] - draws[:, predictors.index(reference)]
                low, high = float(np.nanpercentile(diff, 2.5)), float(np.nanpercentile(diff, 97.5))
                row.update({"reference": reference, "diff_mean": float(np.nanmean(diff)), "diff_lo95": low,
                            "diff_hi95": high, "share_better": float(np.mean(diff > 0)),
                            "diff_detectable": stats.detectable_from_interval(low, high)})
            rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------
# the paper's claims as numbers


COUNT_NULLS = {"count_curve": "the best count-only curve 1 − m^(−b)", "log_m": "log m"}


def claim_saturation(fits: pd.DataFrame, dataset: str) -> dict:
    """(a) Volumes rise fast, then saturate: holds when, in most classes (> 50 %), a saturating model has the
    lowest AIC *and* the class reaches 90 % of its fitted plateau V∞ within the grid (V(m_max) ≥ 0.9 V∞)."""
    f = fits[(fits.dataset == dataset) & fits.best]
    saturated = f.saturating & (f.fraction_at_m_max >= 0.9)
    share = float(saturated.mean())
    models = f.model.value_counts().to_dict()
    return {"dataset": dataset, "claim": "(a) each class's volume rises fast, then saturates",
            "decided_by": "share of classes whose AIC-best model saturates and which reach ≥ 90 % of V∞ within the grid",
            "value": share, "threshold": "> 0.5", "holds": share > 0.5,
            "detail": f"best models {models}; median V(m_max)/V∞ of saturating fits "
                      f"{f.loc[f.saturating, 'fraction_at_m_max'].median():.3f}; classes {len(f)}"}


def claim_levels(curves: pd.DataFrame, dataset: str, alpha: float = 0.01) -> dict:
    """(b) Classes saturate at different levels: one-way ANOVA across classes of the per-seed volumes at the largest
    m whose subsets still differ between seeds (at m = a whole class every seed has the same images and the
    volumes are exact); holds when p < alpha. Detail: the max/min ratio and the coefficient of variation."""
    c = curves[curves.dataset == dataset]
    varies = c.groupby("m").apply(lambda g: g.groupby("class").volume.std().max() > 1e-6, include_groups=False)  # not rounding noise
    m_test = varies[varies].index.max() if varies.any() else c.m.max()
    c = c[c.m == m_test]
    groups = [g.volume.to_numpy() for _, g in c.groupby("class")]
    p = float(scipy_stats.f_oneway(*groups).pvalue) if varies.any() and min(len(g) for g in groups) >= 2 else math.nan
    level = c.groupby("class").volume.mean()
    within = c.groupby("class").volume.std().mean()
    return {"dataset": dataset, "claim": "(b) classes saturate at different levels",
            "decided_by": f"ANOVA p across classes of V(m = {m_test}) over subset seeds", "value": p,
            "threshold": f"< {alpha}", "holds": bool(p < alpha) if not math.isnan(p) else None,
            "detail": f"V(m = {m_test}) max/min {level.max() / level.min():.2f}, CV across classes "
                      f"{level.std() / level.mean():.3f}, mean std over seeds {within:.2f} bits, "
                      f"classes {level.min():.0f}–{level.max():.0f} bits"}


def claim_together(boot: pd.DataFrame, dataset: str, model: str, predictor: str = "summed_volume",
                   min_r: float = 0.8) -> list[dict]:
    """(c) Summed volume and accuracy move together: bootstrap mean Pearson r ≥ min_r with a 95 % interval above 0.
    (c′, beyond the paper) Summed volume tracks accuracy better than the bootstrap's ``reference`` (the count-only
    curve, :func:`with_count_curve`): the 95 % interval of r − r(reference) > 0."""
    b = boot[(boot.dataset == dataset) & (boot.model == model)].set_index("predictor")
    row = b.loc[predictor]
    reference = row.get("reference", "")
    together = bool(row.r_boot_mean >= min_r and row.r_lo95 > 0)
    out = [{"dataset": dataset, "model": model, "claim": "(c) summed volume and top-1 move together across m",
            "decided_by": "bootstrap Pearson r over seeds (95 % interval)", "value": row.r_boot_mean,
            "threshold": f"≥ {min_r} and interval > 0", "holds": together,
            "detail": f"r = {row.r_boot_mean:.3f} [{row.r_lo95:.3f}, {row.r_hi95:.3f}]; "
                      + "; ".join(f"r({p}) = {b.loc[p].r_boot_mean:.3f}" for p in b.index if p != predictor)}]
    if "diff_mean" in row:
        out.append({"dataset": dataset, "model": model,
                    "claim": f"(c′) summed volume predicts top-1 better than {COUNT_NULLS.get(reference, reference)} (not the paper's)",
                    "decided_by": f"bootstrap r(volume) − r({reference})", "value": row.diff_mean,
                    "threshold": "95 % interval > 0", "holds": bool(row.diff_lo95 > 0),
                    "detail": f"difference {row.diff_mean:.3f} [{row.diff_lo95:.3f}, {row.diff_hi95:.3f}], "
                              f"volume better in {row.share_better:.0%} of replicates"})
    return out


# ---------------------------------------------------------------------------------------------------------
# the notebook's tables


def volume_sizes(volume_grids: dict[str, Sequence[int]], train_grids: dict[str, Sequence[int]]) -> dict[str, list[int]]:
    """Per dataset, the subset sizes whose sample volumes are measured: its volume grid and its training grid."""
    return {name: sorted(set(volume_grids.get(name, [])) | set(train_grids.get(name, [])))
            for name in {**volume_grids, **train_grids}}


def volume_share(summed: pd.DataFrame) -> pd.DataFrame:
    """Summed volume (mean over subset seeds) as a share of its value at each dataset's largest m (m × dataset)."""
    rise = summed.groupby(["dataset", "m"]).summed_volume.mean().unstack("dataset")
    return rise / rise.max()


def model_comparison(fits: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and curve: in how many classes it has the lowest AIC, and its median ΔAIC to the best."""
    return (fits.groupby(["dataset", "model"])
            .agg(best_in=("best", "sum"), classes=("best", "size"), median_delta_aic=("delta_aic", "median"))
            .reset_index())


def saturation_params(fits: pd.DataFrame, pixel_scale: float, n_seeds: int) -> pd.DataFrame:
    """The AIC-best fit of every class: plateau, scale, m90 and how far along the class is at the largest m."""
    return fits[fits.best][["dataset", "class", "class_name", "model", "V_inf", "s", "m90", "V_at_m_max", "m_max",
                            "fraction_at_m_max", "n_points"]].assign(pixel_scale=pixel_scale, subset_seeds=n_seeds)


def saturation_levels(params: pd.DataFrame) -> pd.DataFrame:
    """Per dataset: how much the classes' plateaus differ (range, coefficient of variation, max/min) and m90."""
    levels = params.groupby("dataset").agg(
        classes=("V_inf", "size"), V_inf_min=("V_inf", "min"), V_inf_max=("V_inf", "max"),
        V_inf_cv=("V_inf", lambda v: v.std() / v.mean()), m90_median=("m90", "median"),
        fraction_at_m_max_median=("fraction_at_m_max", "median"))
    levels["V_inf_max_over_min"] = levels.V_inf_max / levels.V_inf_min
    return levels


def schedule_table(points: Sequence[sweep.Point], initial_lr: float = 0.01) -> pd.DataFrame:
    """Epochs of each m (the first point's model and seed), and under an exponential schedule the per-epoch lr decay
    and the last epoch's lr."""
    first = points[0].labels
    rows = []
    for p in points:
        if p.labels["seed"] == first["seed"] and p.labels["model"] == first["model"]:
            decay = p.fields.get("lr_decay")
            rows.append({**p.labels, "epochs": p.fields["epochs"], **({} if decay is None else {
                "lr_decay": decay, "final_lr": initial_lr * decay ** (p.fields["epochs"] - 1)})})
    return pd.DataFrame(rows).drop(columns="seed")


def accuracy_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The columns of ``results.collect(...).runs`` this chapter keeps: the run's subset, schedule and accuracy."""
    return runs[["dataset", "dataset_variant", "m", "model", "seed", "subset_seed", "steps", "epochs", "lr_decay",
                 "top1", "balanced", "train_acc", "subset_sha256", "wall_seconds", "threads", "run"]]


def accuracy_and_volume(accuracy: pd.DataFrame, summed: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its accuracy beside the summed sample volume of its subset, log m and the count-only null
    (``with_count_curve``)."""
    frame = accuracy.merge(summed, on=["dataset", "m", "subset_seed"])
    frame["log_m"] = np.log(frame.m)
    return with_count_curve(frame)


def with_count_curve(frame: pd.DataFrame, target: str = "top1", by: Sequence[str] = ("dataset", "model")) -> pd.DataFrame:
    """``frame`` with the count-only null: ``count_curve`` = 1 − m^(−b), b (``count_curve_b``) per group chosen so that
    the curve correlates best with the seed-mean ``target`` across m (``stats.best_count_curve``). A volume credited
    with tracking accuracy must beat it: it knows nothing of the images, only m (claim (c′))."""
    frame = frame.copy()
    for key, part in frame.groupby(list(by), sort=False):
        mean_curve = part.groupby("m")[target].mean()
        b, _ = stats.best_count_curve(mean_curve.index.to_numpy(float), mean_curve.to_numpy())
        rows = frame.index.isin(part.index)
        frame.loc[rows, "count_curve_b"] = b
        frame.loc[rows, "count_curve"] = 1 - part.m.to_numpy(float) ** -b if math.isfinite(b) else math.nan
    return frame


def feature_volume_table(runs: pd.DataFrame, curves: pd.DataFrame, jobs: int = 1, threads: int = 1) -> pd.DataFrame:
    """``feature_volume_curves`` of the runs beside each class's sample volume (``sample_volume``) of the run's subset."""
    fvol = feature_volume_curves(runs, jobs=jobs, threads=threads)
    return fvol.merge(curves.rename(columns={"volume": "sample_volume"}), on=["dataset", "m", "subset_seed", "class"])


def summed_feature_volume(fvol: pd.DataFrame) -> pd.DataFrame:
    """Per run (dataset, model, m, seed): the feature volumes summed over classes, 64-d pooled and full."""
    fsum = fvol.groupby(["dataset", "model", "m", "seed"], as_index=False)[["feature_volume_pooled", "feature_volume_full"]].sum()
    return fsum.rename(columns={"feature_volume_pooled": "summed_feature_volume",
                                "feature_volume_full": "summed_feature_volume_full"})


def sample_vs_feature_rank(fvol: pd.DataFrame) -> pd.DataFrame:
    """Spearman correlation across classes of sample and 64-d feature volume at each dataset's largest m
    (seed means); NaN where either is constant."""
    top = fvol[fvol.m == fvol.groupby("dataset").m.transform("max")]
    rank = top.groupby(["dataset", "model", "class", "class_name"], as_index=False)[["sample_volume", "feature_volume_pooled"]].mean()
    rows = [{"dataset": d, "model": m, "spearman_sample_vs_feature": stats.corr(g.sample_volume, g.feature_volume_pooled, "spearman")}
            for (d, m), g in rank.groupby(["dataset", "model"])]
    return pd.DataFrame(rows).set_index(["dataset", "model"])


def claims_table(fits: pd.DataFrame, curves: pd.DataFrame, boot: pd.DataFrame, datasets: Sequence[str],
                 trained: Sequence[tuple[str, str]], n_seeds: int) -> pd.DataFrame:
    """Claims (a) and (b) on every measured dataset and (c), (c′) on every trained (dataset, model), with a verdict."""
    claims = [claim_saturation(fits, name) for name in datasets]
    claims += [claim_levels(curves, name) for name in datasets]
    claims += [row for name, model in trained for row in claim_together(boot, name, model)]
    claims = pd.DataFrame(claims)
    claims["verdict"] = claims.holds.map({True: "holds", False: "does not hold"}).fillna("undecided")
    claims["seeds"] = n_seeds
    return claims


def _trend(values: Sequence[float]) -> str:
    steps = np.diff(np.asarray(values, float))
    if len(steps) == 0:
        return "a single m"
    if np.all(steps > 0):
        return "rises at every step"
    if np.all(steps < 0):
        return "falls at every step"
    flat = int(np.sum(steps == 0))
    return (f"rises in {int(np.sum(steps > 0))} and falls in {int(np.sum(steps < 0))} of {len(steps)} steps"
            + (f", flat in {flat}" if flat else ""))


def describe_trends(frame: pd.DataFrame) -> str:
    """In words, per trained (dataset, model): how the seed-mean summed volume and top-1 move with m in this run."""
    lines = []
    for (dataset, model), part in frame.groupby(["dataset", "model"], sort=False):
        means = part.groupby("m")[["summed_volume", "top1"]].mean()
        volume = " → ".join(f"{v:.0f}" for v in means.summed_volume)
        top1 = " → ".join(f"{100 * v:.1f}" for v in means.top1)
        together = (np.all(np.diff(means.summed_volume) > 0) and np.all(np.diff(means.top1) > 0))
        lines.append(f"{dataset}, {model}, m = {', '.join(map(str, means.index))} ({count(part.seed.nunique(), 'seed')}): "
                     f"summed sample volume {volume} bits ({_trend(means.summed_volume)}); top-1 {top1} % "
                     f"({_trend(means.top1)}). "
                     + ("Both rise together, the picture of the paper's Fig. 2." if together else
                        "They do not rise together in this run, unlike the paper's Fig. 2."))
    return "\n".join(lines)



# ---------------------------------------------------------------------------------------------------------
# figures


def _plain_log_ticks(ax) -> None:
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 3.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _legend_below(ax, ncol: int = 2) -> None:
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol, frameon=False)


def plot_class_curves(ax, curves: pd.DataFrame, fits: pd.DataFrame | None, dataset: str, n_classes: int = 10,
                      value: str = "volume", ylabel: str = "sample volume (bits)") -> None:
    """The first ``n_classes`` classes' ``value`` against m: seed means ± std over seeds, and with ``fits`` each class's
    AIC-best curve. Without fits the means are joined and each class is shifted a little along m (at most ±13 %), so
    that ten classes' error bars at one m stay apart instead of merging into a stripe."""
    c = curves[(curves.dataset == dataset) & (curves["class"] < n_classes)]
    summary = c.groupby(["class", "class_name", "m"], as_index=False)[value].agg(["mean", "std"])
    colours = sns.color_palette("tab10", n_classes)
    grid = np.geomspace(c.m.min(), c.m.max(), 200)
    shown = summary["class"].nunique()
    for k, ((cls, name), part) in enumerate(summary.groupby(["class", "class_name"])):
        m = part.m if fits is not None else part.m * 10 ** (0.012 * (k - (shown - 1) / 2))
        ax.errorbar(m, part["mean"], yerr=part["std"].fillna(0), fmt="o" if fits is not None else "o-", ms=3, lw=1,
                    elinewidth=0.8, color=colours[cls], label=str(name))
        if fits is not None:
            row = fits[(fits.dataset == dataset) & (fits["class"] == cls) & fits.best]
            if len(row):
                ax.plot(grid, predict(row, grid), color=colours[cls], lw=1)
    ax.set(xscale="log", xlabel="m (images per class)", ylabel=ylabel, title=dataset)
    _plain_log_ticks(ax)


def figure_volume_curves(curves: pd.DataFrame, fits: pd.DataFrame, datasets: Sequence[str], pixel_scale: float) -> plt.Figure:
    """Per dataset: the first ten classes' sample volume against m with their AIC-best fits, a legend under each panel."""
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 6.2), squeeze=False, layout="constrained")
    for ax, name in zip(axes[0], datasets):
        plot_class_curves(ax, curves, fits, name)
        _legend_below(ax)
    seeds = curves.subset_seed.nunique()
    fig.suptitle(f"Sample volume per class (first ten classes, pixels in [0, {pixel_scale:g}]):\n"
                 f"mean ± std over {count(seeds, 'subset seed')} (points) and the AIC-best fit (line)")
    return fig


def figure_volume_and_accuracy(frame: pd.DataFrame, trained: Sequence[tuple[str, str]]) -> plt.Figure:
    """The paper's Fig. 2 view per trained (dataset, model): summed sample volume and top-1 against m."""
    fig, axes = plt.subplots(1, len(trained), figsize=(6 * len(trained), 4.2), squeeze=False, layout="constrained")
    for ax, (name, model) in zip(axes[0], trained):
        plot_volume_and_accuracy(ax, frame, name, model)
    steps = frame.steps.median()
    fig.suptitle(f"Summed sample volume (left axis, circles) and test top-1 (right axis, squares);\n"
                 f"mean ± std over {count(frame.seed.nunique(), 'seed')}, about {steps:.0f} optimisation steps per run")
    return fig


def plot_volume_and_accuracy(ax, frame: pd.DataFrame, dataset: str, model: str, volume: str = "summed_volume") -> None:
    """Summed volume (left axis) and top-1 (right axis) against m: seed means with the seeds' spread."""
    f = frame[(frame.dataset == dataset) & (frame.model == model)]
    s = f.groupby("m")[[volume, "top1"]].agg(["mean", "std"])
    ax.errorbar(s.index, s[(volume, "mean")], yerr=s[(volume, "std")].fillna(0), fmt="o-", color="C0", capsize=3)
    ax.set(xscale="log", xlabel="m (images per class)", title=f"{dataset}, {model}")
    _plain_log_ticks(ax)
    ax.set_ylabel("summed sample volume (bits)", color="C0")
    right = ax.twinx()
    right.errorbar(s.index, 100 * s[("top1", "mean")], yerr=100 * s[("top1", "std")].fillna(0), fmt="s--", color="C3", capsize=3)
    right.set_ylabel("test top-1 (%)", color="C3")
    right.grid(False)


def figure_feature_volumes(fvol: pd.DataFrame, trained: Sequence[tuple[str, str]]) -> plt.Figure:
    """Per trained (dataset, model): each class's sample volume of the training subset (top) and 64-d feature volume
    of the test set (bottom) against m."""
    fig, axes = plt.subplots(2, len(trained), figsize=(6 * len(trained), 9), squeeze=False, layout="constrained")
    for j, (name, model) in enumerate(trained):
        part = fvol[(fvol.dataset == name) & (fvol.model == model)]
        plot_class_curves(axes[0, j], part.assign(volume=part["sample_volume"]), None, name)
        plot_class_curves(axes[1, j], part, None, name, value="feature_volume_pooled",
                          ylabel="feature volume, 64-d, test (bits)")
        axes[0, j].set_title(f"{name}: training subset, pixels")
        axes[1, j].set_title(f"{name}, {model}: test set, features")
        _legend_below(axes[1, j], ncol=3)
    fig.suptitle(f"Per class (first ten): sample volume of the training subset (top)\nand feature volume of the test "
                 f"set (bottom); mean ± std over {count(fvol.seed.nunique(), 'seed')}")
    return fig



def class_explorer_figure(curves: pd.DataFrame, train: data.Split, dataset: str, cls: int, seed: int,
                          images: int = 6) -> plt.Figure:
    """One class of ``dataset``: its sample volume at every m and subset seed with the three curves fitted to it
    (left; axes fixed per dataset so classes compare), and the images the nested subsets of ``seed`` add at the
    grid's sizes (right). A message figure for a class or seed that is not there."""
    n = len(train.classes)
    if not 0 <= cls < n:
        return message_figure(f"{dataset} has {n} classes, numbered 0–{n - 1}: there is no class {cls}.")
    measured = sorted(int(s) for s in curves.subset_seed.unique())
    if seed not in measured:
        return message_figure(f"Subset seed {seed} was not measured on {dataset} (measured: {', '.join(map(str, measured))}).")
    part = curves[curves["class"] == cls]
    grid = np.geomspace(curves.m.min(), curves.m.max(), 200)
    fig = plt.figure(figsize=(13, 4.8), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[1, 1.15])
    ax = left.subplots()
    for s, g in part.groupby("subset_seed"):
        ax.plot(g.m, g.volume, "o", ms=5, label=f"subset seed {s}")
    for _, row in fit_saturation(part).iterrows():
        ax.plot(grid, predict(row, grid), lw=2.5 if row.best else 1,
                label=f"{row.model} ({'best' if row.best else f'ΔAIC {row.delta_aic:.0f}'})")
    ax.set(xscale="log", xlabel="m (images per class)", ylabel="sample volume (bits)",
           xlim=(curves.m.min() / 1.3, curves.m.max() * 1.3), ylim=(0, 1.08 * curves.volume.max()),
           title=f"{dataset}, class {cls}: {train.classes[cls]}")
    _plain_log_ticks(ax)
    ax.legend(loc="lower right")
    m_max = int(curves.m.max())
    order = nested_subsets(train.labels, [m_max], [seed])[(seed, m_max)]
    order = order[train.labels.numpy()[order] == cls]
    shown = [int(m) for m in sorted(curves.m.unique()) if m <= len(order)][:images]
    for sub, m in zip(right.subplots(1, len(shown), squeeze=False)[0], shown):
        image = train.images[int(order[m - 1])]
        pixels = image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
        sub.imshow(pixels, cmap="gray" if image.shape[0] == 1 else None, vmin=0, vmax=255)
        sub.set(title=f"#{m}", xticks=[], yticks=[])
        sub.grid(False)
    right.suptitle(f"image #m: the m-th image of class {cls} that the nested subsets (seed {seed}) add")
    return fig


@dataclass
class ClassExplorer:
    """The chapter's explorer. ``figure(dataset, cls, seed)`` draws ``class_explorer_figure``; a dataset the run did not
    measure is measured on first pick (its sample volumes on ``grid``, capped at its smallest class, and ``seeds``)
    and kept, as are the training splits. ``show`` is the widget's callback."""

    grid: list[int]
    seeds: list[int]
    pixel_scale: float = 1.0
    curves: dict[str, pd.DataFrame] = field(default_factory=dict)
    splits: dict[str, data.Split] = field(default_factory=dict)

    def split(self, dataset: str) -> data.Split:
        if dataset not in self.splits:
            self.splits[dataset] = data.load(dataset, "train")
        return self.splits[dataset]

    def class_count(self, dataset: str) -> int:
        return len(self.split(dataset).classes)

    def volumes(self, dataset: str) -> pd.DataFrame:
        if dataset not in self.curves:
            train = self.split(dataset)
            smallest = int(np.bincount(train.labels.numpy()).min())
            grid = [m for m in self.grid if m <= smallest] or [smallest]
            self.curves[dataset] = sample_volume_curves(train.images, train.labels, train.classes, grid, self.seeds,
                                                        dataset=dataset, pixel_scale=self.pixel_scale)
        return self.curves[dataset]

    def figure(self, dataset: str, cls: int, seed: int) -> plt.Figure:
        try:
            train = self.split(dataset)
        except (data.DatasetError, OSError, ValueError) as error:  # not in the mirror, unreadable, or an unknown name
            return message_figure(f"{dataset} cannot be loaded here: {error}")
        return class_explorer_figure(self.volumes(dataset), train, dataset, cls, seed)

    def show(self, dataset: str, cls: int, seed: int) -> None:
        self.figure(dataset, cls, seed)
        plt.show()
