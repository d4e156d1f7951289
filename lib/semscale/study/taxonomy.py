"""A taxonomy of imbalance in binary classification: the scales η, κ, Δ (notebook 04).

After Essomba and Fokoué, *A Theoretical and Empirical Taxonomy of Imbalance in Binary
Classification* (arXiv 2601.04149). Only the abstract of that paper could be read; the formulas
below are derived here from first principles, and the regime cut-offs are this project's.

Setting: a minority class (label 1, prior 1/(1+η)) and a majority class (label 0, prior η/(1+η)),
``x | y ~ N(μ_y, Σ)`` with a shared Σ.

* η = majority / minority prior (η ≥ 1); κ = n / d, training samples per dimension;
  Δ = sqrt((μ1 − μ0)ᵀ Σ⁻¹ (μ1 − μ0)), the Mahalanobis distance between the means.
* Along the discriminant direction the standardised score is N(+Δ/2, 1) for the minority and
  N(−Δ/2, 1) for the majority. The Bayes rule says "minority" when the score exceeds
  t = log η / Δ (the threshold shift), so

      minority error (1 − recall) = Φ(log η / Δ − Δ/2),   majority error = Φ(−log η / Δ − Δ/2).

  Minority recall is 1/2 exactly when log η = Δ²/2.
* Finite samples (plug-in LDA with estimated means, pooled covariance and priors, n training
  points in d dimensions, κ = n/d): the estimated means carry noise of squared size d/n_y, which
  (i) adds d(1/n1 + 1/n0) to Δ² in the score's spread and (ii) biases every test score against
  the class with fewer samples by b = (d/2)(1/n1 − 1/n0) ≈ η / (2κ); the inverse of the pooled
  covariance (N = n − 2 degrees of freedom) scales the mean score by s1 = N/(N − d − 1) and its
  variance by s2 = N²(N − 1)/((N − d)(N − d − 1)(N − d − 3)). Treating the score as Gaussian with
  those moments gives ``plugin_lda_errors`` (a Raudys/Deev-type approximation, good when κ ≫ 1).
* Regimes (this project's, in terms of the minority margin z = Φ⁻¹(recall) and its balanced value
  z1): Normal z > z1/2 (the threshold has moved less than half-way to the minority mean);
  Mild 0 < z ≤ z1/2; Extreme −1 < z ≤ 0 (recall below 1/2); Catastrophic z ≤ −1 (recall below
  Φ(−1) ≈ 16 %). For the Bayes rule the cuts in log η are Δ²/4, Δ²/2 and Δ²/2 + Δ.

The second half of the module holds notebook 04's tables (the sweeps over η, κ, the minority's spread and real
pairs), its figures and its explorer's callback.
"""

from __future__ import annotations

import itertools
import math
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from scipy import integrate, optimize, stats

from .. import data, progress, scale, subsets

__all__ = [
    "REGIMES",
    "Errors",
    "TwoClassData",
    "threshold_shift",
    "bayes_errors",
    "plugin_lda_errors",
    "plugin_lda_threshold",
    "minority_metrics",
    "bayes_pr_auc",
    "regime",
    "regime_boundaries",
    "collapse_log_eta",
    "rule_of_thumb_log_eta",
    "split_counts",
    "gaussian_problem",
    "subsample_problem",
    "monte_carlo_bayes_errors",
    "default_classifiers",
    "evaluate_classifier",
    "simulate",
    "collapse_point",
    "METRIC_NAMES",
    "closed_form",
    "regime_table",
    "monte_carlo_check",
    "mean_se",
    "kappa_sweep",
    "kappa_collapse",
    "lda_agreement",
    "gaussian_collapse",
    "load_dataset",
    "pixel_rows",
    "balanced_sample_volumes",
    "real_pairs",
    "real_sweep",
    "real_collapse",
    "spread_sweep",
    "spread_volumes",
    "spread_collapse",
    "scale_asymmetry",
    "asymmetry_summary",
    "REGIME_COLOURS",
    "shade_regimes",
    "plot_closed_form",
    "plot_kappa_collapse",
    "plot_gaussian_metrics",
    "plot_real_recall",
    "plot_spread_collapse",
    "plot_scale_asymmetry",
    "threshold_explorer",
    "threshold_explorer_controls",
]

REGIMES = ("Normal", "Mild", "Extreme", "Catastrophic")


# ----------------------------------------------------------------------------------------------
# checks


def _check_eta(eta) -> np.ndarray:
    eta = np.asarray(eta, dtype=float)
    if not np.all(np.isfinite(eta)) or np.any(eta < 1):
        raise ValueError(f"eta (majority / minority prior) must be finite and >= 1, got {eta}")
    return eta


def _check_delta(delta) -> np.ndarray:
    delta = np.asarray(delta, dtype=float)
    if not np.all(np.isfinite(delta)) or np.any(delta <= 0):
        raise ValueError(f"delta (Mahalanobis distance) must be finite and > 0, got {delta}")
    return delta


def _check_kappa(kappa) -> np.ndarray:
    kappa = np.asarray(kappa, dtype=float)
    if not np.all(np.isfinite(kappa)) or np.any(kappa <= 0):
        raise ValueError(f"kappa (samples per dimension n/d) must be finite and > 0, got {kappa}")
    return kappa


def _scalar(x):
    return x.item() if isinstance(x, np.ndarray) and x.ndim == 0 else x


# ----------------------------------------------------------------------------------------------
# closed forms


@dataclass(frozen=True)
class Errors:
    """Class-conditional error rates of a rule (arrays broadcast over the inputs)."""

    minority: np.ndarray  # P(say majority | minority) = 1 − minority recall
    majority: np.ndarray  # P(say minority | majority)
    total: np.ndarray  # prior-weighted error at the training prior η

    @property
    def recall(self):
        return 1 - self.minority


def threshold_shift(eta, delta):
    """Shift of the Bayes threshold along the standardised discriminant: log η / Δ."""
    return _scalar(np.log(_check_eta(eta)) / _check_delta(delta))


def _errors(eta, z_min, z_maj) -> Errors:
    p_min = 1 / (1 + eta)
    e_min, e_maj = stats.norm.cdf(z_min), stats.norm.cdf(z_maj)
    return Errors(_scalar(e_min), _scalar(e_maj), _scalar(p_min * e_min + (1 - p_min) * e_maj))


def bayes_errors(eta, delta) -> Errors:
    """Bayes error rates for N(±Δ/2 along the discriminant, shared Σ) with prior ratio η."""
    eta, delta = _check_eta(eta), _check_delta(delta)
    t = np.log(eta) / delta
    return _errors(eta, t - delta / 2, -t - delta / 2)


