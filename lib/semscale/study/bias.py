"""Semantic scale against model bias (notebook 02; PAPER.md §2, §4.2 and §6).

Per class, on exactly the training subset a network saw: N, the effective number E_n = (1 − β^N)/(1 − β)
(β = 0.9999, PAPER.md §6), the volume, W, S′ and S = S′ ⊙ W for several α, measured in pixel space (the
paper's sample volume, d = 768) or on a trained network's 64-d pooled features. Then the statistics of
Table 1 and Figs 3–4:

* :func:`correlation_table`: Table 1 for one dataset, model and source, each measure's Pearson and Spearman
  correlation across classes with the seed-mean per-class accuracy and a bootstrap interval over classes and seeds
  (:func:`semscale.stats.bootstrap_corr`). A measure that is constant across classes (N and E_n on balanced data)
  has no correlation: ``defined`` is False and the numbers are NaN.
* Rank agreement across raters and incremental R² are :mod:`semscale.stats`'s; the paper's Table 1 is
  :data:`semscale.study.paper.PAPER_TABLE1`.
* The notebook's runs (:func:`training_points`), measures on the checked training subsets, Table 1 and its views,
  Fig. 3, the α and β sweeps, Fig. 4's raters, the incremental R², their figures (``figure_*``) and the explorer
  (:class:`MeasureExplorer`, whose ``show`` is the widget's callback). Column names stay as in the tables
  (``S_a1.5``); figures and displays use :func:`measure_label` and :func:`source_label`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from .. import features, pipeline, progress, scale, stats, subsets, sweep
from ..config import TrainConfig
from ..plots import count, message_figure
from .paper import PAPER_COUNTERPART, PAPER_TABLE1

BETA = 0.9999
ALPHAS = (1.0, 1.5, 2.0, 2.5, 3.0)
S_DATA = "S_data"  # S at the dataset's α: 2 on long-tailed, 1 on balanced variants (PAPER.md §2)
COUNT_CURVE = "N_curve"  # the count-only null 1 − N^(−b), b fitted to the accuracy (stats.best_count_curve)
FEATURE_SOURCE = "feature (64-d pool)"

#: The study's dataset variants as TrainConfig fields (names follow ``pipeline.select_subset``).
VARIANTS: dict[str, dict] = {
    "mnist": {"dataset": "mnist"},
    "mnist-lt-1": {"dataset": "mnist", "train_counts": subsets.MNIST_LT_1},
    "mnist-lt-2": {"dataset": "mnist", "train_counts": subsets.MNIST_LT_2},
    "fashion-mnist": {"dataset": "fashion-mnist"},
    "cifar10-jpeg75": {"dataset": "cifar10-jpeg75"},
    "cifar10-jpeg75-lt200": {"dataset": "cifar10-jpeg75", "imbalance": 200},
    # the stand-in for CIFAR-100-LT (the paper's IF for Fig. 3 is not stated; 100 is this project's choice)
    "tiny-imagenet-lt100": {"dataset": "tiny-imagenet", "imbalance": 100, "resize": 32},
}


def is_long_tailed(fields: dict) -> bool:
    return fields.get("train_counts") is not None or float(fields.get("imbalance", 1)) != 1


def dataset_alpha(fields: dict) -> float:
    """PAPER.md §2: α = 2 on long-tailed data, 1 on balanced data (used for W and the 'S at the dataset's α')."""
    return 2.0 if is_long_tailed(fields) else 1.0


def s_column(alpha: float) -> str:
    return f"S_a{alpha:g}"


def measure_columns(alphas: Iterable[float] = ALPHAS) -> list[str]:
    """Table 1's columns, in its order: N, E_n, the count-only curve (ours), W, S′, S at every α."""
    return ["N", "E_n", COUNT_CURVE, "W", "S_prime", *[s_column(a) for a in alphas]]


def measure_label(column: str) -> str:
    """The display name of a measure column: "S α=1.5" for S_a1.5, "S′" for S_prime (written into the tables too)."""
    if column.startswith("S_a"):
        return f"S α={column[3:]}"
    return {"S_prime": "S′", "E_n": "E_n", "volume": "volume (bits)", S_DATA: "S at the dataset's α",
            COUNT_CURVE: "1 − N^(−b)", "volume_shrinkage": "shrinkage volume (bits)"}.get(column, column)


def sample_source(pixel_scale: float) -> str:
    """The ``source`` of sample-volume measures at a pixel scale, as in the tables: "sample, pixels x1"."""
    return f"sample, pixels x{pixel_scale:g}"


def source_label(source: str) -> str:
    """A measure source in words: "sample volume, pixels in [0, 1]" or "network features (64-d pool)"."""
    if source == FEATURE_SOURCE:
        return "network features (64-d pool)"
    return f"sample volume, pixels in [0, {source.rsplit('x', 1)[1]}]" if source.startswith("sample, pixels x") else source


# ---------------------------------------------------------------------------------------------------------
# per-class measures


def effective_number(n, beta: float = BETA) -> np.ndarray:
    """Cui et al.'s effective number (1 − β^n)/(1 − β), β in [0, 1); n = 0 gives 0."""
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    n = np.asarray(n, dtype=np.float64)
    if beta == 0.0:
        return np.where(n > 0, 1.0, 0.0)
    return np.where(n > 0, -np.expm1(np.maximum(n, 1) * math.log(beta)) / (1.0 - beta), 0.0)


def class_measures(volumes, distances, counts, *, alphas: Sequence[float] = ALPHAS, beta: float = BETA,
                   w_alpha: float = 1.0) -> pd.DataFrame:
    """One row per class: N, E_n, volume, W (at ``w_alpha``), S′ and S at every α (PAPER.md §2), from the volumes
    and the class centres' mean distances (:func:`semscale.scale.center_distances`)."""
    volumes = torch.tensor(np.asarray(volumes, dtype=np.float64))  # a copy: a pandas column's array is read-only
    distances = torch.tensor(np.asarray(distances, dtype=np.float64))
    counts = np.asarray(counts, dtype=np.int64)
    s_prime, w, _ = scale.imbalance_from_distances(volumes, distances, w_alpha)
    frame = pd.DataFrame({"class": np.arange(len(counts)), "N": counts, "E_n": effective_number(counts, beta),
                          "volume": volumes.cpu().numpy(), "W": w.cpu().numpy(), "S_prime": s_prime.cpu().numpy()})
    for a in alphas:
        frame[s_column(a)] = scale.imbalance_from_distances(volumes, distances, a)[2].cpu().numpy()
    frame["beta"], frame["w_alpha"] = beta, w_alpha
    return frame


def sample_measures(subset: pipeline.TrainingImages, *, pixel_scale: float = 1.0, size: int = 16,
                    alphas: Sequence[float] = ALPHAS, beta: float = BETA, w_alpha: float = 1.0) -> pd.DataFrame:
    """Table 1's measures from the sample volume (pixels resized to size×size×3) of a training subset
    (:func:`semscale.pipeline.training_images`, on the CPU)."""
    C = len(subset.classes)
    vol = scale.sample_volume(subset.images, subset.labels, C, size, pixel_scale=pixel_scale)
    centers = scale.class_centers(scale.sample_features(subset.images, size, pixel_scale=pixel_scale), subset.labels, C)
    counts = np.bincount(subset.labels.numpy(), minlength=C)
    frame = class_measures(vol, scale.center_distances(centers), counts, alphas=alphas, beta=beta, w_alpha=w_alpha)
    frame["volume_shrinkage"] = scale.shrinkage_volumes(
        scale.sample_features(subset.images, size, pixel_scale=pixel_scale), subset.labels, C).numpy()
    frame.insert(1, "name", [subset.classes[c] for c in frame["class"]])
    frame.insert(0, "dataset_variant", subset.variant)
    frame["source"] = sample_source(pixel_scale)
    frame["pixel_scale"], frame["subset_sha256"] = pixel_scale, subset.subset.sha256
    return frame


def feature_measures(run_dir, *, alphas: Sequence[float] = ALPHAS, beta: float = BETA, w_alpha: float = 1.0) -> pd.DataFrame:
    """The same measures on a trained run's 64-d pooled features of its training subset (final weights, eval mode),
    as the run recorded them (:func:`semscale.features.run_scales`)."""
    recorded = features.run_scales(run_dir)
    frame = class_measures(recorded.feature_train_volume, recorded.feature_train_center_distance, recorded.train_count,
                           alphas=alphas, beta=beta, w_alpha=w_alpha)
    frame["volume_shrinkage"] = recorded.feature_train_volume_shrinkage.to_numpy()
    frame.insert(1, "name", recorded.name.tolist())
    frame["source"], frame["run"] = FEATURE_SOURCE, Path(run_dir).name
    return frame


def estimator_ablation(measures: pd.DataFrame, by: Sequence[str] = ("variant", "source", "run")) -> pd.DataFrame:
    """The paper's volume (PAPER.md §1) against the shrinkage-corrected one (§7, ``volume_shrinkage``) per variant and
    source (and run, for features): Spearman between the two class rankings, how many classes change rank, the
    largest change and the classes that move most."""
    keys = [k for k in by if k in measures]
    rows = []
    for key, part in measures.groupby(keys, sort=False, dropna=False):
        paper = part.volume.rank(ascending=False, method="average").to_numpy()
        shrunk = part.volume_shrinkage.rank(ascending=False, method="average").to_numpy()
        moved = np.abs(paper - shrunk)
        order = np.argsort(-moved, kind="stable")[:3]
        rows.append({**dict(zip(keys, key if isinstance(key, tuple) else (key,))), "classes": len(part),
                     "spearman": stats.corr(part.volume, part.volume_shrinkage, "spearman"),
                     "classes_moved": int((moved > 0).sum()), "largest_move": float(moved.max()),
                     "moved_most": ", ".join(f"{part.name.iloc[i]} ({paper[i]:g}→{shrunk[i]:g})" for i in order if moved[i] > 0)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------
# correlations with intervals


def correlation_table(measures: pd.DataFrame, accuracy: pd.DataFrame, columns: Sequence[str], *,
                      methods: Sequence[str] = stats.CORRELATIONS, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Tidy Table 1 for one (dataset, model, source): a row per measure and method.

    measures: per-class rows with ``class`` and the measure columns, plus ``seed`` if they vary by seed.
    accuracy: per-class rows with ``seed``, ``class``, ``accuracy``.
    """
    acc = accuracy.pivot_table(index="seed", columns="class", values="accuracy")
    if COUNT_CURVE in columns and COUNT_CURVE not in measures:
        measures = with_count_curve(measures, acc.mean(axis=0))
    rows = []
    for col in columns:
        if "seed" in measures.columns and measures["seed"].notna().all():
            m = measures.pivot_table(index="seed", columns="class", values=col).loc[acc.index, acc.columns].to_numpy()
        else:
            m = measures.set_index("class")[col].loc[acc.columns].to_numpy()
        for method in methods:
            iv = stats.bootstrap_corr(m, acc.to_numpy(), method, n_boot=n_boot, level=level, seed=seed)
            rows.append({"measure": col, "label": measure_label(col), "method": method, **asdict(iv), "text": iv.text()})
    return pd.DataFrame(rows)


def with_count_curve(measures: pd.DataFrame, mean_accuracy: pd.Series) -> pd.DataFrame:
    """``measures`` with the count-only null ``N_curve`` = 1 − N^(−b) (and ``N_curve_b``): b chosen so that the curve
    correlates best with the seed-mean per-class accuracy (``stats.best_count_curve``). A scale credited with
    predicting accuracy on long-tailed data must beat it: it knows only how many images a class has, and it is
    fitted to the very accuracies it predicts (so it is, if anything, favoured)."""
    per_class = measures.drop_duplicates("class").set_index("class")
    classes = [c for c in mean_accuracy.index if c in per_class.index]
    b, _ = stats.best_count_curve(per_class.N.loc[classes].to_numpy(float), mean_accuracy.loc[classes].to_numpy())
    # where N is the same for every class no curve of it correlates: a constant, so Table 1 says "undefined" as for N
    return measures.assign(N_curve_b=b, N_curve=1 - measures.N.astype(float) ** -b if math.isfinite(b) else 0.0)


def primary_test(per_class: pd.DataFrame, measures: pd.DataFrame, variant: str, model: str, source: str,
                 measure: str, against: str = "N", *, effect: float = 0.1, n_boot: int = 2000,
                 level: float = 0.95) -> pd.DataFrame:
    """The chapter's one pre-registered comparison: r(measure) − r(against) across classes, Pearson with the seed-mean
    per-class accuracy of ``variant``'s ``model`` networks, with a paired bootstrap over classes and seeds (each
    replicate resamples both correlations alike), and the smallest difference the design detects (from the
    interval's width, normal approximation). Verdict: "the scale beats the count" (interval above 0), "the count
    beats the scale" (below 0), "no difference of ``effect`` or more" (the interval inside ±effect), else
    "inconclusive"."""
    m = measures[(measures.variant == variant) & (measures.source == source)]
    if m.empty or per_class[(per_class.variant == variant) & (per_class.model == model)].empty:
        raise ValueError(f"no {source!r} measures or no {model} accuracy for {variant!r}: pick a trained variant")
    acc = accuracy_matrix(per_class, variant=variant, model=model)
    if COUNT_CURVE in (measure, against):
        m = with_count_curve(m, acc.mean(axis=0))
    m = m.drop_duplicates("class").set_index("class").loc[acc.columns]
    out = stats.bootstrap_corr_difference(m[measure].to_numpy(float), m[against].to_numpy(float), acc.to_numpy(),
                                          n_boot=n_boot, level=level)
    verdict = ("the scale beats the count" if out["low"] > 0 else "the count beats the scale" if out["high"] < 0
               else f"no difference of {effect:g} or more" if -effect < out["low"] and out["high"] < effect
               else "inconclusive")
    return pd.DataFrame([{"variant": variant, "model": model, "source": source, "measure": measure_label(measure),
                          "against": measure_label(against), **out, "effect_of_interest": effect, "verdict": verdict}])


# ---------------------------------------------------------------------------------------------------------
# small helpers for the notebook

def accuracy_matrix(per_class: pd.DataFrame, **where) -> pd.DataFrame:
    """Per-class test accuracy as a (seed × class) frame for the rows matching ``where`` (column = value)."""
    rows = per_class
    for column, value in where.items():
        rows = rows[rows[column] == value]
    if rows.empty:
        raise KeyError(f"no per-class rows for {where}")
    return rows.pivot_table(index="seed", columns="class", values="accuracy")



def run_words(models: Sequence[str], epochs: int | str, seeds: Sequence[int]) -> str:
    """The networks of a figure in words: "cnn, 3 epochs, 3 seeds" (``epochs`` may be a range, "10–30")."""
    trained = count(epochs, "epoch") if isinstance(epochs, int) else f"{epochs} epochs"
    return f"{' and '.join(models)}, {trained}, {count(len(seeds), 'seed')}"


def epochs_label(runs: pd.DataFrame, variants: Iterable[str] | None = None) -> int | str:
    """The epochs the runs of ``variants`` (all runs: None) trained for: one number, or "a–b" where they differ."""
    part = runs if variants is None else runs[runs.variant.isin(list(variants))]
    values = sorted(int(e) for e in part.epochs.unique())
    return values[0] if len(values) == 1 else f"{values[0]}–{values[-1]}"


# ---------------------------------------------------------------------------------------------------------
# the notebook's networks and measures


def balanced_variant(rank_dataset: str, m: int) -> str:
    """The name of the balanced subset of ``rank_dataset`` with m images per class: "cifar10-jpeg75-m400"."""
    return f"{rank_dataset}-m{m}"


def variant_fields(variant: str, rank_dataset: str | None = None) -> dict:
    """TrainConfig fields of a variant: one of VARIANTS, or ``balanced_variant(rank_dataset, m)``."""
    if variant in VARIANTS:
        return VARIANTS[variant]
    m = int(variant.rsplit("-m", 1)[1])
    return {**VARIANTS[rank_dataset], "train_per_class": m}


def training_points(trained: Sequence[str], models: Sequence[str], seeds: Sequence[int], epochs: int, rank_dataset: str,
                    rank_sizes: Sequence[int], rank_models: Sequence[str], rank_model_m: int,
                    rank_seeds: Sequence[int], *, protocol: str = "paper-sec3",
                    variant_epochs: dict[str, int] | None = None) -> dict[str, list[sweep.Point]]:
    """The chapter's runs under ``protocol``: ``main`` (every trained variant, model and seed), ``sizes`` (balanced
    subsets of ``rank_dataset`` for Fig. 4, the first rank model) and ``architectures`` (every rank model at
    ``rank_model_m``). Every network trains ``epochs`` epochs, or ``variant_epochs[variant]`` where given (a small
    subset needs more epochs than the full set to reach its plateau)."""
    base = {"protocol": protocol, "epochs": epochs, "eval_every": 0}
    variant_epochs = dict(variant_epochs or {})

    def fields(variant: str) -> dict:
        extra = {"epochs": int(variant_epochs[variant])} if variant in variant_epochs else {}
        return {**variant_fields(variant, rank_dataset), **extra}

    sized = {balanced_variant(rank_dataset, m): fields(balanced_variant(rank_dataset, m)) for m in rank_sizes}
    arch = balanced_variant(rank_dataset, rank_model_m)
    return {"main": sweep.grid(base, variant={v: fields(v) for v in trained}, model=models, seed=seeds),
            "sizes": sweep.grid(base, variant=sized, model=rank_models[:1], seed=rank_seeds),
            "architectures": sweep.grid(base, variant={arch: fields(arch)}, model=rank_models, seed=rank_seeds)}


def grids(params) -> dict[str, list[sweep.Point]]:
    """Every run notebook 02 trains (:func:`training_points`: ``main``, ``sizes``, ``architectures``), from the
    notebook's parameters by name (its globals, or :func:`semscale.profiles.parameters`): the notebook and
    ``python -m semscale.sweep --notebook 02`` build the very same points."""
    return training_points(params["trained"], params["models"], params["seeds"], params["epochs"], params["rank_dataset"],
                           params["rank_sizes"], params["rank_models"], params["rank_model_m"], params["rank_seeds"],
                           protocol=params["protocol"], variant_epochs=params["variant_epochs"])


def balanced_variants(rank_dataset: str, rank_sizes: Sequence[int], rank_model_m: int) -> list[str]:
    """The balanced subsets of Fig. 4 by increasing m."""
    return [balanced_variant(rank_dataset, m) for m in sorted(set(rank_sizes) | {rank_model_m})]


def run_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per variant and model: seeds, training images and top-1 (mean, std over seeds)."""
    return runs.groupby(["variant", "model"]).agg(seeds=("seed", "nunique"), train_images=("subset_size", "first"),
                                                  top1_mean=("top1", "mean"), top1_std=("top1", "std"))


def accuracy_summary(per_class: pd.DataFrame) -> pd.DataFrame:
    """Per variant, model and class: test accuracy over seeds (mean, std, n) with the training count, and the epochs
    and protocol the networks trained with."""
    return (per_class.groupby(["variant", "dataset_variant", "model", "epochs", "protocol", "class", "name", "train_count"])
            .accuracy.agg(accuracy_mean="mean", accuracy_std="std", n="size").reset_index())


def checked_training_images(variant: str, fields: dict, runs: pd.DataFrame) -> pipeline.TrainingImages:
    """The training subset of ``variant`` rebuilt as the trainer builds it; ValueError unless every run of the
    variant recorded the same sha256."""
    images = pipeline.training_images(TrainConfig(**{"progress": False, **fields}))
    recorded = set(runs.loc[runs.variant == variant, "subset_sha256"])
    if not recorded <= {images.subset.sha256}:
        raise ValueError(f"{variant}: the measured subset is not the one the networks saw")
    return images


def variant_sample_measures(variant: str, fields: dict, images: pipeline.TrainingImages, pixel_scales: Sequence[float],
                            alphas: Sequence[float], beta: float) -> pd.DataFrame:
    """``sample_measures`` at every pixel scale, with the variant's name and S at the dataset's α (``S_DATA``)."""
    frames = []
    for pixel_scale in pixel_scales:
        frame = sample_measures(images, pixel_scale=pixel_scale, alphas=alphas, beta=beta, w_alpha=dataset_alpha(fields))
        frame.insert(0, "variant", variant)
        frame[S_DATA] = frame[s_column(dataset_alpha(fields))]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def feature_measure_table(outcomes: Sequence[sweep.Result], trained: Sequence[str], feature_seeds: Sequence[int],
                          alphas: Sequence[float], beta: float) -> pd.DataFrame:
    """``feature_measures`` of every run of a trained variant with a seed in ``feature_seeds``, labelled by variant,
    model and seed (a tqdm.auto bar in a live notebook)."""
    chosen = [r for r in outcomes if r.labels["variant"] in trained and r.labels["seed"] in feature_seeds]
    frames = []
    for r in progress.bar(chosen, desc="feature measures", unit="run"):
        fields = VARIANTS[r.labels["variant"]]
        frame = feature_measures(r.path, alphas=alphas, beta=beta, w_alpha=dataset_alpha(fields))
        frame.insert(0, "variant", r.labels["variant"])
        frame.insert(1, "model", r.labels["model"])
        frame.insert(2, "seed", r.labels["seed"])
        frame[S_DATA] = frame[s_column(dataset_alpha(fields))]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------------------------------------
# Table 1 and its views


def table1(per_class: pd.DataFrame, measures: pd.DataFrame, trained: Sequence[str], columns: Sequence[str], *,
           n_boot: int, beta: float) -> pd.DataFrame:
    """``correlation_table`` for every trained variant, model and measure source. Feature measures (one network per
    seed) are correlated with the accuracy of the same seeds' networks; ``epochs`` are those the networks trained."""
    rows = []
    for (variant, model), acc_rows in per_class[per_class.variant.isin(trained)].groupby(["variant", "model"]):
        for source, m in measures[measures.variant == variant].groupby("source"):
            if "seed" in m and m.seed.notna().any():  # feature measures: one network per seed
                m = m[m.model == model]
                acc_used = acc_rows[acc_rows.seed.isin(m.seed.unique())]
            else:
                m, acc_used = m.drop(columns=["seed"], errors="ignore"), acc_rows
            t = correlation_table(m, acc_used, columns, n_boot=n_boot)
            rows.append(t.assign(variant=variant, model=model, source=source, epochs=epochs_label(acc_rows), beta=beta,
                                 seeds=" ".join(str(int(s)) for s in sorted(acc_used.seed.unique())),
                                 W_alpha=dataset_alpha(VARIANTS[variant])))
    table = pd.concat(rows, ignore_index=True)
    return table[["variant", "model", "source", *[c for c in table.columns if c not in ("variant", "model", "source")]]]


def table1_view(table: pd.DataFrame, method: str, source: str, columns: Sequence[str]) -> pd.DataFrame:
    """Table 1 as printed: variant × measure (display names), "estimate [low, high]" or "undefined"."""
    view = (table[(table.method == method) & (table.source == source)]
            .pivot_table(index=["variant", "model"], columns="measure", values="text", aggfunc="first")[list(columns)])
    view.columns = [measure_label(c) for c in view.columns]
    return view


def table1_beside_paper(table: pd.DataFrame, source: str, columns: Sequence[str], profile: str) -> pd.DataFrame:
    """The paper's Table 1 rows beside ours for the variants that stand in for its data (Pearson, point estimates)."""
    ours = table[(table.method == "pearson") & (table.source == source) & table.variant.isin(PAPER_COUNTERPART)]
    ours = (ours.pivot_table(index=["variant", "model"], columns="measure", values="estimate", dropna=False)
            .reindex(columns=columns).reset_index())
    ours.insert(0, "data", ours.variant.map(PAPER_COUNTERPART) + " (ours: " + ours.variant + ")")
    side = pd.concat([PAPER_TABLE1.assign(who="paper"), ours.drop(columns="variant").assign(who=f"ours ({profile})")],
                     ignore_index=True)
    side = side[["who", "data", "model", *columns]].sort_values(["data", "who"]).reset_index(drop=True)
    side.columns = ["who", "data", "model", *map(measure_label, columns)]
    return side


def measure_summary(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Pearson and Spearman of a few measures for every variant, model and source, with display names."""
    view = (table[table.measure.isin(columns)]
            .pivot_table(index=["variant", "model", "source"], columns=["method", "measure"], values="estimate"))
    view.columns = pd.MultiIndex.from_tuples([(method, measure_label(m)) for method, m in view.columns], names=["method", "measure"])
    view.index = view.index.set_levels([source_label(s) for s in view.index.levels[2]], level=2)
    return view


# ---------------------------------------------------------------------------------------------------------
# Fig. 3, the α and β sweeps


def fig3_points(per_class: pd.DataFrame, samples: pd.DataFrame, variants: Sequence[str], models: Sequence[str],
                source: str, n_classes: int) -> pd.DataFrame:
    """Fig. 3's points: per variant, model, x (N, then S at the dataset's α) and class (the first ``n_classes``), the
    measure and the accuracy over seeds (mean, std)."""
    rows = []
    for variant in variants:
        for model in models:
            acc = accuracy_matrix(per_class, variant=variant, model=model).iloc[:, :n_classes]
            m = samples[(samples.variant == variant) & (samples.source == source)].set_index("class").loc[acc.columns]
            for col in ("N", S_DATA):
                rows += [{"variant": variant, "model": model, "x": col, "class": c, "x_value": xv, "accuracy_mean": yv,
                          "accuracy_std": sd, "seeds": len(acc)}
                         for c, xv, yv, sd in zip(acc.columns, m[col], acc.mean().to_numpy(), acc.std())]
    return pd.DataFrame(rows)


def figure_fig3(points: pd.DataFrame, variants: Sequence[str], title: str) -> plt.Figure:
    """Per variant: per-class accuracy (mean ± std over seeds, %) against N (top) and S at the dataset's α (bottom),
    with the least-squares line and Pearson's r in the panel title (in words where r is undefined)."""
    fig, axes = plt.subplots(2, len(variants), figsize=(3.4 * len(variants) + 1, 7.6), squeeze=False, layout="constrained")
    several = points.model.nunique() > 1
    for j, variant in enumerate(variants):
        alpha = dataset_alpha(VARIANTS[variant])
        for i, (col, label) in enumerate([("N", "training samples N"), (S_DATA, f"S (α = {alpha:g})")]):
            ax, r_texts = axes[i, j], []
            for model, p in points[(points.variant == variant) & (points.x == col)].groupby("model", sort=False):
                y = 100 * p.accuracy_mean.to_numpy()
                yerr = 100 * p.accuracy_std.to_numpy() if p.seeds.iloc[0] > 1 else None
                ax.errorbar(p.x_value, y, yerr=yerr, fmt="o", ms=4, capsize=2, label=model)
                line = stats.fit_line(p.x_value, y)
                if line:
                    xs = np.linspace(p.x_value.min(), p.x_value.max(), 10)
                    ax.plot(xs, line[0] * xs + line[1], "--", color="grey")
                r = stats.corr(p.x_value, y)
                r_text = f"Pearson r = {r:.2f}" if math.isfinite(r) else f"Pearson r undefined ({col[0]} constant)"
                r_texts.append((f"{model}: " if several else "") + r_text)
            ax.set(xlabel=label, ylabel="test accuracy (%)" if j == 0 else None, title=f"{variant}\n{'; '.join(r_texts)}")
            if several:
                ax.legend(loc="best")
    fig.suptitle(title)
    return fig


def alpha_sweep(table: pd.DataFrame, alphas: Sequence[float], sources: Sequence[str]) -> pd.DataFrame:
    """Table 1's rows of S at every α for the given measure sources, with the α as a number."""
    s_cols = {s_column(a): a for a in alphas}
    sweep_a = table[table.measure.isin(s_cols) & table.source.isin(sources)].copy()
    sweep_a["alpha"] = sweep_a.measure.map(s_cols)
    return sweep_a


def figure_alpha_sweep(sweep_a: pd.DataFrame, sources: Sequence[str], title: str) -> plt.Figure:
    """Pearson (left) and Spearman (right) of S with per-class accuracy against α, a line per variant and source."""
    frame = sweep_a.assign(source=sweep_a.source.map(source_label))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), sharey=True, layout="constrained")
    for ax, method in zip(axes, stats.CORRELATIONS):
        sns.lineplot(frame[frame.method == method], x="alpha", y="estimate", hue="variant", style="source", markers=True,
                     ax=ax, style_order=[source_label(s) for s in sources], dashes=["", (4, 2)][:len(sources)],
                     legend=ax is axes[1])
        ax.set(title={"pearson": "Pearson r", "spearman": "Spearman ρ"}[method], xlabel="α", xticks=sorted(frame.alpha.unique()),
               ylabel="correlation of S with per-class accuracy")
        ax.axhline(0, color="grey", lw=0.5)
    sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle(title)
    return fig


def beta_sweep(per_class: pd.DataFrame, samples: pd.DataFrame, trained: Sequence[str], models: Sequence[str],
               betas: Sequence[float], source: str, n_boot: int) -> pd.DataFrame:
    """On every long-tailed trained variant: Pearson r of E_n(β) with per-class accuracy (bootstrap interval) for
    every β, beside r of N itself."""
    rows = []
    for variant in [v for v in trained if is_long_tailed(VARIANTS[v])]:
        counts = samples[(samples.variant == variant) & (samples.source == source)].sort_values("class").N.to_numpy()
        for model in models:
            acc = accuracy_matrix(per_class, variant=variant, model=model).to_numpy()
            for b in betas:
                iv = stats.bootstrap_corr(effective_number(counts, b), acc, "pearson", n_boot=n_boot)
                rows.append({"variant": variant, "model": model, "beta": b, "pearson": iv.estimate, "low": iv.low,
                             "high": iv.high, "pearson_N": stats.corr(counts, acc.mean(0)), "seeds": acc.shape[0]})
    return pd.DataFrame(rows)


def figure_beta_sweep(sweep_b: pd.DataFrame, title: str) -> plt.Figure:
    """Pearson r of E_n with per-class accuracy against β on a log axis of 1/(1 − β), the count at which E_n levels
    off (points with 95 % intervals, a variant's points shifted a little apart); dotted: r of N itself."""
    if sweep_b.empty:
        return message_figure("No long-tailed variant was trained, so there is no β sweep: E_n is constant on balanced data.")
    fig, ax = plt.subplots(figsize=(8, 4.6), layout="constrained")
    groups = list(sweep_b.groupby(["variant", "model"]))
    for i, ((variant, model), g) in enumerate(groups):
        x = 1 / (1 - g.beta.to_numpy()) * 10 ** (0.03 * (i - (len(groups) - 1) / 2))
        undefined = [f"{b:g}" for b in g.beta[g.pearson.isna()]]
        ax.errorbar(x, g.pearson, yerr=[g.pearson - g.low, g.high - g.pearson], fmt="o", capsize=3, color=f"C{i}",
                    label=f"{variant}, {model}" + (f" (undefined at β = {', '.join(undefined)}: E_n constant)"
                                                   if undefined else ""))
        ax.axhline(g.pearson_N.iloc[0], color=f"C{i}", ls=":")
    betas = sorted(sweep_b.beta.unique())
    ax.set(xscale="log", xticks=[1 / (1 - b) for b in betas], xticklabels=[f"{b:g}" for b in betas],
           xlabel="β (axis: 1/(1 − β), the count at which E_n levels off, log scale)", ylabel="Pearson r of E_n with accuracy")
    ax.minorticks_off()
    ax.plot([], [], ":", color="grey", label="N itself (dotted)")
    ax.legend(loc="lower right")
    ax.set_title(title)
    return fig


# ---------------------------------------------------------------------------------------------------------
# Fig. 4: rank agreement


def raters(frame: pd.DataFrame, by: str, value: str = "accuracy", **where) -> pd.DataFrame:
    """A (rater × class) table of ``value`` for the rows matching ``where`` (column = value, or column in a list);
    the raters are the values of ``by``."""
    rows = frame
    for column, wanted in where.items():
        rows = rows[rows[column].isin(wanted) if isinstance(wanted, list) else rows[column] == wanted]
    return rows.pivot_table(index=by, columns="class", values=value)


def rater_groups(per_class: pd.DataFrame, samples: pd.DataFrame, rank_dataset: str, rank_sizes: Sequence[int],
                 rank_models: Sequence[str], rank_model_m: int, model: str, source: str) -> dict[str, pd.DataFrame]:
    """Fig. 4's comparisons as rater tables: accuracy across subset sizes, across architectures, across seeds of
    ``model`` on the whole variant, and the sample scale S (α = 1) across subset sizes. Size raters in order of m."""
    sizes = [balanced_variant(rank_dataset, m) for m in rank_sizes]
    groups = {
        f"subset size ({rank_models[0]})": raters(per_class, "variant", variant=sizes, model=rank_models[0]),
        f"architecture (m = {rank_model_m})": raters(per_class, "model", variant=balanced_variant(rank_dataset, rank_model_m)),
        f"seed ({model}, all images)": raters(per_class, "seed", variant=rank_dataset, model=model),
        "sample S (α = 1), by m": raters(samples, "variant", value=s_column(1.0), variant=sizes, source=source),
    }
    return {k: r.reindex([v for v in sizes if v in r.index]) if r.index.name == "variant" else r for k, r in groups.items()}


def agreement_table(groups: dict[str, pd.DataFrame], rank_dataset: str, epochs: int | str, n_boot: int) -> pd.DataFrame:
    """``stats.rank_agreement`` of every comparison with at least two raters; ``epochs``: the raters' epochs."""
    return pd.DataFrame([{"comparison": name, "dataset_variant": rank_dataset, "epochs": epochs,
                          **stats.rank_agreement(r.to_numpy(), n_boot=n_boot)}
                         for name, r in groups.items() if len(r) >= 2])


def scale_order(samples: pd.DataFrame, variant: str, source: str) -> pd.DataFrame:
    """The sample measures of ``variant`` (one row per class, indexed by class) sorted by S (α = 1), smallest first."""
    return samples[(samples.variant == variant) & (samples.source == source)].set_index("class").sort_values(s_column(1.0))


def figure_rank_heatmap(groups: dict[str, pd.DataFrame], by_scale: pd.DataFrame, variant: str, title: str) -> plt.Figure:
    """Per-class accuracy rank (1 = weakest; ties share the mean rank) of every accuracy rater, classes ordered by
    their sample scale, smallest first."""
    ranks = {name: r.rank(axis=1) for name, r in groups.items() if len(r) >= 2 and not name.startswith("sample")}
    if not ranks:
        return message_figure("No comparison has two raters or more, so there is no rank picture.")
    heat = pd.concat(ranks)[list(by_scale.index)]
    heat.columns = list(by_scale.name)
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(heat) + 2.2), layout="constrained")
    sns.heatmap(heat, annot=heat.map(lambda v: f"{v:g}"), fmt="", cmap="viridis",
                cbar_kws={"label": "accuracy rank (1 = weakest)"}, ax=ax)
    ax.set(xlabel=f"class of {variant}, by sample scale S (α = 1, pixels in [0, 1]), smallest first", ylabel="")
    ax.set_yticklabels([f"{a}: {b}" for a, b in heat.index], rotation=0)
    ax.set_title(title)
    return fig


