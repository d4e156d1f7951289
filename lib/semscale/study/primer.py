"""A primer on semantic scale (notebook 00): Gaussian clouds, the numerics of the log-det, ε, and real classes.

The volume of a class is ``semscale.scale.volume``; this module builds the synthetic clouds and the tables the
primer draws, its figures, and the explorer's callback. Every random draw takes an explicit ``torch.Generator``, so
the notebook's figures and tables depend on its seed alone, and the explorer draws the same cloud for the same
setting.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from scipy.stats import spearmanr

from .. import data, scale, subsets
from ..plots import MIN_FONT_SIZE

EXPLORER_MAX_SPREAD = 4.0  # the explorer's largest σ
EXPLORER_SCATTER_LIMIT = 15.0  # the explorer's scatter axes: ± this, for every setting
EXPLORER_MAX_SAMPLES = 2048  # the explorer's largest m: every cloud is a prefix of one draw of this many samples


# --- synthetic clouds ----------------------------------------------------------------------------------------------


def gaussian_cloud(m: int, spread: float, intrinsic_dim: int, d: int, generator: torch.Generator) -> torch.Tensor:
    """m samples (rows, float64) of an isotropic Gaussian of std ``spread`` on a random ``intrinsic_dim``-dim
    subspace of R^d (the basis is drawn first, then the samples)."""
    basis, _ = torch.linalg.qr(torch.randn(d, intrinsic_dim, generator=generator, dtype=torch.float64))
    return spread * torch.randn(m, intrinsic_dim, generator=generator, dtype=torch.float64) @ basis.T


def volume_grid(spreads: Sequence[float], intrinsic_dims: Sequence[int], m: int, d: int,
                generator: torch.Generator) -> pd.DataFrame:
    """Volume (bits) of one fresh cloud of m samples in R^d per (spread, intrinsic dimension), spread-major."""
    return pd.DataFrame([{"spread": s, "intrinsic_dim": k, "volume": scale.volume(gaussian_cloud(m, s, k, d, generator))}
                         for s in spreads for k in intrinsic_dims])


def nested_volumes(clouds: dict[str, torch.Tensor], m_grid: Iterable[int]) -> pd.DataFrame:
    """Volume of the first m samples of each cloud (nested subsets): one row per (cloud, m)."""
    return pd.DataFrame([{"cloud": name, "m": m, "volume": scale.volume(cloud[:m])}
                         for name, cloud in clouds.items() for m in m_grid])


# --- numerics ------------------------------------------------------------------------------------------------------


def half_log2_det(matrix: torch.Tensor) -> float:
    """½ log2 det(matrix) through slogdet: finite where the determinant itself overflows float64."""
    return 0.5 * torch.linalg.slogdet(matrix).logabsdet.item() / math.log(2)


def timed(fn: Callable[[], object], repeats: int = 3) -> tuple[object, float]:
    """(result, best of ``repeats`` wall times in seconds)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, min(times)


def det_numerics(dims: Iterable[int], m: int, generator: torch.Generator) -> pd.DataFrame:
    """For a standard Gaussian cloud of m samples in each width d: the volume from the naive determinant (inf once
    it overflows), from slogdet of the d×d and the m×m (Sylvester) matrix, from ``scale.volume``, and the times of
    the two slogdet forms (ms)."""
    rows = []
    for d in dims:
        cloud = torch.randn(m, d, generator=generator, dtype=torch.float64)
        centred = cloud - cloud.mean(0)
        with np.errstate(over="ignore"):
            naive = 0.5 * np.log2(np.linalg.det(np.eye(d) + d / m * (centred.T @ centred).numpy()))
        cov, t_cov = timed(lambda: half_log2_det(torch.eye(d, dtype=torch.float64) + d / m * centred.T @ centred))
        gram, t_gram = timed(lambda: half_log2_det(torch.eye(m, dtype=torch.float64) + d / m * centred @ centred.T))
        rows.append({"d": d, "m": m, "naive det": naive, "slogdet d×d": cov, "slogdet m×m (Sylvester)": gram,
                     "semscale.volume": scale.volume(cloud), "time d×d (ms)": 1e3 * t_cov, "time m×m (ms)": 1e3 * t_gram})
    return pd.DataFrame(rows)