def _lda_moments(eta, delta, kappa, d):
    """(mean shift factor s1, sd factor sqrt(s2), bias b, spread D) of the plug-in LDA score."""
    n = kappa * d
    n1 = n / (1 + eta)
    n0 = n - n1
    N = n - 2
    if np.any(N - d - 3 <= 0):
        raise ValueError(f"plug-in LDA closed form needs n > d + 5 (kappa > 1 + 5/d); got n = {n}, d = {d}")
    s1 = N / (N - d - 1)
    s2 = N**2 * (N - 1) / ((N - d) * (N - d - 1) * (N - d - 3))
    b = d / 2 * (1 / n1 - 1 / n0)
    D = np.sqrt(delta**2 + d * (1 / n1 + 1 / n0))
    return s1, np.sqrt(s2), b, D


def plugin_lda_errors(eta, delta, kappa, d: int = 20) -> Errors:
    """Expected error rates of plug-in LDA trained on n = κ·d samples with prior ratio η (approximate).

    The estimated priors, means and pooled covariance enter through the moments of the score
    (module docstring); κ → ∞ recovers :func:`bayes_errors`.
    """
    eta, delta, kappa = _check_eta(eta), _check_delta(delta), _check_kappa(kappa)
    if int(d) != d or d < 1:
        raise ValueError(f"d must be a positive integer, got {d!r}")
    s1, sd, b, D = _lda_moments(eta, delta, kappa, d)
    log_eta = np.log(eta)
    return _errors(eta, (log_eta + s1 * (b - delta**2 / 2)) / (sd * D), (-log_eta - s1 * (b + delta**2 / 2)) / (sd * D))


def plugin_lda_threshold(eta, delta, kappa, d: int = 20):
    """Expected threshold of plug-in LDA on the standardised score axis (class means at ±Δ/2): (log η + s1·b)/(s1·Δ).

    LDA's score has expected class means s1(±Δ²/2 − b) and says "minority" above log η; mapping those means onto
    ±Δ/2 gives this threshold: 0 at η = 1 (equal counts, b = 0) and log η / Δ as κ → ∞. LDA's extra errors come
    from its noisier score (wider than unit variance on this axis, :func:`plugin_lda_errors`), not from a moved
    threshold: reading a threshold off the minority error alone (Δ/2 + Φ⁻¹(miss rate)) would put it at +0.6 for
    η = 1, κ = 1.6, Δ = 2, d = 20, although both errors are equal there.
    """
    eta, delta, kappa = _check_eta(eta), _check_delta(delta), _check_kappa(kappa)
    s1, _, b, _ = _lda_moments(eta, delta, kappa, d)
    return _scalar((np.log(eta) + s1 * b) / (s1 * delta))


def minority_metrics(eta, delta, kappa=None, d: int = 20, test_eta=None) -> pd.DataFrame:
    """Closed-form minority recall, precision and F1 (Bayes rule, or plug-in LDA when κ is given).

    The test set has prior ratio ``test_eta`` (default: the training η). Returns a frame with one
    row per broadcast input.
    """
    errors = bayes_errors(eta, delta) if kappa is None else plugin_lda_errors(eta, delta, kappa, d)
    eta_b, delta_b = np.broadcast_arrays(_check_eta(eta), _check_delta(delta))
    test_eta = eta_b if test_eta is None else np.broadcast_to(_check_eta(test_eta), eta_b.shape)
    recall = 1 - np.asarray(errors.minority, dtype=float)
    false_pos = np.asarray(errors.majority, dtype=float)
    p = 1 / (1 + test_eta)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = p * recall / (p * recall + (1 - p) * false_pos)
        f1 = 2 * p * recall / (p * recall + p + (1 - p) * false_pos)
    return pd.DataFrame({
        "eta": np.ravel(eta_b), "delta": np.ravel(delta_b), "test_eta": np.ravel(test_eta),
        "recall": np.ravel(np.broadcast_to(recall, eta_b.shape)),
        "false_positive_rate": np.ravel(np.broadcast_to(false_pos, eta_b.shape)),
        "precision": np.ravel(np.broadcast_to(precision, eta_b.shape)),
        "f1": np.ravel(np.broadcast_to(f1, eta_b.shape)),
    })


def bayes_pr_auc(delta: float, test_eta: float = 1.0) -> float:
    """Area under the minority precision–recall curve of the Bayes score (any η ranks the same).

    Integral of precision over recall as the threshold t sweeps the standardised score; at test
    prior ratio ``test_eta``. Depends on η only through the test prior.
    """
    delta = float(_check_delta(delta))
    p = 1 / (1 + float(_check_eta(test_eta)))

    def integrand(t):  # precision(t) · |d recall / dt|, with f/r taken in logs (both vanish as t grows)
        ratio = math.exp(stats.norm.logcdf(-delta / 2 - t) - stats.norm.logcdf(delta / 2 - t))
        return stats.norm.pdf(delta / 2 - t) / (1 + (1 - p) / p * ratio)

    value, _ = integrate.quad(integrand, -delta / 2 - 12, delta / 2 + 12, limit=200)
    return float(value)


def regime(eta, delta, kappa=None, d: int = 20):
    """Regime name(s): Normal, Mild, Extreme or Catastrophic (cut-offs in the module docstring).

    With ``kappa`` the plug-in LDA recall is used, measured against its own balanced value.
    """
    eta, delta = np.broadcast_arrays(_check_eta(eta), _check_delta(delta))
    if kappa is None:
        z = stats.norm.ppf(bayes_errors(eta, delta).recall)
        z1 = delta / 2
    else:
        z = stats.norm.ppf(plugin_lda_errors(eta, delta, kappa, d).recall)
        z1 = stats.norm.ppf(plugin_lda_errors(np.ones_like(eta), delta, kappa, d).recall)
    z = np.asarray(z, dtype=float)
    names = np.select([z > z1 / 2, z > 0, z > -1], REGIMES[:3], REGIMES[3])
    return _scalar(names) if names.ndim == 0 else names


def regime_boundaries(delta) -> dict[str, float]:
    """log η where the Bayes rule passes from one regime to the next: Δ²/4, Δ²/2, Δ²/2 + Δ."""
    delta = float(_check_delta(delta))
    return {"Normal|Mild": delta**2 / 4, "Mild|Extreme": delta**2 / 2, "Extreme|Catastrophic": delta**2 / 2 + delta}


