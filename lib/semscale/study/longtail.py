"""Notebook 03's computation: DSB against the standard long-tailed baselines (PAPER.md §3, §4.3, §5).

    study_grids = longtail.grids(params)     # the notebook's runs by section, from its parameters (as the CLI builds them)
    points = longtail.main_points(base, settings, methods, seeds)        # every method with and without DSB
    tables = results.collect(sweep.run(points, cache.runs_dir(), jobs=2, threads=1))
    longtail.main_table(tables.runs)         # last-epoch top-1 (and many/medium/few) mean ± std per method, in %
    longtail.dsb_effect(tables.runs)         # DSB − base, paired by seed, with a t-interval over the seeds
    longtail.gain_over(tables.runs, "CE")    # every other method − CE, paired by seed
    longtail.measure_drift(config, root)     # how far each sample's pooled feature moves between visits
    longtail.primary_test(tables.runs, pilot_sd=0.83, effect=1.5)   # the pre-registered CE vs CE+DSB comparison

Everything reported is the last epoch's test accuracy (never the best epoch). Method names follow
``methods.METHODS``: a method ``X`` is paired with ``X+DSB`` when both are in the table; a method without a DSB
partner in the table simply has no paired difference.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator, NullFormatter, ScalarFormatter

from .. import stats, sweep
from ..config import TrainConfig
from ..methods import DSB_SUFFIX, METHODS, base_method, dsb_pairs, with_dsb
from ..plots import MIN_FONT_SIZE, count, message_figure
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


def all_methods(methods: Iterable[str], other_methods: Iterable[str]) -> list[str]:
    """The chapter's methods in order: ``methods``, then the ``other_methods`` not among them."""
    return list(dict.fromkeys([*methods, *other_methods]))


def base_fields(params) -> dict:
    """The fields every run of the chapter shares, from the notebook's parameters."""
    return {k: params[k] for k in ("protocol", "model", "epochs", "dsb_stage_epochs", "crop_padding", "flip",
                                    "eval_every", "eval_heldout")}


def grids(params) -> dict[str, list[sweep.Point]]:
    """Every run notebook 03 trains, by section and most important first: ``primary`` (CE ± DSB on the first
    setting, every primary seed), ``main`` (every setting × method ± DSB × seed, the two-stage methods on their CE
    runs), ``ablation``, ``balanced`` and ``drift`` (one CE run recording its feature drift).

    ``params``: the notebook's parameters by name (its globals, or :func:`semscale.profiles.parameters`), so the
    notebook and ``python -m semscale.sweep --notebook 03`` build the very same points."""
    base, settings, seeds = base_fields(params), params["settings"], params["seeds"]
    reference = {**METHODS["CE+DSB"], "dsb_stage_epochs": params["dsb_stage_epochs"]}
    variants = ablation_variants(reference, params["ablation_stage_epochs"], params["ablation_alphas"],
                                 params["s_prime_alpha"], params["ablation_reductions"])
    drift_method = params["drift_method"]
    return {
        "primary": main_points(base, settings[:1], ["CE"], params["primary_seeds"]),
        "main": main_points(base, settings, all_methods(params["methods"], params["other_methods"]), seeds),
        "ablation": sweep.grid({**base, **params["ablation_setting"]}, variant={"CE (no DSB)": METHODS["CE"], **variants},
                               seed=params["ablation_seeds"]),
        "balanced": sweep.grid({**base, "model": params["balanced_model"]},
                               setting={setting_name(s): s for s in params["balanced_settings"]},
                               method=with_dsb(["CE"]), seed=params["balanced_seeds"]),
        "drift": sweep.grid({**base, **params["drift_setting"], "record_drift": True},
                            method={drift_method: METHODS[drift_method]}, seed=seeds[:1]),
    }


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
    # one row per method and benchmark: where two sources publish one (CDB-CE on CIFAR-100-LT), the first number
    # stands and the source column names both with their numbers
    keys = ["method", "published_benchmark", "imbalance"]
    pub = PUBLISHED.assign(imbalance=PUBLISHED.imbalance.astype(float),
                           published_source=PUBLISHED.published_source + ": " + PUBLISHED.published_top1_pct.astype(str))
    pub = pub.groupby(keys, sort=False, as_index=False).agg(published_top1_pct=("published_top1_pct", "first"),
                                                            published_source=("published_source", "; ".join))
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