def smallest_scale_table(samples: pd.DataFrame, groups: dict[str, pd.DataFrame], by_scale: pd.DataFrame,
                         rank_dataset: str, pixel_scales: Sequence[float]) -> pd.DataFrame:
    """The smallest- and largest-scale class of ``rank_dataset`` (S′ and S α=1 at every pixel scale) beside the weakest
    and strongest class of every accuracy rater; ``rank_of_cat`` (1 = smallest or weakest) only on a CIFAR-10 variant."""
    rows = []
    for ps in pixel_scales:
        m = samples[(samples.variant == rank_dataset) & (samples.pixel_scale == ps)].set_index("name")
        for col in ["S_prime", s_column(1.0)]:
            rows.append({"what": f"smallest {measure_label(col)}, pixels x{ps:g}", "class": m[col].idxmin(),
                         "largest": m[col].idxmax(), "rank_of_cat": int(m[col].rank()["cat"]) if "cat" in m.index else None})
    names = dict(zip(by_scale.index, by_scale.name))
    for name, r in groups.items():
        if not name.startswith("sample"):
            for rater, row in r.iterrows():
                rows.append({"what": f"weakest: {name}", "rater": rater, "class": names[row.idxmin()], "largest": names[row.idxmax()],
                             "rank_of_cat": int(row.rank()[3]) if rank_dataset.startswith("cifar10") else None})
    return pd.DataFrame(rows)