def collapse_log_eta(delta, kappa=None, d: int = 20) -> float:
    """log η at which minority recall falls to 1/2 (Bayes: Δ²/2; plug-in LDA: solved numerically).

    Returns nan when plug-in LDA recall is already below 1/2 at η = 1 or stays above it up to
    the largest η the sample size allows (two minority samples).
    """
    delta = float(_check_delta(delta))
    if kappa is None:
        return delta**2 / 2
    kappa = float(_check_kappa(kappa))

    def gap(log_eta):
        return float(plugin_lda_errors(math.exp(log_eta), delta, kappa, d).recall) - 0.5

    n = kappa * d
    top = math.log(max(n / 2 - 1, 1.0))  # n1 = n / (1 + η) ≥ 2
    try:
        if gap(0.0) <= 0 or gap(top) >= 0:
            return float("nan")
    except ValueError:
        return float("nan")
    return optimize.brentq(gap, 0.0, top)


def rule_of_thumb_log_eta(delta, kappa) -> float:
    """The paper's abstract: minority recall collapses once log η exceeds Δ·√κ."""
    return _scalar(_check_delta(delta) * np.sqrt(_check_kappa(kappa)))


# ----------------------------------------------------------------------------------------------
# data


@dataclass
class TwoClassData:
    """Train and test arrays of one binary problem; label 1 is the minority.

    The test set is balanced; ``test_weight`` (η on majority rows, 1 on minority rows) makes
    weighted precision and PR-AUC those of a test set at prior ratio η.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    test_weight: np.ndarray
    eta: float

    @property
    def n_minority(self) -> int:
        return int(self.y_train.sum())


def split_counts(n: int, eta: float) -> tuple[int, int]:
    """(minority, majority) training counts for n samples at ratio η; ValueError below 2 minority."""
    eta = float(_check_eta(eta))
    if int(n) != n or n < 4:
        raise ValueError(f"n must be an integer >= 4, got {n!r}")
    n_min = int(round(n / (1 + eta)))
    if n_min < 2:
        raise ValueError(f"n = {n} at eta = {eta} leaves {n_min} minority sample(s); at least 2 are needed")
    return n_min, int(n) - n_min


def _weights(y_test: np.ndarray, eta: float) -> np.ndarray:
    return np.where(y_test == 1, 1.0, float(eta))


def gaussian_problem(eta: float, kappa: float, delta: float, d: int = 20, *, seed: int = 0,
                     n_test_per_class: int = 2000, scale_ratio: float = 1.0) -> TwoClassData:
    """Two Gaussian classes in R^d, means ±Δ/2 on the first axis, n = round(κ·d) training samples.

    The majority is N(−Δ/2·e1, I); the minority is N(+Δ/2·e1, σ²I) with σ = ``scale_ratio``, so Δ
    is measured in majority standard deviations and σ ≠ 1 makes one class cover more of the space.
    ``scale_ratio = 1`` is the shared-covariance model of the closed forms.
    """
    eta, kappa, delta = float(_check_eta(eta)), float(_check_kappa(kappa)), float(_check_delta(delta))
    if int(d) != d or d < 1:
        raise ValueError(f"d must be a positive integer, got {d!r}")
    if not (math.isfinite(scale_ratio) and scale_ratio > 0):
        raise ValueError(f"scale_ratio must be finite and > 0, got {scale_ratio}")
    n_min, n_maj = split_counts(int(round(kappa * d)), eta)
    rng = np.random.default_rng(seed)
    sd_min, sd_maj = float(scale_ratio), 1.0
    shift = np.zeros(d)
    shift[0] = delta / 2

    def draw(m, label):
        sd, sign = (sd_min, 1) if label == 1 else (sd_maj, -1)
        return sign * shift + sd * rng.standard_normal((m, d))

    X_train = np.vstack([draw(n_min, 1), draw(n_maj, 0)])
    y_train = np.r_[np.ones(n_min, int), np.zeros(n_maj, int)]
    X_test = np.vstack([draw(n_test_per_class, 1), draw(n_test_per_class, 0)])
    y_test = np.r_[np.ones(n_test_per_class, int), np.zeros(n_test_per_class, int)]
    return TwoClassData(X_train, y_train, X_test, y_test, _weights(y_test, eta), eta)


def subsample_problem(X_minority: np.ndarray, X_majority: np.ndarray, X_test_minority: np.ndarray,
                      X_test_majority: np.ndarray, eta: float, n: int, *, seed: int = 0) -> TwoClassData:
    """A real balanced two-class problem made imbalanced: n training rows drawn at ratio η.

    The training pools must hold at least the needed counts; the test set is all given test rows
    (balanced or not), weighted so that its majority counts η times its minority.
    """
    n_min, n_maj = split_counts(n, eta)
    if n_min > len(X_minority) or n_maj > len(X_majority):
        raise ValueError(f"need {n_min} minority and {n_maj} majority rows, have {len(X_minority)} and {len(X_majority)}")
    rng = np.random.default_rng(seed)
    X_train = np.vstack([X_minority[rng.choice(len(X_minority), n_min, replace=False)],
                         X_majority[rng.choice(len(X_majority), n_maj, replace=False)]])
    y_train = np.r_[np.ones(n_min, int), np.zeros(n_maj, int)]
    X_test = np.vstack([X_test_minority, X_test_majority])
    y_test = np.r_[np.ones(len(X_test_minority), int), np.zeros(len(X_test_majority), int)]
    weight = np.where(y_test == 1, 1.0, float(eta) * len(X_test_minority) / len(X_test_majority))
    return TwoClassData(X_train, y_train, X_test, y_test, weight, float(eta))


def monte_carlo_bayes_errors(eta: float, delta: float, n: int = 100_000, d: int = 2, seed: int = 0) -> dict[str, float]:
    """Class-conditional errors of the true Bayes rule on n fresh samples per class, with standard errors.

    Samples are drawn in R^d with a random shared covariance and the rule is the log-likelihood ratio
    against log η, so the check covers the geometry as well as the 1-D formula.
    """
    eta, delta = float(_check_eta(eta)), float(_check_delta(delta))
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((d, d)) + d * np.eye(d)  # Σ = A Aᵀ, well conditioned
    direction = rng.standard_normal(d)
    direction /= np.linalg.norm(np.linalg.solve(A, direction))  # ‖A⁻¹ u‖ = 1: Mahalanobis length 1
    mu1, mu0 = delta / 2 * direction, -delta / 2 * direction
    w = np.linalg.solve(A @ A.T, mu1 - mu0)
    out = {}
    for label, mu in (("minority", mu1), ("majority", mu0)):
        x = mu + rng.standard_normal((n, d)) @ A.T
        llr = (x - (mu1 + mu0) / 2) @ w
        err = (llr <= math.log(eta)) if label == "minority" else (llr > math.log(eta))
        p = err.mean()
        out[label] = float(p)
        out[f"{label}_se"] = float(math.sqrt(max(p * (1 - p), 1 / n) / n))
    return out


# ----------------------------------------------------------------------------------------------
# simulation


def default_classifiers(n_trees: int = 100, k: int = 5) -> dict[str, Callable[[int], object]]:
    """name → factory(seed) of the four scikit-learn classifiers (standardised inputs where it matters)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "LDA": lambda seed: LinearDiscriminantAnalysis(),
        "logistic": lambda seed: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        f"{k}-NN": lambda seed: make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=k)),
        "random forest": lambda seed: RandomForestClassifier(n_estimators=n_trees, random_state=seed, n_jobs=1),
    }