def primary_test(runs: pd.DataFrame, pilot_sd: float, effect: float, base: str = "CE", treated: str = "CE+DSB",
                 metric: str = "top1", level: float = 0.95, power: float = 0.8) -> pd.DataFrame:
    """The chapter's one pre-registered comparison: ``treated − base`` of last-epoch ``metric`` (points), paired by
    seed, per dataset variant, with its t-interval, and the power the design had: the smallest true difference its
    seeds detect at ``power`` given the pilot's standard deviation of the differences (``pilot_sd``, fixed before
    the run) and given the one observed. Verdict: "DSB helps" (interval above 0), "DSB hurts" (below 0), "no gain
    of ``effect`` points or more" (interval includes 0, its upper end below ``effect``), else "inconclusive"."""
    table = paired_differences(runs, [(base, treated)], [metric], by=["dataset_variant"], method="method",
                               level=level, names=("method", "with_dsb"))
    if table.empty:
        return table
    alpha = 1 - level
    table["pilot_sd"] = pilot_sd
    table["detectable_pilot"] = [stats.detectable_effect(pilot_sd, n, alpha=alpha, power=power) for n in table.n_pairs]
    table["detectable_observed"] = [stats.detectable_effect(sd, n, alpha=alpha, power=power)
                                    for sd, n in zip(table.diff_std, table.n_pairs)]
    table["effect_of_interest"] = effect
    table["verdict"] = np.select([table.ci_low > 0, table.ci_high < 0, table.ci_high < effect],
                                 ["DSB helps", "DSB hurts", f"no gain of {effect:g} points or more"], "inconclusive")
    return table


def selection_rules(epochs: pd.DataFrame, by: Iterable[str] = ("dataset_variant", "method")) -> pd.DataFrame:
    """Three ways to report a run, side by side (PAPER.md §7, "Selection rules in peers"): the last epoch (this
    study's headline), the epoch chosen on the balanced held-out split of unused training images (``heldout_top1``,
    runs with ``eval_heldout``; ties go to the later epoch), and the best epoch on the test set (what several peer
    codebases print). Per run, then mean ± std per group in points, with best-on-test's optimism over the last epoch.
    ``epochs``: ``results.collect(...).epochs`` of runs evaluated at several epochs (``eval_every``: every k-th epoch
    and the last; the rules choose among the evaluated epochs only)."""
    by = [k for k in by if k in epochs]
    rows = []
    for run, e in epochs.dropna(subset=["top1"]).groupby("run", sort=False):
        e = e.sort_values("epoch")
        chosen = e.heldout_top1.to_numpy()[::-1].argmax() if "heldout_top1" in e and e.heldout_top1.notna().any() else None
        rows.append({**{k: e[k].iloc[0] for k in by}, "run": run, "seed": e.seed.iloc[0] if "seed" in e else None,
                     "evaluated_epochs": len(e), "last": 100 * e.top1.iloc[-1],
                     "heldout_chosen": 100 * e.top1.to_numpy()[::-1][chosen] if chosen is not None else float("nan"),
                     "heldout_epoch": int(e.epoch.to_numpy()[::-1][chosen]) if chosen is not None else None,
                     "best_on_test": 100 * e.top1.max(), "best_epoch": int(e.epoch.to_numpy()[e.top1.to_numpy().argmax()])})
    per_run = pd.DataFrame(rows)
    if per_run.empty:
        return per_run
    per_run["optimism"] = per_run.best_on_test - per_run["last"]
    rules = ["last", "heldout_chosen", "best_on_test", "optimism"]
    table = per_run.groupby(by, sort=False)[rules].agg(["mean", "std"])
    table.columns = [f"{rule}_{stat}" for rule, stat in table.columns]
    groups = per_run.groupby(by, sort=False)
    return table.assign(runs=groups.size(), evaluated_epochs=groups.evaluated_epochs.min()).reset_index()


SELECTION_RULES = {"last": "last epoch", "heldout_chosen": "chosen on held-out", "best_on_test": "best on test",
                   "optimism": "optimism of best on test"}