def eps_ranking(clouds: dict[str, torch.Tensor], eps_grid: Iterable[float]) -> pd.DataFrame:
    """Volume of each cloud at each ε, and its share of the summed volume at that ε (column ``eps`` is ε)."""
    curve = pd.DataFrame([{"eps": eps, "class": name, "volume": scale.volume(cloud, eps=eps)}
                          for eps in eps_grid for name, cloud in clouds.items()])
    curve["share of the pair"] = curve.volume / curve.groupby("eps").volume.transform("sum")
    return curve


# --- real classes --------------------------------------------------------------------------------------------------


def load_available(names: Iterable[str]) -> dict[str, data.Split]:
    """The training split of each dataset that can be loaded (a line for each one skipped); scikit-learn's digits
    when none can."""
    loaded = {}
    for name in names:
        try:
            loaded[name] = data.load(name, "train")
        except data.DatasetError as err:
            print(f"skipping {name}: {err}")
    return loaded or {"digits": data.load("digits", "train")}


def measure_sample_volumes(real: dict[str, data.Split], samples_per_class: int | None,
                           seed: int) -> tuple[dict[str, data.Split], pd.DataFrame]:
    """The images measured per dataset (``samples_per_class`` per class, seeded; every image when None) and their
    per-class sample volume (bits) and S′ = volume / largest volume."""
    measured, tables = {}, []
    for name, (images, labels, classes) in real.items():
        if samples_per_class is not None:
            per_class = min(samples_per_class, int(torch.bincount(labels).min()))
            subset = subsets.per_class_indices(labels.numpy(), [per_class] * len(classes), seed=seed)
            images, labels = images[subset.indices], labels[subset.indices]
        measured[name] = data.Split(images, labels, classes)
        volumes = scale.sample_volume(images, labels, len(classes))
        tables.append(pd.DataFrame({"dataset": name, "label": range(len(classes)), "class": classes,
                                    "samples": torch.bincount(labels, minlength=len(classes)).numpy(),
                                    "sample_volume": volumes.numpy(), "S_prime": (volumes / volumes.max()).numpy()}))
    return measured, pd.concat(tables, ignore_index=True)


def pixel_scale_volumes(measured: dict[str, data.Split]) -> pd.DataFrame:
    """Sample volume, S′ and rank (1 = largest) of every class at each of ``scale.PIXEL_SCALES``."""
    by_scale = pd.concat(
        [pd.DataFrame({"dataset": name, "class": classes, "pixel_scale": pixel_scale,
                       "sample_volume": scale.sample_volume(images, labels, len(classes), pixel_scale=pixel_scale).numpy()})
         for name, (images, labels, classes) in measured.items() for pixel_scale in scale.PIXEL_SCALES],
        ignore_index=True)
    volumes = by_scale.groupby(["dataset", "pixel_scale"]).sample_volume
    by_scale["S_prime"] = by_scale.sample_volume / volumes.transform("max")
    by_scale["rank"] = volumes.rank(ascending=False, method="first").astype(int)  # 1 = largest
    return by_scale