def evaluate_classifier(model, data: TwoClassData) -> dict[str, float]:
    """Fit on the training rows; minority recall, precision, F1 and PR-AUC on the weighted test set.

    Precision is NaN when nothing is predicted minority. The default decision rule of each model
    is used (no threshold tuning): that rule is what imbalance moves.
    """
    from sklearn.metrics import average_precision_score

    model.fit(data.X_train, data.y_train)
    y, w = data.y_test, data.test_weight
    pred = model.predict(data.X_test)
    score = model.predict_proba(data.X_test)[:, 1]
    tp = float(np.sum(w * ((pred == 1) & (y == 1))))
    fp = float(np.sum(w * ((pred == 1) & (y == 0))))
    fn = float(np.sum(w * ((pred == 0) & (y == 1))))
    return {
        "recall": tp / (tp + fn),
        "precision": tp / (tp + fp) if tp + fp > 0 else float("nan"),
        "f1": 2 * tp / (2 * tp + fp + fn),
        "pr_auc": float(average_precision_score(y, score, sample_weight=w)),
        "false_positive_rate": float(np.mean(pred[y == 0] == 1)),
    }


def simulate(make_data: Callable[[float, int], TwoClassData], etas: Iterable[float], seeds: Iterable[int],
             classifiers: dict[str, Callable[[int], object]], **columns) -> pd.DataFrame:
    """Tidy frame: one row per (classifier, η, seed) with the minority metrics of :func:`evaluate_classifier`.

    ``make_data(eta, seed)`` builds the problem; η values it rejects with ValueError (too few
    minority samples) are skipped. Extra keyword arguments become constant columns. A live notebook or a
    terminal shows a progress bar over the (η, seed) problems; headless runs print nothing.
    """
    etas, seeds = list(etas), list(seeds)
    rows = []
    problems = progress.bar(itertools.product(etas, seeds), total=len(etas) * len(seeds), desc="fitting the classifiers",
                            unit="problem")
    for eta, seed in problems:
        try:
            data = make_data(float(eta), int(seed))
        except ValueError:
            continue
        for name, factory in classifiers.items():
            metrics = evaluate_classifier(factory(int(seed)), data)
            rows.append({**columns, "classifier": name, "eta": float(eta), "log_eta": math.log(eta), "seed": int(seed),
                         "n_train": len(data.y_train), "n_minority": data.n_minority, **metrics})
    return pd.DataFrame(rows)


def collapse_point(frame: pd.DataFrame, by: list[str] | None = None, metric: str = "recall", level: float = 0.5) -> pd.DataFrame:
    """log η where the seed-averaged ``metric`` first falls below ``level`` (linear interpolation in log η).

    Groups by ``by`` (default: classifier). NaN when it never falls below; 0 when it starts below.
    """
    by = by or ["classifier"]
    mean = frame.groupby([*by, "log_eta"], as_index=False)[metric].mean()
    rows = []
    for key, group in mean.groupby(by):
        x, y = group["log_eta"].to_numpy(), group[metric].to_numpy()
        below = np.flatnonzero(y < level)
        if len(below) == 0:
            value = float("nan")
        elif below[0] == 0:
            value = 0.0
        else:
            i = below[0]
            value = float(x[i - 1] + (y[i - 1] - level) / (y[i - 1] - y[i]) * (x[i] - x[i - 1]))
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), "collapse_log_eta": value})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# notebook 04: its tables


METRIC_NAMES = {"recall": "minority recall", "precision": "minority precision", "f1": "minority F1",
                "pr_auc": "minority PR-AUC"}  # the metrics of evaluate_classifier the notebook reports, in words


def closed_form(log_eta: np.ndarray, deltas: Iterable[float]) -> pd.DataFrame:
    """Bayes error rates and regime at each log η for each separability Δ: one row per (Δ, point of ``log_eta``)."""
    eta = np.exp(log_eta)
    frames = []
    for delta in deltas:
        errors = bayes_errors(eta, delta)
        frames.append(pd.DataFrame({"delta": delta, "log_eta": log_eta, "eta": eta, "minority_error": errors.minority,
                                    "majority_error": errors.majority, "bayes_error": errors.total,
                                    "regime": regime(eta, delta)}))
    return pd.concat(frames, ignore_index=True)


def regime_table(deltas: Iterable[float], kappa: float) -> pd.DataFrame:
    """The regime borders in log η per Δ, next to the abstract's rule of thumb Δ√κ."""
    return pd.DataFrame([{"delta": delta, **regime_boundaries(delta), "rule of thumb Δ√κ": rule_of_thumb_log_eta(delta, kappa)}
                         for delta in deltas])


def monte_carlo_check(deltas: Iterable[float], etas: Iterable[float], n: int, d: int = 5) -> pd.DataFrame:
    """Closed-form against Monte Carlo class errors (seed 100 + the index of Δ), with z = deviation / SE."""
    rows = []
    for i, delta in enumerate(deltas):
        for eta in etas:
            mc = monte_carlo_bayes_errors(eta, delta, n=n, d=d, seed=100 + i)
            errors = bayes_errors(eta, delta)
            for cls, formula in [("minority", errors.minority), ("majority", errors.majority)]:
                rows.append({"delta": delta, "eta": eta, "class": cls, "closed_form": float(formula),
                             "monte_carlo": mc[cls], "se": mc[f"{cls}_se"]})
    check = pd.DataFrame(rows)
    check["z"] = (check.monte_carlo - check.closed_form) / check.se
    return check


def mean_se(frame: pd.DataFrame, by: list[str], cols: list[str]) -> pd.DataFrame:
    """Mean and standard error over seeds, one column pair per metric, and the number of runs."""
    g = frame.groupby(by)[cols]
    out = g.mean().add_suffix("_mean").join(g.sem().add_suffix("_se")).join(g.size().rename("runs"))
    return out.reset_index()


def kappa_sweep(kappas: Iterable[float], etas: Iterable[float], seeds: Iterable[int], classifiers: dict,
                delta: float, dim: int, n_test_per_class: int) -> pd.DataFrame:
    """:func:`simulate` on the shared-covariance Gaussian problem for each κ (column ``kappa``)."""
    return pd.concat([
        simulate(lambda eta, seed, k=k: gaussian_problem(eta, k, delta, dim, seed=seed, n_test_per_class=n_test_per_class),
                 etas, seeds, classifiers, kappa=k)
        for k in kappas], ignore_index=True)