def selection_view(selection: pd.DataFrame) -> pd.DataFrame:
    """:func:`selection_rules` for reading: "mean ± std" (points) per rule, a row per setting and method."""
    by = [k for k in ("dataset_variant", "method") if k in selection]
    view = selection.set_index(by)[["runs", "evaluated_epochs"]].copy()
    for rule, words in SELECTION_RULES.items():
        view[words] = [f"{m:.2f} ± {s:.2f}" for m, s in zip(selection[f"{rule}_mean"], selection[f"{rule}_std"])]
    return view


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
    baseline keeps the pool too (``track_pool``), so this is the cost of recomputing S every iteration. Stacked runs
    (``stack_members`` > 1) are left out: their time is their stack's, shared with the other members.
    """
    by = list(by)
    if "stack_members" in runs:
        runs = runs[runs.stack_members.fillna(1) <= 1]
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
    read = {name: pd.read_csv(result.path / f"drift_{name}.csv") for name in ("visits", "epochs")}
    return Drift(read["visits"], read["epochs"], result.top1, result.config, result.record["wall_seconds"])


# ---------------------------------------------------------------------------------------------------------
# figures


def grid_words(protocol: str, model: str, epochs: int, seeds: Iterable[int], stage_epochs: int | None = None) -> str:
    """A figure's setting in words: "airbench-lt, airbench-small, 30 epochs, n = 2, seeds 0, 1, 2"."""
    seeds = list(seeds)
    n = f", n = {stage_epochs}" if stage_epochs is not None else ""
    return f"{protocol}, {model}, {count(epochs, 'epoch')}{n}, {'seed' if len(seeds) == 1 else 'seeds'} " + \
        ", ".join(map(str, seeds))


def _interval_bars(ax, frame: pd.DataFrame, y: np.ndarray, **style) -> None:
    ax.errorbar(frame.diff_mean, y, xerr=[frame.diff_mean - frame.ci_low, frame.ci_high - frame.diff_mean], capsize=3,
                **style)


def plot_main_table(table: pd.DataFrame, effect: pd.DataFrame, methods: list[str], title: str) -> plt.Figure:
    """Left: each method's last-epoch top-1 without (filled) and with DSB (open); right: DSB − base, paired by seed."""
    variants = list(dict.fromkeys(table.dataset_variant))
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.4 * len(methods) * len(variants) + 2.4), sharey=True)
    top = effect[effect.metric == "top1"]
    for i, variant in enumerate(variants):
        part = table[table.dataset_variant == variant]
        y = np.arange(len(methods)) + 0.18 * i
        for dsb, marker in [(False, "o"), (True, "s")]:
            p = part[part.dsb == dsb].set_index("base_method").reindex(methods)
            axes[0].errorbar(p.top1_pct_mean, y + (0.08 if dsb else 0), xerr=p.top1_pct_std, fmt=marker, color=f"C{i}",
                             mfc="white" if dsb else None, capsize=3, label=f"{variant}{' +DSB' if dsb else ''}")
        e = top[top.dataset_variant == variant].set_index("method").reindex(methods)
        _interval_bars(axes[1], e, y, fmt="o", color=f"C{i}", label=variant)
    axes[0].set_yticks(np.arange(len(methods)), methods)
    axes[0].invert_yaxis()
    axes[0].set(xlabel="last-epoch top-1 (%), mean ± std over seeds", title="without DSB (filled) and with DSB (open)")
    axes[1].axvline(0, color="black", ls="--", lw=1)
    axes[1].set(xlabel="DSB − base (points), paired by seed, 95 % t-interval", title="the DSB effect")
    axes[0].legend(loc="upper left", bbox_to_anchor=(0, -0.12 - 0.02 * len(methods)), ncol=2)
    for ax in axes:
        ax.margins(x=0.15, y=0.03)
    fig.suptitle(title, y=1.02)
    return fig


