"""The marginal effect of semantic scale (paper Sec 3.3, Fig. 2; notebook 01).

On nested, sample-balanced subsets (m images per class, each subset inside the larger ones):

* ``sample_volume_curves``: every class's sample volume (PAPER.md §1) at every m and subset seed;
* ``fit_saturation``: saturation models fitted per class with ``scipy.optimize.curve_fit`` and compared by AIC
  (``CURVES``: exponential and hyperbolic saturation against an unbounded logarithm);
* ``training_points``: one network per (dataset, m, model, seed) for ``sweep.run``, with a fixed number of
  optimisation steps for every m (``step_schedule``);
* ``feature_volume_curves``: the feature volume of the trained networks on the test split;
* ``correlations`` / ``bootstrap_correlations``: across m, how well summed volume, m and log m track accuracy;
* ``claims``: the paper's qualitative claims (a), (b), (c), each decided by a stated number.
"""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import optimize
from scipy import stats as scipy_stats

from .. import features, scale, stats, subsets, sweep

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
                    decay_epochs: float | None = None) -> list[sweep.Point]:
    """One ``sweep.Point`` per (dataset, m, model, seed), protocol paper-sec3, network seed = subset seed.

    Labels: dataset, m, model, seed, steps (the run's actual optimisation steps)."""
    points = []
    for dataset, grid in grids.items():
        anchor = max(grid)
        for m in grid:
            sched = step_schedule(m, num_classes[dataset], steps, anchor, decay_epochs=decay_epochs)
            for model in models:
                for seed in seeds:
                    fields = {"dataset": dataset, "protocol": "paper-sec3", "model": model, "train_per_class": m,
                              "subset_seed": seed, "seed": seed, "epochs": sched["epochs"], "lr_decay": sched["lr_decay"],
                              "eval_every": 0, "checkpoint_every": 0, **(base or {})}
                    if resize and dataset in resize:
                        fields["resize"] = resize[dataset]
                    points.append(sweep.Point(fields, {"dataset": dataset, "m": m, "model": model, "seed": seed,
                                                       "steps": sched["steps"]}))
    return points


# ---------------------------------------------------------------------------------------------------------
# feature volumes of the trained networks


def _feature_volumes_of_run(run_dir: str, threads: int) -> list[dict]:
    torch.set_num_threads(threads)
    feats = features.extract(run_dir, split="test", device="cuda" if torch.cuda.is_available() else "cpu", batch_size=256)
    C = len(feats.classes)
    pooled = scale.class_volumes(feats.pooled, feats.labels, C).cpu().numpy()
    full = scale.class_volumes(feats.features, feats.labels, C).cpu().numpy()
    return [{"class": c, "feature_volume_pooled": float(p), "feature_volume_full": float(f),
             "pooled_dim": feats.pooled.shape[1], "full_dim": feats.features.shape[1]}
            for c, (p, f) in enumerate(zip(pooled, full))]


def feature_volume_curves(runs: pd.DataFrame, jobs: int = 1, threads: int = 1) -> pd.DataFrame:
    """Per run (rows of ``sweep.collect(...).runs``) and class: the volume of its test-split features under the final
    weights, 64-d pooled (DSB's) and full penultimate. Runs go through ``jobs`` spawned processes."""
    keys = ["run", "dataset", "m", "model", "seed", "subset_seed"]
    paths = list(runs.path)
    if jobs > 1:
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(_feature_volumes_of_run, paths, [threads] * len(paths)))
    else:
        results = [_feature_volumes_of_run(p, threads) for p in paths]
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
    replicate (percentiles and the share of replicates where the predictor wins).
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
                row.update({"reference": reference, "diff_mean": float(np.nanmean(diff)),
                            "diff_lo95": float(np.nanpercentile(diff, 2.5)), "diff_hi95": float(np.nanpercentile(diff, 97.5)),
                            "share_better": float(np.mean(diff > 0))})
            rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------