def kappa_collapse(sweep: pd.DataFrame, delta: float, dim: int) -> pd.DataFrame:
    """Per κ: the simulated collapse point, the plug-in LDA formula's, the Bayes value and the rule of thumb."""
    collapse = collapse_point(sweep, by=["kappa"])
    collapse["lda_formula"] = [collapse_log_eta(delta, k, dim) for k in collapse.kappa]
    collapse["bayes"] = collapse_log_eta(delta)
    collapse["rule_of_thumb"] = [rule_of_thumb_log_eta(delta, k) for k in collapse.kappa]
    collapse.insert(0, "delta", delta)
    collapse.insert(1, "dim", dim)
    return collapse


def lda_agreement(summary: pd.DataFrame, delta: float, kappa: float, dim: int) -> pd.DataFrame:
    """Simulated LDA recall (from :func:`mean_se`) against the Bayes and plug-in LDA closed forms, in SEs."""
    lda = summary[summary.classifier == "LDA"].copy()
    lda["bayes_recall"] = bayes_errors(lda.eta.to_numpy(), delta).recall
    lda["lda_formula_recall"] = plugin_lda_errors(lda.eta.to_numpy(), delta, kappa, dim).recall
    lda["regime"] = regime(lda.eta.to_numpy(), delta)
    lda["z_bayes"] = (lda.recall_mean - lda.bayes_recall) / lda.recall_se
    lda["z_lda_formula"] = (lda.recall_mean - lda.lda_formula_recall) / lda.recall_se
    lda = lda.assign(dim=dim)
    return lda[["delta", "kappa", "dim", "eta", "regime", "recall_mean", "recall_se", "bayes_recall",
                "lda_formula_recall", "z_bayes", "z_lda_formula"]]


def gaussian_collapse(runs: pd.DataFrame, delta: float, kappa: float, dim: int) -> pd.DataFrame:
    """Each classifier's collapse point on the Gaussian problem, with the Bayes value."""
    collapse = collapse_point(runs)
    collapse["bayes"] = collapse_log_eta(delta)
    return collapse.assign(delta=delta, kappa=kappa, dim=dim, recall_level=0.5)


def load_dataset(name: str) -> tuple[str, data.Split, data.Split]:
    """(name loaded, train, test): the named dataset, or scikit-learn's digits (with a line saying so) when it
    cannot be loaded."""
    try:
        return name, data.load(name, "train"), data.load(name, "test")
    except data.DatasetError as err:
        print(f"cannot load {name} ({err}); falling back to scikit-learn's digits")
        return "digits", data.load("digits", "train"), data.load("digits", "test")


def pixel_rows(split: data.Split) -> np.ndarray:
    """The images of a split as flattened pixel rows in [0, 1] (float64)."""
    return split.images.reshape(len(split.labels), -1).numpy() / 255.0


def balanced_sample_volumes(split: data.Split, per_class: int, seed: int = 0) -> np.ndarray:
    """Sample volume (bits) of every class of a split, each measured on ``per_class`` seeded images (all of the
    smallest class's when it has fewer)."""
    n = min(per_class, int(split.labels.bincount().min()))
    chosen = subsets.per_class_indices(split.labels.numpy(), [n] * len(split.classes), seed=seed).indices
    return scale.sample_volume(split.images[chosen], split.labels[chosen], len(split.classes)).numpy()


def real_pairs(train: data.Split, test: data.Split, pairs: list[list[str]], dim: int, volume_samples: int,
               sample_volumes: np.ndarray, dataset: str) -> tuple[dict, pd.DataFrame]:
    """Per pair (a, b): the PCA features (train a, train b, test a, test b) on ``dim`` components of the balanced
    pair (fitted without labels), and a table row with Δ̂ (pooled covariance), the classes' sample volumes and their
    volumes in the PCA space."""
    from sklearn.decomposition import PCA

    X_train, X_test = pixel_rows(train), pixel_rows(test)
    y_train, y_test = train.labels.numpy(), test.labels.numpy()
    label_of = {name: i for i, name in enumerate(train.classes)}
    features, rows = {}, []
    for a, b in pairs:
        ia, ib = label_of[a], label_of[b]
        pca = PCA(dim, random_state=0).fit(X_train[np.isin(y_train, [ia, ib])])
        Za, Zb = pca.transform(X_train[y_train == ia]), pca.transform(X_train[y_train == ib])
        features[(a, b)] = (Za, Zb, pca.transform(X_test[y_test == ia]), pca.transform(X_test[y_test == ib]))
        pooled = (np.cov(Za.T) + np.cov(Zb.T)) / 2
        gap = Za.mean(0) - Zb.mean(0)
        m = min(volume_samples, len(Za), len(Zb))
        rows.append({"dataset": dataset, "pair": f"{a} | {b}", "class_a": a, "class_b": b,
                     "delta_hat": float(np.sqrt(gap @ np.linalg.solve(pooled, gap))),
                     "sample_volume_a": sample_volumes[ia], "sample_volume_b": sample_volumes[ib],
                     "pca_volume_a": scale.volume(Za[:m]), "pca_volume_b": scale.volume(Zb[:m]),
                     "pca_dim": dim, "volume_samples": m})
    table = pd.DataFrame(rows)
    table["log_volume_ratio_a_over_b"] = np.log(table.sample_volume_a / table.sample_volume_b)
    table["bayes_collapse_log_eta"] = table.delta_hat**2 / 2
    return features, table


def real_sweep(features: dict, etas: Iterable[float], seeds: Iterable[int], classifiers: dict, kappa: float,
               dim: int, dataset: str) -> pd.DataFrame:
    """:func:`simulate` on every pair of :func:`real_pairs`, each class in turn the minority, n = κ·dim (capped by
    the smaller class)."""
    runs = []
    for (a, b), (Za, Zb, Ta, Tb) in features.items():
        n = int(min(kappa * dim, len(Za), len(Zb)))
        for minority, majority, Xmin, Xmaj, Tmin, Tmaj in [(a, b, Za, Zb, Ta, Tb), (b, a, Zb, Za, Tb, Ta)]:
            runs.append(simulate(
                lambda eta, seed: subsample_problem(Xmin, Xmaj, Tmin, Tmaj, eta, n, seed=seed),  # called at once, in this iteration
                etas, seeds, classifiers, dataset=dataset, pair=f"{a} | {b}", minority=minority,
                majority=majority, kappa=n / dim, dim=dim))
    return pd.concat(runs, ignore_index=True)