def plot_gain(gain: pd.DataFrame, order: list[str], title: str) -> plt.Figure:
    """Every method − CE of the same seed (points, 95 % t-interval); +DSB rows open squares."""
    variants = list(dict.fromkeys(gain.dataset_variant))
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(order) * len(variants) + 1.8))
    dsb = np.array([m.endswith(DSB_SUFFIX) for m in order])
    for i, variant in enumerate(variants):
        p = gain[gain.dataset_variant == variant].set_index("method").reindex(order)
        y = np.arange(len(order)) + 0.2 * i
        for mask, marker in [(~dsb, "o"), (dsb, "s")]:
            _interval_bars(ax, p[mask], y[mask], fmt=marker, color=f"C{i}", mfc="white" if marker == "s" else None,
                           label=f"{variant}{' (+DSB)' if marker == 's' else ''}")
    ax.set_yticks(np.arange(len(order)), order)
    ax.invert_yaxis()
    ax.axvline(0, color="black", ls="--", lw=1)
    ax.set(xlabel="method − CE, last-epoch top-1 (points), paired by seed, 95 % t-interval", title=title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def shot_groups(table: pd.DataFrame) -> pd.DataFrame:
    """The main table in long form: one row per variant, method and shot group (many/medium/few) with its top-1 (%)."""
    groups = table.melt(id_vars=["dataset_variant", "method", "base_method", "dsb"],
                        value_vars=["many_pct_mean", "medium_pct_mean", "few_pct_mean"], var_name="group",
                        value_name="top1_pct")
    groups["group"] = groups.group.str.replace("_pct_mean", "")
    groups["DSB"] = np.where(groups.dsb, "with DSB", "without DSB")
    return groups.dropna(subset=["top1_pct"])


def plot_shot_groups(groups: pd.DataFrame, methods: list[str]) -> plt.Figure:
    """Bars of many/medium/few top-1 per method, without and with DSB, one row per variant, one y scale."""
    grid = sns.catplot(groups, x="base_method", y="top1_pct", hue="DSB", hue_order=["without DSB", "with DSB"],
                       col="group", row="dataset_variant", kind="bar", height=3.2, aspect=0.18 * len(methods) + 0.6,
                       order=methods, sharey=True)
    grid.set_axis_labels("", "top-1 (%), mean over seeds")
    grid.tick_params(axis="x", labelrotation=60)
    grid.set_titles("{row_name} · {col_name}")
    grid.set(ylim=(0, 100))
    return grid.figure


def plot_pool_weights(dynamics: pd.DataFrame, methods: list[str], epochs: int, stage_epochs: int, title: str) -> plt.Figure:
    """Per-class DSB weight over epochs for each method's +DSB run, DSB's three stages shaded."""
    fig, axes = plt.subplots(1, len(methods), figsize=(3.8 * len(methods), 3.6), sharey=True, squeeze=False)
    for ax, m in zip(axes[0], methods):
        part = dynamics[dynamics.method == m + DSB_SUFFIX]
        for name, a, b in stages(epochs, stage_epochs):
            ax.axvspan(a - 0.5, b + 0.5, color={"fill": "#eeeeee", "refresh": "#fdf3d7", "weight": "#e8f4e8"}[name], zorder=0)
            ax.text((a + b) / 2, 0.02, name, ha="center", transform=ax.get_xaxis_transform())
        sns.lineplot(part.assign(cls=part["class"].astype(str)), x="epoch", y="weight", hue="cls", palette="viridis",
                     marker="o", ax=ax, legend="full" if ax is axes[0, -1] else False)
        ax.set(title=f"{m}+DSB", yscale="log", ylabel="DSB weight (mean 1 over classes)")
    if axes[0, -1].get_legend() is not None:
        axes[0, -1].legend(title="class (0 = largest)", bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.suptitle(title, y=1.04)
    return fig


def weight_count_correlation(dynamics: pd.DataFrame) -> pd.Series:
    """Spearman correlation of training count and DSB weight at the last epoch, per method."""
    last = dynamics[dynamics.epoch == dynamics.epoch.max()]
    return last.groupby("method").apply(lambda p: p.train_count.corr(p.weight, method="spearman"), include_groups=False)


def plot_drift(drift: Drift, title: str) -> plt.Figure:
    """Left: per-iteration mean cosine distance of a pooled feature to the one written an epoch earlier;
    right: the largest relative change of S and of a weight between consecutive end-of-epoch pools."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    axes[0].plot(drift.visits.progress_epochs, drift.visits.cos_mean, lw=0.8)
    axes[0].set(xlabel="epochs of training", ylabel="mean cosine distance to the pooled\nfeature written one epoch earlier",
                yscale="log", title=f"{title}, per iteration")
    axes[1].plot(drift.epochs.epoch, drift.epochs.S_max_rel_change, "o-", label="largest relative change of S")
    axes[1].plot(drift.epochs.epoch, drift.epochs.weight_max_rel_change, "s--", label="largest relative change of a weight")
    axes[1].set(xlabel="epoch", ylabel="relative change", yscale="log", title="S and weights: end of epoch e − 1 to e")
    axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes:
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    axes[1].legend()
    return fig


def plot_ablations(differences: pd.DataFrame, title: str) -> plt.Figure:
    """Each ablation variant − CE (points, paired by seed, 95 % t-interval)."""
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(differences) + 1.8))
    _interval_bars(ax, differences.reset_index(drop=True), np.arange(len(differences)), fmt="o")
    ax.set_yticks(np.arange(len(differences)), differences.treated)
    ax.invert_yaxis()
    ax.axvline(0, color="black", ls="--", lw=1)
    ax.set(xlabel="top-1 − CE (points), paired by seed, 95 % t-interval", title=title)
    return fig


def plot_cost(cost: pd.DataFrame, device: str, batch_size: int) -> plt.Figure:
    """DSB's speed over the baseline's in the weighting epochs, per method, beside the paper's ≈ 0.9."""
    if cost.empty:
        return message_figure("No DSB cost measured: every pair trained in a stack, whose members share their time\n"
                              "(semscale.stack). Time DSB with runs trained alone (stack=1).")
    fig, ax = plt.subplots(figsize=(7, 3.2))
    sns.barplot(cost, x="method", y="weight_epoch_ratio", hue="dataset_variant", ax=ax)
    ax.axhline(0.9, color="black", ls=":", label="paper: ≈ 0.9")
    ax.set(ylabel="speed with DSB / without\n(weighting epochs)", xlabel="", title=f"{device}, batch {batch_size}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def per_class_explorer(per_class: pd.DataFrame, variant: str, method: str) -> plt.Figure:
    """The explorer's picture: per-class test top-1 (%) of ``method`` and ``method``+DSB (mean over seeds) and the
    final DSB weights, classes named with their training counts."""
    part = per_class[(per_class.dataset_variant == variant) & per_class.method.isin([method, method + DSB_SUFFIX])]
    if part.empty:
        return message_figure(f"{method} was not trained on {variant}.")
    classes = part.drop_duplicates("class").sort_values("class")
    labels = [f"{n}\n({c})" for n, c in zip(classes.name, classes.train_count)]
    acc = 100 * part.groupby(["class", "method"]).accuracy.mean().unstack().reindex(columns=[method, method + DSB_SUFFIX])
    fig, axes = plt.subplots(1, 2, figsize=(13, 4), gridspec_kw={"width_ratios": [3, 2]})
    acc.plot.bar(ax=axes[0], rot=0, width=0.8)
    axes[0].set(ylim=(0, 100), ylabel="test top-1 (%), mean over seeds", xlabel="class (training images)",
                title=f"{variant}: per-class top-1")
    axes[0].set_xticks(range(len(labels)), labels, fontsize=MIN_FONT_SIZE)
    axes[0].legend(loc="upper left", bbox_to_anchor=(0, -0.22), ncol=2)
    weight = part[part.method == method + DSB_SUFFIX].groupby("class").weight.mean()
    if weight.empty:
        axes[1].set_axis_off()
        axes[1].text(0.5, 0.5, f"{method}+DSB was not trained on {variant}", ha="center", transform=axes[1].transAxes)
    else:
        weight.plot.bar(ax=axes[1], rot=0, color="C2", title=f"{method}+DSB: final DSB weight per class")
        axes[1].axhline(1, color="black", lw=0.5)
        axes[1].set(xlabel="class (0 = largest)", ylabel="weight (mean 1 over classes)")
    return fig


def per_class_explorer_controls(per_class: pd.DataFrame, methods: list[str]) -> dict:
    """The explorer's dropdowns, for ``ipywidgets.interact(per_class_explorer, **controls)``."""
    import ipywidgets as widgets

    style = {"description_width": "initial"}
    return {"per_class": widgets.fixed(per_class),
            "variant": widgets.Dropdown(options=sorted(per_class.dataset_variant.unique()), description="dataset", style=style),
            "method": widgets.Dropdown(options=methods, description="method (against its +DSB)", style=style)}