def describe_smallest(smallest: pd.DataFrame, rank_dataset: str) -> str:
    """In words: this run's smallest-scale class of ``rank_dataset`` and how many accuracy raters find it the weakest."""
    scale_rows = smallest[smallest.what.str.startswith("smallest")]
    weakest = smallest[smallest.what.str.startswith("weakest")]
    if scale_rows.empty:
        return f"{rank_dataset} was not measured in this run."
    by_s = scale_rows[scale_rows.what.str.startswith(f"smallest {measure_label(s_column(1.0))},")]
    first = (by_s if len(by_s) else scale_rows).iloc[0]
    text = (f"In this run ({rank_dataset}): " + "; ".join(f"{r.what}: {r['class']}" for _, r in scale_rows.iterrows()) + ".")
    if weakest.empty:
        return text + " No accuracy rater was trained on it."
    hits = int((weakest["class"] == first["class"]).sum())
    return (text + " The weakest class: " + ", ".join(f"{r['class']} ({r.what.removeprefix('weakest: ')}, {r.rater})"
                                                       for _, r in weakest.iterrows())
            + f". {first['class']}, the smallest by {first.what.removeprefix('smallest ')}, is the weakest for "
              f"{hits} of {count(len(weakest), 'rater')}.")


# ---------------------------------------------------------------------------------------------------------
# incremental R² and the gallery