def real_collapse(runs: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """Collapse point per (pair, minority, classifier), with the pair's Δ̂ and its Bayes collapse point."""
    collapse = collapse_point(runs, by=["pair", "minority", "classifier"])
    return collapse.merge(pairs[["pair", "delta_hat", "bayes_collapse_log_eta"]], on="pair")


def spread_sweep(scale_ratios: Iterable[float], etas: Iterable[float], seeds: Iterable[int], classifiers: dict,
                 kappa: float, delta: float, dim: int, n_test_per_class: int) -> pd.DataFrame:
    """:func:`simulate` on the Gaussian problem whose minority has std ``scale_ratio`` (column ``scale_ratio``)."""
    return pd.concat([
        simulate(lambda eta, seed, r=r: gaussian_problem(eta, kappa, delta, dim, seed=seed, n_test_per_class=n_test_per_class,
                                                         scale_ratio=r),
                 etas, seeds, classifiers, scale_ratio=r)
        for r in scale_ratios], ignore_index=True)


def spread_volumes(scale_ratios: Iterable[float], samples: int, dim: int, seed: int = 0) -> pd.DataFrame:
    """Volume of a minority of std r and of a standard majority (``samples`` draws each) and their log ratio."""
    rng = np.random.default_rng(seed)
    volumes = pd.DataFrame([{"scale_ratio": r, "volume_minority": scale.volume(r * rng.standard_normal((samples, dim))),
                             "volume_majority": scale.volume(rng.standard_normal((samples, dim)))} for r in scale_ratios])
    volumes["log_volume_ratio"] = np.log(volumes.volume_minority / volumes.volume_majority)
    return volumes


def spread_collapse(runs: pd.DataFrame, volumes: pd.DataFrame, delta: float, kappa: float) -> pd.DataFrame:
    """Per (scale ratio, classifier): the collapse point, the recall at η = 1 and the volumes."""
    balanced = runs[runs.eta == 1].groupby(["scale_ratio", "classifier"], as_index=False).recall.mean()
    collapse = (collapse_point(runs, by=["scale_ratio", "classifier"])
                .merge(balanced.rename(columns={"recall": "recall_at_eta_1"}), on=["scale_ratio", "classifier"])
                .merge(volumes, on="scale_ratio"))
    collapse.insert(0, "delta", delta)
    collapse.insert(1, "kappa", kappa)
    return collapse


def scale_asymmetry(collapse: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """Per (pair, classifier): collapse with a minority minus with b minority, against log(Vol a / Vol b), and
    whether their signs agree (1 yes, 0 no, NaN when a collapse point is missing)."""
    wide = collapse.pivot_table(index=["pair", "classifier"], columns="minority", values="collapse_log_eta").reset_index()
    rows = []
    for pair in pairs.itertuples():
        for classifier in wide[wide.pair == pair.pair].classifier:
            sub = wide[(wide.pair == pair.pair) & (wide.classifier == classifier)]
            ca, cb = float(sub[pair.class_a].iloc[0]), float(sub[pair.class_b].iloc[0])
            rows.append({"pair": pair.pair, "classifier": classifier, "log_volume_ratio_a_over_b": pair.log_volume_ratio_a_over_b,
                         "collapse_a_minority": ca, "collapse_b_minority": cb, "collapse_difference": ca - cb})
    asym = pd.DataFrame(rows)
    agree = (np.sign(asym.collapse_difference) == np.sign(asym.log_volume_ratio_a_over_b)).astype(float)
    asym["agrees_with_scale"] = agree.where(asym.collapse_difference.notna())
    return asym


def asymmetry_summary(asym: pd.DataFrame) -> str:
    """The sign agreement in words, and the Spearman correlation across cases, or why it is undefined."""
    valid = asym.dropna(subset=["collapse_difference"])
    missing = len(asym) - len(valid)
    lines = [f"sign agreement: {int(valid.agrees_with_scale.sum())} of {len(valid)} (pair, classifier) cases"
             + (f" ({missing} more left out: a collapse point missing)" if missing else "")]
    if len(valid) < 3:
        lines.append(f"Spearman correlation across cases: not computed for {len(valid)} case(s)")
    elif valid.log_volume_ratio_a_over_b.nunique() < 2:
        lines.append(f"Spearman correlation across cases: undefined, every case has the same volume ratio "
                     f"({valid.pair.nunique()} pair)")
    elif valid.collapse_difference.nunique() < 2:
        lines.append("Spearman correlation across cases: undefined, every case has the same collapse difference")
    else:
        rho = stats.spearmanr(valid.log_volume_ratio_a_over_b, valid.collapse_difference).statistic
        lines.append(f"Spearman correlation across cases: {rho:.2f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# notebook 04: its figures and explorer

REGIME_COLOURS = dict(zip(REGIMES, ["#e8f4e8", "#fdf3d7", "#fbe0c8", "#f6c9c9"]))


def _over_seeds(n_seeds: int, spread: str = "") -> str:
    """'mean ± SE over 5 seeds' in words, or 'one seed' (no mean, no error bar) when there is one."""
    return "one seed" if n_seeds == 1 else f"mean{spread} over {n_seeds} seeds"


def shade_regimes(ax: plt.Axes, delta: float, label: bool = True) -> None:
    """Colour the x axis (log η) by the Bayes regimes of separability ``delta`` (set the x limits first)."""
    cuts = [0.0, *regime_boundaries(delta).values(), max(ax.get_xlim()[1], 1e-9)]
    for name, lo, hi in zip(REGIMES, cuts[:-1], cuts[1:]):
        ax.axvspan(lo, max(lo, hi), color=REGIME_COLOURS[name], zorder=0, label=f"{name} (Bayes regime)" if label else None)


def plot_closed_form(closed: pd.DataFrame) -> plt.Figure:
    """One panel per Δ: the closed-form minority, majority and Bayes errors against log η over the regimes."""
    deltas = closed.delta.unique()
    fig, axes = plt.subplots(1, len(deltas), figsize=(4 * len(deltas), 4.4), sharey=True, squeeze=False,
                             layout="constrained")
    for ax, (delta, part) in zip(axes[0], closed.groupby("delta")):
        ax.set_xlim(0, part.log_eta.max())
        shade_regimes(ax, delta, label=ax is axes[0, 0])
        for col, style, name in [("minority_error", "-", "minority error (1 − recall)"),
                                 ("majority_error", "--", "majority error (false alarms)"),
                                 ("bayes_error", ":", "Bayes error (prior-weighted)")]:
            ax.plot(part.log_eta, part[col], style, color="black" if col == "bayes_error" else None,
                    label=name if ax is axes[0, 0] else None)
        ax.set(title=f"Δ = {delta:g}", xlabel="log η (η = majority / minority)", ylim=(0, 1))
    axes[0, 0].set_ylabel("error rate")
    fig.legend(loc="outside right center")
    fig.suptitle("Closed-form Bayes errors of two Gaussian classes with a shared covariance")
    return fig


def plot_kappa_collapse(collapse: pd.DataFrame, kappas: list[float], delta: float, dim: int, n_seeds: int) -> plt.Figure:
    """The log η of collapse against κ: simulated LDA, the plug-in LDA formula, Bayes and the abstract's rule (log y:
    the rule climbs an order of magnitude above the rest)."""
    grid = np.geomspace(min(kappas), max(kappas), 60)
    formula = np.array([collapse_log_eta(delta, k, dim) for k in grid])
    fig, ax = plt.subplots(figsize=(7.5, 4.5), layout="constrained")
    ax.plot(grid, formula, label="plug-in LDA formula (ours)")
    ax.axhline(delta**2 / 2, color="black", ls=":", label="Bayes: Δ²/2")
    ax.plot(grid, delta * np.sqrt(grid), "--", color="grey", label="abstract's rule: Δ√κ")
    simulated = collapse[collapse.collapse_log_eta > 0]
    ax.plot(simulated.kappa, simulated.collapse_log_eta, "o", color="C3", label=f"LDA, simulated ({_over_seeds(n_seeds)})")
    shown = np.r_[formula, delta**2 / 2, delta * np.sqrt(grid), simulated.collapse_log_eta]
    shown = shown[np.isfinite(shown) & (shown > 0)]
    low, high = 0.7 * shown.min(), 1.4 * shown.max()
    ax.set(xscale="log", yscale="log", ylim=(low, high), xlabel="κ = n / d (samples per dimension)",
           ylabel="log η where minority recall = ½ (log scale)",
           title=f"Where recall collapses (Gaussian data, Δ = {delta:g}, d = {dim})")
    ax.set_xticks(sorted(kappas), [f"{k:g}" for k in sorted(kappas)], minor=False)
    ticks = [t for t in (0.5, 1, 2, 5, 10, 20, 50, 100) if low <= t <= high]
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.legend(loc="upper left")
    return fig


def plot_gaussian_metrics(summary: pd.DataFrame, log_eta: np.ndarray, delta: float, kappa: float, dim: int,
                          n_seeds: int) -> plt.Figure:
    """One panel per metric of ``METRIC_NAMES``: each classifier's mean ± SE against log η, the Bayes closed form and
    the plug-in LDA formula, over the Bayes regimes."""
    theory = minority_metrics(np.exp(log_eta), delta)
    theory["pr_auc"] = [bayes_pr_auc(delta, e) for e in theory.eta]
    theory_lda = minority_metrics(np.exp(log_eta), delta, kappa=kappa, d=dim)
    fig, axes = plt.subplots(1, len(METRIC_NAMES), figsize=(17, 4.6), sharex=True, layout="constrained")
    for ax, (metric, name) in zip(axes, METRIC_NAMES.items()):
        ax.set_xlim(0, log_eta.max())
        shade_regimes(ax, delta, label=ax is axes[0])
        for i, (classifier, part) in enumerate(summary.groupby("classifier", sort=False)):
            ax.errorbar(part.log_eta, part[f"{metric}_mean"], yerr=part[f"{metric}_se"], marker="o", ms=4, lw=1, capsize=2,
                        color=f"C{i}", label=classifier if ax is axes[0] else None)
        ax.plot(log_eta, theory[metric], color="black", lw=2, label="Bayes closed form" if ax is axes[0] else None)
        if metric != "pr_auc":
            ax.plot(log_eta, theory_lda[metric], "--", color="black", lw=1, label="plug-in LDA formula" if ax is axes[0] else None)
        ax.set(title=name, xlabel="log η", ylim=(0, 1.02))
    axes[0].set_ylabel("fraction (test prior = training prior)")
    fig.legend(loc="outside lower center", ncols=5)
    fig.suptitle(f"Minority metrics on Gaussian data (Δ = {delta:g}, κ = {kappa:g}, d = {dim}; {_over_seeds(n_seeds, ' ± SE')})")
    return fig


def plot_real_recall(summary: pd.DataFrame, pairs: pd.DataFrame, max_log_eta: float, dataset: str,
                     n_seeds: int) -> plt.Figure:
    """One panel per pair: each classifier's minority recall against log η with either class the minority (solid:
    the first), and the Bayes recall at the pair's Δ̂."""
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.4 * len(pairs) + 2.5, 4.4), sharey=True, squeeze=False,
                             layout="constrained")
    for ax, row in zip(axes[0], pairs.itertuples()):
        part = summary[summary.pair == row.pair]
        ax.set_xlim(0, max_log_eta)
        shade_regimes(ax, row.delta_hat, label=False)
        for i, (classifier, g) in enumerate(part.groupby("classifier", sort=False)):
            for minority, style in [(row.class_a, "-"), (row.class_b, ":")]:
                gg = g[g.minority == minority]
                ax.plot(gg.log_eta, gg.recall_mean, style, marker="o", ms=3, color=f"C{i}",
                        label=classifier if minority == row.class_a and ax is axes[0, 0] else None)
        grid = np.linspace(0, max_log_eta, 100)
        ax.plot(grid, bayes_errors(np.exp(grid), row.delta_hat).recall, color="black", lw=2,
                label="Bayes at Δ̂" if ax is axes[0, 0] else None)
        ax.set(title=f"{row.pair} (Δ̂ = {row.delta_hat:.2f})\nsolid: {row.class_a} is the minority", xlabel="log η",
               ylim=(0, 1.02))
    axes[0, 0].set_ylabel("minority recall")
    fig.legend(loc="outside right center")
    fig.suptitle(f"{dataset} pairs ({pairs.pca_dim.iloc[0]} principal components): minority recall, {_over_seeds(n_seeds)}")
    return fig


def plot_spread_collapse(collapse: pd.DataFrame, delta: float, kappa: float, dim: int) -> plt.Figure:
    """Minority recall at η = 1 (left) and the collapse point (right) against log(Vol minority / Vol majority)."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6), layout="constrained")
    panels = [("recall_at_eta_1", "minority recall at η = 1"), ("collapse_log_eta", "log η where minority recall = ½")]
    for ax, (col, label) in zip(axes, panels):
        sns.lineplot(collapse, x="log_volume_ratio", y=col, hue="classifier", marker="o", ax=ax, legend=ax is axes[1])
        ax.axvline(0, color="grey", lw=0.5)
        ax.set(xlabel="log( Vol(minority) / Vol(majority) )", ylabel=label)
    axes[1].axhline(delta**2 / 2, color="black", ls=":", label="Bayes, shared covariance")
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle(f"Gaussian data: a minority that covers more (right) or less (left) space than the majority\n"
                 f"(Δ = {delta:g}, κ = {kappa:g}, d = {dim}; runs that never collapse up to the largest η are missing)")
    return fig


def plot_scale_asymmetry(asym: pd.DataFrame, dataset: str) -> plt.Figure:
    """Each (pair, classifier): the collapse difference (a minority − b minority) against log(Vol a / Vol b)."""
    fig, ax = plt.subplots(figsize=(8.5, 4.8), layout="constrained")
    sns.scatterplot(asym, x="log_volume_ratio_a_over_b", y="collapse_difference", hue="classifier", style="pair", s=70, ax=ax)
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set(xlabel="log( sample volume a / sample volume b )", ylabel="collapse log η: a minority − b minority",
           title=f"{dataset}: does the class of larger sample volume collapse later?")
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left")
    return fig


EXPLORER_MAX_DELTA = 5.0  # the explorer's largest Δ: its score axis is fixed at ± (Δmax/2 + 4)
EXPLORER_DENSITY_FLOOR = 1e-5  # bottom of the explorer's log density axis (a minority prior of 1/1001 stays visible)


def _threshold_line(ax: plt.Axes, position: float, reach: float, label: str, **style) -> None:
    """A vertical threshold line, or, beyond the fixed axis, a marker at its edge with the label saying so."""
    if abs(position) <= reach:
        ax.axvline(position, label=label, **style)
    else:
        edge = math.copysign(reach, position)
        ax.axvline(edge, lw=4, alpha=0.5, label=f"{label} (beyond the {'right' if edge > 0 else 'left'} edge)", **style)


def threshold_explorer(eta: float, kappa: float, delta: float, *, d: int = 20) -> Figure:
    """The chapter's explorer: prior × density of both classes on the standardised score (log axis, fixed), the
    Bayes threshold and the expected plug-in LDA threshold (:func:`plugin_lda_threshold`), and the two rules' recall
    and false-alarm rate.

    Where n = κ·d training samples leave fewer than 2 of the minority, or the LDA formula does not apply, the
    figure says so instead of LDA numbers. Returns a figure that pyplot does not hold, so a widget displays it once.
    """
    fig = Figure(figsize=(13, 4.8), layout="constrained")
    ax, bars = fig.subplots(1, 2, width_ratios=[2, 1.1])
    reach = EXPLORER_MAX_DELTA / 2 + 4
    ax.set(xlim=(-reach, reach), yscale="log", ylim=(EXPLORER_DENSITY_FLOOR, 1), ylabel="prior × density (log scale)",
           xlabel="standardised score s (majority mean −Δ/2, minority mean +Δ/2, unit variance)")
    bars.set(ylim=(0, 1), ylabel="rate")
    try:
        t = threshold_shift(eta, delta)
        _check_kappa(kappa)
    except ValueError as err:
        ax.set_title("Cannot draw this setting")
        bars.text(0.5, 0.5, textwrap.fill(str(err), 40), ha="center", va="center", transform=bars.transAxes)
        return fig
    s = np.linspace(-reach, reach, 801)
    p1 = 1 / (1 + eta)
    for prior, mean, name, alpha in [(1 - p1, -delta / 2, "majority", 0.4), (p1, delta / 2, "minority", 0.6)]:
        ax.fill_between(s, EXPLORER_DENSITY_FLOOR, np.maximum(prior * stats.norm.pdf(s, mean), EXPLORER_DENSITY_FLOOR),
                        alpha=alpha, label=f"{name} × prior {prior:.3g}")
    _threshold_line(ax, t, reach, f"Bayes threshold log η / Δ = {t:.2f}", color="black")
    bayes = bayes_errors(eta, delta)
    rates = {"Bayes rule": (float(bayes.recall), float(bayes.majority))}
    n = round(kappa * d)
    try:
        n_minority, _ = split_counts(n, eta)
        lda = plugin_lda_errors(eta, delta, kappa, d)
        t_lda = plugin_lda_threshold(eta, delta, kappa, d)
    except ValueError as err:
        few = n / (1 + eta) < 2
        note = (f"No plug-in LDA: n = κ·d = {n} training samples at η = {eta:.3g} leave {n / (1 + eta):.2g} of the "
                f"minority (at least 2 are needed)." if few else f"No plug-in LDA: {err}.")
    else:
        _threshold_line(ax, t_lda, reach, f"plug-in LDA threshold (expected) = {t_lda:.2f}", color="C3", ls="--")
        s1, sd, _, spread = _lda_moments(eta, delta, kappa, d)
        lda_sd = sd * spread / (s1 * delta)  # LDA's score on this axis: same means, wider (its direction is estimated)
        for prior, mean, label in [(1 - p1, -delta / 2, f"plug-in LDA's scores (sd {lda_sd:.2f})"), (p1, delta / 2, None)]:
            ax.plot(s, prior * stats.norm.pdf(s, mean, lda_sd), color="C3", lw=1, label=label)
        rates["plug-in LDA (expected)"] = (float(lda.recall), float(lda.majority))
        note = f"plug-in LDA: n = κ·d = {n} training samples, {n_minority} of the minority"
    ax.set_title(f"η = {eta:.3g}, κ = {kappa:.3g}, Δ = {delta:.2g}, d = {d}: Bayes regime {regime(eta, delta)}")
    ax.legend(loc="upper left")
    width = 0.8 / len(rates)
    for i, (rule, values) in enumerate(rates.items()):
        bars.bar(np.arange(2) + (i - (len(rates) - 1) / 2) * width, values, width, label=rule, color="black" if i == 0 else "C3",
                 alpha=0.7)
    bars.set(xticks=[0, 1], xticklabels=["minority recall", "majority false alarms"], title=textwrap.fill(note, 40))
    bars.legend(loc="upper right")
    return fig


def threshold_explorer_controls(*, d: int = 20) -> dict:
    """The explorer's sliders (labels in words, tooltips, labels never cut) and its fixed d, for
    ``ipywidgets.interact(threshold_explorer, **controls)``. ipywidgets is imported here: only a live notebook needs it."""
    import ipywidgets as widgets

    style = {"description_width": "initial"}
    return {
        "eta": widgets.FloatLogSlider(value=8, base=10, min=0, max=3, step=0.05, description="imbalance η", style=style,
                                      tooltip="majority / minority prior, 1 to 1000 (log slider)"),
        "kappa": widgets.FloatLogSlider(value=10, base=10, min=0.2, max=3, step=0.05, description="samples per dimension κ",
                                        style=style, tooltip=f"n / d of plug-in LDA's training set (d = {d})"),
        "delta": widgets.FloatSlider(value=2.0, min=0.2, max=EXPLORER_MAX_DELTA, step=0.1, description="separability Δ",
                                     style=style, tooltip="Mahalanobis distance between the class means"),
        "d": widgets.fixed(d),
    }
