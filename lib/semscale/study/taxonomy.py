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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import integrate, optimize, stats

__all__ = [
    "REGIMES",
    "Errors",
    "TwoClassData",
    "threshold_shift",
    "bayes_errors",
    "plugin_lda_errors",
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
    minority samples) are skipped. Extra keyword arguments become constant columns.
    """
    rows = []
    for eta in etas:
        for seed in seeds:
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