# the paper's claims as numbers


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
                   reference: str = "log_m", min_r: float = 0.8) -> list[dict]:
    """(c) Summed volume and accuracy move together: bootstrap mean Pearson r ≥ min_r with a 95 % interval above 0.
    (c′, beyond the paper) Summed volume tracks accuracy better than log m: the 95 % interval of r − r(log m) > 0."""
    b = boot[(boot.dataset == dataset) & (boot.model == model)].set_index("predictor")
    row = b.loc[predictor]
    together = bool(row.r_boot_mean >= min_r and row.r_lo95 > 0)
    out = [{"dataset": dataset, "model": model, "claim": "(c) summed volume and top-1 move together across m",
            "decided_by": "bootstrap Pearson r over seeds (95 % interval)", "value": row.r_boot_mean,
            "threshold": f"≥ {min_r} and interval > 0", "holds": together,
            "detail": f"r = {row.r_boot_mean:.3f} [{row.r_lo95:.3f}, {row.r_hi95:.3f}]; "
                      + "; ".join(f"r({p}) = {b.loc[p].r_boot_mean:.3f}" for p in b.index if p != predictor)}]
    if "diff_mean" in row:
        out.append({"dataset": dataset, "model": model,
                    "claim": f"(c′) summed volume predicts top-1 better than {reference.replace('_', ' ')} (not the paper's)",
                    "decided_by": f"bootstrap r(volume) − r({reference})", "value": row.diff_mean,
                    "threshold": "95 % interval > 0", "holds": bool(row.diff_lo95 > 0),
                    "detail": f"difference {row.diff_mean:.3f} [{row.diff_lo95:.3f}, {row.diff_hi95:.3f}], "
                              f"volume better in {row.share_better:.0%} of replicates"})
    return out


# ---------------------------------------------------------------------------------------------------------
# figures


def plot_class_curves(ax, curves: pd.DataFrame, fits: pd.DataFrame | None, dataset: str, n_classes: int = 10,
                      value: str = "volume") -> None:
    """The first ``n_classes`` classes' ``value`` against m (mean ± std over seeds), with each class's AIC-best fit."""
    import seaborn as sns

    c = curves[(curves.dataset == dataset) & (curves["class"] < n_classes)]
    stats_ = c.groupby(["class", "class_name", "m"], as_index=False)[value].agg(["mean", "std"])
    colours = sns.color_palette("tab10", n_classes)
    grid = np.geomspace(c.m.min(), c.m.max(), 200)
    for (cls, name), part in stats_.groupby(["class", "class_name"]):
        ax.errorbar(part.m, part["mean"], yerr=part["std"].fillna(0), fmt="o" if fits is not None else "o-", ms=3,
                    lw=1, color=colours[cls], label=str(name))
        if fits is not None:
            row = fits[(fits.dataset == dataset) & (fits["class"] == cls) & fits.best]
            if len(row):
                ax.plot(grid, predict(row, grid), color=colours[cls], lw=1)
    ax.set(xscale="log", xlabel="m (images per class)", ylabel=f"{value.replace('_', ' ')} (bits)", title=dataset)
    _plain_log_ticks(ax)


def _plain_log_ticks(ax) -> None:
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 3.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_volume_and_accuracy(ax, frame: pd.DataFrame, dataset: str, model: str, volume: str = "summed_volume") -> None:
    """Summed volume (left axis) and top-1 (right axis) against m: seed means with the seeds' spread."""
    f = frame[(frame.dataset == dataset) & (frame.model == model)]
    s = f.groupby("m")[[volume, "top1"]].agg(["mean", "std"])
    ax.errorbar(s.index, s[(volume, "mean")], yerr=s[(volume, "std")].fillna(0), fmt="o-", color="C0", label="summed sample volume")
    ax.set(xscale="log", xlabel="m (images per class)", title=f"{dataset}, {model}")
    _plain_log_ticks(ax)
    ax.set_ylabel("summed sample volume (bits)", color="C0")
    right = ax.twinx()
    right.errorbar(s.index, 100 * s[("top1", "mean")], yerr=100 * s[("top1", "std")].fillna(0), fmt="s--", color="C3", label="top-1")
    right.set_ylabel("test top-1 (%)", color="C3")
    right.grid(False)