def pixel_scale_agreement(by_scale: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(Spearman ρ of S′ between pixels in [0, 1] and [0, 255] per dataset, the class rankings side by side)."""
    correlations, rankings = [], []
    for name, table in by_scale.groupby("dataset", sort=False):
        wide = table.pivot(index="class", columns="pixel_scale", values=["S_prime", "rank"])
        rho = spearmanr(wide["S_prime"][1.0], wide["S_prime"][255.0]).statistic
        correlations.append({"dataset": name, "spearman_rho": rho})
        rankings.append(pd.DataFrame({"dataset": name, "rank": range(1, len(wide) + 1), **{
            f"pixels in [0, {s:g}]": wide["rank"][s].sort_values().index for s in scale.PIXEL_SCALES}}))
    return pd.DataFrame(correlations), pd.concat(rankings, ignore_index=True)


# --- figures -------------------------------------------------------------------------------------------------------


def plot_clouds(example_clouds: dict[float, torch.Tensor], grid: pd.DataFrame, d: int, m: int) -> plt.Figure:
    """Left: 2-D clouds by spread (widest drawn first); right: the volume heat map of ``volume_grid``."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    for (spread, cloud), colour in zip(example_clouds.items(), sns.color_palette(n_colors=len(example_clouds))):
        axes[0].scatter(*cloud.T, s=4, alpha=0.5, color=colour, label=f"σ = {spread}: {scale.volume(cloud):.0f} bits")
    axes[0].set(title=f"2-D Gaussian clouds of growing spread (m = {m})", aspect="equal",
                xlabel="coordinate 1 (units of the data)", ylabel="coordinate 2 (units of the data)")
    axes[0].legend(markerscale=4)
    sns.heatmap(grid.pivot(index="spread", columns="intrinsic_dim", values="volume"), annot=True, fmt=".0f",
                cmap="viridis", ax=axes[1], cbar_kws={"label": "Vol (bits)"})
    axes[1].set(title=f"Volume of Gaussian clouds in R^{d}, m = {m}", xlabel="intrinsic dimension k", ylabel="spread σ")
    return fig


def plot_nested_volumes(volumes: pd.DataFrame, d: int) -> plt.Figure:
    """Volume against the number of nested samples m, one line per cloud of ``nested_volumes``."""
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    sns.lineplot(volumes, x="m", y="volume", hue="cloud", marker="o", ax=ax)
    ax.set(xscale="log", xlabel="samples per class m (nested)", ylabel="Vol (bits)",
           title=f"Gaussian clouds in R^{d}: the volume grows with m, then saturates")
    return fig


def plot_numerics(numerics: pd.DataFrame) -> plt.Figure:
    """Left: the volume by method against d, with the width where the naive determinant overflows; right: the
    times of the d×d and m×m slogdet."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
    long = numerics.melt(id_vars="d", value_vars=["naive det", "slogdet d×d", "semscale.volume"], var_name="method",
                         value_name="Vol (bits)")
    long["Vol (bits)"] = long["Vol (bits)"].replace(np.inf, np.nan)
    sns.lineplot(long, x="d", y="Vol (bits)", hue="method", style="method", markers=True, ax=axes[0])
    overflow = numerics.loc[~np.isfinite(numerics["naive det"]), "d"]
    if len(overflow):
        axes[0].axvline(overflow.min(), color="red", ls=":", label="naive det overflows")
        axes[0].legend()
    axes[0].set(xscale="log", xlabel="width d of a standard Gaussian cloud", title="log det stays finite; det overflows")
    times = numerics.melt(id_vars="d", value_vars=["time d×d (ms)", "time m×m (ms)"], var_name="form", value_name="ms")
    times["form"] = times.form.str.removeprefix("time ").str.removesuffix(" (ms)")
    sns.lineplot(times, x="d", y="ms", hue="form", marker="o", ax=axes[1])
    axes[1].set(xscale="log", yscale="log", xlabel="width d", ylabel="slogdet time (ms, best of 3)",
                title=f"Sylvester: m×m is cheaper when m = {numerics.m.iloc[0]} < d")
    return fig


def plot_eps_ranking(curve: pd.DataFrame) -> plt.Figure:
    """Each cloud's share of the pair's summed volume against ε, with the paper's ε = 1 marked."""
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    sns.lineplot(curve, x="eps", y="share of the pair", hue="class", ax=ax)
    ax.axvline(1.0, color="grey", ls=":", label="ε = 1 (paper)")
    ax.axhline(0.5, color="black", lw=0.5)
    ax.set(xscale="log", xlabel="ε (same units as the data)", ylabel="share of the pair's volume",
           title="Which Gaussian class is 'larger' depends on ε")
    ax.legend()
    return fig


def plot_sample_volumes(table: pd.DataFrame) -> plt.Figure:
    """Bar chart of the sample volume of every class, one panel per dataset."""
    grid = sns.catplot(table, kind="bar", x="class", y="sample_volume", col="dataset", sharex=False, sharey=False,
                       height=4, aspect=1.4, color=sns.color_palette()[0])
    grid.set_xticklabels(rotation=45, ha="right")
    grid.set_axis_labels("", "sample volume (bits)")
    for ax, (name, part) in zip(grid.axes.flat, table.groupby("dataset", sort=False)):
        ax.set_title(f"{name}: {part.samples.min()} training images per class")
    grid.figure.suptitle("Sample volume per class (images resized to 16×16×3, pixels in [0, 1])", y=1.04)
    return grid.figure


def plot_gallery(name: str, split: data.Split, table: pd.DataFrame, size: int, generator: torch.Generator) -> plt.Figure:
    """``size`` random training images of the smallest (top row) and the largest (bottom row) class by sample
    volume of dataset ``name``."""
    images, labels, _ = split
    ranked = table[table.dataset == name].sort_values("sample_volume")
    fig, axes = plt.subplots(2, size, figsize=(1.3 * size, 3.2), squeeze=False)
    for row, (which, entry) in enumerate([("smallest", ranked.iloc[0]), ("largest", ranked.iloc[-1])]):
        members = torch.nonzero(labels == int(entry.label)).flatten()
        picks = members[torch.randperm(len(members), generator=generator)[:size]]
        for ax, index in zip(axes[row], picks):
            image = images[index].permute(1, 2, 0).squeeze(-1).numpy()
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
            ax.axis("off")
        axes[row, 0].set_title(f"{which}: {entry['class']} ({entry.sample_volume:.0f} bits)", loc="left", fontsize=10)
    fig.suptitle(f"{name}: the classes of smallest and largest sample volume")
    return fig


def plot_pixel_scale_ranks(by_scale: pd.DataFrame, correlations: pd.DataFrame) -> plt.Figure:
    """One panel per dataset: each class's rank by sample volume at pixels in [0, 1] and [0, 255], joined by a line
    (red where the rank changes)."""
    rho = dict(zip(correlations.dataset, correlations.spearman_rho))
    fig, axes = plt.subplots(1, len(rho), figsize=(5.5 * len(rho), 4.5), squeeze=False, layout="constrained")
    for ax, (name, table) in zip(axes[0], by_scale.groupby("dataset", sort=False)):
        wide = table.pivot(index="class", columns="pixel_scale", values="rank")
        for cls, r1, r255 in zip(wide.index, wide[1.0], wide[255.0]):
            ax.plot([0, 1], [r1, r255], marker="o", color="tab:red" if r1 != r255 else "grey")
            ax.text(-0.06, r1, cls, ha="right", va="center", fontsize=MIN_FONT_SIZE)
            ax.text(1.06, r255, cls, ha="left", va="center", fontsize=MIN_FONT_SIZE)
        ax.set(xlim=(-0.9, 1.9), xticks=[0, 1], xticklabels=["pixels in [0, 1]", "pixels in [0, 255]"],
               ylabel="rank by sample volume (1 = largest)", title=f"{name}: Spearman ρ = {rho[name]:.2f}")
        ax.invert_yaxis()
    return fig


# --- the explorer --------------------------------------------------------------------------------------------------


def _explorer_volume_ceiling(d: int) -> float:
    """A y limit above every volume the explorer can show: ½·d·log2(1 + d·σ²max) bits (Jensen on the eigenvalues)
    with room for sampling noise."""
    return 1.5 * 0.5 * d * math.log2(1 + d * EXPLORER_MAX_SPREAD**2)


def _principal_coordinates(cloud: torch.Tensor) -> np.ndarray:
    """The centred cloud on its first two principal directions (sign fixed so the largest coordinate is positive);
    a direction with no variance gives zeros."""
    centred = cloud - cloud.mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    coords = (centred @ vh[:2].T).numpy()
    signs = np.sign(coords[np.abs(coords).argmax(0), range(coords.shape[1])])
    return coords * np.where(signs == 0, 1.0, signs)


def cloud_explorer(spread: float, intrinsic_dim: int, m: int, *, seed: int = 0, d: int = 64) -> Figure:
    """The primer's explorer: a Gaussian cloud of m samples on a k-dim subspace of R^d with std σ, on its first two
    principal directions (left, fixed axes), and its volume against the number of samples (right, fixed axes).

    The cloud is one seeded draw per (seed, k): a setting always shows the same picture, a change of σ only
    rescales it, and a change of m adds or removes points. Returns a figure that pyplot does not hold, so a
    widget displays it once; an impossible setting gives a figure that says why.
    """
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    limit = EXPLORER_SCATTER_LIMIT
    left.set(xlim=(-limit, limit), ylim=(-limit, limit), aspect="equal", xlabel="first principal direction",
             ylabel="second principal direction")
    right.set(xscale="log", yscale="log", xlim=(1.5, EXPLORER_MAX_SAMPLES * 1.5), ylim=(1e-2, _explorer_volume_ceiling(d)),
              xlabel="samples m (nested)", ylabel="Vol (bits, log scale)")
    problems = [text for bad, text in [(not 1 <= intrinsic_dim <= d, f"the intrinsic dimension must be 1 to {d}"),
                                       (not 2 <= m <= EXPLORER_MAX_SAMPLES, f"m must be 2 to {EXPLORER_MAX_SAMPLES}"),
                                       (not spread > 0, "the spread must be positive")] if bad]
    if problems:
        left.text(0, 0, "Cannot draw: " + "; ".join(problems) + ".", ha="center", va="center", wrap=True)
        return fig
    full = gaussian_cloud(EXPLORER_MAX_SAMPLES, spread, intrinsic_dim, d, torch.Generator().manual_seed(seed))
    cloud = full[:m]
    volume = scale.volume(cloud)
    coords = _principal_coordinates(cloud)
    outside = np.abs(coords).max(1) > limit
    left.scatter(*coords[~outside].T, s=5, alpha=0.6)
    if outside.any():  # few samples in many directions reach far out on the first directions
        left.scatter(*np.clip(coords[outside], -limit, limit).T, s=25, marker="x", color="C3",
                     label=f"{outside.sum()} beyond the axes, drawn at the edge")
        left.legend(loc="lower left")
    title = f"σ = {spread:g}, k = {intrinsic_dim}, m = {m}: Vol = {volume:.1f} bits"
    if min(intrinsic_dim, m - 1) == 1:  # the second principal direction carries no variance
        title += "\n(k = 1: the cloud is a line)" if intrinsic_dim == 1 else "\n(m = 2: two points span one direction)"
    left.set_title(title)
    grid = sorted({*(2**i for i in range(1, int(math.log2(EXPLORER_MAX_SAMPLES)) + 1)), m})
    right.plot(grid, [scale.volume(full[:n]) for n in grid], marker="o", ms=3, label=f"σ = {spread:g}, k = {intrinsic_dim}")
    right.plot([m], [volume], "o", ms=10, color="C3", label=f"this cloud (m = {m})")
    right.legend(loc="lower right")
    right.set_title(f"Volume against m in R^{d} (same draw)")
    return fig


def cloud_explorer_controls(*, seed: int, d: int) -> dict:
    """The explorer's sliders (labels in words, tooltips, labels never cut) and its fixed arguments, for
    ``ipywidgets.interact(cloud_explorer, **controls)``. ipywidgets is imported here: only a live notebook needs it."""
    import ipywidgets as widgets

    style = {"description_width": "initial"}
    return {
        "spread": widgets.FloatSlider(value=1.0, min=0.1, max=EXPLORER_MAX_SPREAD, step=0.1, description="spread σ",
                                      tooltip="standard deviation along each of the k directions", style=style),
        "intrinsic_dim": widgets.IntSlider(value=8, min=1, max=d, description="intrinsic dimension k",
                                           tooltip=f"number of independent directions of the cloud (of d = {d})", style=style),
        "m": widgets.IntSlider(value=256, min=2, max=EXPLORER_MAX_SAMPLES, description="samples m",
                               tooltip="number of samples (the first m of one seeded draw)", style=style),
        "seed": widgets.fixed(seed),
        "d": widgets.fixed(d),
    }