def incremental_table(per_class: pd.DataFrame, measures: pd.DataFrame, trained: Sequence[str], models: Sequence[str],
                      seeds: Sequence[int], sources: Sequence[str], n_boot: int) -> pd.DataFrame:
    """What S′ adds to log N in explaining per-class accuracy, per variant and pooled over the trained variants with
    one intercept each (``stats.bootstrap_incremental_r2``), for every measure source."""
    rows = []
    for source in sources:
        pooled = {"acc": [], "logn": [], "s": [], "dummy": []}
        for model in models:
            for k, variant in enumerate(trained):
                m = measures[(measures.variant == variant) & (measures.source == source)]
                m = m[m.model == model] if source == FEATURE_SOURCE else m
                use = sorted(m.seed.unique()) if source == FEATURE_SOURCE else seeds
                acc = accuracy_matrix(per_class[per_class.seed.isin(use)], variant=variant, model=model)
                m = m.groupby("class")[["N", "S_prime"]].mean().loc[acc.columns]
                out = stats.bootstrap_incremental_r2(acc.to_numpy(), np.log(m.N.to_numpy()), m.S_prime.to_numpy(), n_boot=n_boot)
                rows.append({"variant": variant, "model": model, "source": source, "measure": "S_prime", **out})
                for key, val in [("acc", acc.to_numpy()), ("logn", np.log(m.N.to_numpy())), ("s", m.S_prime.to_numpy()),
                                 ("dummy", np.full(len(m), k))]:
                    pooled[key].append(val)
            if len(trained) < 2:
                continue
            dummies = pd.get_dummies(np.concatenate(pooled["dummy"])).to_numpy(float)[:, 1:]
            out = stats.bootstrap_incremental_r2(np.concatenate(pooled["acc"], axis=1),
                                                 np.column_stack([np.concatenate(pooled["logn"]), dummies]),
                                                 np.concatenate(pooled["s"]), n_boot=n_boot)
            rows.append({"variant": "all trained (one intercept each)", "model": model, "source": source, "measure": "S_prime", **out})
    return pd.DataFrame(rows)


def figure_gallery(images: pipeline.TrainingImages, by_scale: pd.DataFrame, per_row: int, variant: str) -> plt.Figure:
    """Random training images (seeded) of the classes with the smallest and the largest sample scale S (α = 1)."""
    gen = np.random.default_rng(0)
    picks = {f"smallest S: {by_scale.name.iloc[0]}": by_scale.index[0], f"largest S: {by_scale.name.iloc[-1]}": by_scale.index[-1]}
    fig, axes = plt.subplots(2, per_row, figsize=(1.4 * per_row + 0.6, 3.6), squeeze=False, layout="constrained")
    for row, (title, c) in enumerate(picks.items()):
        idx = gen.choice(np.flatnonzero(images.labels.numpy() == c), per_row, replace=False)
        for ax, i in zip(axes[row], idx):
            ax.imshow(images.images[i].permute(1, 2, 0).squeeze().numpy(), cmap="gray", vmin=0, vmax=255)
            ax.set_axis_off()
        axes[row, 0].set_title(title, loc="left")
    fig.suptitle(f"{variant}, training images of the classes of smallest and\nlargest sample scale S (α = 1, pixels in [0, 1])")
    return fig


# ---------------------------------------------------------------------------------------------------------
# the explorer



def measure_options(columns: Sequence[str]) -> list[tuple[str, str]]:
    """(display name, column) pairs for a dropdown of measures."""
    return [(measure_label(c), c) for c in columns]


def source_options(measures: pd.DataFrame) -> list[tuple[str, str]]:
    """(display name, source) pairs for a dropdown of the measure sources in ``measures``."""
    return [(source_label(s), s) for s in sorted(measures.source.unique())]


@dataclass
class MeasureExplorer:
    """The chapter's explorer: per-class accuracy of one variant and model against one measure from one source.
    ``figure`` draws it (a message figure for a combination that was not computed); ``show`` is the widget's callback."""

    measures: pd.DataFrame
    per_class: pd.DataFrame

    def figure(self, variant: str, measure: str, source: str, model: str) -> plt.Figure:
        acc_rows = self.per_class[(self.per_class.variant == variant) & (self.per_class.model == model)]
        if acc_rows.empty:
            trained = sorted(self.per_class.loc[self.per_class.variant == variant, "model"].unique())
            return message_figure(f"No {model} network was trained on {variant} (trained there: {', '.join(trained) or 'none'}).")
        m = self.measures[(self.measures.variant == variant) & (self.measures.source == source)]
        if source == FEATURE_SOURCE:
            m = m[m.model == model]
            acc_rows = acc_rows[acc_rows.seed.isin(m.seed.unique())]
        if m.empty or acc_rows.empty:
            return message_figure(f"{source_label(source)} was not measured for {variant} with {model}: feature measures "
                                  f"exist only for the trained variants' feature seeds.")
        if measure == COUNT_CURVE:
            m = with_count_curve(m, accuracy_matrix(acc_rows).mean(axis=0))
        x = m.groupby(["class", "name"])[measure].mean().reset_index()
        acc = accuracy_matrix(acc_rows)[x["class"]]
        y, spread = 100 * acc.mean().to_numpy(), 100 * acc.std().fillna(0).to_numpy()
        r = stats.corr(x[measure], y)
        fig, ax = plt.subplots(figsize=(8.5, 4.8), layout="constrained")
        labelled = len(x) <= 10
        colours = sns.color_palette("tab10", len(x)) if labelled else ["C0"] * len(x)
        for (_, row), yi, si, colour in zip(x.iterrows(), y, spread, colours):
            ax.errorbar(row[measure], yi, yerr=si if len(acc) > 1 else None, fmt="o", ms=7, capsize=2,
                        color=colour, label=str(row["name"]) if labelled else None)
        all_acc = 100 * self.per_class[self.per_class.variant == variant].groupby(["model", "seed", "class"]).accuracy.mean()
        ax.set(ylim=(max(0, all_acc.min() - 5), min(100, all_acc.max() + 5)), xlabel=measure_label(measure),
               ylabel=f"test accuracy (%), mean over {count(len(acc), 'seed')}")
        if labelled:
            ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), title="class")
        r_text = (f"Pearson r = {r:.2f}" if math.isfinite(r)
                  else f"Pearson r undefined: {measure_label(measure)} is the same for every class")
        ax.set_title(f"{variant}, {model}: {measure_label(measure)} from {source_label(source)}\n{r_text}"
                     + ("" if labelled else f" ({len(x)} classes, names not shown)"))
        return fig

    def show(self, variant: str, measure: str, source: str, model: str) -> None:
        self.figure(variant, measure, source, model)
        plt.show()
